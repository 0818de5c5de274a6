//! GitHub-shaped JSON for everything the stand-in answers or delivers, with every field
//! GitHub's own examples carry and URLs built from the stand-in's base URL.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::AppConfig;
use crate::model::{CommitStatus, Deployment, DeploymentStatus};
use crate::state::{CommentRec, InstallationRec, Pr, PrState, State, UserKind, key};

pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn ts_opt(t: Option<DateTime<Utc>>) -> Value {
    t.map(|t| Value::String(ts(t))).unwrap_or(Value::Null)
}

/// GitHub's legacy global node id: base64 of `"<len>:<Type><id>"`.
pub(crate) fn node_id(ty: &str, id: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{:02}:{ty}{id}", ty.len()))
}

/// A login as it appears in a URL path (`name[bot]` → `name%5Bbot%5D`).
fn enc(login: &str) -> String {
    login.replace('[', "%5B").replace(']', "%5D")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RepoFlavor {
    /// As in REST answers (pull requests' head/base repos).
    Api,
    /// As in webhook payloads (`repository`, head/base repos).
    Hook,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrFlavor {
    /// `GET /pulls` items: no merge/size fields.
    List,
    /// `GET /pulls/{n}` and webhook payloads: every field.
    Full,
}

pub(crate) struct Ctx<'a> {
    pub st: &'a State,
    /// API base, ending in `/`.
    pub api: &'a str,
    /// Web base (html_url etc.), ending in `/`.
    pub web: &'a str,
    pub app: Option<&'a AppConfig>,
}

impl Ctx<'_> {
    fn a(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    fn w(&self, path: &str) -> String {
        format!("{}{path}", self.web)
    }

    fn host(&self) -> &str {
        let rest = self
            .web
            .split_once("://")
            .map(|(_, r)| r)
            .unwrap_or(self.web);
        rest.trim_end_matches('/')
    }

    pub(crate) fn user(&self, login: &str) -> Value {
        let (login, id, kind) = match self.st.user(login) {
            Some(u) => (u.login.as_str(), u.id, u.kind),
            None => (login, 0, UserKind::User),
        };
        let l = enc(login);
        let (avatar, html) = match (kind, self.app) {
            (UserKind::Bot, Some(app)) => (
                self.w(&format!("avatars/in/{}?v=4", app.id)),
                self.w(&format!("apps/{}", app.slug)),
            ),
            _ => (self.w(&format!("avatars/u/{id}?v=4")), self.w(&l)),
        };
        json!({
            "login": login,
            "id": id,
            "node_id": node_id(kind.as_str(), id),
            "avatar_url": avatar,
            "gravatar_id": "",
            "url": self.a(&format!("users/{l}")),
            "html_url": html,
            "followers_url": self.a(&format!("users/{l}/followers")),
            "following_url": self.a(&format!("users/{l}/following{{/other_user}}")),
            "gists_url": self.a(&format!("users/{l}/gists{{/gist_id}}")),
            "starred_url": self.a(&format!("users/{l}/starred{{/owner}}{{/repo}}")),
            "subscriptions_url": self.a(&format!("users/{l}/subscriptions")),
            "organizations_url": self.a(&format!("users/{l}/orgs")),
            "repos_url": self.a(&format!("users/{l}/repos")),
            "events_url": self.a(&format!("users/{l}/events{{/privacy}}")),
            "received_events_url": self.a(&format!("users/{l}/received_events")),
            "type": kind.as_str(),
            "site_admin": false,
        })
    }

    /// `GET /user` (`private`: with the private-profile fields) and `GET /users/{u}`.
    pub(crate) fn user_profile(&self, login: &str, private: bool) -> Value {
        let mut v = self.user(login);
        let created = self
            .st
            .user(login)
            .map(|u| u.created_at)
            .unwrap_or_else(crate::state::now);
        let public_repos = self
            .st
            .repos
            .values()
            .filter(|r| r.owner.eq_ignore_ascii_case(login))
            .count();
        let extra = json!({
            "name": login,
            "company": null,
            "blog": "",
            "location": null,
            "email": null,
            "hireable": null,
            "bio": null,
            "twitter_username": null,
            "public_repos": public_repos,
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": ts(created),
            "updated_at": ts(created),
        });
        merge(&mut v, extra);
        if private {
            merge(
                &mut v,
                json!({
                    "private_gists": 0,
                    "total_private_repos": 0,
                    "owned_private_repos": 0,
                    "disk_usage": 0,
                    "collaborators": 0,
                    "two_factor_authentication": true,
                    "plan": {
                        "name": "free",
                        "space": 976562499,
                        "private_repos": 10000,
                        "collaborators": 0
                    }
                }),
            );
        }
        v
    }

    /// The `organization` object of webhook payloads.
    pub(crate) fn org(&self, login: &str) -> Value {
        let id = self.st.user(login).map(|u| u.id).unwrap_or(0);
        let l = enc(login);
        json!({
            "login": login,
            "id": id,
            "node_id": node_id("Organization", id),
            "url": self.a(&format!("orgs/{l}")),
            "repos_url": self.a(&format!("orgs/{l}/repos")),
            "events_url": self.a(&format!("orgs/{l}/events")),
            "hooks_url": self.a(&format!("orgs/{l}/hooks")),
            "issues_url": self.a(&format!("orgs/{l}/issues")),
            "members_url": self.a(&format!("orgs/{l}/members{{/member}}")),
            "public_members_url": self.a(&format!("orgs/{l}/public_members{{/member}}")),
            "avatar_url": self.w(&format!("avatars/u/{id}?v=4")),
            "description": "",
        })
    }

    pub(crate) fn is_org(&self, login: &str) -> bool {
        self.st
            .user(login)
            .is_some_and(|u| u.kind == UserKind::Organization)
    }

    pub(crate) fn repo(&self, full_name: &str, flavor: RepoFlavor) -> Value {
        let Ok(r) = self.st.repo(full_name) else {
            return Value::Null;
        };
        let f = &r.full_name;
        let u = |p: &str| self.a(&format!("repos/{f}{p}"));
        let open_issues = self
            .st
            .prs
            .values()
            .filter(|p| key(&p.repo) == key(f) && p.state == PrState::Open)
            .count();
        let mut v = json!({
            "id": r.id,
            "node_id": node_id("Repository", r.id),
            "name": r.name,
            "full_name": f,
            "private": r.private,
            "owner": self.user(&r.owner),
            "html_url": self.w(f),
            "description": null,
            "fork": r.fork,
            "url": self.a(&format!("repos/{f}")),
            "forks_url": u("/forks"),
            "keys_url": u("/keys{/key_id}"),
            "collaborators_url": u("/collaborators{/collaborator}"),
            "teams_url": u("/teams"),
            "hooks_url": u("/hooks"),
            "issue_events_url": u("/issues/events{/number}"),
            "events_url": u("/events"),
            "assignees_url": u("/assignees{/user}"),
            "branches_url": u("/branches{/branch}"),
            "tags_url": u("/tags"),
            "blobs_url": u("/git/blobs{/sha}"),
            "git_tags_url": u("/git/tags{/sha}"),
            "git_refs_url": u("/git/refs{/sha}"),
            "trees_url": u("/git/trees{/sha}"),
            "statuses_url": u("/statuses/{sha}"),
            "languages_url": u("/languages"),
            "stargazers_url": u("/stargazers"),
            "contributors_url": u("/contributors"),
            "subscribers_url": u("/subscribers"),
            "subscription_url": u("/subscription"),
            "commits_url": u("/commits{/sha}"),
            "git_commits_url": u("/git/commits{/sha}"),
            "comments_url": u("/comments{/number}"),
            "issue_comment_url": u("/issues/comments{/number}"),
            "contents_url": u("/contents/{+path}"),
            "compare_url": u("/compare/{base}...{head}"),
            "merges_url": u("/merges"),
            "archive_url": u("/{archive_format}{/ref}"),
            "downloads_url": u("/downloads"),
            "issues_url": u("/issues{/number}"),
            "pulls_url": u("/pulls{/number}"),
            "milestones_url": u("/milestones{/number}"),
            "notifications_url": u("/notifications{?since,all,participating}"),
            "labels_url": u("/labels{/name}"),
            "releases_url": u("/releases{/id}"),
            "deployments_url": u("/deployments"),
            "created_at": ts(r.created_at),
            "updated_at": ts(r.updated_at),
            "pushed_at": ts(r.pushed_at),
            "git_url": format!("git://{}/{f}.git", self.host()),
            "ssh_url": format!("git@{}:{f}.git", self.host().split(':').next().unwrap_or("localhost")),
            "clone_url": self.w(&format!("{f}.git")),
            "svn_url": self.w(f),
            "homepage": null,
            "size": 108,
            "stargazers_count": 0,
            "watchers_count": 0,
            "language": "Rust",
            "has_issues": true,
            "has_projects": true,
            "has_downloads": true,
            "has_wiki": true,
            "has_pages": false,
            "forks_count": 0,
            "mirror_url": null,
            "archived": false,
            "disabled": false,
            "open_issues_count": open_issues,
            "license": null,
            "forks": 0,
            "open_issues": open_issues,
            "watchers": 0,
            "default_branch": r.default_branch,
            "is_template": false,
            "topics": [],
            "visibility": if r.private { "private" } else { "public" },
        });
        match flavor {
            RepoFlavor::Hook => merge(
                &mut v,
                json!({
                    "web_commit_signoff_required": false,
                    "custom_properties": {},
                }),
            ),
            RepoFlavor::Api => merge(
                &mut v,
                json!({
                    "has_discussions": false,
                    "permissions": {"admin": false, "maintain": false, "push": false, "triage": false, "pull": true},
                    "allow_rebase_merge": true,
                    "template_repository": null,
                    "temp_clone_token": "",
                    "allow_squash_merge": true,
                    "allow_auto_merge": false,
                    "delete_branch_on_merge": false,
                    "allow_merge_commit": true,
                    "allow_forking": true,
                    "subscribers_count": 0,
                    "network_count": 0,
                }),
            ),
        }
        v
    }

    pub(crate) fn label(&self, full_name: &str, name: &str) -> Value {
        let def = self
            .st
            .repo(full_name)
            .ok()
            .and_then(|r| r.labels.get(&key(name)));
        let (id, name, color, description, default) = match def {
            Some(d) => (
                d.id,
                d.name.as_str(),
                d.color.as_str(),
                d.description.clone(),
                d.default,
            ),
            None => (0, name, "ededed", None, false),
        };
        let repo = self
            .st
            .repo(full_name)
            .map(|r| r.full_name.as_str())
            .unwrap_or(full_name);
        json!({
            "id": id,
            "node_id": node_id("Label", id),
            "url": self.a(&format!("repos/{repo}/labels/{}", name.replace(' ', "%20"))),
            "name": name,
            "color": color,
            "default": default,
            "description": description,
        })
    }

    fn pr_side(&self, pr: &Pr, head: bool, flavor: RepoFlavor) -> Value {
        let (repo_name, r, sha) = if head {
            (&pr.head_repo, &pr.head_ref, &pr.head_sha)
        } else {
            (&pr.repo, &pr.base_ref, &pr.base_sha)
        };
        let owner = repo_name.split('/').next().unwrap_or_default();
        let repo = if head && pr.fork_deleted {
            Value::Null
        } else {
            self.repo(repo_name, flavor)
        };
        json!({
            "label": format!("{owner}:{r}"),
            "ref": r,
            "sha": sha,
            "user": self.user(owner),
            "repo": repo,
        })
    }

    pub(crate) fn pr(&self, pr: &Pr, flavor: PrFlavor, repo_flavor: RepoFlavor) -> Value {
        let f = &pr.repo;
        let n = pr.number;
        let api_pr = self.a(&format!("repos/{f}/pulls/{n}"));
        let html = self.w(&format!("{f}/pull/{n}"));
        let issue = self.a(&format!("repos/{f}/issues/{n}"));
        let comments = self.a(&format!("repos/{f}/issues/{n}/comments"));
        let review_comments = self.a(&format!("repos/{f}/pulls/{n}/comments"));
        let review_comment = self.a(&format!("repos/{f}/pulls/comments{{/number}}"));
        let commits = self.a(&format!("repos/{f}/pulls/{n}/commits"));
        let statuses = self.a(&format!("repos/{f}/statuses/{}", pr.head_sha));
        let labels: Vec<Value> = pr.labels.iter().map(|l| self.label(f, l)).collect();
        let state = match pr.state {
            PrState::Open => "open",
            PrState::Closed => "closed",
        };
        let mut v = json!({
            "url": api_pr,
            "id": pr.id,
            "node_id": node_id("PullRequest", pr.id),
            "html_url": html,
            "diff_url": format!("{html}.diff"),
            "patch_url": format!("{html}.patch"),
            "issue_url": issue,
            "number": n,
            "state": state,
            "locked": pr.locked,
            "title": pr.title,
            "user": self.user(&pr.author),
            "body": pr.body,
            "created_at": ts(pr.created_at),
            "updated_at": ts(pr.updated_at),
            "closed_at": ts_opt(pr.closed_at),
            "merged_at": ts_opt(pr.merged_at),
            "merge_commit_sha": pr.merge_commit_sha,
            "assignee": null,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "labels": labels,
            "milestone": null,
            "draft": pr.draft,
            "commits_url": commits,
            "review_comments_url": review_comments,
            "review_comment_url": review_comment,
            "comments_url": comments,
            "statuses_url": statuses,
            "head": self.pr_side(pr, true, repo_flavor),
            "base": self.pr_side(pr, false, repo_flavor),
            "_links": {
                "self": {"href": api_pr},
                "html": {"href": html},
                "issue": {"href": issue},
                "comments": {"href": comments},
                "review_comments": {"href": review_comments},
                "review_comment": {"href": review_comment},
                "commits": {"href": commits},
                "statuses": {"href": statuses},
            },
            "author_association": pr.author_association,
            "auto_merge": null,
            "active_lock_reason": null,
        });
        if flavor == PrFlavor::Full {
            let (mergeable, rebaseable, mergeable_state) = if !pr.mergeable_known {
                (Value::Null, Value::Null, "unknown")
            } else if pr.draft {
                (json!(true), json!(true), "draft")
            } else {
                (json!(true), json!(true), "clean")
            };
            let merged_by = pr
                .merged_by
                .as_deref()
                .map(|l| self.user(l))
                .unwrap_or(Value::Null);
            let n_comments = self.st.live_comments(f, n).len();
            merge(
                &mut v,
                json!({
                    "merged": pr.merged,
                    "mergeable": mergeable,
                    "rebaseable": rebaseable,
                    "mergeable_state": mergeable_state,
                    "merged_by": merged_by,
                    "comments": n_comments,
                    "review_comments": 0,
                    "maintainer_can_modify": pr.is_fork && pr.state == PrState::Open,
                    "commits": pr.commits,
                    "additions": pr.additions,
                    "deletions": pr.deletions,
                    "changed_files": pr.changed_files,
                }),
            );
        }
        v
    }

    fn reactions_summary(&self, url: String, comment_id: Option<u64>) -> Value {
        let mut counts: Map<String, Value> = Map::new();
        let all: Vec<&str> = match comment_id {
            Some(id) => self
                .st
                .reactions
                .iter()
                .filter(|r| r.comment_id == id)
                .map(|r| r.content.as_str())
                .collect(),
            None => Vec::new(),
        };
        counts.insert("url".into(), url.into());
        counts.insert("total_count".into(), all.len().into());
        for c in [
            "+1", "-1", "laugh", "hooray", "confused", "heart", "rocket", "eyes",
        ] {
            counts.insert(c.into(), all.iter().filter(|x| **x == c).count().into());
        }
        Value::Object(counts)
    }

    /// The issue side of a pull request (issue_comment payloads, `GET /issues/{n}`).
    pub(crate) fn issue(&self, pr: &Pr) -> Value {
        let f = &pr.repo;
        let n = pr.number;
        let html = self.w(&format!("{f}/pull/{n}"));
        let issue = self.a(&format!("repos/{f}/issues/{n}"));
        let labels: Vec<Value> = pr.labels.iter().map(|l| self.label(f, l)).collect();
        json!({
            "url": issue,
            "repository_url": self.a(&format!("repos/{f}")),
            "labels_url": format!("{issue}/labels{{/name}}"),
            "comments_url": format!("{issue}/comments"),
            "events_url": format!("{issue}/events"),
            "html_url": html,
            "id": pr.issue_id,
            "node_id": node_id("Issue", pr.issue_id),
            "number": n,
            "title": pr.title,
            "user": self.user(&pr.author),
            "labels": labels,
            "state": if pr.state == PrState::Open { "open" } else { "closed" },
            "locked": pr.locked,
            "assignee": null,
            "assignees": [],
            "milestone": null,
            "comments": self.st.live_comments(f, n).len(),
            "created_at": ts(pr.created_at),
            "updated_at": ts(pr.updated_at),
            "closed_at": ts_opt(pr.closed_at),
            "author_association": pr.author_association,
            "active_lock_reason": null,
            "draft": pr.draft,
            "pull_request": {
                "url": self.a(&format!("repos/{f}/pulls/{n}")),
                "html_url": html,
                "diff_url": format!("{html}.diff"),
                "patch_url": format!("{html}.patch"),
                "merged_at": ts_opt(pr.merged_at),
            },
            "body": pr.body,
            "reactions": self.reactions_summary(format!("{issue}/reactions"), None),
            "timeline_url": format!("{issue}/timeline"),
            "performed_via_github_app": null,
            "state_reason": if pr.state == PrState::Closed { json!("completed") } else { Value::Null },
        })
    }

    pub(crate) fn comment(&self, c: &CommentRec, hook: bool) -> Value {
        let f = &c.repo;
        let url = self.a(&format!("repos/{f}/issues/comments/{}", c.id));
        let via = if c.via_app { self.app() } else { Value::Null };
        let mut v = json!({
            "id": c.id,
            "node_id": node_id("IssueComment", c.id),
            "url": url,
            "html_url": self.w(&format!("{f}/pull/{}#issuecomment-{}", c.number, c.id)),
            "issue_url": self.a(&format!("repos/{f}/issues/{}", c.number)),
            "body": c.body,
            "user": self.user(&c.login),
            "created_at": ts(c.created_at),
            "updated_at": ts(c.updated_at),
            "author_association": c.author_association,
            "performed_via_github_app": via,
            "reactions": self.reactions_summary(format!("{url}/reactions"), Some(c.id)),
        });
        if !hook {
            merge(&mut v, json!({"pin": null, "minimized": null}));
        }
        v
    }

    pub(crate) fn reaction(&self, id: u64, login: &str, content: &str, at: DateTime<Utc>) -> Value {
        json!({
            "id": id,
            "node_id": node_id("Reaction", id),
            "user": self.user(login),
            "content": content,
            "created_at": ts(at),
        })
    }

    fn via_app(&self, login: &str) -> Value {
        match self.st.user(login) {
            Some(u) if u.kind == UserKind::Bot => self.app(),
            _ => Value::Null,
        }
    }

    pub(crate) fn deployment(&self, full_name: &str, d: &Deployment) -> Value {
        let f = self
            .st
            .repo(full_name)
            .map(|r| r.full_name.as_str())
            .unwrap_or(full_name);
        let url = self.a(&format!("repos/{f}/deployments/{}", d.id));
        json!({
            "url": url,
            "id": d.id,
            "node_id": node_id("Deployment", d.id),
            "sha": d.sha,
            "ref": d.r#ref,
            "task": d.task,
            "payload": d.payload,
            "original_environment": d.original_environment,
            "environment": d.environment,
            "description": d.description,
            "creator": self.user(&d.creator),
            "created_at": ts(d.created_at),
            "updated_at": ts(d.updated_at),
            "statuses_url": format!("{url}/statuses"),
            "repository_url": self.a(&format!("repos/{f}")),
            "transient_environment": d.transient_environment,
            "production_environment": d.production_environment,
            "performed_via_github_app": self.via_app(&d.creator),
        })
    }

    pub(crate) fn deployment_status(&self, full_name: &str, s: &DeploymentStatus) -> Value {
        let f = self
            .st
            .repo(full_name)
            .map(|r| r.full_name.as_str())
            .unwrap_or(full_name);
        let dep = self.a(&format!("repos/{f}/deployments/{}", s.deployment_id));
        json!({
            "url": format!("{dep}/statuses/{}", s.id),
            "id": s.id,
            "node_id": node_id("DeploymentStatus", s.id),
            "state": s.state,
            "creator": self.user(&s.creator),
            "description": s.description,
            "environment": s.environment,
            "target_url": s.log_url,
            "created_at": ts(s.created_at),
            "updated_at": ts(s.created_at),
            "deployment_url": dep,
            "repository_url": self.a(&format!("repos/{f}")),
            "environment_url": s.environment_url,
            "log_url": s.log_url,
            "performed_via_github_app": self.via_app(&s.creator),
        })
    }

    pub(crate) fn commit_status(&self, full_name: &str, s: &CommitStatus) -> Value {
        let f = self
            .st
            .repo(full_name)
            .map(|r| r.full_name.as_str())
            .unwrap_or(full_name);
        let creator = self.user(&s.creator);
        json!({
            "url": self.a(&format!("repos/{f}/statuses/{}", s.sha)),
            "avatar_url": creator.get("avatar_url").cloned().unwrap_or(Value::Null),
            "id": s.id,
            "node_id": node_id("Status", s.id),
            "state": s.state,
            "description": s.description,
            "target_url": s.target_url,
            "context": s.context,
            "created_at": ts(s.created_at),
            "updated_at": ts(s.created_at),
            "creator": creator,
        })
    }

    pub(crate) fn app_permissions() -> Value {
        json!({
            "checks": "write",
            "contents": "read",
            "deployments": "write",
            "issues": "write",
            "metadata": "read",
            "pull_requests": "write",
            "statuses": "write",
        })
    }

    pub(crate) fn app_events() -> Value {
        json!(["issue_comment", "pull_request"])
    }

    /// The App object (`GET /app`, `performed_via_github_app`); null without an App.
    pub(crate) fn app(&self) -> Value {
        let Some(app) = self.app else {
            return Value::Null;
        };
        let t = ts(self.st.app_created_at);
        json!({
            "id": app.id,
            "slug": app.slug,
            "client_id": app.client_id(),
            "node_id": node_id("Integration", app.id),
            "owner": self.user(&app.owner),
            "name": app.name,
            "description": "Preview environments per pull request (stand-in App)",
            "external_url": self.w(""),
            "html_url": self.w(&format!("apps/{}", app.slug)),
            "created_at": t,
            "updated_at": t,
            "permissions": Self::app_permissions(),
            "events": Self::app_events(),
            "installations_count": self.st.installations.len(),
        })
    }

    pub(crate) fn installation(&self, inst: &InstallationRec) -> Value {
        let Some(app) = self.app else {
            return Value::Null;
        };
        let (target_id, target_type) = match self.st.user(&inst.account) {
            Some(u) => (u.id, u.kind.as_str()),
            None => (0, "User"),
        };
        let html = if target_type == "Organization" {
            self.w(&format!(
                "organizations/{}/settings/installations/{}",
                inst.account, inst.id
            ))
        } else {
            self.w(&format!("settings/installations/{}", inst.id))
        };
        json!({
            "id": inst.id,
            "client_id": app.client_id(),
            "account": self.user(&inst.account),
            "repository_selection": "all",
            "access_tokens_url": self.a(&format!("app/installations/{}/access_tokens", inst.id)),
            "repositories_url": self.a("installation/repositories"),
            "html_url": html,
            "app_id": app.id,
            "app_slug": app.slug,
            "target_id": target_id,
            "target_type": target_type,
            "permissions": Self::app_permissions(),
            "events": Self::app_events(),
            "created_at": ts(inst.created_at),
            "updated_at": ts(inst.created_at),
            "single_file_name": null,
            "has_multiple_single_files": false,
            "single_file_paths": [],
            "suspended_at": null,
            "suspended_by": null,
        })
    }

    /// The `installation` object of webhook payloads.
    pub(crate) fn event_installation(&self, owner: &str) -> Option<Value> {
        self.app?;
        let inst = self.st.installations.get(&key(owner))?;
        Some(json!({
            "id": inst.id,
            "node_id": node_id("IntegrationInstallation", inst.id),
        }))
    }
}

fn merge(v: &mut Value, extra: Value) {
    if let (Value::Object(m), Value::Object(e)) = (v, extra) {
        m.extend(e);
    }
}
