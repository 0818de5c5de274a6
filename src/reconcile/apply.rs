//! Apply and prune: the preview namespace and the rendered objects, by server-side apply with
//! prenv's field manager; objects a previous render created and this one dropped are deleted.

use super::fence;
use crate::model::AppliedKind;
use crate::naming;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::discovery::{ApiCapabilities, Scope};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tokio::sync::RwLock;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "namespace {0} already exists and does not belong to this environment; prenv will not touch it"
    )]
    NamespaceConflict(String),
    #[error("namespace {0} is still terminating from an earlier environment")]
    NamespaceTerminating(String),
    #[error("{kind} {name}: the API server does not serve {api_version}/{kind}")]
    UnknownKind {
        api_version: String,
        kind: String,
        name: String,
    },
    #[error("{kind} {name}: cluster-scoped objects are not allowed in a preview")]
    ClusterScoped { kind: String, name: String },
    #[error("{kind} {name}: {source}")]
    Object {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("namespace {name}: {source}")]
    Namespace {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {name} named in copySecrets does not exist in namespace {namespace}")]
    MissingSecret { name: String, namespace: String },
    #[error("deployer: {0}")]
    Deployer(String),
    #[error("pruning {kind}: {source}")]
    Prune {
        kind: String,
        #[source]
        source: kube::Error,
    },
}

impl ApplyError {
    /// Condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ApplyError::NamespaceConflict(_) => "NamespaceConflict",
            ApplyError::NamespaceTerminating(_) => "NamespaceTerminating",
            ApplyError::UnknownKind { .. } => "UnknownKind",
            ApplyError::ClusterScoped { .. } => "ObjectRejected",
            ApplyError::Object {
                source: kube::Error::Api(e),
                ..
            } if e.code == 403 => "Forbidden",
            ApplyError::Object { .. } | ApplyError::Namespace { .. } => "ApplyFailed",
            ApplyError::MissingSecret { .. } => "MissingSecret",
            ApplyError::Deployer(_) => "DeployerNotReady",
            ApplyError::Prune { .. } => "PruneFailed",
        }
    }

    /// Whether the template author must change something (as opposed to a passing condition
    /// that a retry will clear).
    pub fn is_permanent(&self) -> bool {
        !matches!(
            self,
            ApplyError::NamespaceTerminating(_)
                | ApplyError::Prune { .. }
                | ApplyError::Namespace { .. }
                | ApplyError::Deployer(_)
        )
    }
}

/// Discovery answers per kind, kept for the life of the process (a kind that was missing is
/// asked again next time, so CRDs installed later are found).
#[derive(Default)]
pub struct Discovery {
    known: RwLock<HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>>,
}

