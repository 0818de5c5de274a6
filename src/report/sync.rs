//! The GitHub side of feedback: bring the PR comment, the deployment and its statuses, and
//! the commit status to what one environment's state calls for, each write only when it
//! changes something.

use super::comment::{self, Stage};
use super::{Desired, Known};
use crate::github::{GitHub, GitHubError};
use crate::naming;
use http::Method;
use serde_json::{Value, json};

/// Bring GitHub to `desired`, updating `known` as each write succeeds (so a failure half-way
/// keeps what was done).
pub(super) async fn sync(
    github: &GitHub,
    desired: &Desired,
    known: &mut Known,
) -> Result<(), GitHubError> {
    sync_comment(github, desired, known).await?;
    sync_deployment(github, desired, known).await?;
    sync_commit_status(github, desired, known).await
}

async fn sync_comment(
    github: &GitHub,
    desired: &Desired,
    known: &mut Known,
) -> Result<(), GitHubError> {
    let text = comment::render(&desired.facts);
    let digest = naming::short_hash(&text);
    if known.comment_id.is_some() && known.feedback.comment_digest.as_deref() == Some(&digest) {
        return Ok(());
    }
    let repo = &desired.repository;
    let body = json!({"body": text});
    if let Some(id) = known.comment_id {
        let path = format!("/repos/{repo}/issues/comments/{id}");
        match github
            .request(repo, Method::PATCH, &path, Some(&body))
            .await
        {
            Ok(_) => {
                known.feedback.comment_digest = Some(digest);
                return Ok(());
            }
            // Someone deleted it: write it again (once; then it is known again).
            Err(e) if e.status() == Some(404) => known.comment_id = None,
            Err(e) => return Err(e),
        }
    }
    let marker = comment::marker(&desired.facts.template, desired.facts.number);
    let id = match find_comment(github, repo, desired.facts.number, &marker).await? {
        Some((id, existing)) => {
            if existing != text {
                let path = format!("/repos/{repo}/issues/comments/{id}");
                github
                    .request(repo, Method::PATCH, &path, Some(&body))
                    .await?;
            }
            id
        }
        None => {
            let path = format!("/repos/{repo}/issues/{}/comments", desired.facts.number);
            create(github, repo, path, &body).await?
        }
    };
    known.comment_id = Some(id);
    known.feedback.comment_digest = Some(digest);
    Ok(())
}

/// POST `body` to `path` and return the id of what GitHub created.
async fn create(
    github: &GitHub,
    repo: &str,
    path: String,
    body: &Value,
) -> Result<u64, GitHubError> {
    let created = github
        .request(repo, Method::POST, &path, Some(body))
        .await?;
    created
        .body
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| GitHubError::Unavailable {
            method: Method::POST,
            path,
            message: "the answer has no id".into(),
        })
}

/// prenv's own comment carrying `marker` on the pull request: only comments written by prenv's
/// identity count, since anyone can paste a marker.
async fn find_comment(
    github: &GitHub,
    repo: &str,
    number: u64,
    marker: &str,
) -> Result<Option<(u64, String)>, GitHubError> {
    let identity = github.identity().await?;
    for page in 1..=50 {
        let path = format!("/repos/{repo}/issues/{number}/comments?per_page=100&page={page}");
        let answer = github.request(repo, Method::GET, &path, None).await?;
        let comments = answer.body.as_array().cloned().unwrap_or_default();
        for c in &comments {
            let author = c.pointer("/user/login").and_then(Value::as_str);
            let body = c.get("body").and_then(Value::as_str).unwrap_or_default();
            if author.is_some_and(|a| a.eq_ignore_ascii_case(&identity))
                && body.starts_with(marker)
                && let Some(id) = c.get("id").and_then(Value::as_u64)
            {
                return Ok(Some((id, body.to_string())));
            }
        }
        if comments.len() < 100 {
            break;
        }
    }
    Ok(None)
}

/// GitHub deployment environment name of the preview (`<namespace>/<template>-pr-<n>`).
pub(super) fn deployment_environment(desired: &Desired) -> String {
    format!("{}-pr-{}", desired.facts.template, desired.facts.number)
}

