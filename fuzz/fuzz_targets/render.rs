//! Rendering a template. Two kinds of input:
//!
//! - A template's `resources` and, after the first NUL, the pull request's title (chosen by
//!   whoever opens the PR). Rendering may fail, but never panic, and what it renders is always
//!   a list of Kubernetes objects.
//! - `\x01`, a character choosing a context, then the pull request's strings separated by NULs
//!   (title, head branch, base branch, author, labels...). A fixed template writes every one of
//!   them in that context (block, flow mapping, flow list, the author's own quotes, a block
//!   scalar, a key, `| tojson`). The render is either refused, or its structure is the one the
//!   same template renders when every string is a harmless `x`: the same objects, keys and
//!   list lengths; only scalars may differ. With `| tojson` it always renders, to exactly the
//!   value.
#![no_main]

use kube::core::DynamicObject;
use libfuzzer_sys::fuzz_target;
use prenv::model::{PreviewEnvironmentSpec, PreviewTemplateSpec};
use prenv::reconcile::render::{Rendered, render};
use serde_json::{Value, json};

fuzz_target!(|input: &str| {
    match input.strip_prefix('\u{1}') {
        Some(structured) => contexts(structured),
        None => free(input),
    }
});

fn template(resources: &str) -> PreviewTemplateSpec {
    // Built from JSON, as the API server hands them over, so fields added later get their
    // defaults.
    let Ok(template) = serde_json::from_value::<PreviewTemplateSpec>(json!({
        "repository": "acme/shop",
        "url": "https://pr-{{ pr.number }}.shop.preview.example.com",
        "resources": resources,
    })) else {
        panic!("template spec");
    };
    template
}

fn pull_request(
    title: &str,
    head: &str,
    base: &str,
    author: &str,
    labels: &[&str],
) -> PreviewEnvironmentSpec {
    let Ok(pr) = serde_json::from_value::<PreviewEnvironmentSpec>(json!({
        "template": "shop",
        "repository": "acme/shop",
        "number": 42,
        "headSha": "0123456789abcdef0123456789abcdef01234567",
        "headRef": head,
        "baseRef": base,
        "author": author,
        "title": title,
        "labels": labels,
        "updatedAt": "2024-05-01T12:00:00Z",
    })) else {
        panic!("environment spec");
    };
    pr
}

fn free(input: &str) {
    let (resources, title) = input.split_once('\0').unwrap_or((input, "Fuzzed title"));
    let pr = pull_request(title, "feature/fuzz", "main", "octocat", &["preview"]);
    let Ok(rendered) = render("shop", &template(resources), &pr) else {
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
}

/// How a template may write a value (`V`), at indentation 0 inside `data`.
const CONTEXTS: &[&str] = &[
    "V",
    "{a: V, b: w}",
    "[--ref=V, w]",
    "'V'",
    "\"V\"",
    "{a: 'V', b: 'w'}",
    "[\"V\", \"w\"]",
    "|\n  echo V\n  done",
    "pre V post # V",
    "{ V: w}",
    "\n  V: w",
    "[a, {b: V}]",
];
/// Contexts of `| tojson` (`J` is the expression): always one scalar, exactly the value.
const JSON_CONTEXTS: &[&str] = &[
    "{{ J | tojson }}",
    "{a: {{ J | tojson }}, b: w}",
    "[{{ (\"--ref=\" ~ J) | tojson }}, w]",
];
/// Every pull request string a template can name.
const VARIABLES: &[&str] = &[
    "pr.title",
    "pr.head_ref",
    "pr.head_ref_slug",
    "pr.base_ref",
    "pr.author",
    "pr.labels[0]",
    "pr.labels | join(',')",
];

fn contexts(input: &str) {
    let mut chars = input.chars();
    let choice = chars.next().map_or(0, |c| c as usize);
    let mut fields: Vec<&str> = chars.as_str().split('\0').collect();
    fields.resize(fields.len().max(5), "");
    let (title, head, base, author) = (fields[0], fields[1], fields[2], fields[3]);
    let labels = &fields[4..];
    let pr = pull_request(title, head, base, author, labels);
    // One label: `join(',')` of more would hold a `,`, which is not harmless in flow context.
    let harmless = pull_request("x", "x", "x", "x", &["x"]);

    let all = CONTEXTS.len() + JSON_CONTEXTS.len();
    let index = choice % all;
    let mut data = String::new();
    for (n, variable) in VARIABLES.iter().enumerate() {
        let value = if index < CONTEXTS.len() {
            CONTEXTS[index].replace('V', &format!("{{{{ {variable} }}}}"))
        } else {
            JSON_CONTEXTS[index - CONTEXTS.len()].replace('J', &format!("({variable})"))
        };
        data.push_str(&format!("  v{n}: {}\n", value.replace('\n', "\n    ")));
    }
    let resources = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata:\n{data}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: d}}\ndata: {{after: all}}\n"
    );
    let t = template(&resources);
    let reference = match render("shop", &t, &harmless) {
        Ok(r) => r,
        Err(e) => panic!("the harmless render fails ({e}):\n{resources}"),
    };
    let rendered = render("shop", &t, &pr);

    if index >= CONTEXTS.len() {
        // `| tojson` keeps any value one scalar, exactly the value, wherever it stands alone.
        let rendered = match rendered {
            Ok(r) => r,
            Err(e) => panic!("| tojson was refused ({e}):\n{resources}\n{pr:?}"),
        };
        let slug = prenv::naming::slug(head);
        let joined = labels.join(",");
        let values = [title, head, &slug, base, author, labels[0], &joined];
        for (n, value) in values.iter().enumerate() {
            let written = &rendered.objects[0]["data"][format!("v{n}")];
            let (written, expect) = match index - CONTEXTS.len() {
                0 => (written, value.to_string()),
                1 => (&written["a"], value.to_string()),
                _ => (&written[0], format!("--ref={value}")),
            };
            assert_eq!(written, &Value::String(expect), "v{n} in\n{resources}");
        }
        same_structure(&rendered, &reference, &resources, false);
        return;
    }
    let keys_from_values = CONTEXTS[index].contains("V:");
    // Refused (an unsafe value, or one YAML cannot take where it stands, e.g. a `null` key or
    // a number too large), or the structure is the harmless one.
    if let Ok(rendered) = rendered {
        same_structure(&rendered, &reference, &resources, keys_from_values);
    }
}

fn same_structure(rendered: &Rendered, reference: &Rendered, resources: &str, keyed: bool) {
    let shape = |r: &Rendered| {
        Value::Array(
            r.objects
                .iter()
                .map(|o| structure(o, keyed, false))
                .collect(),
        )
    };
    assert_eq!(
        shape(rendered),
        shape(reference),
        "a value changed the structure of\n{resources}\ninto {:#?}",
        rendered.objects
    );
}

/// Keys and list lengths of `value`, every scalar the same. With `keyed`, the mappings at
/// `data.vN` have keys written from values: their number counts, their names do not.
fn structure(value: &Value, keyed: bool, here: bool) -> Value {
    match value {
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| structure(v, keyed, false)).collect())
        }
        Value::Object(map) if here => {
            let mut shapes: Vec<Value> = map.values().map(|v| structure(v, keyed, false)).collect();
            shapes.sort_by_key(Value::to_string);
            json!({"keys from values": shapes})
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let here = keyed && k.starts_with('v') && k[1..].parse::<usize>().is_ok();
                    (k.clone(), structure(v, keyed, here))
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}
