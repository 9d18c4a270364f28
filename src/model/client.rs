//! OpenAI-compatible `/chat/completions` client: owns the HTTP call to the model server (outbound guard check, timeouts, retries with backoff, response parsing) and the sanitized model error type.
//!
//! Error messages (`Display` of [`ModelError`]) are what logs, events and API 502s show: they name
//! the failure class and HTTP status, never the upstream body, the API key or any header.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::{redirect, Client, ClientBuilder};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::{Host, Url};

use crate::model::guard::{GuardError, OutboundGuard};

/// The one retry policy (exponential backoff with jitter, a cap, Retry-After), shared with the
/// reply workers' retries.
pub use wagate_actors::retry::RetryPolicy;

/// Largest response body read from the model server.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle plain-http connections to a model server are kept this long for reuse: below the 5 s
/// keep-alive of llama.cpp's and uvicorn's servers, so a reused connection is rarely one the
/// server is closing.
const PLAIN_IDLE_FOR: Duration = Duration::from_secs(4);
const USER_AGENT: &str = concat!("wagate/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// One chat completion to perform.
#[derive(Clone)]
pub struct ModelRequest {
    /// e.g. `https://api.openai.com/v1`, without a trailing slash (one is tolerated).
    pub base_url: String,
    pub api_key: Option<SecretString>,
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub temperature: f64,
    pub max_tokens: u32,
    /// Per-attempt timeout (the whole attempt: connect, send, read the body).
    pub timeout: Duration,
    /// Attempts in all for this call (`max_retries + 1` of the effective config); `None`: the
    /// client's retry policy.
    pub max_attempts: Option<u32>,
    /// Offer the model the `handoff_to_human` function (OpenAI tools shape).
    pub handoff_tool: bool,
    /// Images sent with messages (`vision`): the index in `messages` -> a `data:` URI. Such a
    /// message's content is OpenAI's parts: its text, then the `image_url`.
    pub images: std::collections::BTreeMap<usize, String>,
}

/// Debug never shows the key or the message contents.
impl fmt::Debug for ModelRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelRequest")
            .field("base_url", &self.base_url)
            .field("has_api_key", &self.api_key.is_some())
            .field("model", &self.model)
            .field("messages", &self.messages.len())
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelReply {
    pub text: String,
    /// The response's `model`, else the requested one.
    pub model: String,
    /// Zeros when the server sends none.
    pub usage: Usage,
    /// The whole call, including retries and backoff.
    pub latency_ms: u64,
    pub attempts: u32,
    /// The model called `handoff_to_human` (`text` may then be empty).
    pub handoff: bool,
}

fn attempts_text(n: u32) -> String {
    if n == 1 {
        "1 attempt".to_owned()
    } else {
        format!("{n} attempts")
    }
}

fn rejected_note(status: u16) -> &'static str {
    if (300..400).contains(&status) {
        "redirect (redirects are not followed)"
    } else {
        "rejected by the model server"
    }
}

/// A failed model call. `Display` is the sanitized reason stored in logs and events and shown in
/// API 502s.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The outbound guard refused the target (or the base URL is not a valid URL).
    #[error("model endpoint refused: {0}")]
    Refused(GuardError),
    #[error("model call timed out after {after_secs} s")]
    Timeout { after_secs: u64 },
    #[error("model call failed: could not connect to the model server")]
    Connect,
    /// 401/403: permanent.
    #[error("model call failed: HTTP {status} unauthorized (check the API key)")]
    Unauthorized { status: u16 },
    /// 429 after the last attempt (or a Retry-After longer than the policy allows).
    #[error("model call failed: HTTP {status} rate limited ({})", attempts_text(*attempts))]
    RateLimited { status: u16, attempts: u32 },
    /// 5xx after the last attempt.
    #[error("model call failed: HTTP {status} server error ({})", attempts_text(*attempts))]
    Server { status: u16, attempts: u32 },
    /// Other 4xx, and 3xx (redirects are never followed): permanent.
    #[error("model call failed: HTTP {status} {}", rejected_note(*status))]
    Rejected { status: u16 },
    /// Unparseable or oversized body, no choices, empty or non-string content. The detail is
    /// written by wagate and never quotes the body.
    #[error("model returned a malformed body ({0})")]
    Malformed(String),
    /// The request could not be prepared (HTTP client construction, an API key that is not a
    /// valid header value).
    #[error("model client setup failed: {0}")]
    Setup(String),
}

