//! The custom resources: `PreviewTemplate` (written by app teams) and `PreviewEnvironment`
//! (one per template and pull request, written by the receiver, reconciled by the controller).

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const GROUP: &str = "prenv.dev";

/// How one repository's pull requests become preview environments.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "prenv.dev",
    version = "v1alpha1",
    kind = "PreviewTemplate",
    namespaced,
    status = "PreviewTemplateStatus",
    shortname = "ptpl",
    printcolumn = r#"{"name":"Repository","type":"string","jsonPath":".spec.repository"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PreviewTemplateSpec {
    /// The repository whose pull requests this template serves, as `owner/name`
    /// (compared case-insensitively).
    pub repository: String,
    /// Name template of the preview namespace; made a valid DNS label of at most 63
    /// characters (with a hash suffix when it had to be shortened).
    #[serde(default = "default_namespace_template")]
    pub namespace: String,
    /// Template of the preview URL posted on the pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Idle time after the last deploy before the preview is torn down (e.g. `72h`); a new
    /// push deploys it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// At most this many previews of this template run at a time; later pull requests queue
    /// (oldest first) until a slot frees up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_environments: Option<u32>,
    /// Which pull requests get an environment.
    #[serde(default)]
    pub trigger: Trigger,
    /// Which pull requests are trusted to run in the cluster.
    #[serde(default)]
    pub trust: Trust,
    /// The fence around every preview namespace.
    #[serde(default)]
    pub isolation: Isolation,
    /// Secrets in this template's namespace copied into each preview namespace (e.g. a
    /// registry pull secret). Never for pull requests from forks unless
    /// `trust.secretsForForks` says so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_secrets: Vec<String>,
    /// Multi-document YAML rendered per pull request with minijinja and applied into the
    /// preview namespace.
    pub resources: String,
}

pub fn default_namespace_template() -> String {
    "{{ template }}-pr-{{ pr.number }}".to_string()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// Every one of these labels must be on the pull request.
    #[serde(default)]
    pub require_labels: Vec<String>,
    /// None of these labels may be on the pull request.
    #[serde(default)]
    pub exclude_labels: Vec<String>,
    /// Draft pull requests get no environment (or lose theirs).
    #[serde(default = "yes")]
    pub skip_drafts: bool,
    /// Regular expression the pull request's head branch must match in full.
    #[serde(default = "any_branch")]
    pub branches: String,
    /// Regular expression the pull request's base (target) branch must match in full.
    #[serde(default = "any_branch")]
    pub base_branches: String,
}

