//! What a pull request writes (its title, its branch) may change values, never the rendered
//! YAML's structure, whatever the context the template writes it in: a flow mapping, a flow
//! sequence, or quotes of the template's own. Such a render is refused naming the variable and
//! the fix (`| tojson`), which the control template uses; harmless values deploy everywhere.

use super::support::*;
use super::{Case, Refusal, check_pr, close_and_assert, start};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use std::collections::BTreeMap;

/// Ends the template's single quotes and adds a key.
const EVIL_TITLE: &str = "x', evil: 'y";
/// A branch name GitHub allows that adds an item to a flow sequence, in quotes or not.
const EVIL_BRANCH: &str = ",evil";
const TITLE: &str = "Fix checkout totals";
const BRANCH: &str = "feature/checkout";

/// Both values written as one JSON-quoted expression each, in a flow mapping: always safe.
const CONTROL: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: quoted\ndata: {title: {{ pr.title | tojson }}, ref: {{ pr.head_ref | tojson }}}\n";

fn config_map(name: &str, data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:{data}\n")
}

/// A suspended CronJob `refs` (no pod runs) whose container has these `args`.
fn cronjob(args: &str) -> String {
    let container =
        super::deployer::CONTAINER.replace("{name: main,", &format!("{{name: main, args: {args},"));
    format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: refs\nspec:\n  schedule: '0 0 1 1 *'\n  suspend: true\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers:\n          - {container}\n"
    )
}

/// `(case, the variable its template writes, on which line)` of [`cases`].
const CASES: [(&str, &str, usize); 5] = [
    ("flowmap", "pr.title", 12),
    ("flowseq", "pr.head_ref", 21),
    ("flowseq-quoted", "pr.head_ref", 21),
    ("single", "pr.title", 13),
    ("double", "pr.title", 13),
];

fn cases() -> Vec<Case> {
    vec![
        Case::with_harmless(
            "flowmap",
            &config_map("flow", " {title: '{{ pr.title }}', team: shop}"),
        ),
        Case::with_harmless("flowseq", &cronjob("[--ref={{ pr.head_ref }}]")),
        Case::with_harmless("flowseq-quoted", &cronjob("[\"--ref={{ pr.head_ref }}\"]")),
        Case::with_harmless(
            "single",
            &config_map("single", "\n  title: '{{ pr.title }}'"),
        ),
        Case::with_harmless(
            "double",
            &config_map("double", "\n  title: \"{{ pr.title }}\""),
        ),
    ]
}

/// Data of ConfigMap `name` in `ns`, if it exists.
async fn data(s: &Scenario, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
    Api::<ConfigMap>::namespaced(s.client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get config map")?
        .data
}

fn pairs(items: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Open a pull request with this title and head branch: its number.
async fn open(s: &Scenario, title: &str, branch: &str) -> u64 {
    let mut pr = new_pr(title);
    pr.head_ref = branch.to_string();
    let opened = s.github.open_pr(&s.repo, pr).await.expect("opened");
    opened.payload["number"].as_u64().expect("number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_values_cannot_change_the_yaml_structure() {
    let s = start("t-shape", Some(CONTROL), &cases(), &[]).await;
    let evil = open(&s, EVIL_TITLE, EVIL_BRANCH).await;
    let benign = open(&s, TITLE, BRANCH).await;

    let unsafe_value = |variable: &str, line: usize| {
        Refusal::new(
            "UnsafeValue",
            &[
                &format!(
                    "resources template, line {line}: the value of {variable} changes the YAML's structure"
                ),
                &format!("{{{{ {variable} | tojson }}}}"),
            ],
        )
    };
    let refusals: Vec<(&str, Refusal)> = CASES
        .iter()
        .map(|(suffix, variable, line)| (*suffix, unsafe_value(variable, *line)))
        .collect();
    let mut problems = check_pr(&s, evil, &refusals, &[]).await;
    // `| tojson` writes the same values as exactly themselves.
    let control_ns = s.preview_ns(evil);
    let quoted = data(&s, &control_ns, "quoted").await;
    if quoted != pairs(&[("title", EVIL_TITLE), ("ref", EVIL_BRANCH)]) {
        problems.push(format!("{control_ns}: ConfigMap quoted is {quoted:?}"));
    }

    // Harmless values deploy in every context, as written.
    let suffixes: Vec<&str> = CASES.iter().map(|(suffix, _, _)| *suffix).collect();
    problems.extend(check_pr(&s, benign, &[], &suffixes).await);
    let preview = |suffix: &str| format!("{}-{suffix}-pr-{benign}", s.template);
    for (suffix, name, want) in [
        (
            "flowmap",
            "flow",
            pairs(&[("title", TITLE), ("team", "shop")]),
        ),
        ("single", "single", pairs(&[("title", TITLE)])),
        ("double", "double", pairs(&[("title", TITLE)])),
    ] {
        let got = data(&s, &preview(suffix), name).await;
        if got != want {
            problems.push(format!("{suffix}: ConfigMap {name} is {got:?}"));
        }
    }
    for suffix in ["flowseq", "flowseq-quoted"] {
        let args = Api::<CronJob>::namespaced(s.client.clone(), &preview(suffix))
            .get_opt("refs")
            .await
            .expect("get cron job")
            .and_then(|c| c.spec?.job_template.spec?.template.spec)
            .and_then(|pod| pod.containers.first()?.args.clone());
        if args != Some(vec![format!("--ref={BRANCH}")]) {
            problems.push(format!("{suffix}: CronJob refs has args {args:?}"));
        }
    }
    close_and_assert(&s, &[evil, benign], &problems).await;
}