impl ModelError {
    /// Whether another attempt may succeed (timeouts, connect errors, 429, 5xx).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ModelError::Timeout { .. }
                | ModelError::Connect
                | ModelError::RateLimited { .. }
                | ModelError::Server { .. }
        )
    }

    /// A stable machine-readable class name.
    pub fn class(&self) -> &'static str {
        match self {
            ModelError::Refused(_) => "refused",
            ModelError::Timeout { .. } => "timeout",
            ModelError::Connect => "connect",
            ModelError::Unauthorized { .. } => "unauthorized",
            ModelError::RateLimited { .. } => "rate_limited",
            ModelError::Server { .. } => "server_error",
            ModelError::Rejected { .. } => "rejected",
            ModelError::Malformed(_) => "malformed",
            ModelError::Setup(_) => "setup",
        }
    }

    fn from_guard(err: GuardError) -> Self {
        if err.is_policy() {
            ModelError::Refused(err)
        } else {
            ModelError::Connect
        }
    }
}

/// Calls OpenAI-compatible chat completion endpoints through the outbound guard, with reqwest
/// over HTTP/1.1 (ADR 0010, ADR 0016): https with the guard's resolver, plain http (allowed
/// networks only) on a second client whose resolver admits only the allowed networks.
#[derive(Debug, Clone)]
pub struct HttpModelClient {
    guard: Arc<OutboundGuard>,
    retry: RetryPolicy,
    /// https: every address of every new connection checked by the guard's resolver.
    http: Client,
    /// Plain http: a domain resolves only to addresses inside the allowed networks
    /// ([`PlainHttpResolver`]); a literal IP host is checked before each attempt.
    plain: Client,
}

#[derive(serde::Serialize)]
struct CompletionBody<'a> {
    model: &'a str,
    messages: Vec<Value>,
    temperature: f64,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<serde_json::Value>,
}

/// The name of the function a model calls to hand the chat to a human.
pub const HANDOFF_TOOL: &str = "handoff_to_human";

/// The `tools` of a request that offers the handoff function.
fn handoff_tools() -> serde_json::Value {
    serde_json::json!([{
        "type": "function",
        "function": {
            "name": HANDOFF_TOOL,
            "description": "Hand this WhatsApp conversation to a human agent: call it when the \
                customer asks for a person, or when you cannot help. The AI then stays quiet in \
                this chat until a human has answered.",
            "parameters": {
                "type": "object",
                "properties": {
                    "reason": {"type": "string", "description": "Why a human should take over."}
                }
            }
        }
    }])
}

struct Parsed {
    text: String,
    model: Option<String>,
    usage: Usage,
    handoff: bool,
}

/// One failed attempt, with the server's Retry-After if it sent one.
struct Failure {
    error: ModelError,
    retry_after: Option<Duration>,
}

impl From<ModelError> for Failure {
    fn from(error: ModelError) -> Self {
        Failure {
            error,
            retry_after: None,
        }
    }
}

fn builder(guard: &Arc<OutboundGuard>) -> ClientBuilder {
    base_builder().dns_resolver2(guard.resolver())
}

/// No redirects, no proxies, HTTP/1.1 (reqwest is built without `http2`, ADR 0010), a pool with
/// no cap on idle connections per host (one connection per call in flight, reused), TCP
/// keep-alive on long waits for a slow model.
fn base_builder() -> ClientBuilder {
    Client::builder()
        .redirect(redirect::Policy::none())
        .no_proxy()
        .http1_only()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .pool_max_idle_per_host(usize::MAX)
        .user_agent(USER_AGENT)
}

/// The plain-http model client: its resolver admits a domain only when every address it
/// resolves to lies in the allowed networks, and connects only to those checked addresses.
fn plain_builder(guard: &Arc<OutboundGuard>) -> ClientBuilder {
    base_builder()
        .dns_resolver2(PlainHttpResolver {
            guard: Arc::clone(guard),
        })
        .pool_idle_timeout(PLAIN_IDLE_FOR)
}