async fn sync_deployment(
    github: &GitHub,
    desired: &Desired,
    known: &mut Known,
) -> Result<(), GitHubError> {
    let repo = &desired.repository;
    let head = &desired.facts.head_sha;
    let (state, description) = match &desired.facts.stage {
        Stage::Deploying => ("in_progress", "Deploying the preview".to_string()),
        Stage::Ready => ("success", "Preview ready".to_string()),
        Stage::Failed { reason } => ("failure", truncate(reason, 140)),
        Stage::TornDown | Stage::Expired { .. } | Stage::Queued { .. } => {
            ("inactive", "Preview removed".to_string())
        }
        Stage::Waiting { .. } => return Ok(()),
    };
    if state == "inactive" {
        if let Some(id) = known.deployment_id
            && known.feedback.deployment_state.as_deref() != Some("inactive")
        {
            post_deployment_status(github, repo, id, "inactive", &description, None).await?;
            known.feedback.deployment_state = Some("inactive".into());
        }
        return Ok(());
    }
    if known.feedback.deployment_sha.as_ref() != Some(head) || known.deployment_id.is_none() {
        // The previous head's deployment goes inactive (GitHub does not do this for
        // transient environments).
        if let Some(old) = known.deployment_id
            && known.feedback.deployment_state.as_deref() != Some("inactive")
        {
            post_deployment_status(
                github,
                repo,
                old,
                "inactive",
                "Superseded by a newer commit",
                None,
            )
            .await?;
        }
        let environment = deployment_environment(desired);
        let id = match find_deployment(github, repo, &environment, head).await? {
            Some(id) => id,
            None => {
                let path = format!("/repos/{repo}/deployments");
                let body = json!({
                    "ref": head,
                    "environment": environment,
                    "description": format!("Preview of pull request #{}", desired.facts.number),
                    "transient_environment": true,
                    "production_environment": false,
                    "auto_merge": false,
                    "required_contexts": [],
                    "payload": {"prenv": {"environment": desired.key}},
                });
                create(github, repo, path, &body).await?
            }
        };
        known.deployment_id = Some(id);
        known.feedback.deployment_sha = Some(head.clone());
        known.feedback.deployment_state = None;
    }
    if known.feedback.deployment_state.as_deref() != Some(state)
        && let Some(id) = known.deployment_id
    {
        let url = (state == "success")
            .then_some(desired.facts.url.as_deref())
            .flatten();
        post_deployment_status(github, repo, id, state, &description, url).await?;
        known.feedback.deployment_state = Some(state.to_string());
    }
    Ok(())
}

/// The deployment prenv already created for `environment` at `sha` (after a restart between
/// creating it and recording it).
async fn find_deployment(
    github: &GitHub,
    repo: &str,
    environment: &str,
    sha: &str,
) -> Result<Option<u64>, GitHubError> {
    let path = format!(
        "/repos/{repo}/deployments?sha={sha}&environment={}&per_page=100",
        urlencode(environment)
    );
    let answer = github.request(repo, Method::GET, &path, None).await?;
    let identity = github.identity().await?;
    Ok(answer.body.as_array().and_then(|list| {
        list.iter()
            .filter(|d| {
                d.pointer("/creator/login")
                    .and_then(Value::as_str)
                    .is_some_and(|l| l.eq_ignore_ascii_case(&identity))
            })
            .find_map(|d| d.get("id").and_then(Value::as_u64))
    }))
}

async fn post_deployment_status(
    github: &GitHub,
    repo: &str,
    id: u64,
    state: &str,
    description: &str,
    environment_url: Option<&str>,
) -> Result<(), GitHubError> {
    let path = format!("/repos/{repo}/deployments/{id}/statuses");
    let mut body = json!({"state": state, "description": description, "auto_inactive": false});
    if let Some(url) = environment_url {
        body["environment_url"] = json!(url);
    }
    match github.request(repo, Method::POST, &path, Some(&body)).await {
        Ok(_) => Ok(()),
        // The deployment was deleted on GitHub: nothing left to mark.
        Err(e) if e.status() == Some(404) && state == "inactive" => Ok(()),
        Err(e) => Err(e),
    }
}

async fn sync_commit_status(
    github: &GitHub,
    desired: &Desired,
    known: &mut Known,
) -> Result<(), GitHubError> {
    let head = &desired.facts.head_sha;
    let (state, description, target) = match &desired.facts.stage {
        Stage::Deploying => ("pending", "Deploying the preview".to_string(), None),
        Stage::Ready => (
            "success",
            "Preview ready".to_string(),
            desired.facts.url.clone(),
        ),
        Stage::Failed { reason } => ("failure", truncate(reason, 140), None),
        Stage::TornDown | Stage::Waiting { .. } | Stage::Expired { .. } | Stage::Queued { .. } => {
            return Ok(());
        }
    };
    let key = format!("{head}:{state}");
    if known.feedback.commit_status.as_deref() == Some(&key) {
        return Ok(());
    }
    let repo = &desired.repository;
    let mut body = json!({
        "state": state,
        "description": description,
        // The template's namespace too: two teams' templates of one name stay apart.
        "context": format!("prenv/{}", desired.facts.template),
    });
    if let Some(url) = target {
        body["target_url"] = json!(url);
    }
    let path = format!("/repos/{repo}/statuses/{head}");
    github
        .request(repo, Method::POST, &path, Some(&body))
        .await?;
    known.feedback.commit_status = Some(key);
    Ok(())
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

pub(super) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
