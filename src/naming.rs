//! Names and labels: deterministic, valid Kubernetes names from free-form input, and the
//! labels that mark everything prenv owns.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Field manager for every server-side apply prenv makes.
pub const FIELD_MANAGER: &str = "prenv";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "prenv";
/// `<namespace>.<name>` of the owning environment (hash-shortened to fit a label value).
pub const ENVIRONMENT_LABEL: &str = "prenv.dev/environment";
/// The full `<namespace>/<name>` of the owning environment, never shortened.
pub const ENVIRONMENT_ANNOTATION: &str = "prenv.dev/environment";
/// On a `PreviewEnvironment`: its template's name (hash-shortened to fit).
pub const TEMPLATE_LABEL: &str = "prenv.dev/template";
/// On a `PreviewEnvironment`: its pull request number.
pub const PULL_REQUEST_LABEL: &str = "prenv.dev/pull-request";

const MAX_LABEL: usize = 63;
const MAX_OBJECT_NAME: usize = 253;
const HASH_LEN: usize = 8;

/// First `HASH_LEN` hex digits of the SHA-256 of `input`.
pub fn short_hash(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    hex::encode(digest)[..HASH_LEN].to_string()
}

/// `raw` as a valid RFC 1123 label (lowercase alphanumerics and `-`, at most 63 characters,
/// starting and ending alphanumeric). Deterministic; when the cleaned name is too long it is
/// cut and gets a hash of the whole input, so long names that share a prefix stay distinct.
pub fn dns_label(raw: &str) -> String {
    shorten(&clean(raw), raw, MAX_LABEL)
}

/// `raw` as a slug for URLs and host names: like [`dns_label`].
pub fn slug(raw: &str) -> String {
    dns_label(raw)
}

fn clean(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        // Nothing usable survived (e.g. all punctuation): still give a stable, distinct name.
        format!("x-{}", short_hash(raw))
    } else {
        trimmed.to_string()
    }
}

/// Cut `cleaned` to `max` characters, appending a hash of `original` when it had to be cut.
fn shorten(cleaned: &str, original: &str, max: usize) -> String {
    if cleaned.len() <= max {
        return cleaned.to_string();
    }
    let keep = max - HASH_LEN - 1;
    // `cleaned` is ASCII, so byte slicing is safe.
    let head = cleaned[..keep].trim_end_matches(['-', '.']);
    format!("{head}-{}", short_hash(original))
}

/// Value of the `prenv.dev/environment` label for the environment `namespace/name`.
pub fn environment_label_value(namespace: &str, name: &str) -> String {
    let full = format!("{namespace}.{name}");
    // Namespace and name are already valid DNS names, so only the length can be wrong.
    shorten(&full, &full, MAX_LABEL)
}

/// A label value naming a template (template names may be longer than a label value).
pub fn template_label_value(template: &str) -> String {
    shorten(template, template, MAX_LABEL)
}

/// Name of the `PreviewEnvironment` of pull request `number` for `template`.
pub fn environment_name(template: &str, number: u64) -> String {
    let suffix = format!("-{number}");
    if template.len() + suffix.len() <= MAX_OBJECT_NAME {
        return format!("{template}{suffix}");
    }
    let cut = shorten(template, template, MAX_OBJECT_NAME - suffix.len());
    format!("{cut}{suffix}")
}

/// The labels every object prenv creates for an environment carries.
pub fn owned_labels(env_namespace: &str, env_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (
            ENVIRONMENT_LABEL.to_string(),
            environment_label_value(env_namespace, env_name),
        ),
    ])
}

/// The annotations every object prenv creates for an environment carries.
pub fn owned_annotations(env_namespace: &str, env_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(
        ENVIRONMENT_ANNOTATION.to_string(),
        format!("{env_namespace}/{env_name}"),
    )])
}

/// Label selector matching the `PreviewEnvironment`s of one template (check `spec.template`
/// too: a long name's label value is shortened).
pub fn template_selector(template: &str) -> String {
    format!("{TEMPLATE_LABEL}={}", template_label_value(template))
}

