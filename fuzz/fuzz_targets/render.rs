//! Rendering a template: the input is a template's `resources` and, after the first NUL, the
//! pull request's title (chosen by whoever opens the PR). Rendering may fail, but never panic,
//! and what it renders is always a list of Kubernetes objects.
#![no_main]

use kube::core::DynamicObject;
use libfuzzer_sys::fuzz_target;
use prenv::model::{PreviewEnvironmentSpec, PreviewTemplateSpec};
use serde_json::json;

fuzz_target!(|input: &str| {
    let (resources, title) = input.split_once('\0').unwrap_or((input, "Fuzzed title"));
    // Built from JSON, as the API server hands them over, so fields added later get their
    // defaults.
    let Ok(template) = serde_json::from_value::<PreviewTemplateSpec>(json!({
        "repository": "acme/shop",
        "url": "https://pr-{{ pr.number }}.shop.preview.example.com",
        "resources": resources,
    })) else {
        panic!("template spec");
    };
    let Ok(pr) = serde_json::from_value::<PreviewEnvironmentSpec>(json!({
        "template": "shop",
        "repository": "acme/shop",
        "number": 42,
        "headSha": "0123456789abcdef0123456789abcdef01234567",
        "headRef": "feature/fuzz",
        "baseRef": "main",
        "author": "octocat",
        "title": title,
        "labels": ["preview"],
        "updatedAt": "2024-05-01T12:00:00Z",
    })) else {
        panic!("environment spec");
    };
    let Ok(rendered) = prenv::reconcile::render::render("shop", &template, &pr) else {
        return;
    };
    let ns = &rendered.namespace;
    assert!(
        (1..=63).contains(&ns.len())
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "namespace {ns:?}"
    );
    for object in &rendered.objects {
        let parsed: DynamicObject = match serde_json::from_value(object.clone()) {
            Ok(parsed) => parsed,
            Err(e) => panic!("rendered object does not parse ({e}): {object}"),
        };
        assert!(parsed.types.is_some(), "{object}");
        assert!(
            parsed.metadata.name.is_some_and(|n| !n.is_empty()),
            "{object}"
        );
    }
});
