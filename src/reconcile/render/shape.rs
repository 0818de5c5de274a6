//! The structure check: what a pull request writes into a template may change values, never
//! the YAML's structure.
//!
//! Quoting alone cannot promise that, because it depends on where a value lands: inside a flow
//! mapping or sequence a `,` or `}` ends it, inside the author's own quotes a quote does. So
//! the rendered text is checked instead. The template is rendered a second time in which every
//! value written by `{{ ... }}` (and every value passed through `tojson`, `escape` or `safe`)
//! is replaced by a placeholder of letters and digits, which is one plain scalar in any
//! context. Everything else stays as it was, so the template takes the same branches and
//! loops (a label can still switch a feature flag on). Both texts are parsed and compared:
//! the same documents, the same number of keys and items at every place, the same template-
//! written keys and scalars, collections where collections are. If a value changed any of
//! that, the render is refused, naming the template line and the variable it came from.

use super::{RenderError, environment, format_value, tojson};
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, Value};
use serde::Deserialize;
use serde_json::{Map, Value as Json};
use serde_yaml_ng::Value as Yaml;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Placeholders start with this; a scalar or key of the placeholder render that contains it
/// holds (part of) a value, anything else was written by the template itself.
const MARK: &str = "prenvx";
/// Why a locating render stopped (never shown).
const STOP: &str = "prenv: located the value";
/// How deep a value written whole (a list or mapping) is replaced; deeper is one placeholder,
/// which then fails the check instead of recursing without end.
const MAX_DEPTH: usize = 32;
/// Characters a value needs beyond these to change YAML's structure where it is written.
fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Check that `rendered` (the resources template rendered with `ctx`) has the structure it has
/// with every value replaced by a placeholder.
pub(super) fn check(
    source: &str,
    ctx: &Map<String, Json>,
    rendered: &str,
) -> Result<(), RenderError> {
    let pr = pr_strings(ctx);
    let (reference_text, events) = match run(source, ctx, &pr, Mode::placeholders()) {
        Ok(rendered) => rendered,
        // The placeholder render cannot fail where the real one did not, unless a value's
        // content decided it; fail closed.
        Err(e) => {
            return Err(RenderError::UnsafeValue {
                line: e.line(),
                message: format!(
                    "the template renders only with some values: {}",
                    super::describe(&e)
                ),
            });
        }
    };
    if reference_text == rendered {
        return Ok(()); // nothing was written by `{{ ... }}`
    }
    let reference = documents(&reference_text);
    let Some(what) = difference(&documents(rendered), &reference) else {
        return Ok(());
    };
    // Find the value that makes the difference: the first n values written as they are and
    // the rest as placeholders keep the structure for n = 0 and break it for n = all.
    let (mut same, mut breaks) = (0, events.max(1));
    while breaks - same > 1 {
        let mid = same + (breaks - same) / 2;
        let keeps = run(source, ctx, &pr, Mode::real_before(mid))
            .is_ok_and(|(text, _)| difference(&documents(&text), &reference).is_none());
        if keeps {
            same = mid;
        } else {
            breaks = mid;
        }
    }
    let culprit = breaks - 1;
    let tracker = Arc::new(Tracker::new(
        Mode {
            real_before: culprit,
            stop_at: Some(culprit),
        },
        pr,
    ));
    let (line, value) = match render_tracked(source, ctx, &tracker) {
        Err(e) if e.detail() == Some(STOP) => (
            e.line(),
            tracker.stopped.lock().ok().and_then(|v| v.clone()),
        ),
        _ => (None, None),
    };
    let from = value.as_deref().map_or_else(
        || "a value the template writes".to_string(),
        |v| origin(v, ctx),
    );
    // The first variable named, for the example.
    let example = named_strings(ctx)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| from.contains(name))
        .min_by_key(|name| (from.find(name), std::cmp::Reverse(name.len())))
        .unwrap_or("pr.title");
    Err(RenderError::UnsafeValue {
        line,
        message: format!(
            "{from} changes the YAML's structure ({what}), so a pull request could add keys, items or objects. Write the whole scalar as one JSON-quoted expression, `{{{{ {example} | tojson }}}}` (or `{{{{ (\"prefix-\" ~ {example}) | tojson }}}}` for part of one), not inside quotes, flow mappings `{{...}}` or flow lists `[...]` of the template's own"
        ),
    })
}

