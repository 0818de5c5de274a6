//! The status page: server-rendered HTML (no JavaScript needed) listing environments per
//! template, and one page per environment with its conditions and recent Events. Everything
//! that comes from a pull request is escaped (minijinja's HTML auto-escaping).

use crate::model::{PreviewEnvironment, PreviewTemplate};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, context};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct StatusPage {
    environments: Store<PreviewEnvironment>,
    templates: Store<PreviewTemplate>,
    client: Client,
    html: Environment<'static>,
}

pub fn router(
    environments: Store<PreviewEnvironment>,
    templates: Store<PreviewTemplate>,
    client: Client,
) -> Router {
    let mut html = Environment::new();
    // Every value is HTML-escaped: titles, branches and authors are attacker-controlled.
    html.set_auto_escape_callback(|_| AutoEscape::Html);
    let page = StatusPage {
        environments,
        templates,
        client,
        html,
    };
    Router::new()
        .route("/", get(index))
        .route("/environments/{namespace}/{name}", get(environment))
        .with_state(Arc::new(page))
}

/// One environment as the pages show it.
#[derive(Serialize)]
struct Row {
    namespace: String,
    name: String,
    repository: String,
    number: u64,
    pr_url: Option<String>,
    title: String,
    author: String,
    short_sha: String,
    phase: String,
    reason: String,
    url: Option<String>,
    age: String,
    expires: String,
}

fn row(env: &PreviewEnvironment, now: DateTime<Utc>) -> Row {
    let status = env.status.clone().unwrap_or_default();
    let short_sha = status
        .short_sha
        .clone()
        .unwrap_or_else(|| env.spec.head_sha.chars().take(7).collect());
    let age = env
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
        .map(|created| human(now - created))
        .unwrap_or_default();
    Row {
        namespace: env.namespace().unwrap_or_default(),
        name: env.name_any(),
        repository: env.spec.repository.clone(),
        number: env.spec.number,
        pr_url: env
            .spec
            .html_url
            .clone()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://")),
        title: env.spec.title.clone(),
        author: env.spec.author.clone(),
        short_sha,
        phase: status
            .phase
            .map(|p| p.to_string())
            .unwrap_or_else(|| "Pending".into()),
        reason: status.message.clone().unwrap_or_default(),
        url: status
            .url
            .clone()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://")),
        age,
        expires: status
            .expires_at
            .map(|at| at.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default(),
    }
}

/// `3d 4h`, `12m`: a duration for people.
fn human(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

async fn index(State(page): State<Arc<StatusPage>>) -> Response {
    let now = Utc::now();
    let mut groups: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for template in page.templates.state() {
        let key = format!(
            "{}/{}",
            template.namespace().unwrap_or_default(),
            template.name_any()
        );
        groups.entry(key).or_default();
    }
    for env in page.environments.state() {
        let key = format!(
            "{}/{}",
            env.namespace().unwrap_or_default(),
            env.spec.template
        );
        groups.entry(key).or_default().push(row(&env, now));
    }
    for rows in groups.values_mut() {
        rows.sort_by_key(|r| std::cmp::Reverse(r.number));
    }
    let repositories: BTreeMap<String, String> = page
        .templates
        .state()
        .iter()
        .map(|t| {
            (
                format!("{}/{}", t.namespace().unwrap_or_default(), t.name_any()),
                t.spec.repository.clone(),
            )
        })
        .collect();
    render(
        &page.html,
        INDEX,
        context! { groups => Serde(groups), repositories => Serde(repositories), style => STYLE },
    )
}

#[derive(Serialize)]
struct ConditionRow {
    type_: String,
    status: String,
    reason: String,
    message: String,
    since: String,
}

#[derive(Serialize)]
struct EventRow {
    type_: String,
    reason: String,
    note: String,
    at: String,
}

async fn environment(
    State(page): State<Arc<StatusPage>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let Some(env) = page
        .environments
        .get(&ObjectRef::new(&name).within(&namespace))
    else {
        return (
            StatusCode::NOT_FOUND,
            Html("<!doctype html><title>Not found</title><p>No such environment.</p>"),
        )
            .into_response();
    };
    let status = env.status.clone().unwrap_or_default();
    let conditions: Vec<ConditionRow> = status
        .conditions
        .iter()
        .map(|c| ConditionRow {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            since: c.last_transition_time.0.to_string(),
        })
        .collect();
    let events = recent_events(&page.client, &namespace, &name).await;
    render(
        &page.html,
        ENVIRONMENT,
        context! {
            env => Serde(row(&env, Utc::now())),
            conditions => Serde(conditions),
            events => Serde(events),
            namespace_of_preview => status.namespace,
            style => STYLE,
        },
    )
}

/// The environment's latest Events, newest first (best effort: none if they cannot be read).
async fn recent_events(client: &Client, namespace: &str, name: &str) -> Vec<EventRow> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().fields(&format!("regarding.name={name}"));
    let mut events = match api.list(&params).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::debug!(error = %e, "could not list events");
            return Vec::new();
        }
    };
    events.sort_by_key(|e| std::cmp::Reverse(e.event_time.as_ref().map(|t| t.0)));
    events
        .into_iter()
        .take(20)
        .map(|e| EventRow {
            type_: e.type_.unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            note: e.note.unwrap_or_default(),
            at: e.event_time.map(|t| t.0.to_string()).unwrap_or_default(),
        })
        .collect()
}

