//! A `pull_request` delivery body, as octocrab reads it and prenv turns it into the facts of
//! an environment: neither may panic, whatever the (signed, so trusted-sender but possibly
//! surprising) body holds; a refused body gets an explanation, which may not panic either.
//! The same bytes read as an `issue_comment` delivery (slash commands) may not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use octocrab::models::webhook_events::{WebhookEvent, WebhookEventPayload};

fuzz_target!(|data: &[u8]| {
    let _ = prenv::command::from_delivery(data);
    match WebhookEvent::try_from_header_and_body("pull_request", data) {
        Ok(event) => {
            let WebhookEventPayload::PullRequest(payload) = event.specific else {
                return;
            };
            let pr = &payload.pull_request;
            if let Ok(state) = prenv::decide::pull_request_state(pr) {
                assert_eq!(state.facts.number, pr.number);
                assert_eq!(state.facts.head_sha, pr.head.sha);
                // A deleted head repository can only have been a fork.
                if pr.head.repo.is_none() {
                    assert!(state.facts.fork);
                }
            }
        }
        Err(e) => {
            let reason = prenv::receive::checks::explain(data, &e);
            assert!(!reason.is_empty());
        }
    }
});
