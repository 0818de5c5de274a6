//! The fence around a preview namespace: quota, container limits, a default-deny network
//! policy, pod security, and the deployer ServiceAccount whose (namespace-bound) permissions
//! the rendered objects are applied with. Pure: builds objects and checks templates against
//! the platform team's bounds.

use crate::model::Isolation;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;

mod namespaces;
mod rendered;
pub use namespaces::ReservedNamespaces;
pub use rendered::{ObjectRules, PRENV_SERVICE_ACCOUNTS, check_objects, check_objects_with};

/// The ServiceAccount (and RoleBinding) rendered objects are applied as.
pub const DEPLOYER: &str = "prenv-deployer";
/// Marks objects that belong to the fence, not to the template: pruning leaves them alone.
pub const FENCE_LABEL: &str = "prenv.dev/fence";
/// Marks Secrets copied from the template's namespace.
pub const COPIED_SECRET_LABEL: &str = "prenv.dev/copied-secret";
const QUOTA: &str = "prenv-quota";
const LIMITS: &str = "prenv-limits";
const POLICY: &str = "prenv-isolation";
/// Cloud metadata endpoints stay unreachable whatever egress a template asks for.
const METADATA: [&str; 2] = ["169.254.169.254", "fd00:ec2::254"];

/// Pod security levels, loosest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PodSecurity {
    Privileged,
    Baseline,
    Restricted,
}

impl std::str::FromStr for PodSecurity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "privileged" => Ok(Self::Privileged),
            "baseline" => Ok(Self::Baseline),
            "restricted" => Ok(Self::Restricted),
            other => Err(format!(
                "pod security level {other:?} is not one of restricted, baseline, privileged"
            )),
        }
    }
}

/// What the platform team allows templates (prenv's flags).
#[derive(Debug, Clone)]
pub struct Platform {
    /// ClusterRole bound to the deployer in each preview namespace.
    pub deployer_cluster_role: String,
    /// Namespaces whose pods (the ingress controller) may reach previews.
    pub ingress_namespaces: Vec<String>,
    /// The loosest pod security level a template may choose.
    pub pod_security_floor: PodSecurity,
    /// The most a template's quota may grant per resource; missing entries are added at
    /// this value.
    pub max_quota: BTreeMap<String, String>,
    /// Whether templates may turn the network policy off.
    pub allow_network_policy_opt_out: bool,
    /// Whether templates may open egress to further CIDRs.
    pub allow_egress: bool,
    /// Which rendered objects beyond the defaults the platform allows.
    pub objects: ObjectRules,
    /// Namespaces no preview may be.
    pub reserved_namespaces: ReservedNamespaces,
}

