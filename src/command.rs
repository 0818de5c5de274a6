//! Slash commands in pull request comments. `/preview redeploy` redeploys the PR's previews at
//! the head they already run: an expired one comes back, its workloads restart and its TTL
//! clock starts again. The command is written as the annotation [`REDEPLOY_ANNOTATION`] on
//! each environment (which `kubectl annotate` can do just as well); the controller acts on it.

use octocrab::models::webhook_events::payload::IssueCommentWebhookEventAction;
use octocrab::models::webhook_events::{WebhookEvent, WebhookEventPayload};

/// Annotation on a `PreviewEnvironment` asking for a redeploy; a new value asks again. prenv
/// also stamps it on the pod templates of the workloads it applies, so they roll.
pub const REDEPLOY_ANNOTATION: &str = "prenv.dev/redeploy";

/// The word that starts a command line.
const PREFIX: &str = "/preview";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Redeploy,
    /// A `/preview` line prenv does not understand (the word after it).
    Unknown(String),
}

/// The command in a comment: its first line that starts with `/preview`, if any.
pub fn parse(body: &str) -> Option<Command> {
    body.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next() != Some(PREFIX) {
            return None;
        }
        Some(match words.next() {
            Some("redeploy") => Command::Redeploy,
            other => Command::Unknown(other.unwrap_or_default().to_string()),
        })
    })
}

/// A command given in a comment on a pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentCommand {
    pub command: Command,
    /// `owner/name`.
    pub repository: String,
    pub number: u64,
    pub comment_id: u64,
    /// Who wrote the comment.
    pub login: String,
    /// Their GitHub author association with the repository (`MEMBER`, `NONE`, ...).
    pub association: String,
}

impl CommentCommand {
    /// The value of [`REDEPLOY_ANNOTATION`] this command writes: unique per comment.
    pub fn request(&self) -> String {
        format!("comment {} by {}", self.comment_id, self.login)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("not an issue_comment delivery: {0}")]
    Parse(String),
    #[error("issue_comment delivery without {0}")]
    Missing(&'static str),
}

/// Why an `issue_comment` delivery is not a command for prenv, or the command it carries.
pub enum Parsed {
    Command(CommentCommand),
    Ignored(&'static str),
}

/// Read an `issue_comment` delivery (already authenticated).
pub fn from_delivery(body: &[u8]) -> Result<Parsed, CommandError> {
    let event = WebhookEvent::try_from_header_and_body("issue_comment", body)
        .map_err(|e| CommandError::Parse(e.to_string()))?;
    let WebhookEventPayload::IssueComment(payload) = event.specific else {
        return Err(CommandError::Parse("not an issue_comment payload".into()));
    };
    if payload.action != IssueCommentWebhookEventAction::Created {
        // An edit could replay an old command: only new comments count.
        return Ok(Parsed::Ignored("only new comments carry commands"));
    }
    if payload.issue.pull_request.is_none() {
        return Ok(Parsed::Ignored("a comment on an issue, not a pull request"));
    }
    // Bots (prenv among them) do not give commands, whatever their text quotes.
    if payload.comment.user.r#type.eq_ignore_ascii_case("Bot") {
        return Ok(Parsed::Ignored("a comment by a bot"));
    }
    let Some(command) = payload.comment.body.as_deref().and_then(parse) else {
        return Ok(Parsed::Ignored("no /preview command"));
    };
    let repository = event
        .repository
        .and_then(|r| r.full_name)
        .ok_or(CommandError::Missing("repository.full_name"))?;
    let association = payload
        .comment
        .author_association
        .as_ref()
        .and_then(|a| serde_json::to_value(a).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    Ok(Parsed::Command(CommentCommand {
        command,
        repository,
        number: payload.issue.number,
        comment_id: payload.comment.id.into_inner(),
        login: payload.comment.user.login,
        association,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_found_on_their_own_line() {
        assert_eq!(parse("/preview redeploy"), Some(Command::Redeploy));
        assert_eq!(
            parse("Looks stale.\n\n  /preview   redeploy please\n"),
            Some(Command::Redeploy)
        );
        assert_eq!(
            parse("/preview destroy"),
            Some(Command::Unknown("destroy".into()))
        );
        assert_eq!(parse("/preview"), Some(Command::Unknown(String::new())));
        assert_eq!(parse("please /preview redeploy"), None);
        assert_eq!(parse("/previews redeploy"), None);
        assert_eq!(parse(""), None);
    }
}
