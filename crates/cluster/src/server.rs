//! The node's one HTTP/1.1 server loop, behind every HTTP listener: node-to-node
//! (mutual TLS), S3, WebDAV and admin (plain, or TLS with `--tls-cert`). It owns what
//! every listener must survive and nothing else (it never looks inside requests):
//! - accept errors (EMFILE, a reset before accept) pass; ending the loop would take a
//!   gateway, or the node's cluster links, down for good;
//! - a cap on open connections per listener, so a flood cannot take every descriptor,
//!   and a lower one per client address, so one flooding host cannot take them all
//!   (`Admission`);
//! - a client that never finishes its TLS handshake, or a request's headers, or sits on
//!   an idle keep-alive connection, is cut off after a timeout;
//! - a request sent with `Expect: 100-continue` and refused before its body was asked
//!   for closes its connection (`close_after_refused_continue`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers, and how long a keep-alive
/// connection may sit idle between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once by one listener; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 4096;
/// How long a stopping server waits for requests in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a listener serves, for logs ("S3", "node-to-node").
pub struct Listener {
    /// What it serves, for logs ("S3", "node-to-node").
    pub what: &'static str,
    /// The bound socket.
    pub tcp: tokio::net::TcpListener,
    /// Serve TLS with this configuration; plain HTTP without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves `app` on `listener` until `stop` changes.
pub fn serve_app(
    listener: Listener,
    app: axum::Router,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    serve(listener, move |_, _| Some(app.clone()), stop)
}

/// Serves HTTP/1.1 until `stop` changes. For each connection, after its handshake,
/// `route` picks the router that serves it (or refuses it with `None`); with TLS it
/// sees the client's TLS session, so a caller can look at the client's certificate. A
/// failed handshake only ends that connection, and is logged with the listener's name.
pub fn serve(
    listener: Listener,
    route: impl Fn(Option<&rustls::ServerConnection>, SocketAddr) -> Option<axum::Router>
    + Send
    + Sync
    + 'static,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let Listener { what, tcp, tls } = listener;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let route = Arc::new(route);
    let admission = Admission::new(MAX_CONNECTIONS);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::spawn(async move {
        loop {
            let (stream, addr) = tokio::select! {
                r = tcp.accept() => match r {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!("{what}: cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            let Some(admitted) = admission.admit(what, addr) else {
                continue;
            };
            // No Nagle delay: small responses would otherwise wait ~40 ms for an ACK.
            let _ = stream.set_nodelay(true);
            let (acceptor, route, watcher) = (acceptor.clone(), route.clone(), graceful.watcher());
            tokio::spawn(async move {
                let _admitted = admitted;
                match acceptor {
                    None => {
                        let Some(app) = route(None, addr) else { return };
                        serve_connection(what, addr, stream, app, watcher).await
                    }
                    Some(acceptor) => {
                        let tls =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(t)) => t,
                                Ok(Err(e)) => {
                                    return tracing::warn!(
                                        "refused a {what} connection from {addr}: {e}"
                                    );
                                }
                                Err(_) => {
                                    return tracing::warn!(
                                        "{what}: {addr} did not finish the TLS handshake in time"
                                    );
                                }
                            };
                        let Some(app) = route(Some(tls.get_ref().1), addr) else {
                            return;
                        };
                        serve_connection(what, addr, tls, app, watcher).await
                    }
                }
            });
        }
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::info!("{what}: requests still in progress at shutdown were cut off");
        }
        Ok(())
    })
}

/// Which connections a listener takes: at most `max` at once, and at most a quarter of
/// that from one client address, so one flooding host (or NAT) cannot lock the others
/// out. Shared by every accept loop of the node (HTTP here, FTP).
#[derive(Clone)]
pub struct Admission {
    max: usize,
    open: Arc<std::sync::Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_address: std::collections::HashMap<std::net::IpAddr, usize>,
}

