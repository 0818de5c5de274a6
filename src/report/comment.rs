//! The PR comment: a pure function of the environment's state, with a hidden marker that
//! names the template and pull request so prenv finds its own comment again.

use chrono::{DateTime, Utc};

/// What the comment reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    Deploying,
    Ready,
    Failed {
        reason: String,
    },
    /// Nothing is deployed and why (e.g. waiting for approval).
    Waiting {
        reason: String,
    },
    /// The preview was idle past its TTL and was removed until the next push.
    Expired {
        reason: String,
    },
    /// The template's `maxEnvironments` slots are all taken.
    Queued {
        reason: String,
    },
    TornDown,
}

/// Everything the comment shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentFacts {
    /// `<namespace>/<name>` of the template.
    pub template: String,
    pub number: u64,
    pub stage: Stage,
    pub head_sha: String,
    pub url: Option<String>,
    pub namespace: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Something else the author should know (e.g. newer commits awaiting approval).
    pub note: Option<String>,
    /// For a fork's preview: the head an approval covers and who gave it.
    pub approval: Option<(String, String)>,
}

/// The hidden marker of template `template` (`<namespace>/<name>`) on pull request `number`.
pub fn marker(template: &str, number: u64) -> String {
    format!("<!-- prenv:environment template={template} pr={number} -->")
}

/// The comment's Markdown.
pub fn render(f: &CommentFacts) -> String {
    let name = f.template.rsplit('/').next().unwrap_or(&f.template);
    let short: String = f.head_sha.chars().take(7).collect();
    let mut out = marker(&f.template, f.number);
    out.push('\n');
    let (icon, headline) = match &f.stage {
        Stage::Deploying => ("🚧", format!("Deploying `{short}`…")),
        Stage::Ready => ("✅", format!("Ready at `{short}`")),
        Stage::Failed { .. } => ("❌", format!("Deploying `{short}` failed")),
        Stage::Waiting { .. } => ("⏸️", "Not deployed".to_string()),
        Stage::Expired { .. } => ("💤", "Expired".to_string()),
        Stage::Queued { .. } => ("⏳", "Queued".to_string()),
        Stage::TornDown => ("🧹", "Torn down".to_string()),
    };
    out.push_str(&format!("### {icon} Preview `{name}`: {headline}\n\n"));
    let mut rows = Vec::new();
    if !matches!(
        f.stage,
        Stage::TornDown | Stage::Waiting { .. } | Stage::Expired { .. } | Stage::Queued { .. }
    ) {
        if let Some(url) = &f.url {
            rows.push(("Preview", format!("<{}>", autolink_safe(url))));
        }
        rows.push(("Commit", format!("`{short}`")));
        if let Some((sha, by)) = &f.approval {
            let approved: String = sha.chars().take(7).collect();
            rows.push((
                "Approved",
                format!("at `{approved}` by @{}", escape_markdown(by)),
            ));
        }
        if let Some(ns) = &f.namespace {
            rows.push(("Namespace", format!("`{ns}`")));
        }
        if let Some(at) = f.expires_at {
            rows.push(("Expires", at.format("%Y-%m-%d %H:%M UTC").to_string()));
        }
    }
    if !rows.is_empty() {
        out.push_str("| | |\n|---|---|\n");
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out.push('\n');
    }
    if let Some(note) = &f.note {
        out.push_str(&format!("⏸️ {}\n\n", escape_markdown(note)));
    }
    match &f.stage {
        Stage::Failed { reason } => {
            out.push_str("The preview could not be deployed:\n\n```\n");
            out.push_str(&fence_safe(reason));
            out.push_str("\n```\n");
        }
        Stage::Waiting { reason } | Stage::Expired { reason } | Stage::Queued { reason } => {
            out.push_str(&escape_markdown(reason));
            out.push('\n');
        }
        Stage::TornDown => {
            out.push_str("The preview environment was removed.\n");
        }
        Stage::Deploying | Stage::Ready => {}
    }
    if matches!(
        f.stage,
        Stage::Ready | Stage::Failed { .. } | Stage::Expired { .. }
    ) {
        // The one place a PR author learns the command exists.
        out.push_str("\n<sub>Comment `/preview redeploy` to deploy this head again.</sub>\n");
    }
    out
}

/// Text inside a code fence cannot close it.
fn fence_safe(text: &str) -> String {
    text.replace("```", "ʼʼʼ")
}

