//! Nothing a template renders may hold the deployer's credentials or run as the deployer:
//! ServiceAccount token Secrets, pods naming it through the deprecated `serviceAccount`
//! field, and pod specs wherever their kind keeps them.

use super::{Case, Refusal, refused, start};

/// A container that would pass `restricted` pod security, and asks for next to nothing.
pub const CONTAINER: &str = "{name: main, image: busybox, resources: {requests: {cpu: 5m, memory: 16Mi}}, securityContext: {runAsNonRoot: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}}";

/// A pod spec (flow style) with `accounts` (e.g. `serviceAccountName: app, `) before its
/// container.
pub fn pod(accounts: &str) -> String {
    format!("{{restartPolicy: Never, {accounts}containers: [{CONTAINER}]}}")
}

/// A suspended Job `migrate` (no pod runs, whichever code applies it) with the pod spec.
fn job(pod_spec: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\nspec:\n  suspend: true\n  template:\n    spec: {pod_spec}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_token_secrets_are_refused() {
    let token = |name: &str, account: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  annotations:\n    kubernetes.io/service-account.name: {account}\ntype: kubernetes.io/service-account-token\n"
        )
    };
    // The API server would fill in a token that never expires: for the deployer, a credential
    // with prenv's rights in the namespace; for any other account, still one no preview needs.
    let cases = [
        Case::with_harmless("deployer", &token("deployer-token", "prenv-deployer")),
        Case::with_harmless("default", &token("default-token", "default")),
    ];
    let s = start("t-token", None, &cases, &[]).await;
    let says = |name: &str| {
        Refusal::new(
            "ObjectRejected",
            &[
                &format!("Secret {name}: "),
                "kubernetes.io/service-account-token",
                "long-lived",
            ],
        )
    };
    refused(
        &s,
        &[
            ("deployer", says("deployer-token")),
            ("default", says("default-token")),
        ],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_cannot_run_as_the_deployer_through_the_deprecated_field() {
    // The API server runs a pod as `serviceAccount` when `serviceAccountName` is empty or null.
    let cases = [
        Case::with_harmless(
            "empty",
            &job(&pod(
                "serviceAccountName: '', serviceAccount: prenv-deployer, ",
            )),
        ),
        Case::with_harmless(
            "null",
            &job(&pod(
                "serviceAccountName: null, serviceAccount: prenv-deployer, ",
            )),
        ),
    ];
    let s = start("t-deprecated", None, &cases, &[]).await;
    let says = || {
        Refusal::new(
            "ObjectRejected",
            &[
                "Job migrate: ",
                "the pod at spec.template.spec may not run as prenv's deployer",
                "serviceAccount: prenv-deployer",
            ],
        )
    };
    refused(&s, &[("empty", says()), ("null", says())], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_specs_are_checked_where_each_kind_keeps_them() {
    let cronjob = format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: nightly\nspec:\n  schedule: '0 0 1 1 *'\n  suspend: true\n  jobTemplate:\n    spec:\n      template:\n        spec: {}\n",
        pod("serviceAccountName: '', serviceAccount: prenv-deployer, ")
    );
    let pod_template = format!(
        "apiVersion: v1\nkind: PodTemplate\nmetadata:\n  name: worker\ntemplate:\n  spec: {}\n",
        pod("serviceAccountName: prenv-deployer, ")
    );
    let cases = [
        Case::with_harmless("cronjob", &cronjob),
        Case::with_harmless("podtemplate", &pod_template),
    ];
    let s = start("t-podpaths", None, &cases, &[]).await;
    refused(
        &s,
        &[
            (
                "cronjob",
                Refusal::new(
                    "ObjectRejected",
                    &[
                        "CronJob nightly: ",
                        "the pod at spec.jobTemplate.spec.template.spec may not run as prenv's deployer",
                    ],
                ),
            ),
            (
                "podtemplate",
                Refusal::new(
                    "ObjectRejected",
                    &[
                        "PodTemplate worker: ",
                        "the pod at template.spec may not run as prenv's deployer",
                        "serviceAccountName: prenv-deployer",
                    ],
                ),
            ),
        ],
        &[],
    )
    .await;
}
