//! A small HTTP/1.1 client for plain-http model servers (ADR 0012): one `POST` per exchange, on a
//! TCP connection to an address the outbound guard already checked, kept for reuse afterwards.
//!
//! Plain http is only allowed to networks the operator listed (`WAGATE_ALLOW_PRIVATE_NETWORKS`):
//! local model servers (llama.cpp, Ollama, vLLM) and servers on the operator's own network. A call
//! in flight holds its socket and its future (~1.5 KB for the whole model call): no buffer is
//! allocated until the response starts to arrive, no task is spawned per connection. reqwest
//! (over hyper) keeps ~36 KB per concurrent HTTP/1.1 call (docs/PERFORMANCE.md, "Sixth session").
//!
//! What it speaks: a request with a `Content-Length` body; responses framed by `Content-Length`,
//! `chunked` (trailers skipped) or the end of the connection; interim 1xx responses skipped. A
//! connection goes back to the pool only after a complete HTTP/1.1 response that did not ask to
//! close it and left no extra bytes. Idle connections are kept 4 s (below the 5 s keep-alive of
//! llama.cpp's and uvicorn's servers), checked for a close from the server before reuse, and a
//! reused connection that the server closed before answering is replaced by a new one, once.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Idle connections older than this are closed instead of reused.
pub const IDLE_FOR: Duration = Duration::from_secs(4);
/// Idle connections kept per server address; more are closed.
pub const MAX_IDLE_PER_ADDR: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response head (status line and headers), and of a chunk-size line with extensions.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// The first read buffer; it grows for longer responses.
const FIRST_READ: usize = 2048;

/// One `POST`. `headers` must not contain `Host`, `Content-Length`, `Connection` or
/// `Transfer-Encoding` (the client writes them); names and values must be valid header text.
pub struct Request<'a> {
    /// The `Host` header: `host[:port]` of the URL.
    pub authority: &'a str,
    /// The request target: path and query of the URL.
    pub target: &'a str,
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: &'a [u8],
}

impl Request<'_> {
    /// The whole request as it goes on the wire: head and body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(self.authority.as_bytes());
        for (name, value) in self.headers {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
        }
        out.extend_from_slice(
            format!("\r\nContent-Length: {}\r\n\r\n", self.body.len()).as_bytes(),
        );
        out.extend_from_slice(self.body);
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// `Retry-After` in delta-seconds (an HTTP date is ignored).
    pub retry_after: Option<Duration>,
    /// Empty when a non-2xx response's body was over the limit (it is not read).
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("could not connect")]
    Connect,
    /// The connection was closed or reset before the response was complete.
    #[error("the connection broke before the response was complete")]
    Broken,
    /// The bytes received are not an HTTP/1.1 response this client can read.
    #[error("invalid HTTP response ({0})")]
    Protocol(&'static str),
    /// A 2xx response whose body is over the limit.
    #[error("body over the limit")]
    TooLarge,
}

/// A failed exchange, and whether any byte of a response had arrived.
struct Failed {
    error: Error,
    answered: bool,
}

