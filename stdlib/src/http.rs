//! A small HTTP/1.1 server for loopback services (`flow serve`, and the
//! test endpoints that stand in for vLLM): one thread per connection,
//! keep-alive, bodies framed by `Content-Length` or chunked, `Expect:
//! 100-continue` answered. Malformed requests get 400 and the connection is
//! closed; a body over the limit gets 413.
//!
//! It replaces tiny_http, which left one of eight concurrent keep-alive
//! requests unanswered now and then until the client's timeout (seen with
//! flow's own pooled client, 1-3 requests in 40).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// One request, its body read in full.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Upper-cased (`GET`, `POST`).
    pub method: String,
    /// The request target as sent, query included.
    pub target: String,
    /// Header names lower-cased, in the order received.
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

/// What answers requests; called from the connection threads at once.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Limits of the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest body read; a larger one is answered 413.
    pub max_body: usize,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// A keep-alive connection idle this long is closed.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 32 << 20,
            max_connections: 64,
            idle: Duration::from_secs(60),
        }
    }
}

/// A running server; dropping it stops it like [`HttpServer::shutdown`].
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// `None` once stopped or waited for.
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `addr` (port 0: a free port) and answers every request
    /// with `handler`.
    pub fn start(addr: SocketAddr, limits: Limits, handler: Handler) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let accept = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if open.fetch_add(1, Ordering::SeqCst) >= limits.max_connections {
                        open.fetch_sub(1, Ordering::SeqCst);
                        let mut stream = stream;
                        let busy = serde_json::json!({"error": {"message": "too many connections", "type": "server_error", "param": null, "code": null}});
                        let _ = write_response(&mut stream, &Response::json(503, &busy), false);
                        continue;
                    }
                    let (handler, open, stop) =
                        (Arc::clone(&handler), Arc::clone(&open), Arc::clone(&stop));
                    std::thread::spawn(move || {
                        serve_connection(stream, &limits, &handler, &stop);
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Ok(HttpServer {
            addr,
            stop,
            accept: Some(accept),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Blocks while the server runs.
    pub fn wait(mut self) {
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }

    /// Stops accepting connections; open ones end after their current
    /// request.
    pub fn shutdown(mut self) {
        self.stop_accepting();
    }

    fn stop_accepting(&mut self) {
        if let Some(accept) = self.accept.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the accept loop.
            let _ = TcpStream::connect(self.addr);
            let _ = accept.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_accepting();
    }
}

/// Why a request could not be read.
enum ReadError {
    /// The peer closed the connection (or stayed idle) between requests.
    Closed,
    /// A malformed request: answer this and close.
    Bad(u16, String),
}

fn serve_connection(stream: TcpStream, limits: &Limits, handler: &Handler, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(limits.idle));
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        match read_request(&mut reader, &mut writer, limits) {
            Ok((request, keep_alive)) => {
                let response = handler(&request);
                let keep_alive = keep_alive && !stop.load(Ordering::SeqCst);
                if write_response(&mut writer, &response, keep_alive).is_err() || !keep_alive {
                    return;
                }
            }
            Err(ReadError::Closed) => return,
            Err(ReadError::Bad(status, message)) => {
                let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}});
                let _ = write_response(&mut writer, &Response::json(status, &body), false);
                return;
            }
        }
    }
}

/// Longest request line or header line.
const MAX_LINE: usize = 16 << 10;
/// Most headers in one request.
const MAX_HEADERS: usize = 128;

/// A line without its CRLF; `None` at the end of the stream.
fn read_line(reader: &mut impl BufRead) -> Result<Option<String>, ReadError> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)
        .map_err(|_| ReadError::Closed)?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        return Err(ReadError::Bad(
            400,
            "header line too long or cut off".into(),
        ));
    }
    line.pop();
    if line.ends_with(b"\r") {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| ReadError::Bad(400, "a header line is not UTF-8".into()))
}

