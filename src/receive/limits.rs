//! Limits on delivery bodies, applied before a body reaches the handler. A body has to be
//! buffered whole before its signature can be checked, so whatever is held here is held for a
//! sender nobody has authenticated yet. Without care, a few connections that declare GitHub's
//! 25 MiB cap and trickle bytes would hold the memory budget and keep genuine deliveries
//! waiting past GitHub's 10 s. So:
//!
//! - A body declared larger than `MAX_BODY` is refused without being kept.
//! - Small bodies (declared at most `SMALL_BODY`, which covers GitHub's real deliveries) have
//!   their own budget and are charged for bytes as they arrive, not as declared: a sender that
//!   declares much and sends little holds next to nothing, and no large body is ahead of them.
//! - Large bodies (declared above that, or sent chunked) reserve their declared size up front
//!   from a separate budget (charged as they arrive, several could end up half-read with none
//!   able to finish), and one peer may read at most `LARGE_PER_PEER` of them at once.
//! - Every body must be in within `BODY_DEADLINE` of its headers, or it is answered 408 and
//!   what it held is freed.

use super::MAX_BODY;
use super::peers::{Peers, Slot};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout_at};

/// Bodies declared at most this large are read in the small lane. GitHub's deliveries are
/// rarely more than a few hundred KiB.
pub const SMALL_BODY: usize = 1024 * 1024;
/// Bytes of small bodies buffered at once: thousands of ordinary (tens of KiB) deliveries.
pub const SMALL_BUDGET: usize = 32 * 1024 * 1024;
/// Bytes reserved by large bodies at once: four of GitHub's largest. With the small budget
/// about what a single shared budget of five used to be, well inside the chart's 256 MiB.
pub const LARGE_BUDGET: usize = 4 * MAX_BODY;
/// Large bodies one peer (an IPv4 address, an IPv6 /64) may have in flight at once. GitHub
/// sends few large deliveries; a sender taking the whole large budget is not GitHub.
pub const LARGE_PER_PEER: usize = 2;
/// A body still arriving this long after its headers is cut off: GitHub has given up on the
/// delivery by then (it waits 10 s for the answer), so reading on only helps a slow sender.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);
/// A body declared too large but no larger than this is read (and thrown away) before it is
/// refused. Answering while the sender is still sending would close the connection under it:
/// the sender's next bytes draw a TCP reset, which can destroy the answer before it is read.
/// Anything larger is not from GitHub, and is refused at once.
pub const DRAIN_MAX: u64 = 64 * 1024 * 1024;
/// Budgets are counted in KiB so that they fit a semaphore's `u32` permits.
const UNIT: usize = 1024;

fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

/// A budget of bytes, and its size (never asked for more than that, or it would wait for ever).
#[derive(Clone, Debug)]
struct Budget {
    permits: Arc<Semaphore>,
    units: u32,
}

