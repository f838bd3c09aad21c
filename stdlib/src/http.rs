//! The HTTP/1.1 server of loopback services (`flow serve`, and the test
//! endpoints that stand in for vLLM), on hyper and a tokio runtime the server
//! owns. Handlers are plain blocking functions run on tokio's blocking pool.
//!
//! Limits that keep a misbehaving client from taking the server down:
//! a request's headers must arrive within [`Limits::idle`] (this also closes
//! idle keep-alive connections) and its body within
//! [`Limits::request_deadline`]; bodies over [`Limits::max_body`] get 413 and
//! are read in the frames that arrive, never preallocated from a claimed
//! `Content-Length`; connections past [`Limits::max_connections`] wait in the
//! accept queue until a slot frees, which every slow client does within the
//! deadlines. A panicking handler costs its request a 500, nothing more.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, watch, Semaphore};

/// One request, its body read in full.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Upper-cased (`GET`, `POST`).
    pub method: String,
    /// The request target as sent, query included.
    pub target: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer: status, content type and body.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, body: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        }
    }
}

/// What answers requests; called from several threads at once.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Limits of the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest body read; a larger one is answered 413.
    pub max_body: usize,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// A request's headers must arrive within this long after the
    /// connection opens or its previous request was answered.
    pub idle: Duration,
    /// A request's body must arrive within this long after its headers;
    /// a slower one is answered 408.
    pub request_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 32 << 20,
            max_connections: 64,
            idle: Duration::from_secs(30),
            request_deadline: Duration::from_secs(60),
        }
    }
}

/// Whether the client of a request is still there: it goes away when its
/// connection closes before the answer is sent.
#[derive(Clone, Debug, Default)]
pub struct Client {
    gone: Arc<AtomicBool>,
}

impl Client {
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }
}

/// Where a streamed answer writes its events.
pub struct EventSink {
    sender: mpsc::Sender<Bytes>,
}

impl EventSink {
    /// Sends `data` to the client (waiting while the client is slow to
    /// read); false once the client has gone away.
    pub fn send(&self, data: impl Into<Bytes>) -> bool {
        self.sender.blocking_send(data.into()).is_ok()
    }
}

/// Writes a streamed answer; runs on a blocking thread.
pub type EventProducer = Box<dyn FnOnce(&EventSink) + Send>;

/// What a [`Service`] answers: a whole response, or a `text/event-stream`
/// whose events the producer sends while the client reads them.
pub enum Reply {
    Whole(Response),
    Events(EventProducer),
}

/// A handler that may stream and may see its client go away.
pub type Service = Arc<dyn Fn(&Request, &Client) -> Reply + Send + Sync>;

