//! Render: a template and a pull request's facts become the preview namespace name, the URL
//! and the list of objects to apply. Pure: no cluster, no network.

use crate::model::{PreviewEnvironmentSpec, PreviewTemplateSpec};
use crate::naming;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use minijinja::value::Kwargs;
use minijinja::{Environment, Error, Output, State, UndefinedBehavior, Value};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use std::collections::BTreeSet;

mod preview_url;
mod shape;

/// Upper bound on template evaluation work, so a runaway loop in a template fails instead of
/// hanging the controller.
const RENDER_FUEL: u64 = 2_000_000;
/// Upper bound on objects one environment may render.
const MAX_OBJECTS: usize = 500;

/// Kinds known to be cluster-scoped; the controller also asks discovery for kinds it does not
/// know, this list lets `prenv render` refuse them without a cluster.
const CLUSTER_SCOPED_KINDS: &[&str] = &[
    "APIService",
    "CertificateSigningRequest",
    "ClusterIssuer",
    "ClusterRole",
    "ClusterRoleBinding",
    "CSIDriver",
    "CSINode",
    "CustomResourceDefinition",
    "FlowSchema",
    "IngressClass",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PodSecurityPolicy",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "RuntimeClass",
    "StorageClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RenderError {
    #[error("namespace template: {0}")]
    Namespace(String),
    #[error("url template: {0}")]
    Url(String),
    /// The rendered URL is not one that may be shown as a link (see `preview_url`).
    #[error("url {url:?} is refused: {reason}")]
    UnsafeUrl { url: String, reason: String },
    #[error("resources template: {0}")]
    Resources(String),
    #[error("resources YAML, document {document}: {reason}")]
    Yaml { document: usize, reason: String },
    #[error("resources, document {document}: {reason}")]
    Object { document: usize, reason: String },
    #[error("{kind} {name}: {reason}")]
    Rejected {
        kind: String,
        name: String,
        reason: String,
    },
    #[error("resources render {count} objects, more than the limit of {MAX_OBJECTS}")]
    TooMany { count: usize },
    /// A value written into the template changed the rendered YAML's structure.
    #[error("resources template{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    UnsafeValue {
        line: Option<usize>,
        message: String,
    },
}

impl RenderError {
    /// Condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            RenderError::Namespace(_) | RenderError::Url(_) | RenderError::Resources(_) => {
                "TemplateError"
            }
            RenderError::Yaml { .. } => "InvalidYAML",
            RenderError::Object { .. } | RenderError::TooMany { .. } => "InvalidObject",
            RenderError::Rejected { .. } => "ObjectRejected",
            RenderError::UnsafeValue { .. } => "UnsafeValue",
            RenderError::UnsafeUrl { .. } => "UnsafeURL",
        }
    }
}

/// What one pull request renders to.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub namespace: String,
    pub url: Option<String>,
    /// Objects as rendered (not yet labelled or namespaced).
    pub objects: Vec<Json>,
}

/// Render `template` (named `template_name`) for the pull request `pr`.
pub fn render(
    template_name: &str,
    template: &PreviewTemplateSpec,
    pr: &PreviewEnvironmentSpec,
) -> Result<Rendered, RenderError> {
    let env = environment();
    let mut ctx = base_context(template_name, pr);

    let raw_namespace = env
        .render_named_str("namespace", &template.namespace, context(&ctx))
        .map_err(|e| RenderError::Namespace(describe(&e)))?;
    let namespace = naming::dns_label(raw_namespace.trim());
    ctx.insert("namespace".into(), Json::String(namespace.clone()));

    let url = match &template.url {
        Some(src) => {
            let url = env
                .render_named_str("url", src, context(&ctx))
                .map_err(|e| RenderError::Url(describe(&e)))?;
            let url = url.trim();
            if url.is_empty() {
                None
            } else {
                preview_url::check(url)?;
                Some(url.to_string())
            }
        }
        None => None,
    };
    ctx.insert("url".into(), url.clone().map_or(Json::Null, Json::String));

    let text = env
        .render_named_str("resources", &template.resources, context(&ctx))
        .map_err(|e| RenderError::Resources(describe(&e)))?;
    // Whatever the context a value was written in, it must not have changed the structure.
    shape::check(&template.resources, &ctx, &text)?;
    let objects = parse_objects(&text)?;
    Ok(Rendered {
        namespace,
        url,
        objects,
    })
}