impl Budget {
    fn new(bytes: usize) -> Self {
        let units = units(bytes).max(1);
        Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    async fn take(&self, units: u32) -> Result<OwnedSemaphorePermit, BodyError> {
        self.permits
            .clone()
            .acquire_many_owned(units.clamp(1, self.units))
            .await
            // Only a closed semaphore fails, and these are never closed.
            .map_err(|_| BodyError::Closed)
    }
}

/// The body limits of one listener, shared by all its connections.
#[derive(Clone, Debug)]
pub struct Limits {
    small: Budget,
    large: Budget,
    peers: Peers,
    deadline: Duration,
}

impl Limits {
    pub fn new(small: usize, large: usize, large_per_peer: usize, deadline: Duration) -> Self {
        Self {
            small: Budget::new(small),
            large: Budget::new(large),
            peers: Peers::new(large_per_peer),
            deadline,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(SMALL_BUDGET, LARGE_BUDGET, LARGE_PER_PEER, BODY_DEADLINE)
    }
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("delivery body is larger than declared or than GitHub's cap")]
    TooLarge,
    #[error("could not read the delivery body: {0}")]
    Read(#[source] axum::Error),
    #[error("body budget closed")]
    Closed,
}

/// How a body pays for the memory it is read into.
enum Charge<'a> {
    /// Reserved up front.
    Reserved(OwnedSemaphorePermit),
    /// Taken from this budget as the bytes arrive.
    AsItArrives(&'a Budget),
}

/// A buffered body and what it holds until the request is done with it.
struct Buffered {
    bytes: Bytes,
    permit: Option<OwnedSemaphorePermit>,
    slot: Option<Slot>,
}

/// Read `body` (at most `cap` bytes), paying for it as `charge` says.
async fn read(body: Body, cap: usize, charge: Charge<'_>) -> Result<Buffered, BodyError> {
    let (mut held, budget, mut buf) = match charge {
        // Reserved, so allocating it all now costs nothing more (and spares the copies of
        // growing a 25 MiB buffer step by step).
        Charge::Reserved(permit) => (Some(permit), None, Vec::with_capacity(cap)),
        Charge::AsItArrives(budget) => (None, Some(budget), Vec::new()),
    };
    let mut paid = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        let len = buf.len() + chunk.len();
        if len > cap {
            return Err(BodyError::TooLarge);
        }
        if let Some(budget) = budget {
            let owed = units(len).saturating_sub(paid);
            if owed > 0 {
                let more = budget.take(owed).await?;
                paid += owed;
                match held.as_mut() {
                    Some(permit) => permit.merge(more),
                    None => held = Some(more),
                }
            }
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Buffered {
        bytes: buf.into(),
        permit: held,
        slot: None,
    })
}

/// Why a body over GitHub's cap is refused (`declared`: its Content-Length, if sent).
pub fn too_large_reason(declared: Option<u64>) -> String {
    let size = declared.map_or_else(String::new, |n| format!(" of {n} bytes"));
    format!("delivery body{size} is larger than GitHub's cap of {MAX_BODY} bytes (25 MiB)")
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn refuse(status: StatusCode, reason: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": reason.to_string() }))).into_response()
}

/// Middleware: read the body under the limits above, then hand it on already buffered,
/// holding its share of the budget until the request is done.
pub async fn limit_body(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let declared = content_length(req.headers());
    if let Some(n) = declared.filter(|n| *n > MAX_BODY as u64) {
        if n <= DRAIN_MAX {
            // Chunk by chunk, so only bandwidth is spent; the request timeout bounds it.
            let mut body = req.into_body().into_data_stream();
            while let Some(Ok(_)) = body.next().await {}
        }
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large_reason(declared));
    }
    let deadline = Instant::now() + limits.deadline;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (parts, body) = req.into_parts();
    // At most MAX_BODY (checked above), so it fits.
    let declared = declared.and_then(|n| usize::try_from(n).ok());
    let outcome = match declared {
        Some(n) if n <= SMALL_BODY => {
            timeout_at(deadline, read(body, n, Charge::AsItArrives(&limits.small))).await
        }
        _ => {
            let Some(slot) = limits.peers.enter(peer) else {
                return refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("this peer is already sending {LARGE_PER_PEER} large deliveries"),
                );
            };
            let size = declared.unwrap_or(MAX_BODY);
            let permit = match timeout_at(deadline, limits.large.take(units(size))).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(e)) => return refuse(StatusCode::SERVICE_UNAVAILABLE, e),
                Err(_) => {
                    return refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many large deliveries are being received; try again later",
                    );
                }
            };
            timeout_at(deadline, read(body, size, Charge::Reserved(permit)))
                .await
                .map(|read| {
                    read.map(|buffered| Buffered {
                        slot: Some(slot),
                        ..buffered
                    })
                })
        }
    };
    let buffered = match outcome {
        Ok(Ok(buffered)) => buffered,
        Ok(Err(BodyError::TooLarge)) => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large_reason(None));
        }
        Ok(Err(e @ BodyError::Read(_))) => return refuse(StatusCode::BAD_REQUEST, e),
        Ok(Err(e @ BodyError::Closed)) => return refuse(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "delivery body not received within {}s of its headers",
                    limits.deadline.as_secs_f64()
                ),
            );
        }
    };
    let Buffered {
        bytes,
        permit,
        slot,
    } = buffered;
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // Held until here: the handler kept the bytes until it answered.
    drop((permit, slot));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::post;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant as StdInstant;
    use tokio_util::sync::CancellationToken;

    /// A server whose handler takes `hold` after reading the body, behind `limits`.
    async fn start(limits: Limits, hold: Duration) -> (String, CancellationToken) {
        let app = Router::new()
            .route(
                "/",
                post(move |body: Bytes| async move {
                    tokio::time::sleep(hold).await;
                    body.len().to_string()
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .layer(axum::middleware::from_fn_with_state(limits, limit_body));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(super::super::server::serve(
            listener,
            app,
            shutdown.clone(),
            Duration::from_secs(10),
        ));
        (url, shutdown)
    }

    fn addr(url: &str) -> String {
        url.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }

    /// A raw connection that sent headers declaring `declared` body bytes, and nothing more.
    fn declare(url: &str, declared: usize) -> TcpStream {
        let mut s = TcpStream::connect(addr(url)).unwrap();
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n"
        )
        .unwrap();
        s
    }

    /// The status line the server answers on `s` with, waiting up to `wait`.
    fn status(mut s: TcpStream, wait: Duration) -> String {
        s.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        answer.lines().next().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn declared_too_large_is_read_then_refused_cleanly() {
        let (url, shutdown) = start(Limits::default(), Duration::ZERO).await;
        let resp = reqwest::Client::new()
            .post(&url)
            .body(vec![b'x'; MAX_BODY + 1])
            .send()
            .await
            .expect("the answer arrives");
        assert_eq!(resp.status().as_u16(), 413);
        let answer: serde_json::Value = resp.json().await.unwrap();
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains(&format!("of {} bytes", MAX_BODY + 1)),
            "{answer}"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn declared_far_too_large_is_refused_before_reading() {
        let (url, shutdown) = start(Limits::default(), Duration::ZERO).await;
        // Only the headers are sent: the answer cannot have waited for the body.
        let answer = tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(addr(&url)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(
                s,
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                DRAIN_MAX + 1
            )
            .unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("larger than GitHub's cap"), "{answer}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn exactly_the_cap_is_accepted() {
        let (url, shutdown) = start(Limits::default(), Duration::ZERO).await;
        let resp = reqwest::Client::new()
            .post(&url)
            .body(vec![b'x'; MAX_BODY])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.text().await.unwrap(), MAX_BODY.to_string());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn large_bodies_wait_for_their_share_of_the_budget() {
        // Room for one 2 MiB body at a time: the second waits for the first to finish.
        let hold = Duration::from_millis(500);
        let limits = Limits::new(SMALL_BUDGET, 3 * SMALL_BODY, 2, BODY_DEADLINE);
        let (url, shutdown) = start(limits, hold).await;
        let http = reqwest::Client::new();
        let send = || http.post(&url).body(vec![b'x'; 2 * SMALL_BODY]).send();
        let start = StdInstant::now();
        let (a, b) = tokio::join!(send(), send());
        assert_eq!(a.unwrap().status().as_u16(), 200);
        assert_eq!(b.unwrap().status().as_u16(), 200);
        assert!(start.elapsed() >= hold * 2, "{:?}", start.elapsed());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn small_bodies_are_charged_for_what_arrived_not_what_was_declared() {
        // Four senders declare most of the small budget each and send nothing: a body that
        // fits the budget alone is not kept waiting for them.
        let limits = Limits::new(64 * 1024, LARGE_BUDGET, 2, BODY_DEADLINE);
        let (url, shutdown) = start(limits, Duration::ZERO).await;
        let held: Vec<_> = (0..4).map(|_| declare(&url, 60 * 1024)).collect();
        // Time for their headers to be read (charged as declared, they would now hold it all).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let resp = reqwest::Client::new()
            .post(&url)
            .body(vec![b'x'; 40 * 1024])
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("answered without waiting for the senders");
        assert_eq!(resp.status().as_u16(), 200);
        drop(held);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_large_body_not_in_by_the_deadline_is_answered_408_and_frees_its_share() {
        let limits = Limits::new(SMALL_BUDGET, 3 * SMALL_BODY, 2, Duration::from_millis(500));
        let (url, shutdown) = start(limits, Duration::ZERO).await;
        let slow = declare(&url, 2 * SMALL_BODY);
        let line = tokio::task::spawn_blocking(move || status(slow, Duration::from_secs(5)))
            .await
            .unwrap();
        assert!(line.starts_with("HTTP/1.1 408"), "{line}");
        // Its reservation is back: a body needing it all goes through.
        let resp = reqwest::Client::new()
            .post(&url)
            .body(vec![b'x'; 3 * SMALL_BODY])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn one_peer_reads_at_most_its_share_of_large_bodies() {
        let limits = Limits::new(SMALL_BUDGET, LARGE_BUDGET, 1, BODY_DEADLINE);
        let (url, shutdown) = start(limits.clone(), Duration::ZERO).await;
        let first = declare(&url, 2 * SMALL_BODY);
        tokio::time::timeout(Duration::from_secs(5), async {
            while limits.peers.held() == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the first body is being read");
        let second = declare(&url, 2 * SMALL_BODY);
        let line = tokio::task::spawn_blocking(move || status(second, Duration::from_secs(5)))
            .await
            .unwrap();
        assert!(line.starts_with("HTTP/1.1 429"), "{line}");
        drop(first);
        shutdown.cancel();
    }
}
