//! The in-memory GitHub: users, repositories, pull requests, comments, deployments, statuses,
//! tokens, hooks and the records of what happened. Pure data and its rules; no I/O.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, TimeZone, Utc};
use rand::RngExt as _;

use crate::Error;
use crate::model::{
    CommitStatus, Delivery, Deployment, DeploymentStatus, Fault, NewPr, RecordedRequest,
};

/// Now, at GitHub's precision (whole seconds).
pub(crate) fn now() -> DateTime<Utc> {
    let secs = Utc::now().timestamp();
    Utc.timestamp_opt(secs, 0).single().unwrap_or_else(Utc::now)
}

/// Now, but strictly after `prev` (bumped by a second when needed), so that two changes
/// within the same second still order.
pub(crate) fn after(prev: DateTime<Utc>) -> DateTime<Utc> {
    let n = now();
    if n > prev {
        n
    } else {
        prev + chrono::Duration::seconds(1)
    }
}

pub(crate) fn random_sha() -> String {
    let bytes: [u8; 20] = rand::random();
    hex::encode(bytes)
}

pub(crate) fn random_alnum(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

pub(crate) fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn key(s: &str) -> String {
    s.to_ascii_lowercase()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserKind {
    User,
    Organization,
    Bot,
}

impl UserKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UserKind::User => "User",
            UserKind::Organization => "Organization",
            UserKind::Bot => "Bot",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub login: String,
    pub id: u64,
    pub kind: UserKind,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct LabelDef {
    pub id: u64,
    pub name: String,
    pub color: String,
    pub description: Option<String>,
    pub default: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Repo {
    pub id: u64,
    pub owner: String,
    pub name: String,
    pub full_name: String,
    pub fork: bool,
    pub private: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub pushed_at: DateTime<Utc>,
    pub default_branch: String,
    /// branch -> head sha
    pub branches: BTreeMap<String, String>,
    /// lowercase name -> label
    pub labels: BTreeMap<String, LabelDef>,
    /// lowercase login -> role (admin|maintain|write|triage|read|none)
    pub permissions: HashMap<String, String>,
    pub next_number: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrState {
    Open,
    Closed,
}

#[derive(Debug, Clone)]
pub(crate) struct Pr {
    pub id: u64,
    pub issue_id: u64,
    pub repo: String,
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    pub author: String,
    pub author_association: String,
    pub head_ref: String,
    pub head_sha: String,
    /// Full name of the head repository (the base repository itself when not a fork).
    pub head_repo: String,
    pub is_fork: bool,
    pub fork_deleted: bool,
    pub base_ref: String,
    pub base_sha: String,
    pub labels: Vec<String>,
    pub draft: bool,
    pub state: PrState,
    pub locked: bool,
    pub merged: bool,
    pub merged_by: Option<String>,
    pub merged_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub merge_commit_sha: Option<String>,
    /// GitHub computes mergeability in the background: `null`/`unknown` right after
    /// opening or pushing.
    pub mergeable_known: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub commits: u64,
    pub additions: u64,
    pub deletions: u64,
    pub changed_files: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct CommentRec {
    pub id: u64,
    pub repo: String,
    pub number: u64,
    pub login: String,
    pub body: String,
    pub author_association: String,
    pub via_app: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct ReactionRec {
    pub id: u64,
    pub comment_id: u64,
    pub login: String,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct HookRec {
    pub id: u64,
    pub url: String,
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct InstallationRec {
    pub id: u64,
    pub account: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct InstToken {
    pub installation_id: u64,
    pub account: String,
    pub expires: SystemTime,
}

#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    pub used: u64,
    pub reset: i64,
}

#[derive(Debug)]
struct Ids {
    next: HashMap<&'static str, u64>,
}

impl Ids {
    fn new() -> Self {
        Ids {
            next: HashMap::new(),
        }
    }
    fn next(&mut self, kind: &'static str) -> u64 {
        let base = match kind {
            "user" => 1_000,
            "repo" => 500_000_000,
            "pr" => 1_500_000_000,
            "issue" => 2_500_000_000,
            "comment" => 3_000_000_000,
            "deployment" => 4_000_000_000,
            "deployment_status" => 5_000_000_000,
            "status" => 6_000_000_000,
            "label" => 7_000_000_000,
            "reaction" => 8_000_000_000,
            "hook" => 400_000_000,
            "installation" => 50_000_000,
            _ => 1,
        };
        let n = self.next.entry(kind).or_insert(base);
        *n += 1;
        *n
    }
}

/// The outcome of a PR change, for building its delivery.
#[derive(Debug, Clone)]
pub(crate) struct PrChange {
    pub repo: String,
    pub number: u64,
    pub action: &'static str,
    pub sender: String,
    pub extra: serde_json::Map<String, serde_json::Value>,
}

pub(crate) struct State {
    pub users: BTreeMap<String, User>,
    pub repos: BTreeMap<String, Repo>,
    pub prs: BTreeMap<(String, u64), Pr>,
    pub comments: BTreeMap<u64, CommentRec>,
    pub reactions: Vec<ReactionRec>,
    pub deployments: BTreeMap<u64, (String, Deployment)>,
    pub deployment_statuses: BTreeMap<u64, (String, DeploymentStatus)>,
    pub commit_statuses: Vec<(String, CommitStatus)>,
    /// token -> login
    pub tokens: HashMap<String, String>,
    pub inst_tokens: HashMap<String, InstToken>,
    /// lowercase account login -> installation
    pub installations: BTreeMap<String, InstallationRec>,
    pub hooks: Vec<HookRec>,
    pub deliveries: Vec<Delivery>,
    pub requests: Vec<RecordedRequest>,
    pub next_request_seq: u64,
    pub faults: Vec<Fault>,
    pub rate: HashMap<String, Bucket>,
    pub app_created_at: DateTime<Utc>,
    ids: Ids,
}

impl State {
    pub(crate) fn new() -> Self {
        State {
            users: BTreeMap::new(),
            repos: BTreeMap::new(),
            prs: BTreeMap::new(),
            comments: BTreeMap::new(),
            reactions: Vec::new(),
            deployments: BTreeMap::new(),
            deployment_statuses: BTreeMap::new(),
            commit_statuses: Vec::new(),
            tokens: HashMap::new(),
            inst_tokens: HashMap::new(),
            installations: BTreeMap::new(),
            hooks: Vec::new(),
            deliveries: Vec::new(),
            requests: Vec::new(),
            next_request_seq: 0,
            faults: Vec::new(),
            rate: HashMap::new(),
            app_created_at: now() - chrono::Duration::days(30),
            ids: Ids::new(),
        }
    }

    pub(crate) fn next_id(&mut self, kind: &'static str) -> u64 {
        self.ids.next(kind)
    }

    // ---- users ----

    pub(crate) fn ensure_user(&mut self, login: &str, kind: UserKind) -> &mut User {
        let k = key(login);
        let ids = &mut self.ids;
        self.users.entry(k).or_insert_with(|| User {
            login: login.to_string(),
            id: ids.next("user"),
            kind,
            created_at: now() - chrono::Duration::days(365),
        })
    }

    pub(crate) fn user(&self, login: &str) -> Option<&User> {
        self.users.get(&key(login))
    }

    // ---- repositories ----

    pub(crate) fn add_repo(&mut self, full_name: &str, fork: bool) -> Result<&mut Repo, Error> {
        let (owner, name) = split_full_name(full_name)?;
        self.ensure_user(owner, UserKind::User);
        let k = key(full_name);
        if !self.repos.contains_key(&k) {
            let id = self.ids.next("repo");
            let created = now() - chrono::Duration::days(90);
            let mut branches = BTreeMap::new();
            branches.insert("main".to_string(), random_sha());
            self.repos.insert(
                k.clone(),
                Repo {
                    id,
                    owner: owner.to_string(),
                    name: name.to_string(),
                    full_name: format!("{owner}/{name}"),
                    fork,
                    private: false,
                    created_at: created,
                    updated_at: created,
                    pushed_at: created,
                    default_branch: "main".to_string(),
                    branches,
                    labels: BTreeMap::new(),
                    permissions: HashMap::new(),
                    next_number: 1,
                },
            );
        }
        self.repos
            .get_mut(&k)
            .ok_or_else(|| Error::UnknownRepo(full_name.to_string()))
    }

    pub(crate) fn repo(&self, full_name: &str) -> Result<&Repo, Error> {
        self.repos
            .get(&key(full_name))
            .ok_or_else(|| Error::UnknownRepo(full_name.to_string()))
    }

    pub(crate) fn repo_mut(&mut self, full_name: &str) -> Result<&mut Repo, Error> {
        self.repos
            .get_mut(&key(full_name))
            .ok_or_else(|| Error::UnknownRepo(full_name.to_string()))
    }

    /// The role of `login` on the repository: the owner is admin, others what
    /// `set_permission` gave them, else read (public repository).
    pub(crate) fn role(&self, full_name: &str, login: &str) -> String {
        let Ok(repo) = self.repo(full_name) else {
            return "none".to_string();
        };
        if let Some(role) = repo.permissions.get(&key(login)) {
            return role.clone();
        }
        if repo.owner.eq_ignore_ascii_case(login) {
            return "admin".to_string();
        }
        if repo.private {
            return "none".to_string();
        }
        "read".to_string()
    }

    pub(crate) fn association(&self, full_name: &str, login: &str) -> String {
        let Ok(repo) = self.repo(full_name) else {
            return "NONE".to_string();
        };
        if repo.owner.eq_ignore_ascii_case(login) {
            return "OWNER".to_string();
        }
        if self.user(login).is_some_and(|u| u.kind == UserKind::Bot) {
            return "NONE".to_string();
        }
        match repo.permissions.get(&key(login)).map(String::as_str) {
            Some("admin" | "maintain" | "write" | "triage") => "COLLABORATOR".to_string(),
            _ => "CONTRIBUTOR".to_string(),
        }
    }

    pub(crate) fn ensure_label(&mut self, full_name: &str, name: &str) -> Result<(), Error> {
        let id = self.ids.next("label");
        let repo = self.repo_mut(full_name)?;
        let k = key(name);
        repo.labels.entry(k).or_insert_with(|| {
            let digest = {
                use sha2::Digest as _;
                sha2::Sha256::digest(name.as_bytes())
            };
            LabelDef {
                id,
                name: name.to_string(),
                color: hex::encode(&digest[..3]),
                description: None,
                default: false,
            }
        });
        Ok(())
    }

    /// Resolves a ref (branch, `refs/heads/x`, `refs/pull/N/head`, full or abbreviated sha)
    /// of a repository to a commit sha.
    pub(crate) fn resolve_ref(&self, full_name: &str, r: &str) -> Option<String> {
        let repo = self.repo(full_name).ok()?;
        if is_sha(r) {
            return Some(r.to_ascii_lowercase());
        }
        let branch = r.strip_prefix("refs/heads/").unwrap_or(r);
        if let Some(sha) = repo.branches.get(branch) {
            return Some(sha.clone());
        }
        let pull = r.strip_prefix("refs/").unwrap_or(r);
        if let Some(rest) = pull.strip_prefix("pull/") {
            let mut parts = rest.splitn(2, '/');
            let number = parts.next()?.parse::<u64>().ok()?;
            let pr = self.prs.get(&(key(full_name), number))?;
            return match parts.next() {
                Some("head") => Some(pr.head_sha.clone()),
                Some("merge") => pr.merge_commit_sha.clone(),
                _ => None,
            };
        }
        if r.len() >= 7 && r.bytes().all(|b| b.is_ascii_hexdigit()) {
            let lower = r.to_ascii_lowercase();
            let known = self
                .prs
                .values()
                .filter(|p| key(&p.repo) == key(full_name))
                .flat_map(|p| {
                    [
                        Some(&p.head_sha),
                        Some(&p.base_sha),
                        p.merge_commit_sha.as_ref(),
                    ]
                })
                .flatten()
                .chain(repo.branches.values())
                .find(|sha| sha.starts_with(&lower))
                .cloned();
            return known;
        }
        None
    }

    // ---- pull requests ----

    pub(crate) fn pr(&self, full_name: &str, number: u64) -> Result<&Pr, Error> {
        self.prs
            .get(&(key(full_name), number))
            .ok_or_else(|| Error::UnknownPr {
                repo: full_name.to_string(),
                number,
            })
    }

    pub(crate) fn pr_mut(&mut self, full_name: &str, number: u64) -> Result<&mut Pr, Error> {
        self.prs
            .get_mut(&(key(full_name), number))
            .ok_or_else(|| Error::UnknownPr {
                repo: full_name.to_string(),
                number,
            })
    }

    pub(crate) fn open_pr(&mut self, full_name: &str, new: NewPr) -> Result<PrChange, Error> {
        let repo = self.repo(full_name)?;
        let repo_full = repo.full_name.clone();
        let owner = repo.owner.clone();
        if let Some(sha) = &new.head_sha
            && !is_sha(sha)
        {
            return Err(Error::Invalid(format!(
                "head_sha {sha:?} is not 40 hex digits"
            )));
        }
        let (head_repo, is_fork) = match &new.fork {
            Some(f) if !key(f).eq(&key(&repo_full)) => {
                let fork = self.add_repo(f, true)?;
                (fork.full_name.clone(), true)
            }
            _ => (repo_full.clone(), false),
        };
        let author = if !new.author.is_empty() {
            new.author.clone()
        } else if is_fork {
            head_repo.split('/').next().unwrap_or(&owner).to_string()
        } else {
            owner.clone()
        };
        self.ensure_user(&author, UserKind::User);
        for label in &new.labels {
            self.ensure_label(&repo_full, label)?;
        }
        let association = if new.author_association.is_empty() {
            self.association(&repo_full, &author)
        } else {
            new.author_association.to_ascii_uppercase()
        };
        let pr_id = self.next_id("pr");
        let issue_id = self.next_id("issue");
        let repo = self.repo_mut(&repo_full)?;
        let number = repo.next_number;
        repo.next_number += 1;
        let base_ref = if new.base_ref.is_empty() {
            repo.default_branch.clone()
        } else {
            new.base_ref.clone()
        };
        let base_sha = repo
            .branches
            .entry(base_ref.clone())
            .or_insert_with(random_sha)
            .clone();
        let head_ref = if new.head_ref.is_empty() {
            format!("feature-{number}")
        } else {
            new.head_ref.clone()
        };
        let head_sha = new
            .head_sha
            .clone()
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_else(random_sha);
        let t = now();
        repo.updated_at = after(repo.updated_at);
        repo.pushed_at = t;
        if !is_fork {
            repo.branches.insert(head_ref.clone(), head_sha.clone());
        }
        if is_fork && let Ok(fork) = self.repo_mut(&head_repo) {
            fork.branches.insert(head_ref.clone(), head_sha.clone());
            fork.pushed_at = t;
        }
        let labels = new.labels.iter().fold(Vec::<String>::new(), |mut acc, l| {
            if !acc.iter().any(|x| x.eq_ignore_ascii_case(l)) {
                acc.push(l.clone());
            }
            acc
        });
        let pr = Pr {
            id: pr_id,
            issue_id,
            repo: repo_full.clone(),
            number,
            title: new.title.clone(),
            body: new.body.clone(),
            author: author.clone(),
            author_association: association,
            head_ref,
            head_sha,
            head_repo,
            is_fork,
            fork_deleted: is_fork && new.fork_deleted,
            base_ref,
            base_sha,
            labels,
            draft: new.draft,
            state: PrState::Open,
            locked: false,
            merged: false,
            merged_by: None,
            merged_at: None,
            closed_at: None,
            merge_commit_sha: None,
            mergeable_known: false,
            created_at: t,
            updated_at: t,
            commits: 1,
            additions: 3,
            deletions: 1,
            changed_files: 1,
        };
        self.prs.insert((key(&repo_full), number), pr);
        Ok(PrChange {
            repo: repo_full,
            number,
            action: "opened",
            sender: author,
            extra: serde_json::Map::new(),
        })
    }

    fn touch(&mut self, full_name: &str, number: u64) -> Result<&mut Pr, Error> {
        let pr = self.pr_mut(full_name, number)?;
        pr.updated_at = after(pr.updated_at);
        Ok(pr)
    }

    pub(crate) fn push(
        &mut self,
        full_name: &str,
        number: u64,
        sha: &str,
    ) -> Result<PrChange, Error> {
        if !is_sha(sha) {
            return Err(Error::Invalid(format!("sha {sha:?} is not 40 hex digits")));
        }
        let sha = sha.to_ascii_lowercase();
        let pr = self.pr(full_name, number)?;
        if pr.state != PrState::Open {
            return Err(Error::Invalid(format!("{full_name}#{number} is closed")));
        }
        let (head_repo, head_ref, is_fork, fork_deleted) = (
            pr.head_repo.clone(),
            pr.head_ref.clone(),
            pr.is_fork,
            pr.fork_deleted,
        );
        let pr = self.touch(full_name, number)?;
        let before = std::mem::replace(&mut pr.head_sha, sha.clone());
        pr.mergeable_known = false;
        pr.commits += 1;
        pr.additions += 2;
        let (repo, sender) = (pr.repo.clone(), pr.author.clone());
        if !fork_deleted && let Ok(r) = self.repo_mut(&head_repo) {
            r.branches.insert(head_ref, sha.clone());
            r.pushed_at = now();
        }
        let _ = is_fork;
        let mut extra = serde_json::Map::new();
        extra.insert("before".into(), before.into());
        extra.insert("after".into(), sha.into());
        Ok(PrChange {
            repo,
            number,
            action: "synchronize",
            sender,
            extra,
        })
    }

    pub(crate) fn close(
        &mut self,
        full_name: &str,
        number: u64,
        merged: bool,
    ) -> Result<PrChange, Error> {
        let owner = self.repo(full_name)?.owner.clone();
        let pr = self.pr(full_name, number)?;
        if pr.state != PrState::Open {
            return Err(Error::Invalid(format!(
                "{full_name}#{number} is already closed"
            )));
        }
        let pr = self.touch(full_name, number)?;
        let t = pr.updated_at;
        pr.state = PrState::Closed;
        pr.closed_at = Some(t);
        pr.mergeable_known = true;
        let merge_sha = random_sha();
        pr.merge_commit_sha = Some(merge_sha.clone());
        if merged {
            pr.merged = true;
            pr.merged_at = Some(t);
            pr.merged_by = Some(owner.clone());
        }
        let (repo, base_ref, author) = (pr.repo.clone(), pr.base_ref.clone(), pr.author.clone());
        if merged && let Ok(r) = self.repo_mut(&repo) {
            r.branches.insert(base_ref, merge_sha);
            r.pushed_at = t;
        }
        Ok(PrChange {
            repo,
            number,
            action: "closed",
            sender: if merged { owner } else { author },
            extra: serde_json::Map::new(),
        })
    }

    pub(crate) fn reopen(&mut self, full_name: &str, number: u64) -> Result<PrChange, Error> {
        let pr = self.pr(full_name, number)?;
        if pr.state == PrState::Open {
            return Err(Error::Invalid(format!("{full_name}#{number} is open")));
        }
        if pr.merged {
            return Err(Error::Invalid(format!("{full_name}#{number} is merged")));
        }
        let pr = self.touch(full_name, number)?;
        pr.state = PrState::Open;
        pr.closed_at = None;
        Ok(PrChange {
            repo: pr.repo.clone(),
            number,
            action: "reopened",
            sender: pr.author.clone(),
            extra: serde_json::Map::new(),
        })
    }

    pub(crate) fn add_label(
        &mut self,
        full_name: &str,
        number: u64,
        label: &str,
        sender: &str,
    ) -> Result<PrChange, Error> {
        self.ensure_label(full_name, label)?;
        self.ensure_user(sender, UserKind::User);
        let pr = self.pr(full_name, number)?;
        if pr.labels.iter().any(|l| l.eq_ignore_ascii_case(label)) {
            return Err(Error::Invalid(format!(
                "{full_name}#{number} already has label {label:?}"
            )));
        }
        let pr = self.touch(full_name, number)?;
        pr.labels.push(label.to_string());
        Ok(PrChange {
            repo: pr.repo.clone(),
            number,
            action: "labeled",
            sender: sender.to_string(),
            extra: serde_json::Map::new(),
        })
    }

    pub(crate) fn remove_label(
        &mut self,
        full_name: &str,
        number: u64,
        label: &str,
        sender: &str,
    ) -> Result<PrChange, Error> {
        self.ensure_user(sender, UserKind::User);
        let pr = self.pr(full_name, number)?;
        if !pr.labels.iter().any(|l| l.eq_ignore_ascii_case(label)) {
            return Err(Error::Invalid(format!(
                "{full_name}#{number} has no label {label:?}"
            )));
        }
        let pr = self.touch(full_name, number)?;
        pr.labels.retain(|l| !l.eq_ignore_ascii_case(label));
        Ok(PrChange {
            repo: pr.repo.clone(),
            number,
            action: "unlabeled",
            sender: sender.to_string(),
            extra: serde_json::Map::new(),
        })
    }

    pub(crate) fn set_draft(
        &mut self,
        full_name: &str,
        number: u64,
        draft: bool,
    ) -> Result<PrChange, Error> {
        let pr = self.pr(full_name, number)?;
        if pr.draft == draft {
            return Err(Error::Invalid(format!(
                "{full_name}#{number} is already {}",
                if draft { "a draft" } else { "ready for review" }
            )));
        }
        if pr.state != PrState::Open {
            return Err(Error::Invalid(format!("{full_name}#{number} is closed")));
        }
        let pr = self.touch(full_name, number)?;
        pr.draft = draft;
        Ok(PrChange {
            repo: pr.repo.clone(),
            number,
            action: if draft {
                "converted_to_draft"
            } else {
                "ready_for_review"
            },
            sender: pr.author.clone(),
            extra: serde_json::Map::new(),
        })
    }

    pub(crate) fn edit_title(
        &mut self,
        full_name: &str,
        number: u64,
        title: &str,
    ) -> Result<PrChange, Error> {
        let pr = self.touch(full_name, number)?;
        let from = std::mem::replace(&mut pr.title, title.to_string());
        let mut extra = serde_json::Map::new();
        extra.insert(
            "changes".into(),
            serde_json::json!({ "title": { "from": from } }),
        );
        Ok(PrChange {
            repo: pr.repo.clone(),
            number,
            action: "edited",
            sender: pr.author.clone(),
            extra,
        })
    }

    pub(crate) fn delete_fork(&mut self, full_name: &str, number: u64) -> Result<(), Error> {
        let pr = self.pr_mut(full_name, number)?;
        if !pr.is_fork {
            return Err(Error::Invalid(format!(
                "{full_name}#{number} is not from a fork"
            )));
        }
        pr.fork_deleted = true;
        Ok(())
    }

    // ---- comments ----

    pub(crate) fn add_comment(
        &mut self,
        full_name: &str,
        number: u64,
        login: &str,
        body: &str,
        via_app: bool,
    ) -> Result<u64, Error> {
        let kind = if via_app {
            UserKind::Bot
        } else {
            UserKind::User
        };
        self.ensure_user(login, kind);
        let association = self.association(full_name, login);
        let repo = self.repo(full_name)?.full_name.clone();
        self.touch(full_name, number)?;
        let id = self.next_id("comment");
        let t = now();
        self.comments.insert(
            id,
            CommentRec {
                id,
                repo,
                number,
                login: login.to_string(),
                body: body.to_string(),
                author_association: association,
                via_app,
                created_at: t,
                updated_at: t,
                deleted: false,
            },
        );
        Ok(id)
    }

    /// The live comment `id` of the repository.
    pub(crate) fn comment(&self, full_name: &str, id: u64) -> Option<&CommentRec> {
        self.comments
            .get(&id)
            .filter(|c| !c.deleted && key(&c.repo) == key(full_name))
    }

    pub(crate) fn edit_comment(&mut self, full_name: &str, id: u64, body: &str) -> Option<String> {
        let c = self
            .comments
            .get_mut(&id)
            .filter(|c| !c.deleted && key(&c.repo) == key(full_name))?;
        c.updated_at = after(c.updated_at);
        Some(std::mem::replace(&mut c.body, body.to_string()))
    }

    pub(crate) fn delete_comment(&mut self, full_name: &str, id: u64) -> bool {
        match self
            .comments
            .get_mut(&id)
            .filter(|c| !c.deleted && key(&c.repo) == key(full_name))
        {
            Some(c) => {
                c.deleted = true;
                true
            }
            None => false,
        }
    }

    pub(crate) fn live_comments(&self, full_name: &str, number: u64) -> Vec<&CommentRec> {
        self.comments
            .values()
            .filter(|c| !c.deleted && c.number == number && key(&c.repo) == key(full_name))
            .collect()
    }

    // ---- app installations ----

    pub(crate) fn ensure_installation(&mut self, account: &str) -> InstallationRec {
        let k = key(account);
        if let Some(i) = self.installations.get(&k) {
            return i.clone();
        }
        let id = self.next_id("installation");
        let rec = InstallationRec {
            id,
            account: self
                .user(account)
                .map(|u| u.login.clone())
                .unwrap_or_else(|| account.to_string()),
            created_at: now() - chrono::Duration::days(7),
        };
        self.installations.insert(k, rec.clone());
        rec
    }

    pub(crate) fn installation_by_id(&self, id: u64) -> Option<&InstallationRec> {
        self.installations.values().find(|i| i.id == id)
    }

    pub(crate) fn mint_installation_token(
        &mut self,
        installation_id: u64,
        account: &str,
        ttl: Duration,
    ) -> (String, DateTime<Utc>) {
        let token = format!("ghs_{}", random_alnum(36));
        let expires = SystemTime::now() + ttl;
        let expires_at = DateTime::<Utc>::from(expires);
        let expires_at = Utc
            .timestamp_opt(expires_at.timestamp(), 0)
            .single()
            .unwrap_or(expires_at);
        self.inst_tokens.insert(
            token.clone(),
            InstToken {
                installation_id,
                account: account.to_string(),
                expires,
            },
        );
        (token, expires_at)
    }

    // ---- records ----

    pub(crate) fn begin_request(&mut self) -> (u64, Instant, SystemTime) {
        let seq = self.next_request_seq;
        self.next_request_seq += 1;
        (seq, Instant::now(), SystemTime::now())
    }

    pub(crate) fn record_request(&mut self, rec: RecordedRequest) {
        let pos = self.requests.partition_point(|r| r.seq < rec.seq);
        self.requests.insert(pos, rec);
    }

    /// Takes one use of the first fault matching the request whose turn it is, if any (see
    /// [`crate::Fault::every`]).
    pub(crate) fn take_fault(
        &mut self,
        method: &http::Method,
        path: &str,
    ) -> Option<crate::model::FaultKind> {
        let idx = self.faults.iter_mut().position(|f| {
            let matches = f.times > 0
                && f.method.as_ref().is_none_or(|m| m == method)
                && path.starts_with(&f.path_prefix);
            if matches {
                f.seen = f.seen.wrapping_add(1);
            }
            matches && f.seen % f.every.max(1) == 0
        })?;
        let fault = &mut self.faults[idx];
        fault.times -= 1;
        let kind = fault.kind.clone();
        if fault.times == 0 {
            self.faults.remove(idx);
        }
        Some(kind)
    }
}

pub(crate) fn split_full_name(full_name: &str) -> Result<(&str, &str), Error> {
    let mut parts = full_name.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(o), Some(n), None) if valid_name(o) && valid_name(n) => Ok((o, n)),
        _ => Err(Error::Invalid(format!(
            "{full_name:?} is not a repository full name (owner/name)"
        ))),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'[' | b']'))
}