/// Resolves a plain-http host with the guard's plain-http rule ([`OutboundGuard::checked_addrs`]
/// on `http://<name>/`): refused unless all its addresses are in `WAGATE_ALLOW_PRIVATE_NETWORKS`,
/// and reqwest connects only to the addresses returned, so a changed DNS answer cannot move an
/// unencrypted request outside the allowed networks (no rebinding gap).
struct PlainHttpResolver {
    guard: Arc<OutboundGuard>,
}

impl Resolve for PlainHttpResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.guard);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let url =
                Url::parse(&format!("http://{host}/")).map_err(|e| GuardError::InvalidUrl {
                    reason: e.to_string(),
                })?;
            let addrs = guard.checked_addrs(&url).await?;
            // Port 0: the connector puts the URL's port (or 80) in.
            let addrs: Addrs = Box::new(addrs.into_iter().map(|mut a| {
                a.set_port(0);
                a
            }));
            Ok(addrs)
        })
    }
}

/// An HTTP client with the guard's resolver and no redirects, no proxies (also used for
/// webhook delivery).
pub fn guarded_client(guard: &Arc<OutboundGuard>) -> Result<Client, ModelError> {
    build(builder(guard))
}

fn build(builder: ClientBuilder) -> Result<Client, ModelError> {
    builder
        .build()
        .map_err(|_| ModelError::Setup("could not build the HTTP client".to_owned()))
}

/// Maps a transport error. A refusal by the guarded DNS resolver surfaces as `Refused`.
fn transport_error(err: &reqwest::Error, timeout: Duration) -> ModelError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(guard) = e.downcast_ref::<GuardError>() {
            return ModelError::from_guard(guard.clone());
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_parse() || h.is_parse_status())
        {
            return ModelError::Malformed("invalid HTTP response".to_owned());
        }
        source = e.source();
    }
    if err.is_timeout() && !err.is_connect() {
        ModelError::Timeout {
            after_secs: timeout_secs(timeout),
        }
    } else {
        // Connect failures (including the 10 s connect timeout) and connections broken
        // mid-request or mid-body.
        ModelError::Connect
    }
}

fn timeout_secs(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis().div_ceil(1000)).unwrap_or(u64::MAX)
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    parse_retry_after(
        resp.headers().get(RETRY_AFTER)?.to_str().ok()?,
        SystemTime::now(),
    )
}

/// A `Retry-After` value: delta-seconds, or an HTTP date (the wait until then from `now`; zero
/// when it has passed). `None` when it is neither.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn parse_body(body: &[u8]) -> Result<Parsed, ModelError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ModelError::Malformed(format!(
            "invalid JSON at line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    let choice = value
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| ModelError::Malformed("no choices".to_owned()))?;
    let message = choice.get("message");
    // A call of the handoff function (the only tool ever offered); its content may be empty.
    let handoff = message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .is_some_and(|calls| {
            calls.iter().any(|c| {
                c.get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    == Some(HANDOFF_TOOL)
            })
        });
    let text = match message.and_then(|m| m.get("content")) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) | Some(Value::Null) | None if handoff => String::new(),
        Some(Value::String(_)) => return Err(ModelError::Malformed("empty content".to_owned())),
        _ => {
            return Err(ModelError::Malformed(
                "choices[0].message.content is not a string".to_owned(),
            ))
        }
    };
    let usage = value
        .get("usage")
        .map(|u| {
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            let (prompt, completion) = (n("prompt_tokens"), n("completion_tokens"));
            let total = match u.get("total_tokens").and_then(Value::as_u64) {
                Some(t) => t,
                None => prompt.saturating_add(completion),
            };
            Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: total,
            }
        })
        .unwrap_or_default();
    let model = value
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned);
    Ok(Parsed {
        text,
        model,
        usage,
        handoff,
    })
}