/// The strings of the context a pull request controls that could change structure (with
/// characters beyond letters, digits and `_`), longest first.
fn pr_strings(ctx: &Map<String, Json>) -> Vec<String> {
    let mut strings: Vec<String> = named_strings(ctx)
        .into_iter()
        .map(|(_, value)| value)
        .filter(|v| !v.chars().all(is_word))
        .collect();
    strings.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    strings.dedup();
    strings
}

/// `(variable, value)` for every string of the context a pull request (or the URL made from
/// it) controls.
fn named_strings(ctx: &Map<String, Json>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let pr = ctx.get("pr");
    for name in [
        "title",
        "head_ref",
        "head_ref_slug",
        "base_ref",
        "author",
        "html_url",
    ] {
        if let Some(s) = pr.and_then(|p| p.get(name)).and_then(Json::as_str) {
            let variable = match name {
                "title" => "pr.title",
                "head_ref" => "pr.head_ref",
                "head_ref_slug" => "pr.head_ref_slug",
                "base_ref" => "pr.base_ref",
                "author" => "pr.author",
                _ => "pr.html_url",
            };
            out.push((variable, s.to_string()));
        }
    }
    for label in pr
        .and_then(|p| p.get("labels"))
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
    {
        out.push(("pr.labels", label.to_string()));
    }
    if let Some(url) = ctx.get("url").and_then(Json::as_str) {
        out.push(("url", url.to_string()));
    }
    out
}

/// Where `written` (a value that changed the structure) comes from: the variables it is, or
/// those whose value it contains, those that could change structure first.
fn origin(written: &str, ctx: &Map<String, Json>) -> String {
    let named = named_strings(ctx);
    let list = |names: Vec<&'static str>| {
        let mut names = names;
        names.dedup();
        names.join(", ")
    };
    let exact: Vec<&'static str> = named
        .iter()
        .filter(|(_, value)| value == written)
        .map(|(name, _)| *name)
        .collect();
    if !exact.is_empty() {
        return format!("the value of {}", list(exact));
    }
    let contained = |structural: bool| -> Vec<&'static str> {
        named
            .iter()
            .filter(|(_, value)| !value.is_empty() && written.contains(value.as_str()))
            .filter(|(_, value)| !structural || !value.chars().all(is_word))
            .map(|(name, _)| *name)
            .collect()
    };
    let structural = contained(true);
    if !structural.is_empty() {
        return format!("the value of {}", list(structural));
    }
    let any = contained(false);
    if !any.is_empty() {
        return format!("a value made from {}", list(any));
    }
    "a value the template writes".to_string()
}

/// Which values a render writes as they are.
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// Values before this one (counted in the order they are written) are written as they
    /// are, the others as placeholders.
    real_before: usize,
    /// Fail the render at this value, to learn its template line.
    stop_at: Option<usize>,
}

impl Mode {
    fn placeholders() -> Self {
        Self::real_before(0)
    }
    fn real_before(n: usize) -> Self {
        Mode {
            real_before: n,
            stop_at: None,
        }
    }
}

struct Tracker {
    mode: Mode,
    /// Values that could change structure (see [`pr_strings`]).
    pr: Vec<String>,
    next: AtomicUsize,
    /// What the value the render stopped at is, as written.
    stopped: Mutex<Option<String>>,
}

impl Tracker {
    fn new(mode: Mode, pr: Vec<String>) -> Self {
        Tracker {
            mode,
            pr,
            next: AtomicUsize::new(0),
            stopped: Mutex::new(None),
        }
    }

    /// Count one value; `Some(index)` if it is to be a placeholder. `real` is what it is, for
    /// a locating render.
    fn value(&self, real: impl FnOnce() -> String) -> Result<Option<usize>, Error> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        if self.mode.stop_at == Some(index) {
            if let Ok(mut stopped) = self.stopped.lock() {
                *stopped = Some(real());
            }
            return Err(Error::new(ErrorKind::InvalidOperation, STOP));
        }
        Ok((index >= self.mode.real_before).then_some(index))
    }
}

fn placeholder(index: usize) -> String {
    format!("{MARK}{index}")
}

