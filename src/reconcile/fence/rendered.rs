//! Checks on what a template rendered, before anything is applied: objects that would widen
//! the fence, carry or use the credentials of prenv's own ServiceAccounts, run pods of kinds
//! the platform does not know, or open a path from outside the namespace. Pure.

use super::{DEPLOYER, FenceError};
use serde_json::Value;

/// ServiceAccounts prenv creates in a preview namespace. Its rights are prenv's (applying as
/// the deployer), never a template's: nothing rendered may run as one, hold its token or grant
/// it anything.
pub const PRENV_SERVICE_ACCOUNTS: &[&str] = &[DEPLOYER];

/// Kinds a template may not bring, because they would widen the fence. Quota and limit
/// writes are refused by the API server too (the deployer cannot make them), but network
/// policies are additive and within `edit`'s reach, so they are refused here. RBAC objects are
/// left to the API server, which refuses any grant the deployer does not hold itself.
const FENCE_KINDS: &[&str] = &["NetworkPolicy", "ResourceQuota", "LimitRange"];

/// Objects prenv itself creates in every preview namespace, by `(group, kind)`, named after a
/// ServiceAccount of [`PRENV_SERVICE_ACCOUNTS`]: a template's version would change prenv's own
/// (e.g. mount the deployer's token into pods, or bind it to more).
const PRENV_OBJECT_KINDS: &[(&str, &str)] = &[
    ("", "ServiceAccount"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
];

/// Workload kinds of Kubernetes itself, by `(group, kind)`, and where their pod spec lives.
/// Their pods are checked there (and wherever else something looks like a pod spec).
const POD_KINDS: &[(&str, &str, &str)] = &[
    ("", "Pod", "/spec"),
    ("", "PodTemplate", "/template/spec"),
    ("", "ReplicationController", "/spec/template/spec"),
    ("apps", "Deployment", "/spec/template/spec"),
    ("apps", "ReplicaSet", "/spec/template/spec"),
    ("apps", "StatefulSet", "/spec/template/spec"),
    ("apps", "DaemonSet", "/spec/template/spec"),
    ("batch", "Job", "/spec/template/spec"),
    ("batch", "CronJob", "/spec/jobTemplate/spec/template/spec"),
];

/// The Secret type whose token the API server fills in for the ServiceAccount its annotation
/// names.
const SERVICE_ACCOUNT_TOKEN: &str = "kubernetes.io/service-account-token";

/// Service types that stay inside the cluster.
const INTERNAL_SERVICE_TYPES: &[&str] = &["ClusterIP"];

/// What the platform lets rendered objects do beyond what is always allowed (prenv's flags).
/// The default allows nothing more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectRules {
    /// Further kinds, as `group/Kind` (`Kind` alone for the core group), whose objects may hold
    /// pod specs, e.g. `argoproj.io/Rollout`. Their controllers run the pods, so the platform
    /// vouches for what the controller does with the rest of the object.
    pub allowed_pod_kinds: Vec<String>,
    /// Whether Services may reach outside the namespace: `type: ExternalName`, `NodePort`,
    /// `LoadBalancer`, `externalIPs`.
    pub allow_external_services: bool,
}

impl ObjectRules {
    fn allows_pod_kind(&self, group: &str, kind: &str) -> bool {
        self.allowed_pod_kinds.iter().any(|allowed| {
            let allowed = allowed.trim();
            match allowed.rsplit_once('/') {
                Some((g, k)) => k == kind && (g == group || (group.is_empty() && g == "core")),
                None => group.is_empty() && allowed == kind,
            }
        })
    }
}

/// Refuse rendered objects that would widen the fence, with the platform's defaults
/// ([`ObjectRules::default`]): see [`check_objects_with`].
pub fn check_objects(objects: &[Value]) -> Result<(), FenceError> {
    check_objects_with(objects, &ObjectRules::default())
}