impl HttpModelClient {
    /// The HTTP clients never follow redirects, ignore proxy environment variables, connect only
    /// to addresses the guard allowed, connect within 10 s and identify as `wagate/<version>`.
    pub fn new(guard: Arc<OutboundGuard>, retry: RetryPolicy) -> Result<Self, ModelError> {
        let http = build(builder(&guard))?;
        let plain = build(plain_builder(&guard))?;
        Ok(Self {
            guard,
            retry,
            http,
            plain,
        })
    }

    /// A client that also trusts `root` (DER), for a loopback TLS server in tests.
    #[cfg(test)]
    fn trusting(guard: Arc<OutboundGuard>, root: &[u8]) -> Self {
        let root = reqwest::Certificate::from_der(root).expect("a DER certificate");
        let http = build(builder(&guard).add_root_certificate(root)).expect("client");
        let plain = build(plain_builder(&guard)).expect("client");
        Self {
            guard,
            retry: RetryPolicy {
                max_attempts: 2,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_secs(1),
            },
            http,
            plain,
        }
    }

    /// `POST {base_url}/chat/completions`, retrying timeouts, connect errors, 429 and 5xx.
    pub async fn complete(&self, req: &ModelRequest) -> Result<ModelReply, ModelError> {
        self.complete_logged(req).await.0
    }

    /// [`Self::complete`], also returning the outcome of every attempt in order: `ok`, or the
    /// failure class with the HTTP status (e.g. `server_error (HTTP 503)`), never a body.
    pub async fn complete_logged(
        &self,
        req: &ModelRequest,
    ) -> (Result<ModelReply, ModelError>, Vec<String>) {
        let log = Mutex::new(Vec::new());
        let result = self.complete_inner(req, &log).await;
        (result, log.into_inner().unwrap_or_else(|e| e.into_inner()))
    }