impl Discovery {
    pub async fn resolve(
        &self,
        client: &Client,
        gvk: &GroupVersionKind,
    ) -> Result<Option<(ApiResource, ApiCapabilities)>, kube::Error> {
        if let Some(found) = self.known.read().await.get(gvk) {
            return Ok(Some(found.clone()));
        }
        match kube::discovery::pinned_kind(client, gvk).await {
            Ok(found) => {
                self.known.write().await.insert(gvk.clone(), found.clone());
                Ok(Some(found))
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// An object ready to apply, with the API resource it goes to.
pub struct Planned {
    pub object: Value,
    pub resource: ApiResource,
    pub kind: AppliedKind,
    pub name: String,
}

fn gvk_of(object: &Value) -> (GroupVersionKind, String, String, String) {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.clone()),
    };
    (
        GroupVersionKind::gvk(&group, &version, &kind),
        api_version,
        kind,
        name,
    )
}

/// Resolve every object's kind before anything is applied, so an unknown or cluster-scoped
/// kind fails the whole render instead of half-applying it.
pub async fn plan(
    client: &Client,
    discovery: &Discovery,
    objects: Vec<Value>,
) -> Result<Vec<Planned>, PlanError> {
    let mut planned = Vec::with_capacity(objects.len());
    for object in objects {
        let (gvk, api_version, kind, name) = gvk_of(&object);
        let Some((resource, caps)) = discovery
            .resolve(client, &gvk)
            .await
            .map_err(PlanError::Discovery)?
        else {
            return Err(PlanError::Apply(ApplyError::UnknownKind {
                api_version,
                kind,
                name,
            }));
        };
        if caps.scope == Scope::Cluster {
            return Err(PlanError::Apply(ApplyError::ClusterScoped { kind, name }));
        }
        planned.push(Planned {
            object,
            resource,
            kind: AppliedKind { api_version, kind },
            name,
        });
    }
    Ok(planned)
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("discovery: {0}")]
    Discovery(#[source] kube::Error),
}

/// Create or update the preview namespace, refusing one that is not this environment's.
pub async fn ensure_namespace(
    client: &Client,
    name: &str,
    env_namespace: &str,
    env_name: &str,
    extra_labels: &BTreeMap<String, String>,
) -> Result<(), ApplyError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let seen = api.get_opt(name).await.map_err(|e| ns_err(name, e))?;
    claim_namespace(client, name, env_namespace, env_name, extra_labels, seen).await
}

fn ns_err(name: &str, source: kube::Error) -> ApplyError {
    ApplyError::Namespace {
        name: name.to_string(),
        source,
    }
}

/// Make `name` this environment's namespace, given what a read just `seen` of it.
///
/// Nothing seen: the namespace is created (never applied), so if another party created it
/// since the read, the create fails and it is judged as someone else's instead of being
/// adopted. Seen and ours: it is updated by an apply that carries the resourceVersion seen,
/// so a namespace deleted and re-made by someone else in between is not adopted either.
pub async fn claim_namespace(
    client: &Client,
    name: &str,
    env_namespace: &str,
    env_name: &str,
    extra_labels: &BTreeMap<String, String>,
    mut seen: Option<Namespace>,
) -> Result<(), ApplyError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut labels = naming::owned_labels(env_namespace, env_name);
    labels.extend(extra_labels.clone());
    let annotations = naming::owned_annotations(env_namespace, env_name);
    let mut body = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    // A conflict means the namespace changed under us: read it again and judge it afresh.
    for _ in 0..3 {
        let Some(existing) = seen.take() else {
            let params = PostParams {
                field_manager: Some(naming::FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            match api.create(&params, &body).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    seen = api.get_opt(name).await.map_err(|e| ns_err(name, e))?;
                    continue;
                }
                Err(e) => return Err(ns_err(name, e)),
            }
        };
        if !naming::is_owned_by(existing.metadata.labels.as_ref(), env_namespace, env_name) {
            return Err(ApplyError::NamespaceConflict(name.to_string()));
        }
        if existing.metadata.deletion_timestamp.is_some() {
            return Err(ApplyError::NamespaceTerminating(name.to_string()));
        }
        if contains_all(existing.metadata.labels.as_ref(), &labels)
            && contains_all(existing.metadata.annotations.as_ref(), &annotations)
        {
            return Ok(());
        }
        body.metadata.resource_version = existing.metadata.resource_version.clone();
        let patch = PatchParams::apply(naming::FIELD_MANAGER).force();
        match api.patch(name, &patch, &Patch::Apply(&body)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                seen = api.get_opt(name).await.map_err(|e| ns_err(name, e))?;
            }
            Err(e) => return Err(ns_err(name, e)),
        }
    }
    Err(ApplyError::NamespaceConflict(name.to_string()))
}

/// Whether `have` holds every entry of `want`.
fn contains_all(have: Option<&BTreeMap<String, String>>, want: &BTreeMap<String, String>) -> bool {
    want.iter()
        .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
}

/// Delete this environment's namespaces other than `keep` (left behind when the template's
/// namespace pattern changed). Returns the names still present (terminating).
pub async fn delete_namespaces(
    client: &Client,
    env_namespace: &str,
    env_name: &str,
    keep: Option<&str>,
) -> Result<Vec<String>, kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let selector = naming::environment_selector(env_namespace, env_name);
    let mut remaining = Vec::new();
    for ns in api.list(&ListParams::default().labels(&selector)).await? {
        let name = ns.name_any();
        if Some(name.as_str()) == keep {
            continue;
        }
        // The selector's label value may be a shortened hash: check the full annotation too.
        if naming::owner_from_annotations(ns.metadata.annotations.as_ref())
            != Some((env_namespace.to_string(), env_name.to_string()))
        {
            continue;
        }
        if ns.metadata.deletion_timestamp.is_none() {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => continue,
                Err(e) => return Err(e),
            }
        }
        remaining.push(name);
    }
    Ok(remaining)
}

/// Server-side apply every planned object into `namespace` as `client`; returns what the API
/// server answered (with status, for readiness). With `dry_run` nothing is stored: a first
/// dry-run pass makes sure the API server accepts every object before any is applied.
pub async fn apply_all(
    client: &Client,
    namespace: &str,
    planned: &[Planned],
    dry_run: bool,
) -> Result<Vec<Value>, ApplyError> {
    let mut params = PatchParams::apply(naming::FIELD_MANAGER).force();
    params.dry_run = dry_run;
    let mut applied = Vec::with_capacity(planned.len());
    for p in planned {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &p.resource);
        let result = api
            .patch(&p.name, &params, &Patch::Apply(&p.object))
            .await
            .map_err(|source| ApplyError::Object {
                kind: p.kind.kind.clone(),
                name: p.name.clone(),
                source,
            })?;
        applied.push(serde_json::to_value(result).unwrap_or(Value::Null));
    }
    Ok(applied)
}

