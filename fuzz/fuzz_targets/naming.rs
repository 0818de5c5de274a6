//! Names from free-form input: `dns_label` always gives a valid RFC 1123 label, the same one
//! every time, and leaves a valid label as it is; the environment label value made from a
//! namespace and an environment name (both valid Kubernetes names, as they always are) is
//! always a valid label value, the same one every time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prenv::naming::{dns_label, environment_label_value, environment_name};

/// RFC 1123 label: 1-63 of `[a-z0-9-]`, starting and ending alphanumeric.
fn is_rfc1123_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Kubernetes label value (non-empty here): at most 63 of `[A-Za-z0-9._-]`, starting and
/// ending alphanumeric.
fn is_label_value(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A valid DNS-1123 subdomain (what a template's object name is) made from `raw`.
fn subdomain(raw: &str) -> String {
    let joined = raw.split('.').map(dns_label).collect::<Vec<_>>().join(".");
    let cut: String = joined.chars().take(253).collect();
    cut.trim_end_matches(['.', '-']).to_string()
}

fuzz_target!(|input: &str| {
    let label = dns_label(input);
    assert!(is_rfc1123_label(&label), "{input:?} -> {label:?}");
    assert_eq!(label, dns_label(input), "not deterministic for {input:?}");
    assert_eq!(dns_label(&label), label, "a valid label was changed");

    let mid = (0..=input.len() / 2)
        .rev()
        .find(|i| input.is_char_boundary(*i))
        .unwrap_or(0);
    let (a, b) = input.split_at(mid);
    let namespace = dns_label(a);
    let name = environment_name(&subdomain(b), input.len() as u64);
    assert!(name.len() <= 253, "{name:?}");
    let value = environment_label_value(&namespace, &name);
    assert!(
        is_label_value(&value),
        "{namespace:?} / {name:?} -> {value:?}"
    );
    assert_eq!(value, environment_label_value(&namespace, &name));
});
