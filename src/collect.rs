//! Collect: tearing an environment down when its `PreviewEnvironment` is deleted (pull request
//! closed, template deleted). The finalizer is only released once every namespace of the
//! environment is gone or terminating; a failed teardown stays visible on the object.

use crate::model::{Phase, PreviewEnvironment};
use crate::reconcile::{Context, ReconcileError, apply, status};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

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