/// Render `source` in `mode`: the text and how many values it wrote.
fn run(
    source: &str,
    ctx: &Map<String, Json>,
    pr: &[String],
    mode: Mode,
) -> Result<(String, usize), Error> {
    let tracker = Arc::new(Tracker::new(mode, pr.to_vec()));
    let text = render_tracked(source, ctx, &tracker)?;
    Ok((text, tracker.next.load(Ordering::Relaxed)))
}

fn render_tracked(
    source: &str,
    ctx: &Map<String, Json>,
    tracker: &Arc<Tracker>,
) -> Result<String, Error> {
    let env = tracked_environment(tracker);
    env.render_named_str("resources", source, super::context(ctx))
}

/// The renderer's environment, writing values as placeholders as `tracker` says.
fn tracked_environment(tracker: &Arc<Tracker>) -> Environment<'static> {
    let mut env = environment();
    let t = Arc::clone(tracker);
    env.set_formatter(move |out, state, value| {
        // Numbers, booleans and none are not a pull request's strings; anything else may hold
        // some (a string, a list or mapping, an object such as a `namespace()`).
        let scalar = matches!(
            value.kind(),
            ValueKind::Number | ValueKind::Bool | ValueKind::None | ValueKind::Undefined
        );
        if value.is_safe() || scalar {
            return format_value(out, state, value);
        }
        match t.value(|| value.to_string())? {
            None => format_value(out, state, value),
            Some(index)
                if !matches!(
                    value.kind(),
                    ValueKind::Seq | ValueKind::Map | ValueKind::Iterable
                ) =>
            {
                out.write_str(&placeholder(index))
                    .map_err(|_| Error::new(ErrorKind::WriteFailure, "write failed"))
            }
            Some(index) => {
                let mut n = 0;
                format_value(out, state, &replace(value, index, &mut n, 0))
            }
        }
    });
    let t = Arc::clone(tracker);
    env.add_filter(
        "tojson",
        move |state: &State, value: &Value, indent: Option<Value>, args: Kwargs| {
            let json = || {
                tojson(state, value, indent.clone(), args.clone())
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            };
            match t.value(json)? {
                None => tojson(state, value, indent.clone(), args.clone()),
                Some(index) => {
                    let mut n = 0;
                    tojson(state, &replace(value, index, &mut n, 0), indent, args)
                }
            }
        },
    );
    for name in ["escape", "e"] {
        let t = Arc::clone(tracker);
        env.add_filter(name, move |state: &mut State, value: &Value| {
            if value.is_safe() {
                return Ok(value.clone());
            }
            match t.value(|| value.to_string())? {
                None => minijinja::filters::escape(state, value),
                Some(index) => Ok(Value::from_safe_string(placeholder(index))),
            }
        });
    }
    // `| safe` also marks text a macro wrote (its values are placeholders already), so only
    // what a pull request wrote is replaced in it.
    let t = Arc::clone(tracker);
    env.add_filter("safe", move |value: String| -> Result<Value, Error> {
        match t.value(|| value.clone())? {
            None => Ok(Value::from_safe_string(value)),
            Some(index) => {
                let mut value = value;
                for (n, pr) in t.pr.iter().enumerate() {
                    if value.contains(pr.as_str()) {
                        value = value.replace(pr.as_str(), &format!("{MARK}{index}s{n}"));
                    }
                }
                Ok(Value::from_safe_string(value))
            }
        }
    });
    env
}

/// `value` with every string in it (keys too) a placeholder, its shape kept.
fn replace(value: &Value, index: usize, n: &mut usize, depth: usize) -> Value {
    fn leaf(index: usize, n: &mut usize) -> Value {
        *n += 1;
        Value::from(format!("{MARK}{index}v{n}"))
    }
    if depth > MAX_DEPTH {
        return leaf(index, n);
    }
    match value.kind() {
        ValueKind::String => leaf(index, n),
        ValueKind::Seq | ValueKind::Iterable => value
            .try_iter()
            .map(|items| {
                Value::from(
                    items
                        .map(|item| replace(&item, index, n, depth + 1))
                        .collect::<Vec<_>>(),
                )
            })
            .unwrap_or_else(|_| leaf(index, n)),
        ValueKind::Map => match value.try_iter() {
            Ok(keys) => {
                let pairs: Vec<(Value, Value)> = keys
                    .map(|key| {
                        let item = value.get_item(&key).unwrap_or_default();
                        (
                            replace(&key, index, n, depth + 1),
                            replace(&item, index, n, depth + 1),
                        )
                    })
                    .collect();
                Value::from_pairs(pairs)
            }
            Err(_) => leaf(index, n),
        },
        _ => value.clone(),
    }
}