/// One admitted connection, counted until dropped.
pub struct Admitted {
    open: Arc<std::sync::Mutex<Open>>,
    ip: std::net::IpAddr,
}

impl Admission {
    /// Admits at most `max` connections, a quarter of them from one address.
    pub fn new(max: usize) -> Self {
        Admission {
            max,
            open: Default::default(),
        }
    }

    /// Most connections from one address.
    pub fn max_per_address(&self) -> usize {
        (self.max / 4).max(1)
    }

    /// Admits a connection from `addr`, or logs why not (`what` names the listener).
    pub fn admit(&self, what: &str, addr: SocketAddr) -> Option<Admitted> {
        let ip = addr.ip();
        let mut open = self.open.lock().expect("connection counts");
        if open.total >= self.max {
            tracing::warn!("{what}: {} connections open; refused {addr}", self.max);
            return None;
        }
        let from = open.by_address.get(&ip).copied().unwrap_or(0);
        if from >= self.max_per_address() {
            tracing::warn!("{what}: {from} connections open from {ip}; refused another");
            return None;
        }
        open.total += 1;
        open.by_address.insert(ip, from + 1);
        Some(Admitted {
            open: self.open.clone(),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("connection counts");
        open.total -= 1;
        if let Some(n) = open.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.ip);
            }
        }
    }
}

async fn serve_connection<IO>(
    what: &str,
    addr: SocketAddr,
    io: IO,
    app: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let app = app.layer(axum::middleware::from_fn(close_after_refused_continue));
    let svc = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("{what} connection from {addr}: {e}");
    }
}

/// A client that sent `Expect: 100-continue` and got a refusal instead of `100 Continue`
/// does not send its body (RFC 9110, 10.1.1), but hyper, which drains an unread body to
/// keep the connection, may then read the start of the client's next request as that
/// body and parse the rest as a request with a clipped method ("OST /b/k": boto3 saw
/// SignatureDoesNotMatch). Closing the connection after such an answer leaves nothing
/// to misread; the client opens a new one.
async fn close_after_refused_continue(
    req: axum::http::Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let expects_continue = req
        .headers()
        .get(axum::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut resp = next.run(req).await;
    if expects_continue && !resp.status().is_success() {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused `Expect: 100-continue` request: the answer says `Connection: close` and
    /// the server closes, so bytes that follow are never read as this request's body.
    #[tokio::test]
    async fn a_refused_expect_continue_request_closes_its_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::BAD_REQUEST });
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let listener = Listener {
            what: "test",
            tcp,
            tls: None,
        };
        let server = serve_app(listener, app, stop);
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(
            b"PUT /b/k HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 400"), "{text}");
        assert!(text.contains("connection: close"), "{text}");
        assert!(
            read.is_ok(),
            "the server closed the connection after answering"
        );
        // A refusal of a request that did not wait for `100 Continue` keeps its connection.
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.unwrap();
        assert!(
            !String::from_utf8_lossy(&buf[..n])
                .to_ascii_lowercase()
                .contains("connection: close")
        );
        stop_tx.send(true).unwrap();
        drop(c);
        server.await.unwrap().unwrap();
    }

    #[test]
    fn one_address_gets_a_quarter_and_the_others_still_get_in() {
        let a = Admission::new(8);
        let flood: SocketAddr = "127.0.0.2:1".parse().unwrap();
        let held: Vec<_> = (0..2).map(|_| a.admit("t", flood).unwrap()).collect();
        assert!(a.admit("t", flood).is_none(), "past its share");
        let others: Vec<_> = (1..=6)
            .map(|i| {
                a.admit("t", format!("127.0.1.{i}:1").parse().unwrap())
                    .unwrap()
            })
            .collect();
        assert!(
            a.admit("t", "127.0.2.1:1".parse().unwrap()).is_none(),
            "past the total"
        );
        drop(held);
        assert!(
            a.admit("t", flood).is_some(),
            "closed connections free their share"
        );
        drop(others);
    }
}