impl Failed {
    fn unanswered(error: Error) -> Self {
        Failed {
            error,
            answered: false,
        }
    }
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

#[derive(Default)]
struct Pool {
    idle: HashMap<SocketAddr, VecDeque<Idle>>,
    swept: Option<Instant>,
}

/// The connection pool; cheap to share behind an `Arc`.
#[derive(Default)]
pub struct Client {
    pool: Mutex<Pool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("plain_http::Client")
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl Client {
    /// Sends `request` (from [`Request::encode`]) to the first of `addrs` that accepts a
    /// connection, a pooled one first, and reads the response; `max_body` bounds its body.
    /// On a new connection the request's bytes are dropped once written: a call waiting for a
    /// slow model keeps its socket and nothing else.
    pub async fn post(
        &self,
        addrs: &[SocketAddr],
        request: Vec<u8>,
        max_body: usize,
    ) -> Result<Response, Error> {
        if let Some((addr, mut stream)) = self.take(addrs) {
            let outcome = match send(&mut stream, &request).await {
                Ok(()) => receive(stream, max_body).await,
                Err(failed) => Err(failed),
            };
            match outcome {
                Ok((resp, kept)) => return Ok(self.settle(addr, resp, kept)),
                // The server closed the idle connection as the request went out: it never saw
                // it. Once, on a new connection.
                Err(Failed {
                    error: Error::Broken,
                    answered: false,
                }) => tracing::debug!("pooled model server connection was closed; reconnecting"),
                Err(failed) => return Err(failed.error),
            }
        }
        let (addr, mut stream) = connect(addrs).await?;
        send(&mut stream, &request)
            .await
            .map_err(|failed| failed.error)?;
        drop(request);
        match receive(stream, max_body).await {
            Ok((resp, kept)) => Ok(self.settle(addr, resp, kept)),
            Err(failed) => Err(failed.error),
        }
    }

    /// Idle connections in the pool.
    pub fn idle_count(&self) -> usize {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.idle.values().map(VecDeque::len).sum()
    }

    fn settle(&self, addr: SocketAddr, resp: Response, kept: Option<TcpStream>) -> Response {
        if let Some(stream) = kept {
            self.put(addr, stream);
        }
        resp
    }

    /// The newest idle connection to one of `addrs` that is still open.
    fn take(&self, addrs: &[SocketAddr]) -> Option<(SocketAddr, TcpStream)> {
        let mut closed = Vec::new();
        let found = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            let mut found = None;
            'addrs: for addr in addrs {
                let Some(idle) = pool.idle.get_mut(addr) else {
                    continue;
                };
                while let Some(conn) = idle.pop_back() {
                    if conn.since.elapsed() >= IDLE_FOR {
                        // The rest are older still.
                        closed.push(conn.stream);
                        closed.extend(idle.drain(..).map(|c| c.stream));
                        break;
                    }
                    if still_open(&conn.stream) {
                        found = Some((*addr, conn.stream));
                        break 'addrs;
                    }
                    closed.push(conn.stream);
                }
            }
            pool.idle.retain(|_, idle| !idle.is_empty());
            found
        };
        // Sockets are closed outside the lock.
        drop(closed);
        found
    }

    fn put(&self, addr: SocketAddr, stream: TcpStream) {
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool
                .swept
                .is_none_or(|at| now.duration_since(at) >= IDLE_FOR)
            {
                pool.swept = Some(now);
                for idle in pool.idle.values_mut() {
                    while idle.front().is_some_and(|c| c.since.elapsed() >= IDLE_FOR) {
                        closed.extend(idle.pop_front().map(|c| c.stream));
                    }
                }
                pool.idle.retain(|_, idle| !idle.is_empty());
            }
            let idle = pool.idle.entry(addr).or_default();
            if idle.len() >= MAX_IDLE_PER_ADDR {
                closed.extend(idle.pop_front().map(|c| c.stream));
            }
            idle.push_back(Idle { stream, since: now });
        }
        drop(closed);
    }
}

/// An idle connection is usable when nothing is waiting to be read on it: a close from the
/// server shows as end of file, and a server has nothing else to say between requests.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

async fn connect(addrs: &[SocketAddr]) -> Result<(SocketAddr, TcpStream), Error> {
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // The request goes out in one write; nothing waits to be coalesced.
                stream.set_nodelay(true).map_err(|_| Error::Connect)?;
                return Ok((*addr, stream));
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "model server connect failed"),
            Err(_) => tracing::debug!("model server connect timed out"),
        }
    }
    Err(Error::Connect)
}

/// What the response head says about the body.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
    Empty,
}

struct Head {
    len: usize,
    status: u16,
    retry_after: Option<Duration>,
    framing: Framing,
    /// The server keeps the connection open after this response.
    keep_alive: bool,
}

async fn send(stream: &mut TcpStream, request: &[u8]) -> Result<(), Failed> {
    stream
        .write_all(request)
        .await
        .map_err(|_| Failed::unanswered(Error::Broken))
}