    async fn complete_inner(
        &self,
        req: &ModelRequest,
        log: &Mutex<Vec<String>>,
    ) -> Result<ModelReply, ModelError> {
        let started = Instant::now();
        let endpoint = format!("{}/chat/completions", req.base_url.trim_end_matches('/'));
        let url = Url::parse(&endpoint).map_err(|e| {
            ModelError::Refused(GuardError::InvalidUrl {
                reason: e.to_string(),
            })
        })?;
        let auth = match &req.api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                    .map_err(|_| {
                    ModelError::Setup(
                        "the API key contains characters not allowed in an HTTP header".to_owned(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let body = CompletionBody {
            model: &req.model,
            messages: wire_messages(req),
            temperature: req.temperature,
            max_tokens: req.max_tokens,
            tools: req.handoff_tool.then(handoff_tools),
        };
        let policy = match req.max_attempts {
            Some(n) => self.retry.with_max_attempts(n),
            None => self.retry,
        };
        let attempts = AtomicU32::new(0);
        let (url, auth, body, attempts) = (&url, auth.as_ref(), &body, &attempts);
        let host = || url.host_str().unwrap_or_default();

        let one = || async move {
            let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            let attempt_started = Instant::now();
            let outcome = match tokio::time::timeout(
                req.timeout,
                self.attempt(url, auth, body, req.timeout, attempt),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::from(ModelError::Timeout {
                    after_secs: timeout_secs(req.timeout),
                })),
            };
            let latency_ms = elapsed_ms(attempt_started);
            let entry = match &outcome {
                Ok(_) => {
                    tracing::debug!(
                        host = host(),
                        attempt,
                        status = 200u16,
                        class = "ok",
                        latency_ms,
                        "model call attempt"
                    );
                    "ok".to_owned()
                }
                Err(Failure { error, .. }) => {
                    let status = match error {
                        ModelError::Unauthorized { status }
                        | ModelError::RateLimited { status, .. }
                        | ModelError::Server { status, .. }
                        | ModelError::Rejected { status } => Some(*status),
                        _ => None,
                    };
                    tracing::debug!(
                        host = host(),
                        attempt,
                        status,
                        class = error.class(),
                        latency_ms,
                        "model call attempt failed"
                    );
                    match status {
                        Some(code) => format!("{} (HTTP {code})", error.class()),
                        None => error.class().to_owned(),
                    }
                }
            };
            log.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
            outcome
        };
        let parsed = policy
            .run(
                one,
                |f: &Failure| f.error.is_retryable(),
                |f| f.retry_after,
                |_, _| {},
            )
            .await
            .map_err(|f| f.error)?;
        // A tool call counts only when the tool was offered; otherwise an answer needs a text.
        let handoff = parsed.handoff && req.handoff_tool;
        if !handoff && parsed.text.is_empty() {
            return Err(ModelError::Malformed(
                "choices[0].message.content is not a string".to_owned(),
            ));
        }
        Ok(ModelReply {
            text: parsed.text,
            model: parsed.model.unwrap_or_else(|| req.model.clone()),
            usage: parsed.usage,
            handoff,
            latency_ms: elapsed_ms(started),
            attempts: attempts.load(Ordering::Relaxed),
        })
    }

    async fn attempt(
        &self,
        url: &Url,
        auth: Option<&HeaderValue>,
        body: &CompletionBody<'_>,
        timeout: Duration,
        attempt: u32,
    ) -> Result<Parsed, Failure> {
        // A domain is checked by the client's guarded resolver, on every address of every new
        // connection (a pooled connection needs no lookup, so none is made here): for https the
        // guard's rules, for plain http only the allowed networks, and reqwest connects only to
        // the addresses the resolver returned. A literal IP host never reaches a resolver, and
        // any other scheme is refused: both are checked now.
        let client = match (url.scheme(), url.host()) {
            ("https", Some(Host::Domain(_))) => &self.http,
            ("http", Some(Host::Domain(_))) => &self.plain,
            (scheme, _) => {
                self.guard
                    .checked_addrs(url)
                    .await
                    .map_err(ModelError::from_guard)?;
                if scheme == "http" {
                    &self.plain
                } else {
                    &self.http
                }
            }
        };
        let mut request = client.post(url.clone()).json(body);
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let mut resp = request
            .send()
            .await
            .map_err(|e| transport_error(&e, timeout))?;
        check_status(resp.status().as_u16(), retry_after(&resp), attempt)?;
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(too_large().into());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| transport_error(&e, timeout))?
        {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(too_large().into());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(parse_body(&bytes)?)
    }
}

/// The request's messages as sent: a message with an image is OpenAI's content parts (its text,
/// then the image as an `image_url` with a `data:` URI), the others plain text.
fn wire_messages(req: &ModelRequest) -> Vec<Value> {
    req.messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = serde_json::to_value(m.role).unwrap_or(Value::Null);
            match req.images.get(&i) {
                Some(url) => serde_json::json!({
                    "role": role,
                    "content": [
                        {"type": "text", "text": m.content},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }),
                None => serde_json::json!({"role": role, "content": m.content}),
            }
        })
        .collect()
}

/// A transcription request (`POST {base_url}/audio/transcriptions`, multipart `file` + `model`).
pub struct TranscriptionRequest {
    pub base_url: String,
    pub api_key: Option<SecretString>,
    pub model: String,
    pub mime_type: String,
    pub bytes: Vec<u8>,
    pub timeout: Duration,
}

/// A transcript and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptionReply {
    pub text: String,
    pub latency_ms: u64,
    pub usage: Option<Usage>,
}

/// The file name a transcription's upload gets for `mime_type` (the endpoints read the format
/// from its extension).
fn audio_file_name(mime_type: &str) -> &'static str {
    match mime_type {
        "audio/ogg" | "audio/opus" | "application/ogg" => "audio.ogg",
        "audio/mpeg" | "audio/mp3" => "audio.mp3",
        "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => "audio.wav",
        "audio/webm" => "audio.webm",
        "audio/flac" | "audio/x-flac" => "audio.flac",
        _ => "audio.m4a",
    }
}