/// The variables a template sees (DESIGN "Template variables"), without `namespace` and `url`,
/// which are added as they become known.
fn base_context(template_name: &str, pr: &PreviewEnvironmentSpec) -> Map<String, Json> {
    let (owner, name) = pr
        .repository
        .split_once('/')
        .unwrap_or((pr.repository.as_str(), ""));
    let short_sha: String = pr.head_sha.chars().take(7).collect();
    let ctx = json!({
        "template": template_name,
        "pr": {
            "number": pr.number,
            "head_sha": pr.head_sha,
            "short_sha": short_sha,
            "head_ref": pr.head_ref,
            "head_ref_slug": naming::slug(&pr.head_ref),
            "base_ref": pr.base_ref,
            "author": pr.author,
            "title": pr.title,
            "labels": pr.labels,
            "draft": pr.draft,
            "fork": pr.fork,
            "html_url": pr.html_url,
        },
        "repo": {"owner": owner, "name": name, "full_name": pr.repository},
    });
    match ctx {
        Json::Object(map) => map,
        _ => Map::new(),
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(RENDER_FUEL));
    // Block tags on lines of their own leave no blank lines or indentation behind, which is
    // what YAML templates want.
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.add_filter("slug", |s: String| naming::slug(&s));
    env.add_filter("dns_label", |s: String| naming::dns_label(&s));
    env.set_formatter(format_value);
    env.add_filter("tojson", tojson);
    env
}

/// Pull request titles, branch names and labels are chosen by whoever opens the PR. A string
/// that could change the YAML's structure (newlines, quotes, `: `, `#`, ...) is written as a
/// quoted JSON string, which YAML reads back as exactly that string, so it can never add keys
/// or documents where it stands alone. `| safe` opts out for trusted values. Where quoting is
/// not enough (flow collections, the author's own quotes), the structure check refuses the
/// render (see `shape`).
fn format_value(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    if let Some(s) = value.as_str()
        && !value.is_safe()
        && !plain_yaml_safe(s)
    {
        return out
            .write_str(&yaml_quoted(s))
            .map_err(|_| Error::new(minijinja::ErrorKind::WriteFailure, "write failed"));
    }
    minijinja::escape_formatter(out, state, value)
}

/// minijinja's `tojson`, with what JSON leaves raw but YAML refuses or reads as a line break
/// ([`yaml_unprintable`]) written as `\u` escapes, so that the value YAML reads back is exactly
/// the value, in block and flow context alike. Such characters can only stand inside JSON
/// strings, where an escape means the same.
fn tojson(
    state: &State,
    value: &Value,
    indent: Option<Value>,
    args: Kwargs,
) -> Result<Value, Error> {
    let json = minijinja::filters::tojson(value, indent, args)?;
    let text = json.as_str().unwrap_or_default();
    state.consume_fuel(text.len() as u64 / 4)?;
    if !text.chars().any(yaml_unprintable) {
        return Ok(json);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if yaml_unprintable(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Ok(Value::from_safe_string(out))
}

/// Characters YAML refuses raw (DEL, C1 controls but NEL, U+FFFE, U+FFFF) or reads as a line
/// break (NEL, U+2028, U+2029), and the byte order mark; below space JSON and [`yaml_quoted`]
/// escape anyway.
fn yaml_unprintable(c: char) -> bool {
    ('\u{7f}'..='\u{9f}').contains(&c)
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
}

fn context(ctx: &Map<String, Json>) -> Value {
    Value::from(minijinja::value::Serde(ctx))
}

/// `s` as a YAML double-quoted scalar that reads back as exactly `s`. Like JSON's quoting,
/// plus `\u` escapes for what YAML refuses raw (DEL, C1 controls) or reads as a line break.
fn yaml_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || yaml_unprintable(c) => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether `s` can be written unquoted into YAML without changing its structure.
fn plain_yaml_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return true;
    };
    (first.is_ascii_alphanumeric() || "./_".contains(first))
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._/:@+=-,".contains(c))
        && !s.contains(": ")
        && !s.ends_with([':', ' '])
}

