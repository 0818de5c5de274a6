//! Resync: every interval, list the open pull requests of each templated repository (with an
//! ETag, so an unchanged list costs no rate limit) and repair what deliveries missed or
//! reordered: environments for open PRs that lack one or hold an older state, and no
//! environment for a PR that GitHub says is closed. A webhook is a hint; this is the truth.

use crate::decide::{self, PrAction};
use crate::github::{GitHub, GitHubError};
use crate::intake::{Intake, Outcome};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::model::{PreviewEnvironment, PreviewTemplate};
use crate::naming;
use http::{Method, StatusCode};
use kube::api::ListParams;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use octocrab::models::pulls::PullRequest;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most pages of open pull requests read per repository (100 each).
const MAX_PAGES: u32 = 30;

pub struct Resync {
    pub github: Arc<GitHub>,
    pub client: Client,
    pub templates: Store<PreviewTemplate>,
    pub ready: crate::serve::Ready,
    pub intake: Arc<Intake>,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
    /// Only the leader resyncs (it spends GitHub's rate limit).
    pub leadership: Leadership,
}

#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("unexpected pull request list: {0}")]
    Shape(String),
}

/// What was last read per repository: the first page's ETag and the open pull requests.
#[derive(Default)]
struct Cache {
    etag: Option<String>,
    open: Vec<PullRequest>,
    /// The listing fit on one page, so an unchanged first page means an unchanged list.
    single_page: bool,
}

impl Resync {
    /// Run until `shutdown`: once the template cache is ready, a pass as soon as this replica
    /// leads, then one every interval while it does.
    pub async fn run(self, shutdown: CancellationToken) {
        // Behind an (uncontended) lock: each pass is a fresh future borrowing the caches, and
        // an `async ||` closure, which could borrow them mutably, is not `Send` for tokio::spawn.
        let caches = tokio::sync::Mutex::new(HashMap::<String, Cache>::new());
        if self.ready.clone().wait_for(|r| *r).await.is_err() {
            return;
        }
        self.leadership
            .clone()
            .every_interval(self.interval, &shutdown, || async {
                self.pass(&mut *caches.lock().await).await;
            })
            .await;
    }

    async fn pass(&self, caches: &mut HashMap<String, Cache>) {
        if !self.leadership.is_leader() {
            return;
        }
        let templates = self.templates.state();
        let repositories: BTreeSet<String> = templates
            .iter()
            .map(|t| t.spec.repository.to_ascii_lowercase())
            .collect();
        caches.retain(|repo, _| repositories.contains(repo));
        for repository in repositories {
            let cache = caches.entry(repository.clone()).or_default();
            let serving: Vec<_> = templates
                .iter()
                .filter(|t| self.intake.serves(t, &repository))
                .cloned()
                .collect();
            match self.repository(&repository, cache, &serving).await {
                Ok(()) => self.metrics.resync_run("success"),
                Err(e) => {
                    self.metrics.resync_run("error");
                    tracing::warn!(%repository, error = %e, "resync failed; next pass retries");
                }
            }
        }
    }

    async fn repository(
        &self,
        repository: &str,
        cache: &mut Cache,
        templates: &[Arc<PreviewTemplate>],
    ) -> Result<(), ResyncError> {
        self.refresh(repository, cache).await?;
        let open: HashMap<u64, &PullRequest> = cache.open.iter().map(|p| (p.number, p)).collect();
        for template in templates {
            // Open pull requests: each gets what a delivery would have given it (an older
            // state never overwrites a newer one).
            for pr in open.values() {
                let Ok(state) = decide::pull_request_state(pr) else {
                    continue;
                };
                self.handle(template, &state).await;
            }
            // Environments whose pull request is not open (any more): ask GitHub, then delete.
            for number in self.environment_numbers(template).await? {
                if open.contains_key(&number) {
                    continue;
                }
                let path = format!("/repos/{repository}/pulls/{number}");
                let answer = match self
                    .github
                    .request(repository, Method::GET, &path, None)
                    .await
                {
                    Ok(a) => a,
                    Err(e) if e.status() == Some(404) => continue,
                    Err(e) => return Err(e.into()),
                };
                let pr: PullRequest = serde_json::from_value(answer.body)
                    .map_err(|e| ResyncError::Shape(e.to_string()))?;
                let Ok(state) = decide::pull_request_state(&pr) else {
                    continue;
                };
                if state.open {
                    // Opened since the listing: the next pass sees it in the list.
                    continue;
                }
                self.handle(template, &state).await;
            }
        }
        Ok(())
    }

    async fn handle(&self, template: &PreviewTemplate, state: &decide::PullRequestState) {
        match self
            .intake
            .handle(PrAction::Resync, state, template, None)
            .await
        {
            Ok(outcome @ (Outcome::Applied { .. } | Outcome::Deleted { .. })) => {
                self.metrics.resync_repair();
                tracing::info!(?outcome, "resync repaired an environment");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                template = %template.name_any(),
                number = state.facts.number,
                error = %e,
                "resync could not write an environment"
            ),
        }
    }

    /// Pull request numbers that have an environment of `template`.
    async fn environment_numbers(
        &self,
        template: &PreviewTemplate,
    ) -> Result<Vec<u64>, ResyncError> {
        let Some(namespace) = template.namespace() else {
            return Ok(Vec::new());
        };
        let api: Api<PreviewEnvironment> = Api::namespaced(self.client.clone(), &namespace);
        let selector = naming::template_selector(&template.name_any());
        let envs = api.list(&ListParams::default().labels(&selector)).await?;
        Ok(envs
            .items
            .into_iter()
            .filter(|e| e.spec.template == template.name_any())
            .map(|e| e.spec.number)
            .collect())
    }

    /// Read the open pull requests, unless GitHub says the first page did not change.
    async fn refresh(&self, repository: &str, cache: &mut Cache) -> Result<(), ResyncError> {
        let first = format!("/repos/{repository}/pulls?state=open&per_page=100&page=1");
        let answer = self
            .github
            .get_if_changed(
                repository,
                &first,
                cache.etag.as_deref().filter(|_| cache.single_page),
            )
            .await?;
        if answer.status == StatusCode::NOT_MODIFIED {
            self.metrics.resync_not_modified();
            return Ok(());
        }
        let mut open = parse_page(answer.body)?;
        let mut last = open.len();
        let mut page = 2;
        while last == 100 && page <= MAX_PAGES {
            let path = format!("/repos/{repository}/pulls?state=open&per_page=100&page={page}");
            let more = parse_page(
                self.github
                    .request(repository, Method::GET, &path, None)
                    .await?
                    .body,
            )?;
            last = more.len();
            open.extend(more);
            page += 1;
        }
        cache.etag = answer.etag;
        cache.single_page = page == 2;
        cache.open = open;
        Ok(())
    }
}

fn parse_page(body: serde_json::Value) -> Result<Vec<PullRequest>, ResyncError> {
    serde_json::from_value(body).map_err(|e| ResyncError::Shape(e.to_string()))
}