/// Refuse rendered objects that would widen the fence:
/// - fence kinds (network policies, quotas, limit ranges) and prenv's own objects;
/// - anything that carries or uses the credentials of prenv's ServiceAccounts: ServiceAccount
///   token Secrets, pods running as one (wherever their pod spec lives, through either
///   ServiceAccount field), any `serviceAccount…` field or ServiceAccount user naming one,
///   bindings granting one rights;
/// - pods of kinds other than Kubernetes' own workloads, unless `rules` allows the kind;
/// - Services reachable from outside the namespace, unless `rules` allows them.
pub fn check_objects_with(objects: &[Value], rules: &ObjectRules) -> Result<(), FenceError> {
    objects
        .iter()
        .try_for_each(|object| check_object(object, rules))
}

fn check_object(object: &Value, rules: &ObjectRules) -> Result<(), FenceError> {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let group = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.rsplit_once('/'))
        .map_or("", |(group, _)| group);
    let forbidden = |reason: String| FenceError::Forbidden {
        kind: kind.to_string(),
        name: name.to_string(),
        reason,
    };

    if FENCE_KINDS.contains(&kind) {
        return Err(forbidden(
            "this kind belongs to the preview's fence and cannot come from a template".into(),
        ));
    }
    if PRENV_OBJECT_KINDS.contains(&(group, kind)) && is_prenv_account(name) {
        return Err(forbidden(format!(
            "{name} is prenv's own and cannot come from a template"
        )));
    }
    if group.is_empty()
        && kind == "Secret"
        && object.get("type").and_then(Value::as_str) == Some(SERVICE_ACCOUNT_TOKEN)
    {
        // Refused whatever ServiceAccount its annotation names: the API server fills in a
        // token that never expires for the `kubernetes.io/service-account.name` it names,
        // which could be prenv's deployer (whose rights are prenv's), and names are easy to
        // get subtly right or wrong in a check. Pods get short-lived projected tokens of their
        // own ServiceAccount anyway; no preview needs a long-lived token Secret.
        return Err(forbidden(format!(
            "Secrets of type {SERVICE_ACCOUNT_TOKEN} hold a long-lived ServiceAccount token and cannot come from a template"
        )));
    }
    if let Some(subjects) = object.get("subjects").and_then(Value::as_array)
        && group == "rbac.authorization.k8s.io"
    {
        for subject in subjects {
            let subject_kind = subject.get("kind").and_then(Value::as_str);
            let subject_name = subject.get("name").and_then(Value::as_str);
            if subject_kind == Some("ServiceAccount") && subject_name.is_some_and(is_prenv_account)
            {
                return Err(forbidden(
                    "may not grant rights to prenv's deployer ServiceAccount".into(),
                ));
            }
        }
    }

    // Pods: at the workload's own pod spec path, and anywhere something looks like one.
    let known = POD_KINDS.iter().find(|(g, k, _)| *g == group && *k == kind);
    if let Some((_, _, path)) = known
        && let Some(spec) = object.pointer(path)
    {
        check_pod_spec(spec, &path[1..].replace('/', ".")).map_err(forbidden)?;
    }
    let mut found = Vec::new();
    walk(object, &mut String::new(), &mut found).map_err(forbidden)?;
    for (path, spec) in &found {
        check_pod_spec(spec, path).map_err(forbidden)?;
    }
    if known.is_none()
        && let Some((path, _)) = found.first()
        && !rules.allows_pod_kind(group, kind)
    {
        let what = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{group}/{kind}")
        };
        return Err(forbidden(format!(
            "holds a pod spec at {}; pods of kind {what} are not allowed by the platform (only Kubernetes' own workload kinds and --allowed-pod-kinds)",
            display_path(path)
        )));
    }

    if group.is_empty() && kind == "Service" && !rules.allow_external_services {
        check_service(object).map_err(forbidden)?;
    }
    Ok(())
}

fn is_prenv_account(name: &str) -> bool {
    PRENV_SERVICE_ACCOUNTS.contains(&name)
}

