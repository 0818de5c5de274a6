//! Delivery ids already acted on, so that GitHub's redeliveries (and copies arriving together)
//! do nothing twice. An id is claimed before a delivery is acted on and kept only once it was
//! handled: a delivery that fails, or whose handling is cut off (the request timeout drops it
//! midway), gives its id back, so that GitHub's redelivery is acted on instead of being
//! answered "duplicate" for as long as ids are remembered.

use moka::sync::Cache;
use std::time::Duration;

pub struct Dedupe(Cache<String, ()>);

impl Dedupe {
    /// Remember up to `capacity` ids, each for `window`.
    pub fn new(capacity: u64, window: Duration) -> Self {
        Self(
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(window)
                .build(),
        )
    }

    /// Claim `id`, or `None` when it is claimed already.
    pub fn claim(&self, id: &str) -> Option<Claim<'_>> {
        // `or_insert_with` coalesces concurrent calls for one key (plain `or_insert` does not),
        // so of two copies arriving together exactly one is fresh.
        let fresh = self
            .0
            .entry(id.to_string())
            .or_insert_with(|| ())
            .is_fresh();
        fresh.then(|| Claim {
            seen: &self.0,
            id: id.to_string(),
            kept: false,
        })
    }
}

/// A claimed id: given back when dropped, unless kept.
#[must_use = "a claim dropped at once is given back at once"]
pub struct Claim<'a> {
    seen: &'a Cache<String, ()>,
    id: String,
    kept: bool,
}

impl Claim<'_> {
    /// The delivery was handled: remember its id.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.seen.invalidate(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dedupe() -> Dedupe {
        Dedupe::new(100, Duration::from_secs(60))
    }

    #[test]
    fn a_kept_id_is_a_duplicate_from_then_on() {
        let seen = dedupe();
        seen.claim("a").expect("fresh").keep();
        assert!(seen.claim("a").is_none());
        assert!(seen.claim("b").is_some());
    }

    #[test]
    fn a_claimed_id_is_a_duplicate_while_claimed_and_free_once_given_back() {
        let seen = dedupe();
        let claim = seen.claim("a").expect("fresh");
        assert!(seen.claim("a").is_none(), "a copy arriving meanwhile");
        drop(claim);
        assert!(seen.claim("a").is_some());
    }

    #[tokio::test]
    async fn handling_cut_off_by_a_timeout_gives_the_id_back() {
        let seen = dedupe();
        let handling = async {
            let claim = seen.claim("a").expect("fresh");
            std::future::pending::<()>().await;
            claim.keep();
        };
        let cut = tokio::time::timeout(Duration::from_millis(10), handling).await;
        assert!(cut.is_err());
        assert!(seen.claim("a").is_some());
    }
}