/// A minijinja error with its location, for a template author.
fn describe(err: &minijinja::Error) -> String {
    let mut msg = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        msg.push_str(": ");
        msg.push_str(&inner.to_string());
        source = inner.source();
    }
    msg
}

/// Parse multi-document YAML into objects, checking each has what applying needs.
pub fn parse_objects(text: &str) -> Result<Vec<Json>, RenderError> {
    let mut objects = Vec::new();
    let mut seen = BTreeSet::new();
    for (index, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = index + 1;
        let value = Json::deserialize(doc).map_err(|e| RenderError::Yaml {
            document,
            reason: e.to_string(),
        })?;
        if value.is_null() {
            continue; // empty document, e.g. after a trailing `---`
        }
        let object_err = |reason: &str| RenderError::Object {
            document,
            reason: reason.to_string(),
        };
        let Json::Object(map) = &value else {
            return Err(object_err("not a mapping"));
        };
        let api_version = map.get("apiVersion").and_then(Json::as_str);
        let kind = map.get("kind").and_then(Json::as_str);
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Json::as_str);
        let (Some(api_version), Some(kind), Some(name)) = (api_version, kind, name) else {
            return Err(object_err("needs apiVersion, kind and metadata.name"));
        };
        if api_version.is_empty() || kind.is_empty() || name.is_empty() {
            return Err(object_err(
                "apiVersion, kind and metadata.name must not be empty",
            ));
        }
        // The API server reads metadata as an ObjectMeta: say here, naming the field, what it
        // would refuse (e.g. `labels: {version: 2}`), instead of failing at apply time.
        if let Some(metadata) = map.get("metadata")
            && let Err(e) = serde_path_to_error::deserialize::<_, ObjectMeta>(metadata)
        {
            return Err(object_err(&format!("metadata.{}: {}", e.path(), e.inner())));
        }
        if CLUSTER_SCOPED_KINDS.contains(&kind) {
            return Err(RenderError::Rejected {
                kind: kind.to_string(),
                name: name.to_string(),
                reason: "cluster-scoped objects are not allowed in a preview".to_string(),
            });
        }
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        if !seen.insert((group.to_string(), kind.to_string(), name.to_string())) {
            return Err(object_err(&format!("{kind} {name} appears twice")));
        }
        objects.push(value);
    }
    if objects.len() > MAX_OBJECTS {
        return Err(RenderError::TooMany {
            count: objects.len(),
        });
    }
    Ok(objects)
}

/// Put `object` into `namespace` and mark it as the environment's: labels and annotation
/// merged over the template's own (prenv's win, they are what pruning selects on). An object
/// that names another namespace is refused.
pub fn claim_object(
    object: &mut Json,
    namespace: &str,
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<(), RenderError> {
    let kind = object
        .get("kind")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(metadata) = object.get_mut("metadata").and_then(Json::as_object_mut) else {
        return Err(RenderError::Object {
            document: 0,
            reason: format!("{kind} has no metadata"),
        });
    };
    let name = metadata
        .get("name")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    match metadata.get("namespace") {
        None | Some(Json::Null) => {}
        Some(Json::String(ns)) if ns == namespace => {}
        Some(other) => {
            return Err(RenderError::Rejected {
                kind,
                name,
                reason: format!(
                    "names namespace {other}; objects may only live in the preview namespace {namespace}"
                ),
            });
        }
    }
    metadata.insert("namespace".into(), Json::String(namespace.to_string()));
    for (field, entries) in [("labels", labels), ("annotations", annotations)] {
        let slot = metadata
            .entry(field)
            .or_insert_with(|| Json::Object(Map::new()));
        if !slot.is_object() {
            *slot = Json::Object(Map::new());
        }
        if let Some(map) = slot.as_object_mut() {
            for (k, v) in entries {
                map.insert(k.clone(), Json::String(v.clone()));
            }
        }
    }
    default_protocols(object);
    Ok(())
}

/// Set annotation `key` on the pod template of a Deployment, StatefulSet or DaemonSet
/// (`apps/v1`), so that changing `value` rolls its pods, as `kubectl rollout restart` does.
/// Other objects are left as they are.
pub fn stamp_pod_template(object: &mut Json, key: &str, value: &str) {
    let workload = object.get("apiVersion").and_then(Json::as_str) == Some("apps/v1")
        && matches!(
            object.get("kind").and_then(Json::as_str),
            Some("Deployment" | "StatefulSet" | "DaemonSet")
        );
    let Some(template) = object
        .get_mut("spec")
        .and_then(|s| s.get_mut("template"))
        .and_then(Json::as_object_mut)
        .filter(|_| workload)
    else {
        return;
    };
    let metadata = template
        .entry("metadata")
        .or_insert_with(|| Json::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Json::Object(Map::new());
    }
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Json::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Json::Object(Map::new());
    }
    if let Some(annotations) = annotations.as_object_mut() {
        annotations.insert(key.to_string(), Json::String(value.to_string()));
    }
}