/// Whether `s` is the Kubernetes user name of one of prenv's ServiceAccounts
/// (`system:serviceaccount:<namespace>:<name>`), in any namespace.
fn is_prenv_account_user(s: &str) -> bool {
    s.strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(_, name)| is_prenv_account(name))
}

/// A pod spec runs as the ServiceAccount `serviceAccountName` names or, when that is empty or
/// null, as the one the deprecated `serviceAccount` names (the API server copies it over).
/// Both are checked, whatever their order, so neither spelling reaches prenv's deployer.
/// Running as the deployer is refused outright, which also covers everything that would hand
/// its token to a container: `automountServiceAccountToken: true` and projected
/// `serviceAccountToken` volumes (which carry no ServiceAccount name of their own: they are
/// the pod's).
fn check_pod_spec(spec: &Value, path: &str) -> Result<(), String> {
    for field in ["serviceAccountName", "serviceAccount"] {
        if let Some(account) = spec.get(field).and_then(Value::as_str)
            && is_prenv_account(account)
        {
            let automount = spec.get("automountServiceAccountToken") == Some(&Value::Bool(true));
            return Err(format!(
                "the pod at {} may not run as prenv's deployer ({field}: {account}{}); prenv applies objects with its rights, pods use a ServiceAccount of their own",
                display_path(path),
                if automount {
                    ", with its token mounted"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(())
}

/// Walk `value`, refusing references to prenv's ServiceAccounts and collecting the paths of
/// everything that looks like a pod spec (an object with a `containers` list).
fn walk<'a>(
    value: &'a Value,
    path: &mut String,
    pod_specs: &mut Vec<(String, &'a Value)>,
) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            if map.get("containers").is_some_and(Value::is_array) {
                pod_specs.push((path.clone(), value));
            }
            for (key, child) in map {
                // A field that names a ServiceAccount (`serviceAccountName`,
                // `serviceAccountRef: {name: ...}`, ...) in any kind: custom controllers run
                // things as the ServiceAccount such a field names.
                if key.to_ascii_lowercase().contains("serviceaccount") {
                    let named = child
                        .as_str()
                        .or_else(|| child.get("name").and_then(Value::as_str));
                    if let Some(account) = named.filter(|a| is_prenv_account(a)) {
                        return Err(format!(
                            "{} names prenv's deployer ({account}); nothing in a preview may run as or refer to it",
                            display_path(&join(path, key))
                        ));
                    }
                }
                let len = path.len();
                path.push('.');
                path.push_str(key);
                let result = walk(child, path, pod_specs);
                path.truncate(len);
                result?;
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                let result = walk(item, path, pod_specs);
                path.truncate(len);
                result?;
            }
        }
        Value::String(s) if is_prenv_account_user(s) => {
            return Err(format!(
                "{} names prenv's deployer as a user ({s}); nothing in a preview may act as it",
                display_path(path)
            ));
        }
        _ => {}
    }
    Ok(())
}

fn join(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

/// A walked path (`.spec.template.spec`, `.items[0]`) for people: `spec.template.spec`, or
/// `the object` for the object itself.
fn display_path(path: &str) -> String {
    let path = path.strip_prefix('.').unwrap_or(path);
    if path.is_empty() {
        "the object's top level".to_string()
    } else {
        path.to_string()
    }
}

/// A Service stays inside the namespace's fence only as a ClusterIP Service without external
/// IPs. `ExternalName` points cluster DNS at any host, `NodePort` and `LoadBalancer` open the
/// preview to whoever reaches the nodes or the load balancer (around the network policy), and
/// `externalIPs` lets a Service capture traffic the whole cluster sends to any address
/// (CVE-2020-8554, a man-in-the-middle that Kubernetes leaves to admission to prevent).
fn check_service(service: &Value) -> Result<(), String> {
    let spec = service.get("spec");
    let field = |name: &str| spec.and_then(|s| s.get(name)).filter(|v| !v.is_null());
    if let Some(kind) = field("type")
        && !kind
            .as_str()
            .is_some_and(|t| INTERNAL_SERVICE_TYPES.contains(&t))
    {
        return Err(format!(
            "type: {kind} reaches outside the preview namespace; only ClusterIP Services are allowed unless the platform allows external Services (--allow-external-services)"
        ));
    }
    if let Some(ips) = field("externalIPs")
        && !ips.as_array().is_some_and(Vec::is_empty)
    {
        return Err(
            "externalIPs can intercept traffic to those addresses from the whole cluster (CVE-2020-8554); not allowed unless the platform allows external Services (--allow-external-services)"
                .into(),
        );
    }
    if let Some(name) = field("externalName")
        && name.as_str() != Some("")
    {
        return Err(
            "externalName points cluster DNS outside the preview; not allowed unless the platform allows external Services (--allow-external-services)"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// Objects from multi-document YAML, as a template renders them.
    fn yaml(text: &str) -> Vec<Value> {
        serde_yaml_ng::Deserializer::from_str(text)
            .map(|doc| Value::deserialize(doc).unwrap())
            .filter(|v| !v.is_null())
            .collect()
    }

    fn refused(text: &str) -> String {
        refused_with(text, &ObjectRules::default())
    }

    fn refused_with(text: &str, rules: &ObjectRules) -> String {
        let err = check_objects_with(&yaml(text), rules)
            .expect_err(&format!("should be refused:\n{text}"));
        assert_eq!(err.reason(), "ObjectRejected");
        err.to_string()
    }

    fn allowed(text: &str) {
        allowed_with(text, &ObjectRules::default());
    }

    fn allowed_with(text: &str, rules: &ObjectRules) {
        if let Err(e) = check_objects_with(&yaml(text), rules) {
            panic!("should be allowed ({e}):\n{text}");
        }
    }

    /// Every kind and path a pod spec lives at, as `(apiVersion, kind, YAML of the object
    /// around a pod spec written at indentation 0 as `POD`)`.
    const WORKLOADS: &[(&str, &str, &str)] = &[
        ("v1", "Pod", "spec: POD"),
        ("v1", "PodTemplate", "template: {spec: POD}"),
        (
            "v1",
            "ReplicationController",
            "spec: {template: {spec: POD}}",
        ),
        ("apps/v1", "Deployment", "spec: {template: {spec: POD}}"),
        ("apps/v1", "ReplicaSet", "spec: {template: {spec: POD}}"),
        ("apps/v1", "StatefulSet", "spec: {template: {spec: POD}}"),
        ("apps/v1", "DaemonSet", "spec: {template: {spec: POD}}"),
        ("batch/v1", "Job", "spec: {template: {spec: POD}}"),
        (
            "batch/v1",
            "CronJob",
            "spec: {schedule: '* * * * *', jobTemplate: {spec: {template: {spec: POD}}}}",
        ),
    ];

    fn workload(api_version: &str, kind: &str, body: &str, pod: &str) -> String {
        format!(
            "apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: w}}\n{}\n",
            body.replace("POD", pod)
        )
    }

    #[test]
    fn every_workload_path_is_checked_for_both_account_fields() {
        let as_deployer = [
            "{serviceAccountName: prenv-deployer, containers: [{name: a, image: a}]}",
            "{serviceAccount: prenv-deployer, containers: [{name: a, image: a}]}",
            // The deprecated field is what counts when the current one is empty or null.
            "{serviceAccountName: '', serviceAccount: prenv-deployer, containers: [{name: a, image: a}]}",
            "{serviceAccountName: null, serviceAccount: prenv-deployer, containers: [{name: a, image: a}]}",
            "{serviceAccountName: prenv-deployer, automountServiceAccountToken: true, containers: [{name: a, image: a}]}",
            // No containers (the API server would refuse it), still checked at the known path.
            "{serviceAccountName: prenv-deployer}",
            "{serviceAccountName: app, serviceAccount: prenv-deployer, containers: [{name: a, image: a}]}",
        ];
        for (api_version, kind, body) in WORKLOADS {
            for pod in as_deployer {
                let err = refused(&workload(api_version, kind, body, pod));
                assert!(err.contains("prenv's deployer"), "{kind} {pod}: {err}");
            }
            for pod in [
                "{containers: [{name: a, image: a}]}",
                "{serviceAccountName: app, containers: [{name: a, image: a}]}",
                "{serviceAccountName: '', serviceAccount: null, containers: [{name: a, image: a}]}",
                "{serviceAccountName: app, automountServiceAccountToken: true, containers: [{name: a, image: a, volumeMounts: [{name: t, mountPath: /t}]}], volumes: [{name: t, projected: {sources: [{serviceAccountToken: {path: token}}]}}]}",
            ] {
                allowed(&workload(api_version, kind, body, pod));
            }
        }
    }

    #[test]
    fn the_refusal_names_the_object_and_the_path() {
        let err = refused(&workload(
            "batch/v1",
            "CronJob",
            WORKLOADS[8].2,
            "{serviceAccountName: '', serviceAccount: prenv-deployer, containers: []}",
        ));
        assert!(err.starts_with("CronJob w: "), "{err}");
        assert!(
            err.contains("spec.jobTemplate.spec.template.spec")
                && err.contains("serviceAccount: prenv-deployer"),
            "{err}"
        );
    }

    #[test]
    fn pods_of_unknown_kinds_are_refused_unless_the_platform_allows_the_kind() {
        let rollout = "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\nspec:\n  template:\n    spec:\n      containers: [{name: a, image: a}]\n";
        let err = refused(rollout);
        assert!(
            err.contains("spec.template.spec") && err.contains("argoproj.io/Rollout"),
            "{err}"
        );
        let rules = ObjectRules {
            allowed_pod_kinds: vec!["argoproj.io/Rollout".into()],
            ..ObjectRules::default()
        };
        allowed_with(rollout, &rules);
        // Allowing a kind does not allow it to run as the deployer.
        refused_with(
            &rollout.replace(
                "containers:",
                "serviceAccountName: prenv-deployer\n      containers:",
            ),
            &rules,
        );
        // The allow-list is by group and kind: the same kind in another group is not allowed.
        refused_with(&rollout.replace("argoproj.io", "example.com"), &rules);
        // A kind that looks like Kubernetes' own but is not in its group is not trusted either.
        refused(&workload(
            "example.com/v1",
            "Deployment",
            "spec: {template: {spec: POD}}",
            "{containers: []}",
        ));
        // Pod specs anywhere, even at the top level or inside lists.
        refused("apiVersion: example.com/v1\nkind: Runner\nmetadata: {name: r}\ncontainers: []\n");
        refused(
            "apiVersion: example.com/v1\nkind: Pipeline\nmetadata: {name: r}\nspec:\n  steps:\n  - pod: {containers: [{name: a}]}\n",
        );
        // A core-group kind is allowed by its bare name or as core/Kind.
        let core = "apiVersion: v1\nkind: Thing\nmetadata: {name: t}\nspec: {containers: []}\n";
        refused(core);
        for allow in ["Thing", "core/Thing"] {
            allowed_with(
                core,
                &ObjectRules {
                    allowed_pod_kinds: vec![allow.into()],
                    ..ObjectRules::default()
                },
            );
        }
        // Objects of other kinds without anything pod-like stay allowed.
        allowed(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {containers: 3}\n",
        );
    }

    #[test]
    fn service_account_fields_anywhere_may_not_name_the_deployer() {
        // Custom controllers run things as the ServiceAccount such fields name.
        for text in [
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: k}\nspec: {serviceAccountName: prenv-deployer}\n",
            "apiVersion: tekton.dev/v1\nkind: PipelineRun\nmetadata: {name: p}\nspec: {taskRunTemplate: {serviceAccountName: prenv-deployer}}\n",
            "apiVersion: example.com/v1\nkind: Job\nmetadata: {name: j}\nspec: {serviceAccountRef: {name: prenv-deployer}}\n",
            "apiVersion: example.com/v1\nkind: Impersonation\nmetadata: {name: i}\nspec: {user: 'system:serviceaccount:shop-pr-1:prenv-deployer'}\n",
        ] {
            let err = refused(text);
            assert!(err.contains("prenv-deployer"), "{err}");
        }
        allowed(
            "apiVersion: example.com/v1\nkind: Thing\nmetadata: {name: t}\nspec: {serviceAccountName: app, user: 'system:serviceaccount:x:app'}\n",
        );
    }

    #[test]
    fn service_account_token_secrets_are_refused_whatever_they_name() {
        for account in ["prenv-deployer", "default", "app"] {
            let err = refused(&format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: token\n  annotations: {{kubernetes.io/service-account.name: {account}}}\ntype: kubernetes.io/service-account-token\n"
            ));
            assert!(
                err.starts_with("Secret token: ") && err.contains(SERVICE_ACCOUNT_TOKEN),
                "{err}"
            );
        }
        // Without the annotation, too (the API server would refuse it, prenv refuses first).
        refused(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: token}\ntype: kubernetes.io/service-account-token\n",
        );
        allowed("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: Opaque\n");
        allowed("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n");
    }

    #[test]
    fn prenv_objects_and_grants_to_the_deployer_are_refused() {
        refused(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: prenv-deployer}\nautomountServiceAccountToken: true\n",
        );
        refused(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: prenv-deployer}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}\nsubjects: [{kind: ServiceAccount, name: app}]\n",
        );
        let err = refused(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: more}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\nsubjects: [{kind: ServiceAccount, name: app}, {kind: ServiceAccount, name: prenv-deployer}]\n",
        );
        assert!(err.contains("grant"), "{err}");
        allowed("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: app}\n");
        allowed(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: app}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\nsubjects: [{kind: ServiceAccount, name: app}]\n",
        );
    }

    #[test]
    fn services_reaching_outside_are_refused_unless_the_platform_allows_them() {
        let external = [
            (
                "spec: {type: ExternalName, externalName: example.com}",
                "ExternalName",
            ),
            ("spec: {type: NodePort, ports: [{port: 80}]}", "NodePort"),
            (
                "spec: {type: LoadBalancer, ports: [{port: 80}]}",
                "LoadBalancer",
            ),
            (
                "spec: {ports: [{port: 80}], externalIPs: [1.2.3.4]}",
                "CVE-2020-8554",
            ),
            (
                "spec: {type: ClusterIP, ports: [{port: 80}], externalIPs: [10.0.0.1]}",
                "CVE-2020-8554",
            ),
            ("spec: {externalName: example.com}", "externalName"),
            ("spec: {type: Whatever}", "Whatever"),
        ];
        let service = |spec: &str| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\n{spec}\n")
        };
        let open = ObjectRules {
            allow_external_services: true,
            ..ObjectRules::default()
        };
        for (spec, why) in external {
            let err = refused(&service(spec));
            assert!(
                err.starts_with("Service web: ") && err.contains(why),
                "{err}"
            );
            allowed_with(&service(spec), &open);
        }
        for spec in [
            "spec: {ports: [{port: 80}]}",
            "spec: {type: ClusterIP, ports: [{port: 80}], externalIPs: []}",
            "spec: {type: null, clusterIP: None, externalIPs: null}",
            "spec: {type: ClusterIP, externalName: ''}",
        ] {
            allowed(&service(spec));
        }
        // Only the core group's Service is a Service.
        allowed(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: web}\nspec: {type: LoadBalancer}\n",
        );
    }
}