impl Default for Platform {
    fn default() -> Self {
        Self {
            deployer_cluster_role: DEPLOYER.into(),
            ingress_namespaces: vec!["ingress-nginx".into()],
            pod_security_floor: PodSecurity::Baseline,
            max_quota: [
                ("requests.cpu", "8"),
                ("requests.memory", "16Gi"),
                ("limits.cpu", "16"),
                ("limits.memory", "32Gi"),
                ("pods", "50"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            allow_network_policy_opt_out: false,
            allow_egress: false,
            objects: ObjectRules::default(),
            reserved_namespaces: ReservedNamespaces::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FenceError {
    #[error("isolation: {0}")]
    Invalid(String),
    #[error("isolation asks for more than the platform allows: {0}")]
    TooLoose(String),
    #[error("{kind} {name}: {reason}")]
    Forbidden {
        kind: String,
        name: String,
        reason: String,
    },
    #[error("{0}")]
    ReservedNamespace(String),
}

impl FenceError {
    pub fn reason(&self) -> &'static str {
        match self {
            FenceError::Invalid(_) => "InvalidIsolation",
            FenceError::TooLoose(_) => "IsolationNotAllowed",
            FenceError::Forbidden { .. } => "ObjectRejected",
            FenceError::ReservedNamespace(_) => "ReservedNamespace",
        }
    }
}

/// Check the template's isolation against the platform's bounds; returns the quota to apply.
pub fn check(
    isolation: &Isolation,
    platform: &Platform,
) -> Result<BTreeMap<String, String>, FenceError> {
    let level: PodSecurity = isolation
        .pod_security
        .parse()
        .map_err(FenceError::Invalid)?;
    if level < platform.pod_security_floor {
        return Err(FenceError::TooLoose(format!(
            "podSecurity {} is looser than the platform's floor",
            isolation.pod_security
        )));
    }
    if !isolation.network_policy.enabled && !platform.allow_network_policy_opt_out {
        return Err(FenceError::TooLoose(
            "networkPolicy.enabled: false is not allowed".into(),
        ));
    }
    if !isolation.network_policy.egress_cidrs.is_empty() && !platform.allow_egress {
        return Err(FenceError::TooLoose(
            "networkPolicy.egressCidrs is not allowed".into(),
        ));
    }
    for cidr in &isolation.network_policy.egress_cidrs {
        parse_cidr(cidr).ok_or_else(|| FenceError::Invalid(format!("{cidr:?} is not a CIDR")))?;
    }
    for map in [
        &isolation.quota,
        &isolation.limits.default_requests,
        &isolation.limits.default_limits,
        &isolation.limits.max,
    ] {
        for (key, value) in map {
            quantity(value).ok_or_else(|| {
                FenceError::Invalid(format!("{key}: {value:?} is not a quantity"))
            })?;
        }
    }
    let mut quota = isolation.quota.clone();
    for (key, max) in &platform.max_quota {
        match quota.get(key) {
            Some(asked) if quantity(asked) > quantity(max) => {
                return Err(FenceError::TooLoose(format!(
                    "quota {key}: {asked} is more than the platform's {max}"
                )));
            }
            Some(_) => {}
            None => {
                quota.insert(key.clone(), max.clone());
            }
        }
    }
    Ok(quota)
}

/// Labels of the preview namespace that enforce pod security.
pub fn namespace_labels(isolation: &Isolation) -> BTreeMap<String, String> {
    let level = &isolation.pod_security;
    ["enforce", "audit", "warn"]
        .iter()
        .flat_map(|mode| {
            [
                (format!("pod-security.kubernetes.io/{mode}"), level.clone()),
                (
                    format!("pod-security.kubernetes.io/{mode}-version"),
                    "latest".to_string(),
                ),
            ]
        })
        .collect()
}

/// The fence's objects for namespace `namespace`, labelled as prenv's and as the fence's.
pub fn objects(
    isolation: &Isolation,
    quota: &BTreeMap<String, String>,
    platform: &Platform,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Vec<Value> {
    let mut labels = labels.clone();
    labels.insert(FENCE_LABEL.into(), "true".into());
    let meta = |name: &str| json!({"name": name, "namespace": namespace, "labels": labels, "annotations": annotations});
    let mut out = vec![
        json!({
            "apiVersion": "v1", "kind": "ResourceQuota", "metadata": meta(QUOTA),
            "spec": {"hard": quota},
        }),
        json!({
            "apiVersion": "v1", "kind": "LimitRange", "metadata": meta(LIMITS),
            "spec": {"limits": [{
                "type": "Container",
                "default": isolation.limits.default_limits,
                "defaultRequest": isolation.limits.default_requests,
                "max": isolation.limits.max,
            }]},
        }),
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(DEPLOYER),
            // Its permissions are for prenv's impersonation only, never for a pod.
            "automountServiceAccountToken": false,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(DEPLOYER),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": platform.deployer_cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": DEPLOYER, "namespace": namespace}],
        }),
    ];
    if isolation.network_policy.enabled {
        out.push(network_policy(isolation, platform, meta(POLICY)));
    }
    out
}

fn network_policy(isolation: &Isolation, platform: &Platform, metadata: Value) -> Value {
    let by_name = |ns: &str| json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}});
    let mut from = vec![json!({"podSelector": {}})];
    from.extend(platform.ingress_namespaces.iter().map(|ns| by_name(ns)));
    let mut egress = vec![
        json!({"to": [{"podSelector": {}}]}),
        json!({
            "to": [{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }),
    ];
    let blocks: Vec<Value> = isolation
        .network_policy
        .egress_cidrs
        .iter()
        .filter_map(|cidr| {
            let (net, prefix) = parse_cidr(cidr)?;
            let except: Vec<String> = METADATA
                .iter()
                .filter_map(|m| m.parse::<IpAddr>().ok())
                .filter(|m| contains(net, prefix, *m))
                .map(|m| match m {
                    IpAddr::V4(_) => format!("{m}/32"),
                    IpAddr::V6(_) => format!("{m}/128"),
                })
                .collect();
            Some(if except.is_empty() {
                json!({"ipBlock": {"cidr": cidr}})
            } else {
                json!({"ipBlock": {"cidr": cidr, "except": except}})
            })
        })
        .collect();
    if !blocks.is_empty() {
        egress.push(json!({"to": blocks}));
    }
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata,
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": from}],
            "egress": egress,
        },
    })
}

