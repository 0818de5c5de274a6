//! The preview URL check. The URL is rendered with pull-request values in it and then shown as
//! a link on the pull request and the status page, so only a plain http(s) link gets that far.

use super::RenderError;

/// Refuse `rendered` unless it is an `https://` or `http://` URL with a host and no
/// credentials, written without whitespace or control characters (a URL parser would drop
/// some of those silently, so what was checked would not be what is shown).
pub(super) fn check(rendered: &str) -> Result<(), RenderError> {
    let refuse = |reason: &str| {
        Err(RenderError::UnsafeUrl {
            url: rendered.to_string(),
            reason: reason.to_string(),
        })
    };
    if !(rendered.starts_with("https://") || rendered.starts_with("http://")) {
        return refuse("it does not start with https:// or http://");
    }
    if rendered
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return refuse("it contains whitespace or control characters");
    }
    let url = match url::Url::parse(rendered) {
        Ok(url) => url,
        Err(e) => return refuse(&format!("it is not a URL: {e}")),
    };
    if url.host_str().is_none_or(str::is_empty) {
        return refuse("it has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return refuse("it carries credentials (user@host)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_and_https_links_pass() {
        for url in [
            "https://pr-42.shop.example.com",
            "http://pr-42.shop.example.com:8080/path?q=1#top",
            "https://pr-42.example.com/feature)](x)|<b>",
        ] {
            assert_eq!(check(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn anything_else_is_refused_saying_why() {
        for (url, why) in [
            ("javascript:alert(1)", "https://"),
            ("data:text/html,<script>", "https://"),
            ("ftp://example.com", "https://"),
            ("HTTPS://example.com", "https://"),
            ("https:example.com", "https://"),
            ("//example.com", "https://"),
            ("https://", "not a URL"),
            ("https://exa mple.com", "whitespace"),
            (
                "https://x.example.com/a\n[click](javascript:alert(1))",
                "control",
            ),
            ("https://x.example.com/\t", "whitespace"),
            ("https://[::1", "not a URL"),
            ("https://github.com@evil.example.com", "credentials"),
        ] {
            let err = check(url).expect_err(url);
            assert!(err.to_string().contains(why), "{url}: {err}");
            assert_eq!(err.reason(), "UnsafeURL");
        }
    }
}
