//! The HTTP server for the webhook (and admin) listeners: hyper-util instead of `axum::serve`,
//! so that every phase of a request is bounded in time. A sender that trickles its headers, its
//! body, or just holds a connection open without sending anything is cut off after the request
//! timeout instead of holding a connection (and a file descriptor the Kubernetes client needs)
//! for ever.

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// At most this many connections are served at once; further ones wait in the kernel's accept
/// queue. Keeps a flood of connections from using up the file descriptors the Kubernetes and
/// GitHub clients need.
pub const MAX_CONNECTIONS: usize = 1024;
/// Longest wait for in-flight requests on shutdown. GitHub gives up on a delivery after 10 s, so
/// a request still running after that has failed for GitHub anyway (the resync repairs it).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Pause after an accept error that is not about one connection (e.g. out of file descriptors),
/// so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

/// Serve `app` on `listener` until `shutdown` is cancelled.
///
/// `request_timeout` bounds each request twice over: reading the request line and headers
/// (which also closes a connection that sends nothing at all, or idles between keep-alive
/// requests, for that long), and everything after, body and handler, which is answered
/// `408 Request Timeout`. Only HTTP/1.1 (and 1.0) is served: GitHub delivers over HTTP/1.1, and
/// sniffing for HTTP/2 would wait for the preface without any timeout.
///
/// On shutdown no new connection is accepted, idle keep-alive connections are closed, and
/// in-flight requests get up to `min(request_timeout, SHUTDOWN_GRACE)` to finish before their
/// connections are dropped.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    request_timeout: Duration,
) -> std::io::Result<()> {
    let grace = request_timeout.min(SHUTDOWN_GRACE);
    serve_with_grace(listener, app, shutdown, request_timeout, grace).await
}

async fn serve_with_grace(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    request_timeout: Duration,
    grace: Duration,
) -> std::io::Result<()> {
    let app = app.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        request_timeout,
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout)
        .keep_alive(true);
    let connections = TaskTracker::new();
    // Cancelled once the grace period is over: drops connections still open.
    let force = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));

    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "accepting a connection failed");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // The peer's address, for limits counted per sender.
        let service = TowerToHyperService::new(app.clone().layer(Extension(ConnectInfo(peer))));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let (stop, force) = (shutdown.clone(), force.clone());
        connections.spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            let served = tokio::select! {
                served = conn.as_mut() => served,
                _ = stop.cancelled() => {
                    // Idle connections close now, busy ones after their current response.
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        served = conn.as_mut() => served,
                        _ = force.cancelled() => {
                            tracing::debug!(%peer, "connection dropped at shutdown");
                            return;
                        }
                    }
                }
            };
            // A client's broken connection or a header timeout: not prenv's problem.
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }

    // Stop accepting: connections arriving from now on are refused by the kernel.
    drop(listener);
    connections.close();
    if !connections.is_empty() {
        tracing::info!(
            open = connections.len(),
            "waiting for open connections to finish"
        );
    }
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "in-flight requests did not finish in time; dropping them"
        );
        force.cancel();
        connections.wait().await;
    }
    Ok(())
}