impl HttpModelClient {
    /// Transcribes audio through the outbound guard, as chat calls go (one attempt: a failure
    /// ends the reply with its reason). The answer must be JSON with a string `text`.
    pub async fn transcribe(
        &self,
        req: &TranscriptionRequest,
    ) -> Result<TranscriptionReply, ModelError> {
        let started = Instant::now();
        let endpoint = format!(
            "{}/audio/transcriptions",
            req.base_url.trim_end_matches('/')
        );
        let url = Url::parse(&endpoint).map_err(|e| {
            ModelError::Refused(GuardError::InvalidUrl {
                reason: e.to_string(),
            })
        })?;
        let client = match (url.scheme(), url.host()) {
            ("https", Some(Host::Domain(_))) => &self.http,
            ("http", Some(Host::Domain(_))) => &self.plain,
            (scheme, _) => {
                self.guard
                    .checked_addrs(&url)
                    .await
                    .map_err(ModelError::from_guard)?;
                if scheme == "http" {
                    &self.plain
                } else {
                    &self.http
                }
            }
        };
        let file = reqwest::multipart::Part::bytes(req.bytes.clone())
            .file_name(audio_file_name(&req.mime_type))
            .mime_str(&req.mime_type)
            .map_err(|_| ModelError::Setup("the media's MIME type is not valid".to_owned()))?;
        let form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", req.model.clone())
            .text("response_format", "json");
        let mut request = client.post(url).multipart(form);
        if let Some(key) = &req.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                .map_err(|_| {
                    ModelError::Setup(
                        "the API key contains characters not allowed in an HTTP header".to_owned(),
                    )
                })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let call = async {
            let mut resp = request
                .send()
                .await
                .map_err(|e| transport_error(&e, req.timeout))?;
            check_status(resp.status().as_u16(), None, 1).map_err(|f| f.error)?;
            let mut bytes = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| transport_error(&e, req.timeout))?
            {
                if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(bytes)
        };
        let bytes = tokio::time::timeout(req.timeout, call)
            .await
            .map_err(|_| ModelError::Timeout {
                after_secs: timeout_secs(req.timeout),
            })??;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|_| ModelError::Malformed("the transcription is not JSON".to_owned()))?;
        let text = value
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| ModelError::Malformed("text is not a string".to_owned()))?
            .to_owned();
        let usage = value
            .get("usage")
            .and_then(|u| serde_json::from_value::<Usage>(u.clone()).ok())
            .filter(|u| u.total_tokens > 0);
        tracing::debug!(
            host = url_host(&endpoint),
            latency_ms = elapsed_ms(started),
            "transcription"
        );
        Ok(TranscriptionReply {
            text,
            latency_ms: elapsed_ms(started),
            usage,
        })
    }
}