/// A Kubernetes quantity as a number (`500m` → 0.5, `2Gi` → 2147483648); `None` if invalid.
pub fn quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let value: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    (value.is_finite() && value >= 0.0).then_some(value * factor)
}

fn parse_cidr(cidr: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = cidr.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((addr, prefix))
}

fn contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("2Gi"), Some(2.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("10M"), Some(1e7));
        assert_eq!(quantity("lots"), None);
        assert_eq!(quantity("-1"), None);
        assert!(quantity("1Gi") > quantity("1G"));
    }

    #[test]
    fn defaults_pass_and_fill_the_platform_quota() {
        let mut platform = Platform::default();
        platform
            .max_quota
            .insert("count/jobs.batch".into(), "5".into());
        let quota = check(&Isolation::default(), &platform).unwrap();
        assert_eq!(quota["requests.cpu"], "2");
        assert_eq!(quota["count/jobs.batch"], "5");
    }

    #[test]
    fn loosening_beyond_the_platform_is_refused() {
        let platform = Platform::default();
        let mut iso = Isolation::default();
        iso.quota.insert("requests.cpu".into(), "64".into());
        assert!(matches!(
            check(&iso, &platform),
            Err(FenceError::TooLoose(_))
        ));
        let mut iso = Isolation {
            pod_security: "privileged".into(),
            ..Isolation::default()
        };
        assert!(matches!(
            check(&iso, &platform),
            Err(FenceError::TooLoose(_))
        ));
        iso.pod_security = "baseline".into();
        assert!(check(&iso, &platform).is_ok());
        iso.pod_security = "lax".into();
        assert!(matches!(
            check(&iso, &platform),
            Err(FenceError::Invalid(_))
        ));
        let mut iso = Isolation::default();
        iso.network_policy.enabled = false;
        assert!(check(&iso, &platform).is_err());
        let mut iso = Isolation::default();
        iso.network_policy.egress_cidrs = vec!["0.0.0.0/0".into()];
        assert!(check(&iso, &platform).is_err());
    }

    #[test]
    fn egress_never_reaches_cloud_metadata() {
        let platform = Platform {
            allow_egress: true,
            ..Platform::default()
        };
        let mut iso = Isolation::default();
        iso.network_policy.egress_cidrs = vec!["0.0.0.0/0".into(), "10.0.0.0/8".into()];
        let quota = check(&iso, &platform).unwrap();
        let objs = objects(
            &iso,
            &quota,
            &platform,
            "ns",
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        let policy = objs.iter().find(|o| o["kind"] == "NetworkPolicy").unwrap();
        let egress = policy["spec"]["egress"].as_array().unwrap();
        let blocks = egress.last().unwrap()["to"].as_array().unwrap();
        assert_eq!(blocks[0]["ipBlock"]["except"][0], "169.254.169.254/32");
        assert!(blocks[1]["ipBlock"].get("except").is_none());
    }

    #[test]
    fn fence_objects_are_labelled_and_default_deny() {
        let platform = Platform::default();
        let iso = Isolation::default();
        let quota = check(&iso, &platform).unwrap();
        let objs = objects(
            &iso,
            &quota,
            &platform,
            "shop-pr-1",
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        let kinds: Vec<_> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "ResourceQuota",
                "LimitRange",
                "ServiceAccount",
                "RoleBinding",
                "NetworkPolicy"
            ]
        );
        for o in &objs {
            assert_eq!(o["metadata"]["labels"][FENCE_LABEL], "true");
            assert_eq!(o["metadata"]["namespace"], "shop-pr-1");
        }
        let policy = &objs[4]["spec"];
        assert_eq!(policy["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(objs[3]["roleRef"]["name"], DEPLOYER);
        assert_eq!(
            namespace_labels(&iso)["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
    }

    #[test]
    fn templates_cannot_bring_fence_kinds_or_run_as_the_deployer() {
        let np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "allow-all"}});
        assert!(check_objects(&[np]).is_err());
        let quota =
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "more"}});
        assert!(check_objects(&[quota]).is_err());
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"serviceAccountName": DEPLOYER, "containers": []}}}});
        assert!(check_objects(&[deploy]).is_err());
        let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        assert!(check_objects(&[ok]).is_ok());
    }
}
