//! Limits on delivery bodies, applied before the body is buffered. A body has to be buffered
//! whole before its signature can be checked, so without these anyone could make prenv hold
//! `MAX_BODY` per connection: a body declared too large is refused without being kept, and all
//! bodies being read at the same time share a fixed memory budget.

use super::MAX_BODY;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// How many bytes of delivery bodies may be buffered at once: five of GitHub's largest, or
/// thousands of ordinary (tens of KiB) deliveries. Others wait (within the request timeout).
pub const BODY_BUDGET: usize = 5 * MAX_BODY;
/// A body declared too large but no larger than this is read (and thrown away) before it is
/// refused. Answering while the sender is still sending would close the connection under it:
/// the sender's next bytes draw a TCP reset, which can destroy the answer before it is read.
/// Anything larger is not from GitHub, and is refused at once.
pub const DRAIN_MAX: u64 = 64 * 1024 * 1024;
/// The budget is counted in KiB so that it fits a semaphore's `u32` permits.
const UNIT: usize = 1024;

/// The shared budget for buffered bodies.
#[derive(Clone, Debug)]
pub struct BodyBudget(Arc<Semaphore>);

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(Semaphore::new(bytes.div_ceil(UNIT))))
    }
}

impl Default for BodyBudget {
    fn default() -> Self {
        Self::new(BODY_BUDGET)
    }
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

/// Middleware: refuse a body declared larger than `MAX_BODY`, then hold its share of the
/// budget (its declared length, or `MAX_BODY` when it is sent chunked) while the request runs.
pub async fn limit_body(State(budget): State<BodyBudget>, req: Request, next: Next) -> Response {
    let declared = content_length(req.headers());
    let reserve = match declared {
        Some(n) if n > MAX_BODY as u64 => {
            if n <= DRAIN_MAX {
                // Chunk by chunk, so only bandwidth is spent; the request timeout bounds it.
                let mut body = req.into_body().into_data_stream();
                while let Some(Ok(_)) = body.next().await {}
            }
            let reason = too_large_reason(declared);
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(json!({ "error": reason })),
            )
                .into_response();
        }
        // Checked just above: fits in usize.
        Some(n) => usize::try_from(n).unwrap_or(MAX_BODY),
        None => MAX_BODY,
    };
    let units = u32::try_from(reserve.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
    let Ok(_permit) = budget.0.clone().acquire_many_owned(units).await else {
        // Only a closed semaphore fails, and it is never closed.
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Bytes;
    use axum::routing::post;
    use std::time::{Duration, Instant};
    use tokio_util::sync::CancellationToken;

    /// A server whose handler takes `hold` after reading the body, behind a budget of
    /// `budget` bytes.
    async fn start(budget: usize, hold: Duration) -> (String, CancellationToken) {
        let app = Router::new()
            .route(
                "/",
                post(move |body: Bytes| async move {
                    tokio::time::sleep(hold).await;
                    body.len().to_string()
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .layer(axum::middleware::from_fn_with_state(
                BodyBudget::new(budget),
                limit_body,
            ));
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

    #[tokio::test]
    async fn declared_too_large_is_read_then_refused_cleanly() {
        let (url, shutdown) = start(BODY_BUDGET, Duration::ZERO).await;
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
        let (url, shutdown) = start(BODY_BUDGET, Duration::ZERO).await;
        // Only the headers are sent: the answer cannot have waited for the body.
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let answer = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
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
        let (url, shutdown) = start(BODY_BUDGET, Duration::ZERO).await;
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
    async fn bodies_wait_for_their_share_of_the_budget() {
        // Room for one 40 KiB body at a time: the second waits for the first to finish.
        let hold = Duration::from_millis(500);
        let (url, shutdown) = start(64 * 1024, hold).await;
        let http = reqwest::Client::new();
        let send = || http.post(&url).body(vec![b'x'; 40 * 1024]).send();
        let start = Instant::now();
        let (a, b) = tokio::join!(send(), send());
        assert_eq!(a.unwrap().status().as_u16(), 200);
        assert_eq!(b.unwrap().status().as_u16(), 200);
        assert!(start.elapsed() >= hold * 2, "{:?}", start.elapsed());
        // Small bodies share it.
        let send = || http.post(&url).body(vec![b'x'; 1024]).send();
        let start = Instant::now();
        let (a, b) = tokio::join!(send(), send());
        assert_eq!(a.unwrap().status().as_u16(), 200);
        assert_eq!(b.unwrap().status().as_u16(), 200);
        assert!(start.elapsed() < hold * 2, "{:?}", start.elapsed());
        shutdown.cancel();
    }
}