/// A running server; dropping it stops it like [`HttpServer::shutdown`].
pub struct HttpServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// `None` once stopped or waited for.
    runtime_thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `addr` (port 0: a free port) and answers every request
    /// with `handler`.
    pub fn start(addr: SocketAddr, limits: Limits, handler: Handler) -> io::Result<HttpServer> {
        let service: Service = Arc::new(move |request, _| Reply::Whole(handler(request)));
        HttpServer::start_service(addr, limits, service)
    }

    /// [`HttpServer::start`] with a handler that may stream.
    pub fn start_service(
        addr: SocketAddr,
        limits: Limits,
        service: Service,
    ) -> io::Result<HttpServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flow-http")
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let (stop, stopped) = watch::channel(false);
        let runtime_thread = std::thread::Builder::new()
            .name("flow-http-accept".into())
            .spawn(move || {
                runtime.block_on(accept_loop(listener, limits, service, stopped));
                // Generations still running for gone clients are not waited for.
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(HttpServer {
            addr,
            stop,
            runtime_thread: Some(runtime_thread),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Blocks while the server runs.
    pub fn wait(mut self) {
        if let Some(thread) = self.runtime_thread.take() {
            let _ = thread.join();
        }
    }

    /// Stops the server; open connections are closed.
    pub fn shutdown(mut self) {
        self.stop_serving();
    }

    fn stop_serving(&mut self) {
        if let Some(thread) = self.runtime_thread.take() {
            let _ = self.stop.send(true);
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_serving();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    limits: Limits,
    service: Service,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            _ = stopped.changed() => return,
        };
        let Ok(slot) = slot else { return };
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let Ok((stream, _)) = stream else {
            // E.g. out of file descriptors: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            // The slot is freed when this task ends, however it ends.
            let _slot = slot;
            let answer = service_fn(move |request| {
                let service = Arc::clone(&service);
                async move { Ok::<_, Infallible>(answer(request, limits, service).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.idle)
                .serve_connection(TokioIo::new(stream), answer)
                .await;
        });
    }
}

/// Marks the client gone when dropped while armed: hyper drops the answer's
/// future when the connection closes before the answer is ready.
struct GoneOnDrop {
    client: Client,
    armed: bool,
}

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.client.gone.store(true, Ordering::Relaxed);
        }
    }
}

fn error_response(status: u16, message: &str) -> Response {
    let kind = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let body = serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    Response::json(status, &body)
}

async fn answer(
    request: hyper::Request<Incoming>,
    limits: Limits,
    service: Service,
) -> hyper::Response<ReplyBody> {
    let request = match read_request(request, &limits).await {
        Ok(r) => r,
        Err(e) => return into_hyper(e, true),
    };
    let client = Client::default();
    let mut guard = GoneOnDrop {
        client: client.clone(),
        armed: true,
    };
    let handled = tokio::task::spawn_blocking(move || service(&request, &client)).await;
    guard.armed = false;
    match handled {
        Ok(Reply::Whole(response)) => into_hyper(response, false),
        Ok(Reply::Events(producer)) => {
            let (sender, receiver) = mpsc::channel(16);
            // A panicking producer ends the stream; the runtime survives it.
            tokio::task::spawn_blocking(move || producer(&EventSink { sender }));
            let mut response = hyper::Response::new(ReplyBody::Events(receiver));
            let headers = response.headers_mut();
            headers.insert(
                "content-type",
                hyper::header::HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(
                "cache-control",
                hyper::header::HeaderValue::from_static("no-cache"),
            );
            response
        }
        Err(_) => into_hyper(
            error_response(500, "internal error while answering the request"),
            false,
        ),
    }
}

/// Reads the body within the limits; an error is the answer to send.
async fn read_request(
    request: hyper::Request<Incoming>,
    limits: &Limits,
) -> Result<Request, Response> {
    let (head, body) = request.into_parts();
    let too_large = || {
        error_response(
            413,
            &format!("the request body is larger than {} bytes", limits.max_body),
        )
    };
    if body
        .size_hint()
        .exact()
        .or(Some(body.size_hint().lower()))
        .is_some_and(|n| n > limits.max_body as u64)
    {
        return Err(too_large());
    }
    let collected = tokio::time::timeout(
        limits.request_deadline,
        Limited::new(body, limits.max_body).collect(),
    )
    .await
    .map_err(|_| {
        error_response(
            408,
            &format!(
                "the request body did not arrive within {:?}",
                limits.request_deadline
            ),
        )
    })?;
    let body = match collected {
        Ok(c) => c.to_bytes().to_vec(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(error_response(
                400,
                &format!("cannot read the request body: {e}"),
            ))
        }
    };
    Ok(Request {
        method: head.method.as_str().to_ascii_uppercase(),
        target: head
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| head.uri.to_string()),
        headers: head
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    })
}

fn into_hyper(response: Response, close: bool) -> hyper::Response<ReplyBody> {
    let mut out = hyper::Response::new(ReplyBody::Whole(Some(Bytes::from(response.body))));
    *out.status_mut() = hyper::StatusCode::from_u16(response.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = out.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static(response.content_type),
    );
    if close {
        // The rest of a rejected body is not read: the connection cannot go on.
        headers.insert(
            "connection",
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    out
}

/// A response body: one buffer, or events as a producer sends them.
enum ReplyBody {
    Whole(Option<Bytes>),
    Events(mpsc::Receiver<Bytes>),
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ReplyBody::Whole(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ReplyBody::Events(receiver) => receiver
                .poll_recv(cx)
                .map(|event| event.map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ReplyBody::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplyBody::Whole(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ReplyBody::Events(_) => SizeHint::default(),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    fn echo_server(limits: Limits) -> HttpServer {
        let handler: Handler = Arc::new(|r: &Request| {
            let body = serde_json::json!({
                "method": r.method, "path": r.path(), "body": String::from_utf8_lossy(&r.body),
            });
            Response::json(200, &body)
        });
        HttpServer::start("127.0.0.1:0".parse().unwrap(), limits, handler).unwrap()
    }

    /// Sends raw bytes, then reads until the server closes the connection.
    fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn health(addr: SocketAddr) -> String {
        exchange(addr, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
    }

    #[test]
    fn keep_alive_requests_share_a_connection_until_close() {
        let server = echo_server(Limits::default());
        let raw = "POST /v1/x?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nÄrzte\
                   GET /two HTTP/1.1\r\nConnection: close\r\n\r\n";
        let out = exchange(server.addr(), raw.as_bytes());
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
        assert!(out.contains(r#""body":"Ärzte""#), "{out}");
        assert!(out.contains(r#""path":"/v1/x""#), "{out}");
        assert!(out.contains(r#""path":"/two""#), "{out}");
        server.shutdown();
    }

    #[test]
    fn chunked_bodies_and_expect_continue_are_read() {
        let server = echo_server(Limits::default());
        let raw = "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n\
                   4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n";
        let out = exchange(server.addr(), raw.as_bytes());
        assert!(
            out.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"),
            "{out}"
        );
        assert!(out.contains(r#""body":"Wikipedia""#), "{out}");
    }

    #[test]
    fn malformed_and_oversized_requests_get_an_error() {
        let server = echo_server(Limits {
            max_body: 8,
            ..Limits::default()
        });
        for (raw, status) in [
            ("NONSENSE\r\n\r\n", "400"),
            ("POST / HTTP/1.1\r\nContent-Length: nine\r\n\r\n", "400"),
            (
                "POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n123456789",
                "413",
            ),
            ("POST / HTTP/1.1\r\nno colon here\r\n\r\n", "400"),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "400",
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n",
                "413",
            ),
        ] {
            let out = exchange(server.addr(), raw.as_bytes());
            assert!(
                out.starts_with(&format!("HTTP/1.1 {status} ")),
                "{raw:?}: {out}"
            );
        }
        let out = exchange(server.addr(), b"GET /ok HTTP/1.0\r\n\r\n");
        assert!(out.starts_with("HTTP/1.0 200 OK"), "{out}");
    }

    /// Adversarial run, failure 1: a chunk size of 2^64-1 after a 1-byte
    /// chunk overflowed the old reader and killed the connection thread
    /// before it freed its slot; after 64 such requests everything got 503.
    #[test]
    fn chunk_size_overflow_is_a_bad_request_and_frees_the_slot() {
        // hyper takes the size as a u64 without overflow and then waits for
        // the 2^64-1 bytes; the body deadline ends that wait, so the slot is
        // freed and nothing panics. A short deadline keeps the test fast.
        let server = echo_server(Limits {
            max_connections: 4,
            request_deadline: Duration::from_millis(200),
            ..Limits::default()
        });
        let raw = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\nb\r\n";
        // Four times as many requests as slots: one slot lost per request
        // (the original failure) would lock out all but the first four.
        for i in 0..16 {
            let out = exchange(server.addr(), raw);
            assert!(
                out.is_empty()
                    || out.starts_with("HTTP/1.1 400")
                    || out.starts_with("HTTP/1.1 408"),
                "request {i}: {out}"
            );
        }
        let out = health(server.addr());
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    }

    /// Failure 4: a huge body is refused from its Content-Length (or as it
    /// arrives when chunked) instead of being buffered.
    #[test]
    fn a_body_over_the_limit_gets_413_without_being_sent() {
        let server = echo_server(Limits {
            max_body: 1 << 20,
            ..Limits::default()
        });
        let started = Instant::now();
        // Claims 30 MB and sends none of it: the answer comes at once.
        let out = exchange(
            server.addr(),
            b"POST /x HTTP/1.1\r\nContent-Length: 30000000\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // Chunked, 2 MiB in 64 KiB chunks.
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let chunk = vec![b'a'; 64 << 10];
        for _ in 0..32 {
            if s.write_all(b"10000\r\n").is_err()
                || s.write_all(&chunk).is_err()
                || s.write_all(b"\r\n").is_err()
            {
                break; // the server answered and closed
            }
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        assert!(health(server.addr()).starts_with("HTTP/1.1 200 OK"));
    }

    /// Failure 3: slow clients (a byte now and then) held their slots
    /// forever. With every slot taken by slow clients, a normal request is
    /// still answered once their deadlines pass.
    #[test]
    fn slow_clients_cannot_hold_the_slots() {
        let server = echo_server(Limits {
            max_connections: 4,
            idle: Duration::from_millis(500),
            request_deadline: Duration::from_millis(500),
            ..Limits::default()
        });
        let addr = server.addr();
        let stop = Arc::new(AtomicBool::new(false));
        let mut slow = Vec::new();
        for i in 0..8 {
            let stop = Arc::clone(&stop);
            slow.push(std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                // Half of them trickle headers, half a body.
                let head: &[u8] = if i % 2 == 0 {
                    b"GET /slow HTTP/1.1\r\nX-Slow: "
                } else {
                    b"POST /slow HTTP/1.1\r\nContent-Length: 1000\r\n\r\n"
                };
                let _ = s.write_all(head);
                while !stop.load(Ordering::Relaxed) {
                    if s.write_all(b"a").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let out = health(addr);
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // An idle connection is closed too.
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let _ = idle.read_to_end(&mut buf);
        assert!(started.elapsed() < Duration::from_secs(8));
        stop.store(true, Ordering::Relaxed);
        for t in slow {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_panicking_handler_costs_one_request() {
        let handler: Handler = Arc::new(|r: &Request| {
            if r.path() == "/panic" {
                panic!("handler bug");
            }
            Response::json(200, &serde_json::json!({}))
        });
        let server = HttpServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Limits {
                max_connections: 2,
                ..Limits::default()
            },
            handler,
        )
        .unwrap();
        for _ in 0..5 {
            let out = exchange(
                server.addr(),
                b"GET /panic HTTP/1.1\r\nConnection: close\r\n\r\n",
            );
            assert!(out.starts_with("HTTP/1.1 500 "), "{out}");
        }
        assert!(health(server.addr()).starts_with("HTTP/1.1 200 OK"));
    }
}
