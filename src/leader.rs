//! Leader election with a Kubernetes Lease (kube-lease-manager): only the leader reconciles
//! and writes to GitHub; every replica answers webhooks. A stopped leader releases the lease,
//! so another replica takes over within seconds; a crashed one loses it when it expires.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Lease validity after the last renewal; a crashed leader is replaced after at most this.
const LEASE_SECONDS: u64 = 10;
/// The leader renews this long before the lease runs out.
const GRACE_SECONDS: u64 = 3;

/// Whether this replica leads; cheap to clone and to ask.
#[derive(Clone, Debug)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// Always the leader (tests of parts that do not care).
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        // Keep the channel open for the life of the process.
        std::mem::forget(tx);
        Self(rx)
    }

    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Wait until this replica leads (returns at once if it does).
    pub async fn acquired(&mut self) -> bool {
        self.0.wait_for(|l| *l).await.is_ok()
    }

    /// Wait until this replica stops leading.
    pub async fn lost(&mut self) {
        let _ = self.0.wait_for(|l| !*l).await;
    }

    /// Run `pass` while this replica leads: at once each time it gains the lease (a new leader
    /// should not wait a whole interval to catch up), then every `interval` until it loses it.
    pub async fn every_interval<F, Fut>(
        mut self,
        interval: std::time::Duration,
        shutdown: &CancellationToken,
        mut pass: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                acquired = self.acquired() => if !acquired { return },
            }
            pass().await;
            let mut watch = self.0.clone();
            let lost = async move {
                // A closed channel (election over) is no loss: wait out the interval.
                if watch.wait_for(|l| !*l).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
                _ = lost => {}
            }
        }
    }

    /// Every change, for metrics and logs.
    pub async fn changed(&mut self) -> Option<bool> {
        self.0.changed().await.ok()?;
        Some(*self.0.borrow())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("leader election: {0}")]
pub struct LeaderError(String);

/// Join the election for Lease `name` in `namespace` as `identity`. The returned task keeps
/// renewing while this replica leads and releases the lease when `shutdown` fires.
pub async fn elect(
    client: Client,
    name: &str,
    namespace: &str,
    identity: &str,
    shutdown: CancellationToken,
) -> Result<(Leadership, JoinHandle<()>), LeaderError> {
    let manager = LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_parameters(LeaseParams::new(identity, LEASE_SECONDS, GRACE_SECONDS))
        .build()
        .await
        .map_err(|e| LeaderError(e.to_string()))?;
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Stop leading first, so nothing writes while the lease is let go.
                    let _ = tx.send(false);
                    match manager.release().await {
                        Ok(()) => tracing::info!("leader lease released"),
                        Err(e) => tracing::warn!(error = %e, "could not release the leader lease"),
                    }
                    return;
                }
                changed = manager.changed() => match changed {
                    Ok(leading) => {
                        tracing::info!(leading, "leadership changed");
                        let _ = tx.send(leading);
                    }
                    Err(e) => {
                        // Without a confirmed lease this replica must not act as leader.
                        tracing::warn!(error = %e, "leader election error; retrying");
                        let _ = tx.send(false);
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                },
            }
        }
    });
    Ok((Leadership(rx), task))
}