/// Label selector matching every object of one environment.
pub fn environment_selector(env_namespace: &str, env_name: &str) -> String {
    format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{ENVIRONMENT_LABEL}={}",
        environment_label_value(env_namespace, env_name)
    )
}

/// The environment `(namespace, name)` an object belongs to, from its annotation.
pub fn owner_from_annotations(
    annotations: Option<&BTreeMap<String, String>>,
) -> Option<(String, String)> {
    let value = annotations?.get(ENVIRONMENT_ANNOTATION)?;
    let (ns, name) = value.split_once('/')?;
    Some((ns.to_string(), name.to_string()))
}

/// Whether `labels` mark an object as belonging to the environment `namespace/name`.
pub fn is_owned_by(
    labels: Option<&BTreeMap<String, String>>,
    env_namespace: &str,
    env_name: &str,
) -> bool {
    let Some(labels) = labels else { return false };
    labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
        && labels.get(ENVIRONMENT_LABEL) == Some(&environment_label_value(env_namespace, env_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn short_names_pass_through() {
        assert_eq!(dns_label("shop-pr-42"), "shop-pr-42");
    }

    #[test]
    fn uppercase_dots_underscores_become_dashes() {
        assert_eq!(dns_label("Shop.Web_App-PR-7"), "shop-web-app-pr-7");
        assert_eq!(dns_label("__a..b__"), "a-b");
    }

    #[test]
    fn unicode_is_replaced_and_result_valid() {
        let name = dns_label("Bücher-Übersicht-pr-3");
        assert_eq!(name, "b-cher-bersicht-pr-3");
        assert!(valid_label(&name));
        let only_symbols = dns_label("日本語");
        assert!(valid_label(&only_symbols), "{only_symbols}");
        assert_ne!(only_symbols, dns_label("中文"));
    }

    #[test]
    fn long_names_are_cut_with_hash() {
        let raw = format!(
            "{}-pr-12",
            "a-very-long-template-name-for-the-acme-storefront".repeat(3)
        );
        let name = dns_label(&raw);
        assert!(valid_label(&name), "{name}");
        assert_eq!(name.len(), 63);
        assert!(name.ends_with(&short_hash(&raw)));
        assert_eq!(name, dns_label(&raw), "deterministic");
    }

    #[test]
    fn long_names_sharing_a_prefix_do_not_collide() {
        let prefix = "x".repeat(80);
        let a = dns_label(&format!("{prefix}-pr-1"));
        let b = dns_label(&format!("{prefix}-pr-2"));
        assert_ne!(a, b);
        assert!(valid_label(&a) && valid_label(&b));
    }

    #[test]
    fn cut_never_ends_with_dash() {
        // Put a dash exactly where the cut falls.
        let raw = format!("{}-{}", "a".repeat(53), "b".repeat(30));
        let name = dns_label(&raw);
        assert!(valid_label(&name), "{name}");
    }

    #[test]
    fn environment_label_fits() {
        assert_eq!(
            environment_label_value("team-a", "shop-42"),
            "team-a.shop-42"
        );
        let long = environment_label_value(&"n".repeat(63), &"m".repeat(70));
        assert_eq!(long.len(), 63);
        assert_ne!(
            long,
            environment_label_value(&"n".repeat(63), &"m".repeat(71))
        );
    }

    #[test]
    fn environment_names() {
        assert_eq!(environment_name("shop", 42), "shop-42");
        let long = environment_name(&"t".repeat(253), 42);
        assert!(long.len() <= 253 && long.ends_with("-42"));
    }

    #[test]
    fn ownership_needs_both_labels() {
        let labels = owned_labels("ns", "env");
        assert!(is_owned_by(Some(&labels), "ns", "env"));
        assert!(!is_owned_by(Some(&labels), "ns", "other"));
        assert!(!is_owned_by(None, "ns", "env"));
        let ann = owned_annotations("ns", "env");
        assert_eq!(
            owner_from_annotations(Some(&ann)),
            Some(("ns".into(), "env".into()))
        );
    }
}
