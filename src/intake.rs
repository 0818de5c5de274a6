//! Intake: carry a [`Decision`] out on the cluster by writing (server-side apply) or deleting
//! one `PreviewEnvironment`, never moving it back to an older pull request state.

use crate::command::REDEPLOY_ANNOTATION;
use crate::decide::{self, Decision, PrAction, PullRequestState};
use crate::model::{PreviewEnvironment, PreviewEnvironmentSpec, PreviewTemplate};
use crate::naming;
use crate::serving::RepositoryPolicy;
use crate::trust::{LabelEvent, TrustChecker, Verdict};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// What the intake did for one template.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// The environment was created or updated.
    Applied { environment: String },
    /// The environment already held exactly this state.
    Unchanged { environment: String },
    /// The environment holds a newer pull request state than this one; nothing was written.
    Stale { environment: String },
    /// The environment was deleted.
    Deleted { environment: String },
    /// There was no environment to delete.
    Absent { environment: String },
    /// Not written now (the template's cap on fork PRs waiting for approval); the resync
    /// writes it once there is room.
    Deferred { environment: String, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("template has no namespace")]
    NoNamespace,
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("environment {0} kept changing under us; giving up for now")]
    Contended(String),
    #[error(
        "environment {0} is still being torn down; the next delivery or resync will recreate it"
    )]
    StillDeleting(String),
}

/// Lock stripes: writes to one environment are serialized within this process, so the
/// "newer wins" check and the write cannot interleave with another delivery's. Bounded memory.
const STRIPES: usize = 64;
const ATTEMPTS: usize = 5;
/// Field manager of the annotations slash commands write (kept apart from the spec's).
const COMMAND_FIELD_MANAGER: &str = "prenv-command";

pub struct Intake {
    client: Client,
    trust: TrustChecker,
    policy: Arc<RepositoryPolicy>,
    stripes: Vec<Mutex<()>>,
}

impl Intake {
    pub fn new(client: Client, trust: TrustChecker) -> Self {
        Self::with_policy(client, trust, Arc::default())
    }