/// Reads one response. Returns the connection when it can be reused.
async fn receive(
    stream: TcpStream,
    max_body: usize,
) -> Result<(Response, Option<TcpStream>), Failed> {
    // Wait for the answer holding no buffer: with thousands of calls in flight to a slow model,
    // the socket is all a call keeps.
    stream
        .readable()
        .await
        .map_err(|_| Failed::unanswered(Error::Broken))?;
    let mut reader = Reader {
        stream,
        buf: Vec::with_capacity(FIRST_READ),
        answered: false,
    };
    let head = reader.head().await?;
    let answered = |error| Failed {
        error,
        answered: true,
    };
    let success = (200..300).contains(&head.status);
    reader.buf.drain(..head.len);
    let (body, reusable) = match head.framing {
        Framing::Empty => (Vec::new(), reader.buf.is_empty()),
        Framing::Length(n) if n > max_body => {
            if success {
                return Err(answered(Error::TooLarge));
            }
            (Vec::new(), false)
        }
        Framing::Length(n) => {
            reader.fill(n).await?;
            let extra = reader.buf.len() > n;
            reader.buf.truncate(n);
            (std::mem::take(&mut reader.buf), !extra)
        }
        Framing::Chunked => match reader.chunked(max_body).await? {
            Some(body) => (body, reader.buf.is_empty()),
            None if success => return Err(answered(Error::TooLarge)),
            None => (Vec::new(), false),
        },
        Framing::UntilClose => match reader.until_close(max_body).await? {
            Some(body) => (body, false),
            None if success => return Err(answered(Error::TooLarge)),
            None => (Vec::new(), false),
        },
    };
    let resp = Response {
        status: head.status,
        retry_after: head.retry_after,
        body,
    };
    let kept = (head.keep_alive && reusable).then_some(reader.stream);
    Ok((resp, kept))
}

struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    answered: bool,
}

impl Reader {
    fn fail(&self, error: Error) -> Failed {
        Failed {
            error,
            answered: self.answered,
        }
    }

    /// Reads what has arrived into `buf` (growing it when full); 0 at end of file.
    async fn read_some(&mut self) -> Result<usize, Failed> {
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve(self.buf.capacity().max(FIRST_READ));
        }
        match self.stream.read_buf(&mut self.buf).await {
            Ok(n) => {
                self.answered |= n > 0;
                Ok(n)
            }
            Err(_) => Err(self.fail(Error::Broken)),
        }
    }

    /// Reads more into `buf`; end of file before the response is complete is `Broken`.
    async fn more(&mut self) -> Result<(), Failed> {
        match self.read_some().await? {
            0 => Err(self.fail(Error::Broken)),
            _ => Ok(()),
        }
    }

    /// Until `buf` holds at least `n` bytes.
    async fn fill(&mut self, n: usize) -> Result<(), Failed> {
        if n > self.buf.len() {
            self.buf.reserve(n - self.buf.len());
        }
        while self.buf.len() < n {
            self.more().await?;
        }
        Ok(())
    }

    /// The final response's head (interim 1xx responses are skipped), left at the start of `buf`.
    async fn head(&mut self) -> Result<Head, Failed> {
        loop {
            if !self.buf.is_empty() {
                match parse_head(&self.buf).map_err(|e| self.fail(e))? {
                    Some(head) if (100..200).contains(&head.status) => {
                        self.buf.drain(..head.len);
                        continue;
                    }
                    Some(head) => return Ok(head),
                    None if self.buf.len() >= MAX_HEAD_BYTES => {
                        return Err(self.fail(Error::Protocol("response head too large")))
                    }
                    None => {}
                }
            }
            self.more().await?;
        }
    }

    /// A chunked body; `None` when it is over `max_body`. Leaves in `buf` what follows it.
    async fn chunked(&mut self, max_body: usize) -> Result<Option<Vec<u8>>, Failed> {
        let mut body = Vec::new();
        loop {
            let (line, size) = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete(found)) => break found,
                    Ok(httparse::Status::Partial) if self.buf.len() >= MAX_HEAD_BYTES => {
                        return Err(self.fail(Error::Protocol("chunk size line too long")))
                    }
                    Ok(httparse::Status::Partial) => self.more().await?,
                    Err(_) => return Err(self.fail(Error::Protocol("invalid chunk size"))),
                }
            };
            if size == 0 {
                self.buf.drain(..line);
                self.trailers().await?;
                return Ok(Some(body));
            }
            let size = match usize::try_from(size) {
                Ok(size) if size <= max_body.saturating_sub(body.len()) => size,
                _ => return Ok(None),
            };
            let end = line + size;
            self.fill(end + 2).await?;
            if &self.buf[end..end + 2] != b"\r\n" {
                return Err(self.fail(Error::Protocol("chunk not followed by CRLF")));
            }
            body.extend_from_slice(&self.buf[line..end]);
            self.buf.drain(..end + 2);
        }
    }

    /// Skips the trailer section that ends a chunked body.
    async fn trailers(&mut self) -> Result<(), Failed> {
        loop {
            // The fields array (3 KB) must not live across the await below: it would be part of
            // every call's future.
            let parsed = {
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(&self.buf, &mut fields) {
                    Ok(httparse::Status::Complete((len, _))) => Ok(Some(len)),
                    Ok(httparse::Status::Partial) => Ok(None),
                    Err(e) => Err(e),
                }
            };
            match parsed {
                Ok(Some(len)) => {
                    self.buf.drain(..len);
                    return Ok(());
                }
                Ok(None) if self.buf.len() >= MAX_HEAD_BYTES => {
                    return Err(self.fail(Error::Protocol("trailers too large")))
                }
                Ok(None) => self.more().await?,
                Err(_) => return Err(self.fail(Error::Protocol("invalid trailers"))),
            }
        }
    }

    /// A body that ends with the connection; `None` when it is over `max_body`.
    async fn until_close(&mut self, max_body: usize) -> Result<Option<Vec<u8>>, Failed> {
        loop {
            if self.buf.len() > max_body {
                return Ok(None);
            }
            if self.read_some().await? == 0 {
                return Ok(Some(std::mem::take(&mut self.buf)));
            }
        }
    }
}