/// The parsed documents of `text`, or why it does not parse.
fn documents(text: &str) -> Result<Vec<Yaml>, String> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Yaml::deserialize(doc).map_err(|e| e.to_string()))
        .collect()
}

/// How `rendered` differs in structure from `reference` (the placeholder render), if it does.
fn difference(
    rendered: &Result<Vec<Yaml>, String>,
    reference: &Result<Vec<Yaml>, String>,
) -> Option<String> {
    match (rendered, reference) {
        (Err(_), Err(_)) => None, // the template is broken either way: its YAML error says why
        (Err(e), Ok(_)) => Some(format!("with it, the YAML does not parse: {e}")),
        (Ok(_), Err(_)) => Some(
            "the YAML parses only because of what the value holds; a harmless value breaks it"
                .into(),
        ),
        (Ok(rendered), Ok(reference)) => {
            if rendered.len() != reference.len() {
                return Some(format!(
                    "{} documents where a harmless value gives {}",
                    rendered.len(),
                    reference.len()
                ));
            }
            rendered
                .iter()
                .zip(reference)
                .enumerate()
                .find_map(|(i, (a, b))| node(a, b, &mut String::new()).map(|d| (i + 1, d)))
                .map(|(document, (path, what))| {
                    let at = if path.is_empty() {
                        String::new()
                    } else {
                        format!(" at {}", path.trim_start_matches('.'))
                    };
                    format!("document {document}{at}: {what}")
                })
        }
    }
}

/// Whether a node of the placeholder render holds (part of) a value.
fn holds_value(node: &Yaml) -> bool {
    match node {
        Yaml::String(s) => s.contains(MARK),
        Yaml::Tagged(t) => t.tag.to_string().contains(MARK) || holds_value(&t.value),
        _ => false,
    }
}

fn kind_of(node: &Yaml) -> String {
    match node {
        Yaml::Sequence(items) => format!("a list of {}", items.len()),
        Yaml::Mapping(map) => format!("a mapping of {} keys", map.len()),
        Yaml::Tagged(t) => format!("a value tagged {}", t.tag),
        _ => "a scalar".into(),
    }
}