/// Fill in `protocol: TCP` where a port omits it. The API server defaults it anyway, but
/// server-side apply on Kubernetes before 1.21 refuses ports lists whose `protocol` key is
/// missing ("associative list with keys has an element that omits key field").
fn default_protocols(object: &mut Json) {
    fn fill(ports: Option<&mut Json>) {
        for port in ports.and_then(Json::as_array_mut).into_iter().flatten() {
            if let Some(port) = port.as_object_mut() {
                port.entry("protocol")
                    .or_insert_with(|| Json::String("TCP".into()));
            }
        }
    }
    fn pod_spec(spec: Option<&mut Json>) {
        let Some(spec) = spec else { return };
        for field in ["containers", "initContainers"] {
            for container in spec
                .get_mut(field)
                .and_then(Json::as_array_mut)
                .into_iter()
                .flatten()
            {
                fill(container.get_mut("ports"));
            }
        }
    }
    let kind = object
        .get("kind")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    match kind.as_str() {
        "Service" => fill(object.pointer_mut("/spec/ports")),
        "Pod" => pod_spec(object.get_mut("spec")),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            pod_spec(object.pointer_mut("/spec/template/spec"))
        }
        "CronJob" => pod_spec(object.pointer_mut("/spec/jobTemplate/spec/template/spec")),
        _ => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn only_workload_pod_templates_are_stamped() {
        let mut deployment = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "spec": {"template": {"metadata": {"annotations": {"keep": "me"}}, "spec": {}}}
        });
        stamp_pod_template(&mut deployment, "prenv.dev/redeploy", "r1");
        assert_eq!(
            deployment["spec"]["template"]["metadata"]["annotations"],
            serde_json::json!({"keep": "me", "prenv.dev/redeploy": "r1"})
        );
        let mut bare = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"template": {}}
        });
        stamp_pod_template(&mut bare, "prenv.dev/redeploy", "r2");
        assert_eq!(
            bare["spec"]["template"]["metadata"]["annotations"]["prenv.dev/redeploy"],
            "r2"
        );
        let job = serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {}}
        });
        let mut stamped = job.clone();
        stamp_pod_template(&mut stamped, "prenv.dev/redeploy", "r3");
        assert_eq!(stamped, job);
    }

    pub(crate) fn pr() -> PreviewEnvironmentSpec {
        PreviewEnvironmentSpec {
            template: "shop".into(),
            repository: "Acme/Storefront".into(),
            number: 42,
            head_sha: "0123456789abcdef0123456789abcdef01234567".into(),
            head_ref: "feature/New_Checkout".into(),
            base_ref: "main".into(),
            author: "octocat".into(),
            author_association: "MEMBER".into(),
            title: "Add checkout".into(),
            labels: vec!["flag:new-checkout".into(), "preview".into()],
            draft: false,
            fork: false,
            head_repository: Some("Acme/Storefront".into()),
            html_url: Some("https://github.com/Acme/Storefront/pull/42".into()),
            updated_at: chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            approved: None,
            awaiting_approval: None,
        }
    }

    fn template(resources: &str) -> PreviewTemplateSpec {
        serde_json::from_value(json!({
            "repository": "acme/storefront",
            "url": "https://pr-{{ pr.number }}.{{ namespace }}.example.com",
            "resources": resources,
        }))
        .unwrap()
    }

    #[test]
    fn every_variable_renders() {
        let t = template(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: vars\ndata:\n  number: \"{{ pr.number }}\"\n  head_sha: {{ pr.head_sha }}\n  short_sha: {{ pr.short_sha }}\n  head_ref: {{ pr.head_ref }}\n  head_ref_slug: {{ pr.head_ref_slug }}\n  base_ref: {{ pr.base_ref }}\n  author: {{ pr.author }}\n  title: {{ pr.title }}\n  labels: {{ pr.labels | join(',') }}\n  owner: {{ repo.owner }}\n  name: {{ repo.name }}\n  full_name: {{ repo.full_name }}\n  namespace: {{ namespace }}\n  url: {{ url }}\n  template: {{ template }}\n",
        );
        let out = render("shop", &t, &pr()).unwrap();
        assert_eq!(out.namespace, "shop-pr-42");
        assert_eq!(
            out.url.as_deref(),
            Some("https://pr-42.shop-pr-42.example.com")
        );
        let data = &out.objects[0]["data"];
        let expect = [
            ("number", "42"),
            ("head_sha", "0123456789abcdef0123456789abcdef01234567"),
            ("short_sha", "0123456"),
            ("head_ref", "feature/New_Checkout"),
            ("head_ref_slug", "feature-new-checkout"),
            ("base_ref", "main"),
            ("author", "octocat"),
            ("title", "Add checkout"),
            ("labels", "flag:new-checkout,preview"),
            ("owner", "Acme"),
            ("name", "Storefront"),
            ("full_name", "Acme/Storefront"),
            ("namespace", "shop-pr-42"),
            ("url", "https://pr-42.shop-pr-42.example.com"),
            ("template", "shop"),
        ];
        for (key, value) in expect {
            assert_eq!(data[key], value, "{key}");
        }
    }

    #[test]
    fn a_url_that_pull_request_values_break_is_refused() {
        let mut t = template("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n");
        t.url = Some("https://pr-{{ pr.number }}.example.com/{{ pr.title }}".into());
        let mut evil = pr();
        // (Written YAML-quoted, as every value that is not plain: the quotes land in the URL.)
        evil.title = "x>) [click](javascript:alert(1))".into();
        let err = render("shop", &t, &evil).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"url "https://pr-42.example.com/\"x>) [click](javascript:alert(1))\"" is refused: it contains whitespace or control characters"#
        );
        assert_eq!(err.reason(), "UnsafeURL");
    }

    #[test]
    fn undefined_variable_is_an_error() {
        let t = template("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ pr.nope }}\n");
        let err = render("shop", &t, &pr()).unwrap_err();
        assert!(matches!(err, RenderError::Resources(_)), "{err}");
        assert!(err.to_string().contains("undefined"), "{err}");
        assert_eq!(err.reason(), "TemplateError");
    }

    #[test]
    fn namespace_template_cannot_use_url() {
        let mut t = template("");
        t.namespace = "{{ url }}".into();
        assert!(matches!(
            render("shop", &t, &pr()),
            Err(RenderError::Namespace(_))
        ));
    }

    #[test]
    fn yaml_error_names_the_document() {
        let t = template(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\nkey: [unclosed\n",
        );
        let err = render("shop", &t, &pr()).unwrap_err();
        assert!(
            matches!(err, RenderError::Yaml { document: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_in_template() {
        let t = template("{% for x in %}");
        assert!(matches!(
            render("shop", &t, &pr()),
            Err(RenderError::Resources(_))
        ));
    }

    #[test]
    fn objects_need_kind_and_name_and_are_unique() {
        assert!(matches!(
            parse_objects("apiVersion: v1\nkind: ConfigMap\n"),
            Err(RenderError::Object { document: 1, .. })
        ));
        assert!(matches!(
            parse_objects("- a\n- b\n"),
            Err(RenderError::Object { .. })
        ));
        let twice = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n";
        assert!(matches!(
            parse_objects(twice),
            Err(RenderError::Object { document: 2, .. })
        ));
        assert_eq!(parse_objects("---\n---\n").unwrap(), Vec::<Json>::new());
    }

    #[test]
    fn cluster_scoped_kinds_are_rejected() {
        let err = parse_objects(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: own}\n",
        )
        .unwrap_err();
        assert_eq!(err.reason(), "ObjectRejected");
    }

    #[test]
    fn hostile_title_cannot_inject_yaml() {
        let mut p = pr();
        p.title = "x\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: stolen".into();
        let t = template(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  title: {{ pr.title }}\n",
        );
        let out = render("shop", &t, &p).unwrap();
        assert_eq!(out.objects.len(), 1);
        assert_eq!(out.objects[0]["data"]["title"], p.title.as_str());

        p.title = "fix: checkout # now".into();
        let out = render("shop", &t, &p).unwrap();
        assert_eq!(out.objects[0]["data"]["title"], "fix: checkout # now");
    }

    #[test]
    fn claim_sets_namespace_and_labels_and_refuses_others() {
        let labels = naming::owned_labels("team", "shop-42");
        let ann = naming::owned_annotations("team", "shop-42");
        let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"app": "web"}}});
        claim_object(&mut obj, "shop-pr-42", &labels, &ann).unwrap();
        assert_eq!(obj["metadata"]["namespace"], "shop-pr-42");
        assert_eq!(obj["metadata"]["labels"]["app"], "web");
        assert_eq!(
            obj["metadata"]["labels"][naming::ENVIRONMENT_LABEL],
            "team.shop-42"
        );

        let mut foreign = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "kube-system"}});
        let err = claim_object(&mut foreign, "shop-pr-42", &labels, &ann).unwrap_err();
        assert!(err.to_string().contains("kube-system"), "{err}");
    }

    #[test]
    fn ports_get_a_default_protocol() {
        let labels = naming::owned_labels("team", "shop-42");
        let ann = naming::owned_annotations("team", "shop-42");
        let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}});
        claim_object(&mut svc, "ns", &labels, &ann).unwrap();
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["ports"][1]["protocol"], "UDP");
        let mut deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 8080}]}]}}}});
        claim_object(&mut deploy, "ns", &labels, &ann).unwrap();
        assert_eq!(
            deploy["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"],
            "TCP"
        );
    }

    #[test]
    fn metadata_the_api_server_would_refuse_is_named() {
        let err = parse_objects(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels: {version: 2}\n",
        )
        .unwrap_err();
        assert!(
            matches!(&err, RenderError::Object { reason, .. } if reason.contains("metadata.labels")),
            "{err}"
        );
    }

    #[test]
    fn control_characters_in_a_title_round_trip() {
        let mut p = pr();
        p.title = "a\u{7f}b\u{85}c\u{2028}d\te\"f\\g\u{ffff}h\u{fffe}".into();
        let t = template(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  title: {{ pr.title }}\n",
        );
        let out = render("shop", &t, &p).unwrap();
        assert_eq!(out.objects[0]["data"]["title"], p.title.as_str());
    }

    #[test]
    fn readme_feature_flag_example_renders() {
        // The example in README.md, indented as a PreviewTemplate's `resources` would be.
        let t = template(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: flags}\ndata:\n  {% for label in pr.labels if label is startingwith(\"flag:\") %}\n  FLAG_{{ label[5:] | upper | replace(\"-\", \"_\") }}: \"on\"\n  {% endfor %}\n  NONE: \"placeholder\"\n",
        );
        let out = render("shop", &t, &pr()).unwrap();
        assert_eq!(out.objects[0]["data"]["FLAG_NEW_CHECKOUT"], "on");
        assert_eq!(out.objects[0]["data"]["NONE"], "placeholder");
    }

    #[test]
    fn feature_flags_from_labels() {
        let t = template(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: flags\ndata:\n{% for l in pr.labels if l is startingwith('flag:') %}  FLAG_{{ l[5:] | upper | replace('-', '_') }}: \"on\"\n{% endfor %}",
        );
        let out = render("shop", &t, &pr()).unwrap();
        assert_eq!(out.objects[0]["data"]["FLAG_NEW_CHECKOUT"], "on");
    }
}