/// A `Retry-After` value in delta-seconds; an HTTP date is not read (`None`).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Parses a response head at the start of `buf`; `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Protocol("too many headers")),
        Err(_) => return Err(Error::Protocol("malformed response head")),
    };
    let status = resp.code.unwrap_or_default();
    if status == 101 {
        return Err(Error::Protocol("unexpected protocol switch"));
    }
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut transfer_encoded = false;
    let mut close = resp.version != Some(1);
    let mut retry_after = None;
    for field in resp.headers.iter() {
        let value = std::str::from_utf8(field.value).unwrap_or_default().trim();
        if field.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| Error::Protocol("invalid content-length"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(Error::Protocol("conflicting content-length"));
            }
            content_length = Some(n);
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides (RFC 9112 §6.3).
            transfer_encoded = true;
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        } else if field.name.eq_ignore_ascii_case("connection") {
            close |= value
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("close"));
        } else if field.name.eq_ignore_ascii_case("retry-after") {
            retry_after = parse_retry_after(value);
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if transfer_encoded {
        // With both headers, Transfer-Encoding wins and the connection is not reused.
        close |= content_length.is_some();
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head {
        len,
        status,
        retry_after,
        framing,
        keep_alive: !close,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::net::TcpListener;

    /// A loopback server that answers each request with the next of `replies` (raw bytes), then
    /// closes the connection when `close_after` says so. Counts accepted connections.
    struct Server {
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
    }

    async fn server(replies: Vec<(&'static [u8], bool)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            let replies = Arc::new(tokio::sync::Mutex::new(VecDeque::from(replies)));
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let replies = Arc::clone(&replies);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: a head with Content-Length and its body.
                        let body_len = loop {
                            let mut chunk = [0u8; 4096];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            let mut fields = [httparse::EMPTY_HEADER; 32];
                            let mut req = httparse::Request::new(&mut fields);
                            if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
                                let cl = req
                                    .headers
                                    .iter()
                                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                                    .unwrap_or(0usize);
                                break len + cl;
                            }
                        };
                        while buf.len() < body_len {
                            let mut chunk = [0u8; 4096];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..body_len);
                        let Some((reply, close)) = replies.lock().await.pop_front() else {
                            return;
                        };
                        if conn.write_all(reply).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        Server { addr, accepted }
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

    async fn post(client: &Client, srv: &Server) -> Result<Response, Error> {
        let req = Request {
            authority: "model.internal:8080",
            target: "/v1/chat/completions",
            headers: &[("Content-Type", b"application/json")],
            body: b"{\"model\":\"m\"}",
        };
        client.post(&[srv.addr], req.encode(), 64).await
    }

    #[test]
    fn request_head() {
        let req = Request {
            authority: "[::1]:11434",
            target: "/v1/chat/completions?x=1",
            headers: &[("Authorization", b"Bearer k")],
            body: b"{}",
        };
        assert_eq!(
            req.encode(),
            b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: [::1]:11434\r\nAuthorization: Bearer k\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[tokio::test]
    async fn keep_alive_connections_are_reused() {
        let srv = server(vec![(OK, false), (OK, false), (OK, false)]).await;
        let client = Client::default();
        for _ in 0..3 {
            let resp = post(&client, &srv).await.unwrap();
            assert_eq!((resp.status, &resp.body[..]), (200, &b"hello"[..]));
        }
        assert_eq!(srv.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(client.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_connection_closed_by_the_server_is_replaced() {
        // The server closes after each answer (without saying so): the next call finds the
        // pooled connection closed and uses a new one.
        let srv = server(vec![(OK, true), (OK, true), (OK, true)]).await;
        let client = Client::default();
        for _ in 0..3 {
            assert_eq!(post(&client, &srv).await.unwrap().status, 200);
            // Let the close arrive, as it would while a connection sits idle.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(srv.accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_request_the_server_closed_on_unanswered_goes_out_again_once() {
        // The second request finds the pooled connection open, but the server closes it without
        // answering (an idle timeout racing the request): it goes out on a new connection.
        let srv = server(vec![(OK, false), (b"", true), (OK, false)]).await;
        let client = Client::default();
        assert_eq!(post(&client, &srv).await.unwrap().status, 200);
        assert_eq!(post(&client, &srv).await.unwrap().status, 200);
        assert_eq!(srv.accepted.load(Ordering::SeqCst), 2);
        // A fresh connection closed unanswered is not retried.
        let srv = server(vec![(b"", true), (OK, false)]).await;
        assert_eq!(post(&Client::default(), &srv).await, Err(Error::Broken));
        assert_eq!(srv.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn connection_close_and_http10_are_not_reused() {
        let srv = server(vec![
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                false,
            ),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
            (OK, false),
        ])
        .await;
        let client = Client::default();
        for _ in 0..3 {
            assert_eq!(post(&client, &srv).await.unwrap().status, 200);
        }
        assert_eq!(srv.accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn chunked_bodies_with_trailers_and_interim_responses() {
        let srv = server(vec![
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: 1\r\n\r\n",
                false,
            ),
            (OK, false),
        ])
        .await;
        let client = Client::default();
        let resp = post(&client, &srv).await.unwrap();
        assert_eq!((resp.status, &resp.body[..]), (200, &b"hello"[..]));
        // The connection was reusable after the trailers.
        assert_eq!(post(&client, &srv).await.unwrap().status, 200);
        assert_eq!(srv.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_until_close() {
        let srv = server(vec![(b"HTTP/1.1 200 OK\r\n\r\nhello", true)]).await;
        let resp = post(&Client::default(), &srv).await.unwrap();
        assert_eq!(&resp.body[..], b"hello");
    }

    #[tokio::test]
    async fn status_and_retry_after_of_errors() {
        let srv = server(vec![(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
            false,
        )])
        .await;
        let resp = post(&Client::default(), &srv).await.unwrap();
        assert_eq!(resp.status, 429);
        assert_eq!(resp.retry_after, Some(Duration::from_secs(7)));
    }

    #[tokio::test]
    async fn bodies_over_the_limit() {
        let srv = server(vec![
            (b"HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n", false),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n",
                false,
            ),
            (b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\n", false),
        ])
        .await;
        let client = Client::default();
        assert_eq!(post(&client, &srv).await, Err(Error::TooLarge));
        assert_eq!(post(&client, &srv).await, Err(Error::TooLarge));
        let resp = post(&client, &srv).await.unwrap();
        assert_eq!((resp.status, resp.body.len()), (500, 0));
    }

    #[tokio::test]
    async fn broken_and_invalid_responses() {
        let srv = server(vec![
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel", true),
            (b"garbage\r\n\r\n", true),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", true),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                true,
            ),
            (b"HTTP/1.1 101 Switching\r\n\r\n", true),
        ])
        .await;
        let client = Client::default();
        assert_eq!(post(&client, &srv).await, Err(Error::Broken));
        for _ in 0..4 {
            assert!(matches!(post(&client, &srv).await, Err(Error::Protocol(_))));
        }
        assert_eq!(client.idle_count(), 0);
    }

    #[tokio::test]
    async fn refused_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let req = Request {
            authority: "x",
            target: "/",
            headers: &[],
            body: b"",
        };
        assert_eq!(
            Client::default().post(&[addr], req.encode(), 10).await,
            Err(Error::Connect)
        );
    }
}