/// What keeps the pods of `namespace` from becoming ready, one line per pod that says (read
/// as the deployer). Best effort: it only explains a wait, so a failed list explains nothing.
pub async fn pod_problems(deployer: &Client, namespace: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(deployer.clone(), namespace);
    let Ok(pods) = api.list(&kube::api::ListParams::default()).await else {
        return Vec::new();
    };
    pods.items
        .iter()
        .filter_map(|pod| serde_json::to_value(pod).ok())
        .filter_map(|pod| super::observe::pod_problem(&pod))
        .collect()
}

/// Copy the template's `names` Secrets from `from` (read by name as prenv, which may only
/// `get` Secrets) into `namespace` (written as the `deployer`), and delete copies that are no
/// longer wanted. A missing Secret is an error the template author must fix.
pub async fn copy_secrets(
    client: &Client,
    deployer: &Client,
    from: &str,
    namespace: &str,
    names: &[String],
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Result<(), ApplyError> {
    let source: Api<Secret> = Api::namespaced(client.clone(), from);
    let target: Api<Secret> = Api::namespaced(deployer.clone(), namespace);
    let mut labels = labels.clone();
    labels.insert(fence::FENCE_LABEL.into(), "true".into());
    labels.insert(fence::COPIED_SECRET_LABEL.into(), "true".into());
    let secret_err = |name: &str, source| ApplyError::Object {
        kind: "Secret".into(),
        name: name.to_string(),
        source,
    };
    for name in names {
        let Some(secret) = source
            .get_opt(name)
            .await
            .map_err(|e| secret_err(name, e))?
        else {
            return Err(ApplyError::MissingSecret {
                name: name.clone(),
                namespace: from.to_string(),
            });
        };
        let copy = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
            "type": secret.type_,
            "data": secret.data,
        });
        target
            .patch(
                name,
                &PatchParams::apply(naming::FIELD_MANAGER).force(),
                &Patch::Apply(&copy),
            )
            .await
            .map_err(|e| secret_err(name, e))?;
    }
    let copied = target
        .list(&ListParams::default().labels(&format!("{}=true", fence::COPIED_SECRET_LABEL)))
        .await
        .map_err(|source| ApplyError::Prune {
            kind: "Secret".into(),
            source,
        })?;
    for secret in copied {
        let name = secret.name_any();
        if !names.contains(&name) {
            match target.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(source) => {
                    return Err(ApplyError::Prune {
                        kind: "Secret".into(),
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Wait (briefly) until the deployer's RoleBinding is in effect: RBAC is eventually
/// consistent, and a first apply right after creating the binding could be refused.
pub async fn wait_for_deployer(deployer: &Client, namespace: &str) -> Result<(), ApplyError> {
    let api: Api<SelfSubjectAccessReview> = Api::all(deployer.clone());
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "spec": {"resourceAttributes": {"namespace": namespace, "verb": "create", "resource": "configmaps"}},
    }))
    .map_err(|e| ApplyError::Deployer(e.to_string()))?;
    for _ in 0..25 {
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ApplyError::Deployer(e.to_string()))?;
        if answer.status.is_some_and(|s| s.allowed) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Err(ApplyError::Deployer(format!(
        "{} may not create objects in {namespace}; check its RoleBinding and ClusterRole",
        fence::DEPLOYER
    )))
}

/// Delete objects of this environment in `namespace` whose kind is in `kinds` but that the
/// current render no longer has. Kinds the API server no longer serves are skipped.
pub async fn prune(
    client: &Client,
    discovery: &Discovery,
    namespace: &str,
    selector: &str,
    kinds: &BTreeSet<AppliedKind>,
    keep: &BTreeSet<(AppliedKind, String)>,
) -> Result<Vec<String>, ApplyError> {
    let mut pruned = Vec::new();
    for kind in kinds {
        let object = json!({"apiVersion": kind.api_version, "kind": kind.kind});
        let (gvk, ..) = gvk_of(&object);
        let prune_err = |source| ApplyError::Prune {
            kind: kind.kind.clone(),
            source,
        };
        let Some((resource, _)) = discovery.resolve(client, &gvk).await.map_err(prune_err)? else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let list = match api.list(&ListParams::default().labels(selector)).await {
            Ok(list) => list,
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(prune_err(e)),
        };
        for obj in list {
            let name = obj.name_any();
            let fenced = obj.labels().contains_key(fence::FENCE_LABEL);
            if fenced || keep.contains(&(kind.clone(), name.clone())) {
                continue;
            }
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => pruned.push(format!("{} {name}", kind.kind)),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(prune_err(e)),
            }
        }
    }
    Ok(pruned)
}
