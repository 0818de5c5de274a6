//! Collect: tearing an environment down when its `PreviewEnvironment` is deleted (pull request
//! closed, template deleted). The finalizer is only released once every namespace of the
//! environment is gone or terminating; a failed teardown stays visible on the object. A
//! periodic sweep removes preview namespaces whose environment is gone for any other reason.

use crate::model::{Phase, PreviewEnvironment};
use crate::naming;
use crate::reconcile::{Context, ReconcileError, apply, status};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;

pub async fn teardown(env: &PreviewEnvironment, ctx: &Context) -> Result<Action, ReconcileError> {
    let namespace = env.namespace().ok_or(ReconcileError::NoNamespace)?;
    let name = env.name_any();
    let api: Api<PreviewEnvironment> = Api::namespaced(ctx.client.clone(), &namespace);
    let old = env.status.clone().unwrap_or_default();
    let mut new = old.clone();
    new.phase = Some(Phase::Deleting);

    let result = apply::delete_namespaces(&ctx.client, &namespace, &name, None).await;
    match &result {
        Ok(_) => {
            new.message = Some("tearing down".into());
            status::remove_condition(&mut new.conditions, status::CLEANED_UP);
        }
        Err(e) => {
            let message = format!("could not delete the preview namespace: {e}");
            status::set_condition(
                &mut new.conditions,
                status::CLEANED_UP,
                false,
                "CleanupFailed",
                &message,
                env.metadata.generation,
            );
            new.message = Some(message.clone());
            if old.message != new.message {
                ctx.event(env, EventType::Warning, "CleanupFailed", message)
                    .await;
            }
        }
    }
    if let Some(patch) = status::patch(&old, &new) {
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    match result {
        Ok(terminating) => {
            let mut settled = env.clone();
            settled.status = Some(new);
            crate::reconcile::release_feedback(&settled, ctx, &api).await?;
            if !terminating.is_empty() {
                ctx.event(
                    env,
                    EventType::Normal,
                    "TornDown",
                    format!("deleted namespace {}", terminating.join(", ")),
                )
                .await;
            }
            Ok(Action::await_change())
        }
        Err(e) => Err(ReconcileError::Cleanup(e.to_string())),
    }
}

/// Delete every preview namespace (in `scope`, or everywhere) whose `PreviewEnvironment` no
/// longer exists: left behind when an environment's finalizer was removed by hand, or when it
/// was deleted while prenv was not running with its finalizer. Returns the deleted names.
///
/// Only namespaces that prenv labelled *and* annotated consistently for one environment are
/// candidates, and the environment is read from the API server, not a cache, so a namespace
/// whose environment exists is never touched.
pub async fn sweep_orphans(
    client: &Client,
    scope: Option<&str>,
) -> Result<Vec<String>, kube::Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let managed = ListParams::default().labels(&format!(
        "{}={}",
        naming::MANAGED_BY_LABEL,
        naming::MANAGED_BY_VALUE
    ));
    // The live (not yet terminating) preview namespaces of each environment they name.
    let mut by_environment: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for ns in namespaces.list(&managed).await? {
        if ns.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some((env_namespace, env_name)) =
            naming::owner_from_annotations(ns.metadata.annotations.as_ref())
        else {
            continue;
        };
        if scope.is_some_and(|s| s != env_namespace)
            || !naming::is_owned_by(ns.metadata.labels.as_ref(), &env_namespace, &env_name)
        {
            continue;
        }
        by_environment
            .entry((env_namespace, env_name))
            .or_default()
            .push(ns.name_any());
    }
    let mut deleted = Vec::new();
    for ((env_namespace, env_name), names) in by_environment {
        let environments: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &env_namespace);
        if environments.get_opt(&env_name).await?.is_some() {
            continue;
        }
        apply::delete_namespaces(client, &env_namespace, &env_name, None).await?;
        tracing::info!(namespaces = ?names, environment = %format!("{env_namespace}/{env_name}"), "deleted orphaned preview namespaces");
        deleted.extend(names);
    }
    Ok(deleted)
}