/// The first difference between `a` (rendered) and `b` (placeholder render) below `path`.
fn node(a: &Yaml, b: &Yaml, path: &mut String) -> Option<(String, String)> {
    match (a, b) {
        (Yaml::Sequence(xs), Yaml::Sequence(ys)) => {
            if xs.len() != ys.len() {
                return differs(
                    path,
                    format!(
                        "a list of {} items where a harmless value gives {}",
                        xs.len(),
                        ys.len()
                    ),
                );
            }
            for (i, (x, y)) in xs.iter().zip(ys).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = node(x, y, path);
                path.truncate(len);
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        (Yaml::Mapping(xs), Yaml::Mapping(ys)) => {
            if xs.len() != ys.len() {
                return differs(
                    path,
                    format!(
                        "a mapping of {} keys where a harmless value gives {}",
                        xs.len(),
                        ys.len()
                    ),
                );
            }
            for ((xk, xv), (yk, yv)) in xs.iter().zip(ys) {
                if let Some(found) = node(xk, yk, path) {
                    return Some(found);
                }
                if !holds_value(yk) && xk != yk {
                    return differs(
                        path,
                        "the template's keys are not where it wrote them".into(),
                    );
                }
                let len = path.len();
                path.push('.');
                path.push_str(&key_text(yk));
                let found = node(xv, yv, path);
                path.truncate(len);
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        (Yaml::Tagged(x), Yaml::Tagged(y)) => {
            if x.tag != y.tag && !y.tag.to_string().contains(MARK) {
                return differs(
                    path,
                    format!("tag {} where the template wrote {}", x.tag, y.tag),
                );
            }
            node(&x.value, &y.value, path)
        }
        (Yaml::Sequence(_) | Yaml::Mapping(_) | Yaml::Tagged(_), _)
        | (_, Yaml::Sequence(_) | Yaml::Mapping(_) | Yaml::Tagged(_)) => differs(
            path,
            format!("{} where a harmless value gives {}", kind_of(a), kind_of(b)),
        ),
        // Scalars: a value may make one another string, number or null; the template's own
        // must stay as they are.
        _ if holds_value(b) || a == b => None,
        _ => differs(path, "a scalar the template wrote has another value".into()),
    }
}

fn differs(path: &str, what: String) -> Option<(String, String)> {
    Some((path.to_string(), what))
}

fn key_text(key: &Yaml) -> String {
    match key {
        Yaml::String(s) if !s.contains(MARK) => s.clone(),
        Yaml::String(_) => "(a key from a value)".into(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => "null".into(),
        other => kind_of(other),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::pr;
    use super::super::{RenderError, Rendered, render};
    use crate::model::{PreviewEnvironmentSpec, PreviewTemplateSpec};
    use serde_json::{Value as Json, json};

    fn template(resources: &str) -> PreviewTemplateSpec {
        serde_json::from_value(json!({
            "repository": "acme/storefront",
            "url": "https://pr-{{ pr.number }}.example.com",
            "resources": resources,
        }))
        .unwrap()
    }

    /// A ConfigMap whose `data` is `data` (YAML at indentation 0, then indented).
    fn config_map(data: &str) -> String {
        let data: String = data.lines().map(|l| format!("  {l}\n")).collect();
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata:\n{data}")
    }

    fn with(edit: impl FnOnce(&mut PreviewEnvironmentSpec)) -> PreviewEnvironmentSpec {
        let mut p = pr();
        edit(&mut p);
        p
    }

    fn rendered(resources: &str, pr: &PreviewEnvironmentSpec) -> Result<Rendered, RenderError> {
        render("shop", &template(resources), pr)
    }

    fn unsafe_value(resources: &str, pr: &PreviewEnvironmentSpec) -> String {
        match rendered(resources, pr) {
            Err(e @ RenderError::UnsafeValue { .. }) => {
                assert_eq!(e.reason(), "UnsafeValue");
                e.to_string()
            }
            other => panic!("expected UnsafeValue for\n{resources}\ngot {other:?}"),
        }
    }

    /// Titles and branch names that end a scalar in some context.
    const HOSTILE: &[&str] = &[
        "a, b",
        "a,b",
        "a}",
        "a]",
        "a, evil: x",
        "x', evil: 'y",
        "x\", evil: \"y",
        "x\nevil: y",
        "x\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}",
        "x # y",
        "{a: b}",
        "[a, b]",
        "- a",
        "'",
        "\"",
        "&a x",
        "*a",
        "!!map x",
        "a: b",
        "x\\",
        "...",
        "? a",
        "|",
    ];

    /// Contexts a template may write a value in, `V` where the value goes.
    const CONTEXTS: &[&str] = &[
        "title: V",
        "title: {t: V}",
        "title: {t: V, u: w}",
        "title: [--ref=V]",
        "title: [V, w]",
        "title: 'V'",
        "title: \"V\"",
        "title: {t: 'V', u: 'w'}",
        "title: [\"V\", \"w\"]",
        "title: |\n  echo V\n  done",
        "title: >-\n  V\nnext: w",
        "V: k",
        "{ V: k}",
        "title: pre V post",
        "title: V # comment",
        "# V\ntitle: t",
        "title: [a, {b: V}]",
    ];

    /// The invariant: a value either is refused, or everything but the scalars it is written
    /// into is as with a harmless value.
    fn holds(context: &str, variable: &str, value: &str) {
        let resources = config_map(&context.replace('V', &format!("{{{{ {variable} }}}}")));
        let p = with(|p| {
            p.title = value.into();
            p.head_ref = value.into();
            p.base_ref = value.into();
            p.author = value.into();
            p.labels = vec![value.into()];
        });
        let harmless = rendered(
            &resources,
            &with(|p| {
                p.title = "x".into();
                p.head_ref = "x".into();
                p.base_ref = "x".into();
                p.author = "x".into();
                p.labels = vec!["x".into()];
            }),
        );
        match rendered(&resources, &p) {
            Ok(out) => {
                let harmless = harmless.expect("a harmless value renders");
                assert_eq!(
                    shape(&Json::Array(out.objects.clone())),
                    shape(&Json::Array(harmless.objects)),
                    "{variable} = {value:?} in {context:?} changed the structure: {:?}",
                    out.objects
                );
            }
            Err(RenderError::UnsafeValue { .. }) => {}
            Err(e) if harmless.is_err() => {
                // The context is broken for any value; the value did not decide that.
                assert_eq!(e.reason(), harmless.unwrap_err().reason(), "{context}");
            }
            Err(e) => panic!("{variable} = {value:?} in {context:?}: {e}"),
        }
    }

    /// Keys and list lengths, with every scalar the same, and every key the template did not
    /// write itself the same.
    fn shape(value: &Json) -> Json {
        const LITERAL: &[&str] = &[
            "apiVersion",
            "kind",
            "metadata",
            "name",
            "data",
            "title",
            "t",
            "u",
            "next",
            "b",
        ];
        match value {
            Json::Array(items) => Json::Array(items.iter().map(shape).collect()),
            Json::Object(map) => {
                let mut entries: Vec<Json> = map
                    .iter()
                    .map(|(k, v)| {
                        let k = if LITERAL.contains(&k.as_str()) {
                            k
                        } else {
                            "*"
                        };
                        json!([k, shape(v)])
                    })
                    .collect();
                entries.sort_by_key(|e| e.to_string());
                Json::Array(entries)
            }
            _ => Json::Null,
        }
    }

    #[test]
    fn hostile_values_never_change_the_structure_in_any_context() {
        for context in CONTEXTS {
            for variable in ["pr.title", "pr.head_ref", "pr.base_ref", "pr.author"] {
                for value in HOSTILE {
                    holds(context, variable, value);
                }
            }
            for value in HOSTILE {
                holds(context, "pr.labels[0]", value);
                holds(context, "pr.labels | join(',')", value);
            }
        }
    }

    #[test]
    fn the_cases_of_the_issue_are_refused_naming_the_variable_line_and_fix() {
        let cases = [
            ("title: {t: '{{ pr.title }}'}", "pr.title", "x', evil: 'y"),
            ("args: [--ref={{ pr.head_ref }}]", "pr.head_ref", "a,b"),
            ("title: {t: {{ pr.title }}}", "pr.title", "a, b"),
            ("title: '{{ pr.title }}'", "pr.title", "it's"),
            ("title: \"{{ pr.title }}\"", "pr.title", "say \"hi\""),
        ];
        for (context, variable, value) in cases {
            let p = with(|p| {
                p.title = value.into();
                p.head_ref = value.into();
            });
            let resources = config_map(context);
            let err = unsafe_value(&resources, &p);
            assert!(err.contains(variable), "{err}");
            assert!(err.contains("line 5"), "{err}");
            assert!(err.contains("| tojson"), "{err}");
        }
    }

    #[test]
    fn benign_values_pass_in_every_context() {
        for context in CONTEXTS {
            for variable in ["pr.title", "pr.head_ref", "pr.head_ref_slug", "pr.author"] {
                let resources = config_map(&context.replace('V', &format!("{{{{ {variable} }}}}")));
                if let Err(e) = rendered(&resources, &pr()) {
                    panic!("{variable} in {context:?}: {e}");
                }
            }
        }
    }

    #[test]
    fn tojson_keeps_any_value_one_scalar_wherever_it_stands_alone() {
        for value in HOSTILE
            .iter()
            .copied()
            .chain(["a\u{7f}b\u{85}c\u{2028}d\u{feff}"])
        {
            let p = with(|p| {
                p.title = value.into();
                p.head_ref = value.into();
            });
            for context in [
                "title: {{ pr.title | tojson }}",
                "title: {t: {{ pr.title | tojson }}, u: w}",
                "title: [{{ (\"--ref=\" ~ pr.head_ref) | tojson }}, w]",
                "{{ pr.title | tojson }}: k",
            ] {
                let out = rendered(&config_map(context), &p)
                    .unwrap_or_else(|e| panic!("{value:?} in {context}: {e}"));
                let data = &out.objects[0]["data"];
                let written = match context {
                    c if c.starts_with("title: {t") => data["title"]["t"].clone(),
                    c if c.starts_with("title: [") => data["title"][0].clone(),
                    c if c.starts_with("title: ") => data["title"].clone(),
                    _ => Json::String(data.as_object().unwrap().keys().next().unwrap().clone()),
                };
                let expect = if context.contains("--ref=") {
                    format!("--ref={value}")
                } else {
                    value.to_string()
                };
                assert_eq!(written, expect, "{context}");
            }
        }
    }

    #[test]
    fn labels_may_still_decide_keys_and_lists() {
        // README's feature flags: keys made of a label, and a loop over labels.
        let resources = config_map(
            "{% for l in pr.labels if l is startingwith('flag:') %}\nFLAG_{{ l[5:] | upper | replace('-', '_') }}: \"on\"\n{% endfor %}\nall: {{ pr.labels }}\njson: {{ pr.labels | tojson }}",
        );
        let p = with(|p| p.labels = vec!["flag:a".into(), "flag:b-c".into(), "x, y".into()]);
        let out = rendered(&resources, &p).unwrap();
        let data = &out.objects[0]["data"];
        assert_eq!(data["FLAG_A"], "on");
        assert_eq!(data["FLAG_B_C"], "on");
        assert_eq!(data["all"], json!(["flag:a", "flag:b-c", "x, y"]));
        assert_eq!(data["json"], json!(["flag:a", "flag:b-c", "x, y"]));
        // A label that adds a line of its own in a key is refused.
        let p = with(|p| p.labels = vec!["flag:a: 1\nevil".into()]);
        assert!(rendered(&resources, &p).is_err());
        // Labels joined into a flow list would add items.
        let p = with(|p| p.labels = vec!["a".into(), "b".into()]);
        let err = unsafe_value(&config_map("list: [{{ pr.labels | join(',') }}]"), &p);
        assert!(
            err.contains("a value made from pr.labels")
                && err.contains("`{{ pr.labels | tojson }}`"),
            "{err}"
        );
        let p = with(|p| p.head_ref = "a,b".into());
        let err = unsafe_value(
            &config_map("list: [{{ pr.head_ref_slug }}, {{ pr.head_ref }}]"),
            &p,
        );
        assert!(
            err.contains("the value of pr.head_ref ")
                && err.contains("`{{ pr.head_ref | tojson }}`"),
            "{err}"
        );
    }

    #[test]
    fn macros_may_write_structure_their_values_may_not() {
        let resources = "{% macro kv(k, v) %}{{ k }}: {{ v }}{% endmacro %}\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  {{ kv('title', pr.title) | safe }}\n  {{ kv('ref', pr.head_ref) | safe }}\n";
        let p = with(|p| {
            p.title = "x\nevil: 1".into();
            p.head_ref = "a, b".into();
        });
        let out = rendered(resources, &p).unwrap();
        assert_eq!(out.objects[0]["data"]["title"], "x\nevil: 1");
        assert_eq!(out.objects[0]["data"]["ref"], "a, b");
    }

    #[test]
    fn safe_and_escape_on_a_pull_request_value_are_checked_too() {
        let p = with(|p| p.title = "x\nkind: Secret".into());
        for context in [
            "title: {{ pr.title | safe }}",
            "title: {{ ('pre ' ~ pr.title) | safe }}",
            "title: {{ pr.title | e }}",
            "title: {{ pr.title | escape }}",
        ] {
            let err = unsafe_value(&config_map(context), &p);
            assert!(err.contains("pr.title"), "{err}");
        }
        // A value whose JSON only parses thanks to what it holds.
        let p = with(|p| p.title = ", b: c".into());
        unsafe_value(&config_map("title: {t: \"{{ pr.title | tojson }}\"}"), &p);
    }

    #[test]
    fn a_template_broken_for_any_value_keeps_its_yaml_error() {
        let err = rendered(&config_map("title: [unclosed {{ pr.title }}"), &pr()).unwrap_err();
        assert_eq!(err.reason(), "InvalidYAML", "{err}");
    }

    #[test]
    fn values_in_template_text_that_merely_look_alike_are_fine() {
        // The template's own scalars and keys must come out as written.
        let resources = config_map(
            "a: {{ pr.number }}\nb: '{{ pr.short_sha }}'\nc: [1, 2]\n{{ template }}: {{ namespace }}",
        );
        let out = rendered(&resources, &pr()).unwrap();
        assert_eq!(out.objects[0]["data"]["shop"], "shop-pr-42");
    }
}
