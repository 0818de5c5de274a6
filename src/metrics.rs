//! Prometheus metrics, served as text on the admin port's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub event: String,
    pub action: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvironmentLabels {
    pub template: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitHubLabels {
    pub endpoint: String,
    pub result: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    deliveries: Family<DeliveryLabels, Counter>,
    webhook_seconds: Histogram,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_seconds: Histogram,
    github_requests: Family<GitHubLabels, Counter>,
    github_rate_limit_remaining: Gauge,
    feedback: Family<ResultLabels, Counter>,
    resync_runs: Family<ResultLabels, Counter>,
    resync_not_modified: Counter,
    resync_repairs: Counter,
    orphans_deleted: Counter,
    environments: Family<EnvironmentLabels, Gauge>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("prenv");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by event, action and result",
            deliveries.clone(),
        );
        let webhook_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "webhook_duration_seconds",
            "Time to answer a webhook delivery",
            webhook_seconds.clone(),
        );
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles of PreviewEnvironments by result",
            reconciles.clone(),
        );
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_seconds.clone(),
        );
        let github_requests = Family::<GitHubLabels, Counter>::default();
        registry.register(
            "github_requests",
            "GitHub API requests by endpoint and result",
            github_requests.clone(),
        );
        let github_rate_limit_remaining = Gauge::default();
        github_rate_limit_remaining.set(-1);
        registry.register(
            "github_rate_limit_remaining",
            "Requests left in the current GitHub rate-limit window (-1 until known)",
            github_rate_limit_remaining.clone(),
        );
        let feedback = Family::<ResultLabels, Counter>::default();
        registry.register(
            "github_feedback",
            "GitHub feedback passes (comment, deployment, commit status) by result",
            feedback.clone(),
        );
        let resync_runs = Family::<ResultLabels, Counter>::default();
        registry.register(
            "resync_runs",
            "Resync passes over the open pull requests of one repository, by result",
            resync_runs.clone(),
        );
        let resync_not_modified = Counter::default();
        registry.register(
            "resync_not_modified",
            "Resync listings GitHub answered with 304 Not Modified",
            resync_not_modified.clone(),
        );
        let resync_repairs = Counter::default();
        registry.register(
            "resync_repairs",
            "Environments a resync created, updated or deleted",
            resync_repairs.clone(),
        );
        let orphans_deleted = Counter::default();
        registry.register(
            "orphan_namespaces_deleted",
            "Preview namespaces deleted because their PreviewEnvironment no longer exists",
            orphans_deleted.clone(),
        );
        let environments = Family::<EnvironmentLabels, Gauge>::default();
        registry.register(
            "environments",
            "PreviewEnvironments by template (namespace/name) and phase",
            environments.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        // Known outcomes start at zero, so their series (and the families the dashboard
        // queries) exist before the first event and `rate()` sees the first increase.
        let results = |family: &Family<ResultLabels, Counter>, results: &[&str]| {
            for result in results {
                // Creating the series is the point; the guard is dropped at once.
                let _ = family.get_or_create(&ResultLabels {
                    result: result.to_string(),
                });
            }
        };
        results(&reconciles, &["success", "error"]);
        results(&feedback, &["success", "retry", "failed"]);
        results(&resync_runs, &["success", "error"]);
        Self {
            registry: Mutex::new(registry),
            environments,
            leader,
            resync_runs,
            resync_not_modified,
            resync_repairs,
            orphans_deleted,
            deliveries,
            webhook_seconds,
            reconciles,
            reconcile_seconds,
            github_requests,
            github_rate_limit_remaining,
            feedback,
        }
    }

    pub fn delivery(&self, event: &str, action: &str, result: &str, seconds: f64) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                event: event.to_string(),
                action: action.to_string(),
                result: result.to_string(),
            })
            .inc();
        self.webhook_seconds.observe(seconds);
    }

    pub fn reconcile(&self, result: &str, seconds: f64) {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
        self.reconcile_seconds.observe(seconds);
    }

    pub fn github_request(&self, endpoint: &str, result: &str) {
        self.github_requests
            .get_or_create(&GitHubLabels {
                endpoint: endpoint.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub fn github_rate_limit_remaining(&self, remaining: i64) {
        self.github_rate_limit_remaining.set(remaining);
    }

    pub fn feedback(&self, result: &str) {
        self.feedback
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn resync_run(&self, result: &str) {
        self.resync_runs
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn resync_not_modified(&self) {
        self.resync_not_modified.inc();
    }

    pub fn resync_repair(&self) {
        self.resync_repairs.inc();
    }

    pub fn orphan_deleted(&self) {
        self.orphans_deleted.inc();
    }

    /// Replace the environment counts (computed from the cache at scrape time).
    pub fn set_environments<'a>(&self, envs: impl IntoIterator<Item = (String, &'a str)>) {
        self.environments.clear();
        for (template, phase) in envs {
            self.environments
                .get_or_create(&EnvironmentLabels {
                    template,
                    phase: phase.to_string(),
                })
                .inc();
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Register more metrics (e.g. collectors owned by other parts).
    pub fn with_registry(&self, f: impl FnOnce(&mut Registry)) {
        if let Ok(mut registry) = self.registry.lock() {
            f(&mut registry);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_up_in_text() {
        let m = Metrics::new();
        m.delivery("pull_request", "opened", "handled", 0.002);
        m.github_request("POST /repos/{owner}/{repo}/statuses/{sha}", "success");
        m.github_rate_limit_remaining(4999);
        let text = m.encode();
        assert!(
            text.contains(
                r#"prenv_webhook_deliveries_total{event="pull_request",action="opened",result="handled"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("prenv_github_rate_limit_remaining 4999"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn outcome_counters_exist_at_zero_before_anything_happens() {
        let text = Metrics::new().encode();
        for series in [
            r#"prenv_reconciles_total{result="error"} 0"#,
            r#"prenv_github_feedback_total{result="failed"} 0"#,
            r#"prenv_resync_runs_total{result="success"} 0"#,
            r#"prenv_resync_runs_total{result="error"} 0"#,
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }
}