fn render(html: &Environment<'static>, source: &str, ctx: minijinja::Value) -> Response {
    match html.render_named_str("page.html", source, ctx) {
        Ok(body) => Html(body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "status page template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "status page unavailable").into_response()
        }
    }
}

const STYLE: &str = r#"<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1rem;color:#1f2328;max-width:72rem}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:1.5rem}
table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #d0d7de;vertical-align:top}
th{background:#f6f8fa} code{font-size:.9em}
.Ready{color:#1a7f37}.Failed{color:#cf222e}.Deploying,.Pending{color:#9a6700}.Deleting{color:#6e7781}
.muted{color:#6e7781;font-size:.9em}
@media (max-width:40rem){thead{display:none} tr{display:block;border-bottom:2px solid #d0d7de;padding:.4rem 0} td{display:block;border:0;padding:.1rem 0} td[data-k]::before{content:attr(data-k) ": ";font-weight:600}}
</style>"#;

const INDEX: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>prenv: preview environments</title>{{ style | safe }}</head><body>
<h1>Preview environments</h1>
{% for key, rows in groups | items %}
<h2>{{ key }} <span class="muted">{{ repositories[key] | default("") }}</span></h2>
{% if rows %}
<table><thead><tr><th>PR</th><th>Author</th><th>Commit</th><th>Phase</th><th>Preview</th><th>Age</th><th>Expires</th></tr></thead><tbody>
{% for r in rows %}
<tr>
<td data-k="PR">{% if r.pr_url %}<a href="{{ r.pr_url }}">#{{ r.number }}</a>{% else %}#{{ r.number }}{% endif %} <a href="/environments/{{ r.namespace | urlencode }}/{{ r.name | urlencode }}">{{ r.title }}</a></td>
<td data-k="Author">{{ r.author }}</td>
<td data-k="Commit"><code>{{ r.short_sha }}</code></td>
<td data-k="Phase"><span class="{{ r.phase }}">{{ r.phase }}</span>{% if r.reason %}<div class="muted">{{ r.reason }}</div>{% endif %}</td>
<td data-k="Preview">{% if r.url %}<a href="{{ r.url }}">{{ r.url }}</a>{% endif %}</td>
<td data-k="Age">{{ r.age }}</td>
<td data-k="Expires">{{ r.expires or "no expiry" }}</td>
</tr>
{% endfor %}
</tbody></table>
{% else %}<p class="muted">No environments.</p>{% endif %}
{% else %}<p>No PreviewTemplates yet.</p>
{% endfor %}
</body></html>"#;

const ENVIRONMENT: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>prenv: {{ env.name }}</title>{{ style | safe }}</head><body>
<p><a href="/">← all environments</a></p>
<h1>{{ env.repository }} #{{ env.number }}: {{ env.title }}</h1>
<table>
<tr><th>Environment</th><td>{{ env.namespace }}/{{ env.name }}</td></tr>
<tr><th>Pull request</th><td>{% if env.pr_url %}<a href="{{ env.pr_url }}">{{ env.pr_url }}</a>{% else %}#{{ env.number }}{% endif %} by {{ env.author }}</td></tr>
<tr><th>Commit</th><td><code>{{ env.short_sha }}</code></td></tr>
<tr><th>Phase</th><td><span class="{{ env.phase }}">{{ env.phase }}</span> <span class="muted">{{ env.reason }}</span></td></tr>
<tr><th>Preview</th><td>{% if env.url %}<a href="{{ env.url }}">{{ env.url }}</a>{% endif %}</td></tr>
<tr><th>Namespace</th><td>{{ namespace_of_preview | default("") }}</td></tr>
<tr><th>Age</th><td>{{ env.age }}</td></tr>
<tr><th>Expires</th><td>{{ env.expires or "no expiry" }}</td></tr>
</table>
<h2>Conditions</h2>
<table><thead><tr><th>Type</th><th>Status</th><th>Reason</th><th>Message</th><th>Since</th></tr></thead><tbody>
{% for c in conditions %}<tr><td data-k="Type">{{ c.type_ }}</td><td data-k="Status">{{ c.status }}</td><td data-k="Reason">{{ c.reason }}</td><td data-k="Message">{{ c.message }}</td><td data-k="Since">{{ c.since }}</td></tr>
{% else %}<tr><td colspan="5" class="muted">None yet.</td></tr>{% endfor %}
</tbody></table>
<h2>Recent events</h2>
<table><thead><tr><th>Type</th><th>Reason</th><th>Message</th><th>When</th></tr></thead><tbody>
{% for e in events %}<tr><td data-k="Type">{{ e.type_ }}</td><td data-k="Reason">{{ e.reason }}</td><td data-k="Message">{{ e.note }}</td><td data-k="When">{{ e.at }}</td></tr>
{% else %}<tr><td colspan="4" class="muted">None.</td></tr>{% endfor %}
</tbody></table>
</body></html>"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human(chrono::Duration::seconds(42)), "42s");
        assert_eq!(human(chrono::Duration::seconds(600)), "10m");
        assert_eq!(human(chrono::Duration::seconds(3 * 3600 + 120)), "3h 2m");
        assert_eq!(human(chrono::Duration::seconds(2 * 86_400 + 3600)), "2d 1h");
    }
}