impl Default for Trigger {
    fn default() -> Self {
        Self {
            require_labels: Vec::new(),
            exclude_labels: Vec::new(),
            skip_drafts: true,
            branches: any_branch(),
            base_branches: any_branch(),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trust {
    /// Deploy pull requests from forks without approval.
    #[serde(default)]
    pub allow_forks: bool,
    /// Author associations trusted from a fork *without* asking GitHub (none by default).
    /// An association is not a permission (a COLLABORATOR may be read-only): by default
    /// trust comes from the collaborator-permission API (write, maintain or admin).
    #[serde(default)]
    pub associations: Vec<String>,
    /// Label that, added by someone with write access, approves a fork's head for deployment.
    #[serde(default = "default_approval_label")]
    pub approval_label: String,
    /// Copy `copySecrets` into previews of fork pull requests too (approved ones only).
    #[serde(default)]
    pub secrets_for_forks: bool,
    /// At most this many fork pull requests wait for approval at once (each has an
    /// environment and a PR comment); more get neither until one of them is approved or
    /// closed, so a flood of fork PRs costs a bounded amount.
    #[serde(default = "default_max_awaiting_approval")]
    pub max_awaiting_approval: u32,
}

impl Trust {
    /// Whether GitHub's author association `association` (`MEMBER`, ...) is trusted.
    pub fn trusts_association(&self, association: &str) -> bool {
        self.associations
            .iter()
            .any(|a| a.eq_ignore_ascii_case(association))
    }
}

impl Default for Trust {
    fn default() -> Self {
        Self {
            allow_forks: false,
            associations: Vec::new(),
            approval_label: default_approval_label(),
            secrets_for_forks: false,
            max_awaiting_approval: default_max_awaiting_approval(),
        }
    }
}

/// Resource limits and network and pod-security rules of a preview namespace. The defaults fit
/// a small web app; the platform team's bounds (prenv's flags) cap what a template may ask for.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Isolation {
    /// ResourceQuota `hard` limits of the namespace.
    #[serde(default = "default_quota")]
    pub quota: BTreeMap<String, String>,
    /// LimitRange for every container.
    #[serde(default)]
    pub limits: ContainerLimits,
    /// Default-deny NetworkPolicy: traffic from within the namespace and from the ingress
    /// controller's namespace, DNS out.
    #[serde(default)]
    pub network_policy: NetworkIsolation,
    /// `pod-security.kubernetes.io/enforce` level: `restricted`, `baseline` or `privileged`.
    #[serde(default = "default_pod_security")]
    pub pod_security: String,
}

impl Default for Isolation {
    fn default() -> Self {
        Self {
            quota: default_quota(),
            limits: ContainerLimits::default(),
            network_policy: NetworkIsolation::default(),
            pod_security: default_pod_security(),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerLimits {
    /// Requests of a container that sets none.
    #[serde(default = "default_requests")]
    pub default_requests: BTreeMap<String, String>,
    /// Limits of a container that sets none.
    #[serde(default = "default_limits")]
    pub default_limits: BTreeMap<String, String>,
    /// The most one container may ask for.
    #[serde(default = "default_max")]
    pub max: BTreeMap<String, String>,
}

impl Default for ContainerLimits {
    fn default() -> Self {
        Self {
            default_requests: default_requests(),
            default_limits: default_limits(),
            max: default_max(),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkIsolation {
    /// Turn the NetworkPolicy off (only where the platform allows it).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Extra destinations (CIDRs) the preview may reach (only where the platform allows
    /// egress); cloud metadata addresses stay blocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_cidrs: Vec<String>,
}

impl Default for NetworkIsolation {
    fn default() -> Self {
        Self {
            enabled: true,
            egress_cidrs: Vec::new(),
        }
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
fn default_quota() -> BTreeMap<String, String> {
    map(&[
        ("requests.cpu", "2"),
        ("requests.memory", "4Gi"),
        ("limits.cpu", "4"),
        ("limits.memory", "8Gi"),
        ("pods", "20"),
        ("services", "10"),
        ("persistentvolumeclaims", "5"),
        ("requests.storage", "20Gi"),
    ])
}
fn default_requests() -> BTreeMap<String, String> {
    map(&[("cpu", "50m"), ("memory", "64Mi")])
}
fn default_limits() -> BTreeMap<String, String> {
    map(&[("cpu", "500m"), ("memory", "512Mi")])
}
fn default_max() -> BTreeMap<String, String> {
    map(&[("cpu", "2"), ("memory", "2Gi")])
}
fn default_pod_security() -> String {
    "restricted".to_string()
}

fn yes() -> bool {
    true
}
fn any_branch() -> String {
    ".*".to_string()
}
fn default_max_awaiting_approval() -> u32 {
    20
}
fn default_approval_label() -> String {
    "preview:approved".to_string()
}

/// What prenv says about a template: whether it serves its repository (`Accepted`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewTemplateStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The preview environment of one pull request for one template.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "prenv.dev",
    version = "v1alpha1",
    kind = "PreviewEnvironment",
    namespaced,
    shortname = "penv",
    status = "PreviewEnvironmentStatus",
    printcolumn = r#"{"name":"Repository","type":"string","jsonPath":".spec.repository"}"#,
    printcolumn = r#"{"name":"PR","type":"integer","jsonPath":".spec.number"}"#,
    printcolumn = r#"{"name":"SHA","type":"string","jsonPath":".status.shortSha"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = drop_empty_string_defaults)]
pub struct PreviewEnvironmentSpec {
    /// The `PreviewTemplate` (same namespace) this environment is rendered from.
    pub template: String,
    /// `owner/name` of the pull request's base repository.
    pub repository: String,
    /// Pull request number.
    pub number: u64,
    pub head_sha: String,
    pub head_ref: String,
    pub base_ref: String,
    /// Login of the pull request's author.
    pub author: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author_association: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub draft: bool,
    /// The head lives in another repository (or one that was deleted).
    #[serde(default)]
    pub fork: bool,
    /// `owner/name` of the head repository, when it still exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_repository: Option<String>,
    /// Link to the pull request on GitHub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html_url: Option<String>,
    /// GitHub's `updated_at` of the pull request state this spec was written from; a
    /// delivery older than this never overwrites it.
    pub updated_at: DateTime<Utc>,
    /// For a pull request that needs approval (from a fork): the head someone with write
    /// access approved, which is what gets deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<Approval>,
    /// Why `headSha` is not deployed (it awaits approval); unset when it may be deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_approval: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The approved head commit.
    pub head_sha: String,
    /// Who approved it (by adding the approval label).
    pub by: String,
}

impl PreviewEnvironmentSpec {
    /// The head commit to deploy: the pull request's head, or for one awaiting approval the
    /// head approved last (none if nothing was approved yet).
    pub fn deployable_sha(&self) -> Option<&str> {
        if self.awaiting_approval.is_some() {
            self.approved.as_ref().map(|a| a.head_sha.as_str())
        } else {
            Some(self.head_sha.as_str())
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Deploying,
    Ready,
    Failed,
    Deleting,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Phase::Pending => "Pending",
            Phase::Deploying => "Deploying",
            Phase::Ready => "Ready",
            Phase::Failed => "Failed",
            Phase::Deleting => "Deleting",
        };
        f.write_str(s)
    }
}

/// A kind of object applied into the preview namespace: what pruning lists.
#[derive(
    Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct AppliedKind {
    pub api_version: String,
    pub kind: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewEnvironmentStatus {
    /// Pending, Deploying, Ready, Failed or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "phase_schema")]
    pub phase: Option<Phase>,
    /// The preview namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The preview URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The head commit this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_head_sha: Option<String>,
    /// First seven characters of `observedHeadSha`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_sha: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the current head was first applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_deployed_at: Option<DateTime<Utc>>,
    /// When the environment expires if nothing new is deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The head whose preview expired (idle past the template's `ttl`) and was torn down; a
    /// new head deploys again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_head_sha: Option<String>,
    /// The redeploy request (annotation `prenv.dev/redeploy`) last carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeployed: Option<String>,
    /// A human-readable summary of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Kinds applied into the namespace; pruning lists these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied_kinds: Vec<AppliedKind>,
    /// Id of prenv's comment on the pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_id: Option<u64>,
    /// Id of the GitHub deployment of the current head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<u64>,
    /// What has been reported on GitHub, so nothing is sent twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<FeedbackStatus>,
}

/// What prenv last wrote to GitHub for an environment.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackStatus {
    /// Digest of the comment text last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_digest: Option<String>,
    /// Head commit of the deployment in `deploymentId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_sha: Option<String>,
    /// Last state posted on that deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_state: Option<String>,
    /// `<sha>:<state>` of the last commit status posted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_status: Option<String>,
    /// Why the last attempt to report failed; empty after a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Short reason of that failure (`GitHubRejected`, `GitHubUnavailable`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
}

/// Kubernetes 1.20 rejects `default: ""` in a CRD schema ("must be of type string"); the
/// field defaults to empty when absent anyway.
fn drop_empty_string_defaults(schema: &mut schemars::Schema) {
    if let Some(serde_json::Value::Object(props)) = schema.get_mut("properties") {
        for prop in props.values_mut() {
            if let Some(obj) = prop.as_object_mut()
                && obj.get("default") == Some(&serde_json::Value::String(String::new()))
            {
                obj.remove("default");
            }
        }
    }
}

/// The phase as an optional string enum; the derived schema would list `null` among the enum
/// values, which kubectl's client-side validation rejects.
fn phase_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "enum": ["Pending", "Deploying", "Ready", "Failed", "Deleting"],
    })
}

impl PreviewEnvironment {
    pub fn phase(&self) -> Option<Phase> {
        self.status.as_ref().and_then(|s| s.phase)
    }
}

/// The reason of the `Ready` condition while an environment waits for a slot under its
/// template's `maxEnvironments`.
pub const QUEUED_REASON: &str = "Queued";

impl PreviewEnvironmentStatus {
    /// Whether the environment waits for a slot under its template's `maxEnvironments`.
    pub fn is_queued(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == QUEUED_REASON)
    }
}

/// Every CRD as multi-document YAML, the output of `prenv crds`.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in [PreviewTemplate::crd(), PreviewEnvironment::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_have_short_names_status_and_columns() {
        let tpl = PreviewTemplate::crd();
        assert_eq!(tpl.spec.group, GROUP);
        assert_eq!(
            tpl.spec.names.short_names.as_deref(),
            Some(&["ptpl".to_string()][..])
        );
        let env = PreviewEnvironment::crd();
        let version = &env.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Repository", "PR", "SHA", "Phase", "URL", "Age"]);
    }

    #[test]
    fn template_defaults_apply() {
        let spec: PreviewTemplateSpec =
            serde_json::from_value(serde_json::json!({"repository": "o/r", "resources": ""}))
                .unwrap();
        assert_eq!(spec.namespace, "{{ template }}-pr-{{ pr.number }}");
        assert!(spec.trigger.skip_drafts);
        assert_eq!(spec.trigger.branches, ".*");
        assert!(!spec.trust.allow_forks);
        assert_eq!(spec.trust.approval_label, "preview:approved");
    }
}