/// Reads one request; also says whether the connection stays open.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    limits: &Limits,
) -> Result<(Request, bool), ReadError> {
    let line = loop {
        match read_line(reader)? {
            None => return Err(ReadError::Closed),
            // Blank lines before a request are allowed (RFC 9112 §2.2).
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(400, format!("bad request line {line:?}")));
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        other => {
            return Err(ReadError::Bad(
                505,
                format!("unsupported version {other:?}"),
            ))
        }
    };
    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(reader)? else {
            return Err(ReadError::Closed);
        };
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ReadError::Bad(431, "too many headers".into()));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad(400, format!("bad header line {line:?}")));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut request = Request {
        method: method.to_ascii_uppercase(),
        target: target.to_string(),
        headers,
        body: Vec::new(),
    };
    let connection = request.header("connection").map(str::to_ascii_lowercase);
    let keep_alive = match connection.as_deref() {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => http11,
    };
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let length = match request.header("content-length") {
        Some(v) if !chunked => Some(
            v.parse::<usize>()
                .map_err(|_| ReadError::Bad(400, format!("bad Content-Length {v:?}")))?,
        ),
        _ => None,
    };
    if length.is_some_and(|n| n > limits.max_body) {
        return Err(ReadError::Bad(
            413,
            format!("the request body is larger than {} bytes", limits.max_body),
        ));
    }
    if (chunked || length.is_some_and(|n| n > 0))
        && request
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        writer
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|_| ReadError::Closed)?;
    }
    request.body = if chunked {
        read_chunked(reader, limits.max_body)?
    } else {
        let mut body = vec![0; length.unwrap_or(0)];
        reader
            .read_exact(&mut body)
            .map_err(|_| ReadError::Bad(400, "the body ended before Content-Length".into()))?;
        body
    };
    Ok((request, keep_alive))
}

fn read_chunked(reader: &mut BufReader<TcpStream>, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let Some(line) = read_line(reader)? else {
            return Err(ReadError::Bad(400, "the chunked body ended early".into()));
        };
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| ReadError::Bad(400, format!("bad chunk size {size:?}")))?;
        if size == 0 {
            // Trailers, up to the blank line.
            while let Some(l) = read_line(reader)? {
                if l.is_empty() {
                    break;
                }
            }
            return Ok(body);
        }
        if body.len() + size > max {
            return Err(ReadError::Bad(
                413,
                format!("the request body is larger than {max} bytes"),
            ));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .map_err(|_| ReadError::Bad(400, "a chunk ended early".into()))?;
        let mut crlf = [0u8; 2];
        reader
            .read_exact(&mut crlf)
            .map_err(|_| ReadError::Bad(400, "a chunk ended early".into()))?;
        if &crlf != b"\r\n" {
            return Err(ReadError::Bad(400, "a chunk does not end in CRLF".into()));
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

fn write_response(stream: &mut TcpStream, r: &Response, keep_alive: bool) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(&r.body);
    stream.write_all(&out)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
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
        assert!(
            out.contains("Connection: keep-alive") && out.contains("Connection: close"),
            "{out}"
        );
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
    fn malformed_and_oversized_requests_get_an_error_and_a_close() {
        let server = echo_server(Limits {
            max_body: 8,
            ..Limits::default()
        });
        for (raw, status) in [
            ("NONSENSE\r\n\r\n", "400"),
            ("GET / HTTP/2.0\r\n\r\n", "505"),
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
        ] {
            let out = exchange(server.addr(), raw.as_bytes());
            assert!(
                out.starts_with(&format!("HTTP/1.1 {status} ")),
                "{raw:?}: {out}"
            );
            assert!(
                out.contains("Connection: close") && out.contains("\"error\""),
                "{raw:?}: {out}"
            );
        }
        // The server goes on answering.
        let out = exchange(server.addr(), b"GET /ok HTTP/1.0\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    }

    #[test]
    fn more_connections_than_the_limit_are_turned_away() {
        let server = echo_server(Limits {
            max_connections: 1,
            ..Limits::default()
        });
        // One idle keep-alive connection holds the only slot (connections
        // are accepted in the order they were made).
        let held = TcpStream::connect(server.addr()).unwrap();
        let out = exchange(server.addr(), b"GET / HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
        drop(held);
    }
}
