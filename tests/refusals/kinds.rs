//! Pods of kinds prenv does not know (their controllers run them, prenv cannot check what
//! they do) are refused unless the platform allows the kind (`--allowed-pod-kinds`); allowing
//! a kind never lets its pods run as the deployer.

use super::deployer::pod;
use super::support::*;
use super::{Case, Refusal, case_env, check_pr, close_and_assert, refused, start};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use std::time::Duration;
use tokio::sync::OnceCell;

const GROUP: &str = "refusals.prenv.test";

/// A kind the API server serves whose objects hold a pod spec at `spec.template.spec`, as
/// Argo's Rollout does. No controller runs them here: prenv's check is what is tested.
const RUNNER: &str = "apiVersion: refusals.prenv.test/v1\nkind: Runner\nmetadata:\n  name: runner\nspec:\n  template:\n    spec: POD\n";

/// Install the Runner CRD, and let deployers manage Runners (aggregated into the deployer's
/// ClusterRole, as a platform would for its own CRDs): without that the API server, not
/// prenv, would refuse them. Idempotent; both stay for other runs.
async fn install_runners(client: &Client) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let apply = PatchParams::apply("prenv-tests").force();
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("runners.{GROUP}")},
            "spec": {
                "group": GROUP,
                "scope": "Namespaced",
                "names": {"plural": "runners", "singular": "runner", "kind": "Runner", "listKind": "RunnerList"},
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    }}},
                }],
            },
        }))
        .expect("CRD");
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let name = format!("runners.{GROUP}");
        crds.patch(&name, &apply, &Patch::Apply(&crd))
            .await
            .expect("CRD applied");
        let role: ClusterRole = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": "prenv-deployer-refusals-runners",
                "labels": {"prenv.dev/aggregate-to-deployer": "true"},
            },
            "rules": [{
                "apiGroups": [GROUP],
                "resources": ["runners"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            }],
        }))
        .expect("ClusterRole");
        let roles: Api<ClusterRole> = Api::all(client.clone());
        roles
            .patch("prenv-deployer-refusals-runners", &apply, &Patch::Apply(&role))
            .await
            .expect("ClusterRole applied");
        let what = "the Runner CRD established and aggregated into the deployer's role";
        wait_for(what, Duration::from_secs(60), || runners_ready(&crds, &roles)).await;
    })
    .await;
}

/// Whether the API server serves Runners and deployers may manage them.
async fn runners_ready(
    crds: &Api<CustomResourceDefinition>,
    roles: &Api<ClusterRole>,
) -> Option<()> {
    let crd = crds.get(&format!("runners.{GROUP}")).await.ok()?;
    let established = crd
        .status?
        .conditions?
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    let rules = roles.get(DEPLOYER_ROLE).await.ok()?.rules?;
    let aggregated = rules
        .iter()
        .any(|r| r.api_groups.iter().flatten().any(|g| g == GROUP));
    (established && aggregated).then_some(())
}

/// The Runner with a harmless pod spec (`spec.template.spec`).
fn runner() -> String {
    RUNNER.replace("POD", &pod(""))
}

/// A Runner with its pod spec at `spec.worker`, running as the deployer.
fn runner_as_deployer() -> String {
    format!(
        "apiVersion: {GROUP}/v1\nkind: Runner\nmetadata:\n  name: runner\nspec:\n  worker: {}\n",
        pod("serviceAccountName: prenv-deployer, ")
    )
}

/// The refusal of [`runner_as_deployer`], whatever the platform allows.
fn as_deployer_refused() -> Refusal {
    Refusal::new(
        "ObjectRejected",
        &[
            "Runner runner: ",
            "spec.worker.serviceAccountName names prenv's deployer",
        ],
    )
}

/// Templates `runner` (a harmless Runner) and `deployer` (one running as the deployer).
fn cases() -> [Case; 2] {
    [
        Case::with_harmless("runner", &runner()),
        Case::with_harmless("deployer", &runner_as_deployer()),
    ]
}

/// The deployer is bound to the ClusterRole Runners were aggregated into (prenv's default,
/// named so that the premise holds whatever the default).
const ROLE: [&str; 2] = ["--deployer-cluster-role", DEPLOYER_ROLE];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_unknown_kinds_are_refused_by_default() {
    install_runners(&client().await).await;
    let s = start("t-kinds", None, &cases(), &ROLE).await;
    let refusal = Refusal::new(
        "ObjectRejected",
        &[
            "Runner runner: ",
            "holds a pod spec at spec.template.spec",
            "pods of kind refusals.prenv.test/Runner are not allowed by the platform",
            "--allowed-pod-kinds",
        ],
    );
    refused(
        &s,
        &[("runner", refusal), ("deployer", as_deployer_refused())],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_kinds_the_platform_allows_are_accepted_but_not_as_the_deployer() {
    install_runners(&client().await).await;
    let allowed = format!("example.com/Widget,{GROUP}/Runner");
    let s = start(
        "t-allowed",
        None,
        &cases(),
        &[ROLE[0], ROLE[1], "--allowed-pod-kinds", &allowed],
    )
    .await;
    let (number, _) = s.open("Allowed kinds").await;
    let refusal = as_deployer_refused();
    let mut problems = check_pr(&s, number, &[("deployer", refusal)], &["runner"]).await;
    // The allowed one is there, as rendered.
    let runners: Api<DynamicObject> = Api::namespaced_with(
        s.client.clone(),
        &format!("{}-runner-pr-{number}", s.template),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, "v1", "Runner"),
            "runners",
        ),
    );
    match runners.get_opt("runner").await {
        Ok(Some(runner))
            if runner.data["spec"]["template"]["spec"]["containers"][0]["name"] == "main" => {}
        other => problems.push(format!(
            "{}: the allowed Runner is not applied as rendered: {other:?}",
            case_env(&s, "runner", number)
        )),
    }
    close_and_assert(&s, &[number], &problems).await;
}