    /// An intake whose templates serve only the repositories `policy` allows them.
    pub fn with_policy(client: Client, trust: TrustChecker, policy: Arc<RepositoryPolicy>) -> Self {
        Self {
            client,
            trust,
            policy,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Whether `template` serves pull requests of `repository`: it names it, and the
    /// platform lets its namespace serve it.
    pub fn serves(&self, template: &PreviewTemplate, repository: &str) -> bool {
        decide::serves(&template.spec, repository)
            && self
                .policy
                .check(&template.namespace().unwrap_or_default(), repository)
                .is_ok()
    }

    fn stripe(&self, key: &str) -> &Mutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        &self.stripes[(hasher.finish() as usize) % STRIPES]
    }

    /// Decide for `template` what the pull request's `state` (reported by `action`) means and
    /// carry it out. `label` is the label a `labeled` delivery added (approvals).
    pub async fn handle(
        &self,
        action: PrAction,
        state: &PullRequestState,
        template: &PreviewTemplate,
        label: Option<&LabelEvent>,
    ) -> Result<Outcome, IntakeError> {
        let found = self.existing(template, state.facts.number).await?;
        let existing = found.as_ref().map(|e| &e.spec);
        let deployed = found
            .as_ref()
            .and_then(|e| e.status.as_ref())
            .and_then(|s| s.observed_head_sha.as_deref());
        let verdict = if state.open {
            self.trust
                .assess(
                    &template.spec.trust,
                    &state.facts,
                    label,
                    existing,
                    deployed,
                )
                .await
        } else {
            // Closing needs no trust.
            Verdict::Trusted
        };
        let decision = decide::decide(
            action,
            state,
            &template.name_any(),
            &template.spec,
            &verdict,
        );
        if let Decision::Apply(spec) = &decision
            && found.is_none()
            && let Some(reason) = self.awaiting_cap(template, spec).await?
        {
            let name = naming::environment_name(&template.name_any(), state.facts.number);
            let namespace = template.namespace().unwrap_or_default();
            return Ok(Outcome::Deferred {
                environment: format!("{namespace}/{name}"),
                reason,
            });
        }
        self.carry_out(
            template,
            state.facts.number,
            state.facts.updated_at,
            decision,
        )
        .await
    }

    /// Why a new environment for `spec` must wait, if it would be one more fork PR waiting
    /// for approval than the template allows. (Two deliveries at once may both pass: the cap
    /// bounds the flood, it is not exact.)
    async fn awaiting_cap(
        &self,
        template: &PreviewTemplate,
        spec: &PreviewEnvironmentSpec,
    ) -> Result<Option<String>, IntakeError> {
        if spec.awaiting_approval.is_none() || spec.approved.is_some() {
            return Ok(None);
        }
        let cap = template.spec.trust.max_awaiting_approval;
        let namespace = template.namespace().ok_or(IntakeError::NoNamespace)?;
        let api: Api<PreviewEnvironment> = Api::namespaced(self.client.clone(), &namespace);
        let selector = naming::template_selector(&template.name_any());
        let waiting = api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .iter()
            .filter(|e| e.spec.template == template.name_any())
            .filter(|e| e.metadata.deletion_timestamp.is_none())
            .filter(|e| e.spec.awaiting_approval.is_some() && e.spec.approved.is_none())
            .count();
        Ok((waiting >= cap as usize).then(|| {
            format!(
                "{waiting} fork pull requests already wait for approval (trust.maxAwaitingApproval: {cap})"
            )
        }))
    }

    /// Who may do what.
    pub fn trust(&self) -> &TrustChecker {
        &self.trust
    }

    /// Ask the controller to redeploy `template`'s environment of pull request `number` by
    /// setting [`REDEPLOY_ANNOTATION`] to `request`. `None` when there is no such environment
    /// (or it is being torn down).
    pub async fn request_redeploy(
        &self,
        template: &PreviewTemplate,
        number: u64,
        request: &str,
    ) -> Result<Option<String>, IntakeError> {
        let Some(existing) = self.existing(template, number).await? else {
            return Ok(None);
        };
        if existing.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let namespace = template.namespace().ok_or(IntakeError::NoNamespace)?;
        let api: Api<PreviewEnvironment> = Api::namespaced(self.client.clone(), &namespace);
        let patch = json!({"metadata": {"annotations": {REDEPLOY_ANNOTATION: request}}});
        let params = PatchParams {
            field_manager: Some(COMMAND_FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match api
            .patch(&existing.name_any(), &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Some(format!("{namespace}/{}", existing.name_any()))),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The environment of pull request `number` for `template`, if any.
    pub async fn existing(
        &self,
        template: &PreviewTemplate,
        number: u64,
    ) -> Result<Option<PreviewEnvironment>, IntakeError> {
        let namespace = template.namespace().ok_or(IntakeError::NoNamespace)?;
        let name = naming::environment_name(&template.name_any(), number);
        let api: Api<PreviewEnvironment> = Api::namespaced(self.client.clone(), &namespace);
        Ok(api.get_opt(&name).await?)
    }

    /// Carry out `decision` for pull request `number` of `template`.
    pub async fn carry_out(
        &self,
        template: &PreviewTemplate,
        number: u64,
        updated_at: chrono::DateTime<chrono::Utc>,
        decision: Decision,
    ) -> Result<Outcome, IntakeError> {
        let namespace = template.namespace().ok_or(IntakeError::NoNamespace)?;
        let name = naming::environment_name(&template.name_any(), number);
        let environment = format!("{namespace}/{name}");
        let api: Api<PreviewEnvironment> = Api::namespaced(self.client.clone(), &namespace);
        let _guard = self.stripe(&environment).lock().await;
        match decision {
            Decision::Apply(spec) => self.apply(&api, template, &name, environment, *spec).await,
            Decision::Delete { .. } => delete(&api, &name, environment, updated_at).await,
        }
    }

    async fn apply(
        &self,
        api: &Api<PreviewEnvironment>,
        template: &PreviewTemplate,
        name: &str,
        environment: String,
        spec: PreviewEnvironmentSpec,
    ) -> Result<Outcome, IntakeError> {
        for _ in 0..ATTEMPTS {
            let existing = api.get_opt(name).await?;
            if let Some(existing) = &existing {
                if existing.metadata.deletion_timestamp.is_some() {
                    // Closed and reopened in quick succession: let the teardown finish first,
                    // then create it anew.
                    wait_until_gone(api, name).await?;
                    continue;
                }
                if existing.spec.updated_at > spec.updated_at {
                    return Ok(Outcome::Stale { environment });
                }
                if existing.spec == spec {
                    return Ok(Outcome::Unchanged { environment });
                }
            }
            let body = environment_object(template, name, &spec, existing.as_ref());
            let params = PatchParams::apply(naming::FIELD_MANAGER).force();
            match api.patch(name, &params, &Patch::Apply(&body)).await {
                Ok(_) => return Ok(Outcome::Applied { environment }),
                // Someone wrote in between our read and our write: read again and re-decide.
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IntakeError::Contended(environment))
    }
}

async fn delete(
    api: &Api<PreviewEnvironment>,
    name: &str,
    environment: String,
    updated_at: chrono::DateTime<chrono::Utc>,
) -> Result<Outcome, IntakeError> {
    for _ in 0..ATTEMPTS {
        let Some(existing) = api.get_opt(name).await? else {
            return Ok(Outcome::Absent { environment });
        };
        if existing.spec.updated_at > updated_at {
            return Ok(Outcome::Stale { environment });
        }
        if existing.metadata.deletion_timestamp.is_some() {
            return Ok(Outcome::Deleted { environment });
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: existing.resource_version(),
                uid: existing.uid(),
            }),
            ..DeleteParams::background()
        };
        match api.delete(name, &params).await {
            Ok(_) => return Ok(Outcome::Deleted { environment }),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                return Ok(Outcome::Absent { environment });
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(IntakeError::Contended(environment))
}

async fn wait_until_gone(api: &Api<PreviewEnvironment>, name: &str) -> Result<(), IntakeError> {
    for _ in 0..40 {
        if api.get_opt(name).await?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(IntakeError::StillDeleting(name.to_string()))
}

/// The `PreviewEnvironment` as prenv applies it: owned by its template (so deleting the
/// template tears its environments down), labelled for lookups, and — when it exists — pinned
/// to the version we compared against, so a concurrent write makes the apply fail instead of
/// being overwritten by an older state.
fn environment_object(
    template: &PreviewTemplate,
    name: &str,
    spec: &PreviewEnvironmentSpec,
    existing: Option<&PreviewEnvironment>,
) -> serde_json::Value {
    let owner = OwnerReference {
        api_version: PreviewTemplate::api_version(&()).into_owned(),
        kind: PreviewTemplate::kind(&()).into_owned(),
        name: template.name_any(),
        uid: template.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    let mut metadata = json!({
        "name": name,
        "namespace": template.namespace(),
        "labels": {
            naming::MANAGED_BY_LABEL: naming::MANAGED_BY_VALUE,
            naming::TEMPLATE_LABEL: naming::template_label_value(&template.name_any()),
            naming::PULL_REQUEST_LABEL: spec.number.to_string(),
        },
        "ownerReferences": [owner],
    });
    if let Some(rv) = existing.and_then(|e| e.resource_version()) {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({
        "apiVersion": PreviewEnvironment::api_version(&()),
        "kind": PreviewEnvironment::kind(&()),
        "metadata": metadata,
        "spec": spec,
    })
}