/// Errors of one connection attempt (the client went away before it was accepted), as opposed
/// to errors of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Instant;

    /// A server with `/fast`, `/slow` (answers after 1 s) and `/echo` (reads the body).
    async fn start(
        timeout: Duration,
    ) -> (
        SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let app = Router::new()
            .route("/fast", get(|| async { "fast" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "slow"
                }),
            )
            .route("/echo", post(|body: axum::body::Bytes| async move { body }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app, shutdown.clone(), timeout));
        (addr, shutdown, task)
    }

    /// Blocking client work off the runtime.
    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f).await.unwrap()
    }

    /// Read until the peer closes (or errors), returning what was read and when it closed.
    fn read_to_close(stream: &mut TcpStream) -> (String, Instant) {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        (String::from_utf8_lossy(&out).into_owned(), Instant::now())
    }

    #[tokio::test]
    async fn keep_alive_serves_several_requests_on_one_connection() {
        let (addr, shutdown, task) = start(Duration::from_secs(5)).await;
        let answers = blocking(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut answers = Vec::new();
            for _ in 0..3 {
                s.write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap();
                answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            answers
        })
        .await;
        for a in answers {
            assert!(a.starts_with("HTTP/1.1 200"), "{a}");
            assert!(a.ends_with("fast"), "{a}");
        }
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn slow_headers_and_idle_connections_are_cut_off() {
        let (addr, shutdown, task) = start(Duration::from_secs(1)).await;
        let (idle, trickled) = blocking(move || {
            // Sends nothing at all.
            let start = Instant::now();
            let mut idle = TcpStream::connect(addr).unwrap();
            idle.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let (_, closed) = read_to_close(&mut idle);
            let idle_after = closed - start;

            // One header byte every 200 ms, for longer than the timeout.
            let start = Instant::now();
            let mut slow = TcpStream::connect(addr).unwrap();
            slow.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let request =
                b"GET /fast HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
            let mut cut = None;
            for b in request {
                if slow.write_all(&[*b]).is_err() {
                    cut = Some(start.elapsed());
                    break;
                }
                let mut buf = [0u8; 64];
                match slow.read(&mut buf) {
                    Ok(0) => {
                        cut = Some(start.elapsed());
                        break;
                    }
                    Ok(_) => panic!("answered a request that took too long to send"),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => {
                        cut = Some(start.elapsed());
                        break;
                    }
                }
            }
            (idle_after, cut)
        })
        .await;
        assert!(
            idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
            "{idle:?}"
        );
        let trickled = trickled.expect("slow headers were cut off");
        assert!(trickled < Duration::from_secs(4), "{trickled:?}");
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn slow_body_is_answered_408() {
        let (addr, shutdown, task) = start(Duration::from_secs(1)).await;
        let (answer, elapsed) = blocking(move || {
            let start = Instant::now();
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
                .unwrap();
            let mut out = Vec::new();
            for _ in 0..100 {
                if s.write_all(b"x").is_err() {
                    break;
                }
                let mut buf = [0u8; 1024];
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
                if !out.is_empty() {
                    break;
                }
            }
            (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
        })
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_lets_in_flight_requests_finish_and_stops_accepting() {
        let (addr, shutdown, task) = start(Duration::from_secs(5)).await;
        let in_flight = blocking(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .await;
        // An idle keep-alive connection must not hold up the shutdown.
        let _idle = blocking(move || TcpStream::connect(addr).unwrap()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = Instant::now();
        shutdown.cancel();
        let answer = blocking(move || {
            let mut s = in_flight;
            read_to_close(&mut s).0
        })
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("slow"), "{answer}");
        task.await.unwrap().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(TcpStream::connect(addr).is_err(), "still accepting");
    }

    #[tokio::test]
    async fn shutdown_wait_is_bounded() {
        // A request still running when the grace period is over is dropped, and so is a
        // connection stuck in the middle of its headers.
        let app = Router::new().route(
            "/stuck",
            get(|| async {
                std::future::pending::<()>().await;
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_with_grace(
            listener,
            app,
            shutdown.clone(),
            Duration::from_secs(60),
            Duration::from_millis(500),
        ));
        let (mut stuck, mut half) = blocking(move || {
            let mut stuck = TcpStream::connect(addr).unwrap();
            stuck
                .write_all(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut half = TcpStream::connect(addr).unwrap();
            half.write_all(b"GET /stuck HTTP/1.1\r\nHo").unwrap();
            (stuck, half)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        shutdown.cancel();
        task.await.unwrap().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        // Both connections were closed by the server.
        let closed = blocking(move || {
            stuck
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            half.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 64];
            [stuck.read(&mut buf), half.read(&mut buf)]
                .into_iter()
                .all(|r| {
                    matches!(r, Ok(0))
                        || r.is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock)
                })
        })
        .await;
        assert!(closed);
    }
}