fn url_host(endpoint: &str) -> String {
    Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

fn too_large() -> ModelError {
    ModelError::Malformed("body larger than 4 MiB".to_owned())
}

/// A non-2xx status as the failure of attempt `attempt` (Retry-After counts on 429 and 503).
fn check_status(code: u16, retry_after: Option<Duration>, attempt: u32) -> Result<(), Failure> {
    let error = match code {
        200..=299 => return Ok(()),
        401 | 403 => ModelError::Unauthorized { status: code },
        429 => ModelError::RateLimited {
            status: code,
            attempts: attempt,
        },
        500..=599 => ModelError::Server {
            status: code,
            attempts: attempt,
        },
        _ => ModelError::Rejected { status: code },
    };
    let retry_after = retry_after.filter(|_| matches!(code, 429 | 503));
    Err(Failure { error, retry_after })
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_response() {
        let body = br#"{"id":"x","model":"gpt-4o-mini-2024","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"}}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let parsed = parse_body(body).unwrap();
        assert_eq!(parsed.text, "Hi!");
        assert_eq!(parsed.model.as_deref(), Some("gpt-4o-mini-2024"));
        assert_eq!(
            parsed.usage,
            Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                total_tokens: 5
            }
        );
    }

    #[test]
    fn usage_and_model_are_optional() {
        let parsed = parse_body(br#"{"choices":[{"message":{"content":"ok"}}]}"#).unwrap();
        assert_eq!(parsed.usage, Usage::default());
        assert_eq!(parsed.model, None);
        let parsed = parse_body(
            br#"{"choices":[{"message":{"content":"ok"}}],"usage":{"prompt_tokens":4,"completion_tokens":1}}"#,
        )
        .unwrap();
        assert_eq!(parsed.usage.total_tokens, 5);
    }

    #[test]
    fn malformed_bodies_never_quote_the_body() {
        for body in [
            &b"UPSTREAM-SECRET-BODY"[..],
            br#"{"choices":"UPSTREAM-SECRET-BODY"}"#,
            br#"{"choices":[]}"#,
            br#"{"choices":[{"message":{"content":null}}]}"#,
            br#"{"choices":[{"message":{"content":["UPSTREAM-SECRET-BODY"]}}]}"#,
            br#"{"choices":[{"message":{"content":"  "}}]}"#,
        ] {
            let err = parse_body(body).err().unwrap();
            assert!(matches!(err, ModelError::Malformed(_)), "{err:?}");
            assert_eq!(err.class(), "malformed");
            assert!(!err.is_retryable());
            let msg = err.to_string();
            assert!(msg.starts_with("model returned a malformed body"), "{msg}");
            assert!(!msg.contains("UPSTREAM-SECRET-BODY"), "{msg}");
        }
    }

    #[test]
    fn display_names_class_and_status() {
        assert_eq!(
            ModelError::RateLimited {
                status: 429,
                attempts: 3
            }
            .to_string(),
            "model call failed: HTTP 429 rate limited (3 attempts)"
        );
        assert_eq!(
            ModelError::Unauthorized { status: 401 }.to_string(),
            "model call failed: HTTP 401 unauthorized (check the API key)"
        );
        assert_eq!(
            ModelError::Timeout { after_secs: 60 }.to_string(),
            "model call timed out after 60 s"
        );
        assert_eq!(
            ModelError::Server {
                status: 502,
                attempts: 1
            }
            .to_string(),
            "model call failed: HTTP 502 server error (1 attempt)"
        );
        assert!(ModelError::Rejected { status: 302 }
            .to_string()
            .contains("redirects are not followed"));
    }

    #[test]
    fn classes_and_retryability() {
        let cases = [
            (ModelError::Refused(GuardError::NoHost), "refused", false),
            (ModelError::Timeout { after_secs: 1 }, "timeout", true),
            (ModelError::Connect, "connect", true),
            (
                ModelError::Unauthorized { status: 403 },
                "unauthorized",
                false,
            ),
            (
                ModelError::RateLimited {
                    status: 429,
                    attempts: 1,
                },
                "rate_limited",
                true,
            ),
            (
                ModelError::Server {
                    status: 503,
                    attempts: 1,
                },
                "server_error",
                true,
            ),
            (ModelError::Rejected { status: 400 }, "rejected", false),
            (ModelError::Malformed("x".into()), "malformed", false),
            (ModelError::Setup("x".into()), "setup", false),
        ];
        for (err, class, retryable) in cases {
            assert_eq!(err.class(), class);
            assert_eq!(err.is_retryable(), retryable, "{class}");
        }
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        // 2015-10-21 07:28:00 UTC is `now`; 90 s later:
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn request_debug_hides_key_and_messages() {
        let req = ModelRequest {
            base_url: "https://api.example.com/v1".into(),
            api_key: Some(SecretString::from("sk-very-secret")),
            model: "m".into(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: "private text".into(),
            }],
            temperature: 0.5,
            max_tokens: 10,
            timeout: Duration::from_secs(5),
            max_attempts: None,
            handoff_tool: false,
            images: Default::default(),
        };
        let dbg = format!("{req:?}");
        assert!(
            !dbg.contains("sk-very-secret") && !dbg.contains("private text"),
            "{dbg}"
        );
    }

    /// A name that resolves to a refused address is refused by the guarded resolver inside
    /// reqwest too (the check on the address actually connected to), and is reported as Refused.
    #[tokio::test]
    async fn resolver_refusal_surfaces_as_refused() {
        let client = build(builder(&Arc::new(OutboundGuard::new(Vec::new())))).unwrap();
        let err = client
            .get("https://localhost:9/")
            .send()
            .await
            .err()
            .unwrap();
        let mapped = transport_error(&err, Duration::from_secs(1));
        assert!(
            matches!(mapped, ModelError::Refused(GuardError::Loopback { .. })),
            "{mapped:?}"
        );
    }

    /// A client whose guard allows no private network, and a minimal request to `base_url`.
    fn strict_client_and_request(base_url: &str) -> (HttpModelClient, ModelRequest) {
        let client = HttpModelClient::new(
            Arc::new(OutboundGuard::new(Vec::new())),
            RetryPolicy::default(),
        )
        .unwrap();
        let req = ModelRequest {
            base_url: base_url.into(),
            api_key: None,
            model: "m".into(),
            messages: Vec::new(),
            temperature: 0.5,
            max_tokens: 10,
            timeout: Duration::from_secs(5),
            max_attempts: None,
            handoff_tool: false,
            images: Default::default(),
        };
        (client, req)
    }

    /// An https URL naming a domain is not looked up before the call (a pooled connection needs
    /// no lookup): the guarded resolver refuses it when connecting, with the same refusal as a
    /// check before the call would give, and it is not retried.
    #[tokio::test]
    async fn https_domain_is_refused_by_the_resolver() {
        let (client, req) = strict_client_and_request("https://localhost:9/v1");
        let (reply, log) = client.complete_logged(&req).await;
        let err = reply.unwrap_err();
        assert!(
            matches!(err, ModelError::Refused(GuardError::Loopback { .. })),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("WAGATE_ALLOW_PRIVATE_NETWORKS"),
            "{err}"
        );
        assert_eq!(log.len(), 1, "{log:?}");
    }

    /// A call waiting for a slow model keeps its whole future (boxed by the model port) for as
    /// long as the model takes: with 10,000 calls in flight, every KB here is 10 MB (P2).
    /// reqwest boxes its own request future, so the call's future stays small.
    #[test]
    fn a_model_call_in_flight_is_small() {
        let (client, req) = strict_client_and_request("http://127.0.0.1:9");
        let call = std::mem::size_of_val(&client.complete_logged(&req));
        assert!(call <= 2048, "call {call} B");
    }

    /// The https path (reqwest, the guard's resolver) against a loopback TLS server: the request
    /// arrives with its key, statuses are classified as on the plain path, Retry-After counts.
    #[tokio::test]
    async fn https_calls_through_reqwest() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let der = cert.cert.der().to_vec();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone().into()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let replies: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 503 Busy\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 75\r\nConnection: close\r\n\r\n{\"choices\":[{\"message\":{\"content\":\"over TLS\"}}],\"usage\":{\"total_tokens\":3}}",
            b"HTTP/1.1 401 No\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ];
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            for reply in replies {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = acceptor.accept(tcp).await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Head and body arrive together here: read until the JSON body closes.
                while !request.ends_with(b"}") {
                    let n = tls.read(&mut buf).await.unwrap();
                    assert!(n > 0, "request cut short");
                    request.extend_from_slice(&buf[..n]);
                }
                seen_tx
                    .send(String::from_utf8_lossy(&request).into_owned())
                    .unwrap();
                tls.write_all(reply).await.unwrap();
                tls.shutdown().await.unwrap();
            }
        });

        let guard = Arc::new(OutboundGuard::new(vec!["127.0.0.0/8".parse().unwrap()]));
        let client = HttpModelClient::trusting(guard, &der);
        let mut req = ModelRequest {
            base_url: format!("https://localhost:{port}/v1"),
            api_key: Some(SecretString::from("sk-tls")),
            model: "m".into(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: "hi".into(),
            }],
            temperature: 0.5,
            max_tokens: 10,
            timeout: Duration::from_secs(10),
            max_attempts: None,
            handoff_tool: false,
            images: Default::default(),
        };
        let (reply, log) = client.complete_logged(&req).await;
        let reply = reply.unwrap();
        assert_eq!((reply.text.as_str(), reply.attempts), ("over TLS", 2));
        assert_eq!(reply.usage.total_tokens, 3);
        assert_eq!(log, vec!["server_error (HTTP 503)", "ok"]);
        let first = seen.recv().await.unwrap();
        assert!(
            first.starts_with("POST /v1/chat/completions HTTP/1.1"),
            "{first}"
        );
        assert!(first
            .to_ascii_lowercase()
            .contains("authorization: bearer sk-tls"));
        seen.recv().await.unwrap();

        req.max_attempts = Some(1);
        let err = client.complete(&req).await.unwrap_err();
        assert_eq!(err, ModelError::Unauthorized { status: 401 });
    }
}
