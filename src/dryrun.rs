//! `prenv render`: what a template renders to for a webhook payload, without a cluster.

use crate::decide::{self, Decision, PrAction};
use crate::model::PreviewTemplate;
use crate::naming;
use crate::reconcile::render::{self, RenderError};
use crate::trust::{self, Verdict};
use kube::ResourceExt;
use octocrab::models::webhook_events::{WebhookEvent, WebhookEventPayload};
use std::fmt::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a PreviewTemplate: {reason}")]
    Template { path: String, reason: String },
    #[error("{path} is not a pull_request webhook payload: {reason}")]
    Event { path: String, reason: String },
    #[error("{0}")]
    Render(#[from] RenderError),
    #[error("writing YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
}

fn read(path: &Path) -> Result<String, DryRunError> {
    std::fs::read_to_string(path).map_err(|source| DryRunError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Render `template_file` (a `PreviewTemplate` manifest) for `event_file` (a `pull_request`
/// webhook payload): the namespace, the URL and every object exactly as it would be applied.
pub fn render_files(template_file: &Path, event_file: &Path) -> Result<String, DryRunError> {
    let template_path = template_file.display().to_string();
    let event_path = event_file.display().to_string();
    let template: PreviewTemplate =
        serde_yaml_ng::from_str(&read(template_file)?).map_err(|e| DryRunError::Template {
            path: template_path.clone(),
            reason: e.to_string(),
        })?;
    decide::validate_trigger(&template.spec.trigger).map_err(|reason| DryRunError::Template {
        path: template_path,
        reason,
    })?;
    let body = read(event_file)?;
    let event_err = |reason: String| DryRunError::Event {
        path: event_path.clone(),
        reason,
    };
    let event = WebhookEvent::try_from_header_and_body("pull_request", body.as_bytes())
        .map_err(|e| event_err(e.to_string()))?;
    let WebhookEventPayload::PullRequest(payload) = event.specific else {
        return Err(event_err("not a pull_request event".into()));
    };
    let action_name = serde_json::to_value(&payload.action)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let state =
        decide::pull_request_state(&payload.pull_request).map_err(|e| event_err(e.to_string()))?;

    let name = template.name_any();
    let env_namespace = template.namespace().unwrap_or_else(|| "default".into());
    let env_name = naming::environment_name(&name, state.facts.number);
    let mut out = String::new();
    if !decide::serves(&template.spec, &state.facts.repository) {
        let _ = writeln!(
            out,
            "# no environment: template serves {}, the pull request is in {}",
            template.spec.repository, state.facts.repository
        );
        return Ok(out);
    }
    let action = PrAction::from_delivery(&action_name).unwrap_or(PrAction::Resync);
    // Without GitHub, only what the payload itself proves counts as trust.
    let verdict = trust::offline_verdict(&template.spec.trust, &state.facts).unwrap_or_else(|| {
        Verdict::Untrusted {
            reason: trust::untrusted_reason(&template.spec.trust, &state.facts, None),
            keep: None,
        }
    });
    let spec = match decide::decide(action, &state, &name, &template.spec, &verdict) {
        Decision::Apply(spec) => *spec,
        Decision::Delete { reason } => {
            let _ = writeln!(
                out,
                "# no environment ({reason}): {env_namespace}/{env_name} would be deleted"
            );
            return Ok(out);
        }
    };
    let Some(deployable) = spec.deployable_sha() else {
        let reason = spec.awaiting_approval.clone().unwrap_or_default();
        let _ = writeln!(out, "# nothing deployed: {reason}");
        return Ok(out);
    };
    let mut spec = spec.clone();
    spec.head_sha = deployable.to_string();
    let rendered = render::render(&name, &template.spec, &spec)?;
    let labels = naming::owned_labels(&env_namespace, &env_name);
    let annotations = naming::owned_annotations(&env_namespace, &env_name);
    let _ = writeln!(out, "# environment: {env_namespace}/{env_name}");
    let _ = writeln!(out, "# namespace: {}", rendered.namespace);
    let _ = writeln!(
        out,
        "# url: {}",
        rendered.url.as_deref().unwrap_or("(none)")
    );
    for mut object in rendered.objects {
        render::claim_object(&mut object, &rendered.namespace, &labels, &annotations)?;
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&object)?);
    }
    Ok(out)
}