/// A URL (with pull-request values in it) that can neither end the `<...>` autolink it is
/// written in nor the table cell around it: every byte outside RFC 3986's URL characters
/// (`<`, `>`, `|`, `\`, spaces, non-ASCII, ...) is percent-encoded.
fn autolink_safe(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for b in url.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Text that came from elsewhere (e.g. a login) shown as plain text.
fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\`*_{}[]<>()#+!|~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn facts(stage: Stage) -> CommentFacts {
        CommentFacts {
            template: "previews/shop".into(),
            number: 42,
            stage,
            head_sha: "0123456789abcdef0123456789abcdef01234567".into(),
            url: Some("https://pr-42.shop.example.com".into()),
            namespace: Some("shop-pr-42".into()),
            expires_at: Some(Utc.with_ymd_and_hms(2026, 12, 1, 9, 30, 0).unwrap()),
            note: None,
            approval: None,
        }
    }

    #[test]
    fn ready_comment_has_marker_url_sha_namespace_expiry() {
        let text = render(&facts(Stage::Ready));
        assert!(text.starts_with("<!-- prenv:environment template=previews/shop pr=42 -->\n"));
        assert!(text.contains("Ready at `0123456`"));
        assert!(text.contains("<https://pr-42.shop.example.com>"));
        assert!(text.contains("`shop-pr-42`"));
        assert!(text.contains("2026-12-01 09:30 UTC"));
    }

    #[test]
    fn failure_reason_cannot_break_out_of_its_fence() {
        let text = render(&facts(Stage::Failed {
            reason: "bad ``` [click](http://evil)".into(),
        }));
        assert!(text.contains("failed"));
        assert_eq!(text.matches("```").count(), 2, "{text}");
    }

    #[test]
    fn a_url_cannot_break_out_of_its_link_or_row() {
        let mut f = facts(Stage::Ready);
        f.url = Some("https://pr-42.example.com/a>b|c\n<img src=x>` é".into());
        let text = render(&f);
        let row = text
            .lines()
            .find(|l| l.starts_with("| Preview |"))
            .expect("a preview row");
        assert_eq!(
            row,
            "| Preview | <https://pr-42.example.com/a%3Eb%7Cc%0A%3Cimg%20src=x%3E%60%20%C3%A9> |"
        );
    }

    #[test]
    fn torn_down_and_waiting() {
        let text = render(&facts(Stage::TornDown));
        assert!(text.contains("Torn down") && !text.contains("pr-42.shop"));
        let text = render(&facts(Stage::Waiting {
            reason: "needs the label [x](y)".into(),
        }));
        assert!(text.contains(r"needs the label \[x\]\(y\)"), "{text}");
    }

    #[test]
    fn expired_and_queued_say_why_without_a_link() {
        for (stage, headline) in [
            (
                Stage::Expired {
                    reason: "expired: idle for 72h".into(),
                },
                "Expired",
            ),
            (
                Stage::Queued {
                    reason: "queued: held by #1".into(),
                },
                "Queued",
            ),
        ] {
            let text = render(&facts(stage));
            assert!(text.contains(headline), "{text}");
            assert!(!text.contains("pr-42.shop"), "a dead link: {text}");
        }
        let text = render(&facts(Stage::Queued {
            reason: "queued: held by #1".into(),
        }));
        assert!(text.contains(r"held by \#1"), "{text}");
    }

    #[test]
    fn the_redeploy_command_is_offered_where_it_helps() {
        let reason = || "x".to_string();
        for (stage, offered) in [
            (Stage::Ready, true),
            (Stage::Failed { reason: reason() }, true),
            (Stage::Expired { reason: reason() }, true),
            (Stage::Deploying, false),
            (Stage::Waiting { reason: reason() }, false),
            (Stage::Queued { reason: reason() }, false),
            (Stage::TornDown, false),
        ] {
            let text = render(&facts(stage.clone()));
            assert_eq!(
                text.contains("`/preview redeploy`"),
                offered,
                "{stage:?}: {text}"
            );
        }
    }

    #[test]
    fn same_state_same_text() {
        assert_eq!(render(&facts(Stage::Ready)), render(&facts(Stage::Ready)));
        assert_ne!(
            render(&facts(Stage::Ready)),
            render(&facts(Stage::Deploying))
        );
    }
}
