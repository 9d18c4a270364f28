//! The model client against a wiremock server on 127.0.0.1 (the guard allows 127.0.0.0/8 here).

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::json;
use wagate::model::client::{
    ChatMessage, HttpModelClient, ModelError, ModelRequest, RetryPolicy, Role, Usage,
};
use wagate::model::guard::OutboundGuard;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-TEST-KEY-never-leak-9f3a";

fn guard(allow_loopback: bool) -> Arc<OutboundGuard> {
    let allow = if allow_loopback {
        vec!["127.0.0.0/8".parse().unwrap()]
    } else {
        Vec::new()
    };
    Arc::new(OutboundGuard::new(allow))
}

fn client_with(retry: RetryPolicy) -> HttpModelClient {
    HttpModelClient::new(guard(true), retry).unwrap()
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_secs(5),
    }
}

fn request(base_url: String) -> ModelRequest {
    ModelRequest {
        base_url,
        api_key: Some(SecretString::from(KEY)),
        model: "gpt-test".to_owned(),
        messages: vec![
            ChatMessage {
                role: Role::System,
                content: "You are helpful.".to_owned(),
            },
            ChatMessage {
                role: Role::User,
                content: "Hello?".to_owned(),
            },
            ChatMessage {
                role: Role::Assistant,
                content: "Hi.".to_owned(),
            },
        ],
        temperature: 0.5,
        max_tokens: 256,
        timeout: Duration::from_secs(5),
        max_attempts: None,
        handoff_tool: false,
        images: Default::default(),
    }
}

fn ok_body() -> serde_json::Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-test-2024-01-01",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 3, "total_tokens": 24}
    })
}

fn ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(ok_body())
}

fn assert_clean(err: &ModelError) {
    let msg = err.to_string();
    assert!(!msg.contains(KEY), "key leaked into {msg:?}");
    assert!(!msg.contains("Bearer"), "header leaked into {msg:?}");
}

#[tokio::test]
async fn happy_path_sends_the_exact_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "model": "gpt-test",
            "messages": [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": "Hello?"},
                {"role": "assistant", "content": "Hi."}
            ],
            "temperature": 0.5,
            "max_tokens": 256
        })))
        .respond_with(ok())
        .expect(1)
        .mount(&server)
        .await;

    let reply = client_with(RetryPolicy::default())
        .complete(&request(format!("{}/v1", server.uri())))
        .await
        .unwrap();
    assert_eq!(reply.text, "Hello there!");
    assert_eq!(reply.model, "gpt-test-2024-01-01");
    assert_eq!(
        reply.usage,
        Usage {
            prompt_tokens: 21,
            completion_tokens: 3,
            total_tokens: 24
        }
    );
    assert_eq!(reply.attempts, 1);
    assert!(reply.latency_ms < 5_000);

    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let ua = received[0]
        .headers
        .get("user-agent")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(ua.starts_with("wagate/"), "{ua}");
}

#[tokio::test]
async fn trailing_slash_and_missing_model_and_usage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"choices": [{"message": {"role": "assistant", "content": "ok"}}]}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let reply = client_with(RetryPolicy::default())
        .complete(&request(format!("{}/v1/", server.uri())))
        .await
        .unwrap();
    assert_eq!(reply.model, "gpt-test", "falls back to the requested model");
    assert_eq!(reply.usage, Usage::default());
}

#[tokio::test]
async fn no_key_sends_no_authorization_header() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(ok())
        .expect(1)
        .mount(&server)
        .await;
    let mut req = request(server.uri());
    req.api_key = None;
    let reply = client_with(RetryPolicy::default())
        .complete(&req)
        .await
        .unwrap();
    assert_eq!(reply.text, "Hello there!");
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    assert!(received[0].headers.get("authorization").is_none());
}

#[tokio::test]
async fn slow_server_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok().set_delay(Duration::from_millis(1500)))
        .expect(1)
        .mount(&server)
        .await;
    let mut req = request(server.uri());
    req.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = client_with(fast_retry(1)).complete(&req).await.unwrap_err();
    assert_eq!(err, ModelError::Timeout { after_secs: 1 });
    assert_eq!(err.class(), "timeout");
    assert_eq!(err.to_string(), "model call timed out after 1 s");
    assert!(started.elapsed() < Duration::from_millis(1400));
    assert_clean(&err);
}

#[tokio::test]
async fn rate_limited_then_ok_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok())
        .expect(1)
        .mount(&server)
        .await;
    let reply = client_with(fast_retry(3))
        .complete(&request(server.uri()))
        .await
        .unwrap();
    assert_eq!(reply.attempts, 2);
    assert_eq!(reply.text, "Hello there!");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok())
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    let reply = client_with(fast_retry(3))
        .complete(&request(server.uri()))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(reply.attempts, 2);
    assert!(reply.latency_ms >= 1_000, "latency covers the wait");
}

#[tokio::test]
async fn retry_after_longer_than_max_delay_stops_at_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3600"))
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    let err = client_with(fast_retry(3))
        .complete(&request(server.uri()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ModelError::RateLimited {
            status: 429,
            attempts: 1
        }
    );
    assert_eq!(err.class(), "rate_limited");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_clean(&err);
}

#[tokio::test]
async fn rate_limited_on_every_attempt() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429))
        .expect(3)
        .mount(&server)
        .await;
    let err = client_with(fast_retry(3))
        .complete(&request(server.uri()))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "model call failed: HTTP 429 rate limited (3 attempts)"
    );
}

#[tokio::test]
async fn server_errors_exhaust_the_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("UPSTREAM-SECRET-BODY"))
        .expect(3)
        .mount(&server)
        .await;
    let err = client_with(fast_retry(3))
        .complete(&request(server.uri()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ModelError::Server {
            status: 500,
            attempts: 3
        }
    );
    assert_eq!(err.class(), "server_error");
    let msg = err.to_string();
    assert!(msg.contains("HTTP 500"), "{msg}");
    assert!(!msg.contains("UPSTREAM-SECRET-BODY"), "{msg}");
    assert_clean(&err);
}

#[tokio::test]
async fn unauthorized_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_string(format!("UPSTREAM-SECRET-BODY invalid key {KEY}")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = client_with(fast_retry(3))
        .complete(&request(server.uri()))
        .await
        .unwrap_err();
    assert_eq!(err, ModelError::Unauthorized { status: 401 });
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        "model call failed: HTTP 401 unauthorized (check the API key)"
    );
    assert_clean(&err);
}

#[tokio::test]
async fn other_client_errors_are_rejected_without_retry() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string("UPSTREAM-SECRET-BODY"))
        .expect(1)
        .mount(&server)
        .await;
    let err = client_with(fast_retry(3))
        .complete(&request(server.uri()))
        .await
        .unwrap_err();
    assert_eq!(err, ModelError::Rejected { status: 400 });
    assert!(!err.to_string().contains("UPSTREAM-SECRET-BODY"));
}

#[tokio::test]
async fn malformed_body_is_not_quoted() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw("{\"UPSTREAM-SECRET-BODY\": oops", "application/json"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = client_with(fast_retry(3))
        .complete(&request(server.uri()))
        .await
        .unwrap_err();
    assert!(matches!(err, ModelError::Malformed(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("model returned a malformed body"), "{msg}");
    assert!(!msg.contains("UPSTREAM-SECRET-BODY"), "{msg}");
    assert_clean(&err);
}

#[tokio::test]
async fn no_choices_is_malformed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"choices": []})))
        .expect(1)
        .mount(&server)
        .await;
    let err = client_with(fast_retry(3))
        .complete(&request(server.uri()))
        .await
        .unwrap_err();
    assert_eq!(err.class(), "malformed");
}

#[tokio::test]
async fn oversized_body_is_malformed() {
    let server = MockServer::start().await;
    let huge = format!(
        "{{\"choices\":[{{\"message\":{{\"content\":\"{}\"}}}}]}}",
        "a".repeat(4 * 1024 * 1024 + 1)
    );
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(huge, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let err = client_with(fast_retry(3))
        .complete(&request(server.uri()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ModelError::Malformed("body larger than 4 MiB".to_owned())
    );
}

#[tokio::test]
async fn redirect_is_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/elsewhere", server.uri())),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/elsewhere"))
        .respond_with(ok())
        .expect(0)
        .mount(&server)
        .await;
    let err = client_with(fast_retry(3))
        .complete(&request(server.uri()))
        .await
        .unwrap_err();
    assert_eq!(err, ModelError::Rejected { status: 302 });
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("HTTP 302"));
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = client_with(fast_retry(2))
        .complete(&request(format!("http://127.0.0.1:{port}/v1")))
        .await
        .unwrap_err();
    assert_eq!(err, ModelError::Connect);
    assert_eq!(err.class(), "connect");
    assert!(err.is_retryable());
    assert_clean(&err);
}

#[tokio::test]
async fn guard_without_allow_list_refuses_loopback_and_sends_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok())
        .expect(0)
        .mount(&server)
        .await;
    let client = HttpModelClient::new(guard(false), fast_retry(3)).unwrap();
    let err = client.complete(&request(server.uri())).await.unwrap_err();
    assert!(matches!(err, ModelError::Refused(_)), "{err:?}");
    assert_eq!(err.class(), "refused");
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(msg.contains("WAGATE_ALLOW_PRIVATE_NETWORKS"), "{msg}");
    assert!(msg.contains("loopback"), "{msg}");
    assert_clean(&err);
}

#[tokio::test]
async fn plain_http_to_localhost_name_is_pinned_to_checked_addresses() {
    // `localhost` resolves locally; the request goes to the checked loopback address.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok())
        .expect(1)
        .mount(&server)
        .await;
    let port = server.address().port();
    let reply = client_with(fast_retry(1))
        .complete(&request(format!("http://localhost:{port}/v1")))
        .await
        .unwrap();
    assert_eq!(reply.text, "Hello there!");
}

#[tokio::test]
async fn invalid_or_non_http_base_urls_are_refused() {
    let client = client_with(fast_retry(3));
    for base in ["not a url", "ftp://127.0.0.1/v1", "file:///etc"] {
        let err = client
            .complete(&request(base.to_owned()))
            .await
            .unwrap_err();
        assert_eq!(err.class(), "refused", "{base}: {err:?}");
    }
}

#[tokio::test]
async fn key_never_appears_in_any_error() {
    let errors = [
        ModelError::Timeout { after_secs: 1 },
        ModelError::Connect,
        ModelError::Unauthorized { status: 403 },
        ModelError::RateLimited {
            status: 429,
            attempts: 2,
        },
        ModelError::Server {
            status: 503,
            attempts: 3,
        },
        ModelError::Rejected { status: 404 },
        ModelError::Malformed("no choices".to_owned()),
    ];
    for err in &errors {
        assert_clean(err);
    }
    // An API key that is not a valid header value fails without echoing it.
    let client = client_with(fast_retry(1));
    let mut req = request("http://127.0.0.1:9/v1".to_owned());
    req.api_key = Some(SecretString::from(format!("{KEY}\n")));
    let err = client.complete(&req).await.unwrap_err();
    assert_eq!(err.class(), "setup");
    assert_clean(&err);
}

/// Plain http to a name connects only to the addresses the guard admitted for it: with only
/// `::1` allowed, `localhost` (127.0.0.1 here, and maybe ::1) never reaches the server listening
/// on 127.0.0.1, although the name resolves there.
#[tokio::test]
async fn plain_http_name_never_reaches_an_address_outside_the_allowed_networks() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok())
        .expect(0)
        .mount(&server)
        .await;
    let port = server.address().port();
    let only_v6_loopback = Arc::new(OutboundGuard::new(vec!["::1/128".parse().unwrap()]));
    let client = HttpModelClient::new(only_v6_loopback, fast_retry(1)).unwrap();
    let err = client
        .complete(&request(format!("http://localhost:{port}/v1")))
        .await
        .unwrap_err();
    // Refused when the name has no allowed address, else a connect error on [::1].
    assert!(
        matches!(err, ModelError::Refused(_) | ModelError::Connect),
        "{err:?}"
    );
}

/// A reply that is not HTTP is a malformed answer, not a connect error, and is not retried.
#[tokio::test]
async fn a_response_that_is_not_http_is_malformed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"UPSTREAM-SECRET-BODY \x01\x02\r\n\r\n")
                .await;
            let _ = tcp.shutdown().await;
        }
    });
    let err = client_with(fast_retry(3))
        .complete(&request(format!("http://127.0.0.1:{port}/v1")))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ModelError::Malformed("invalid HTTP response".to_owned())
    );
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains("UPSTREAM-SECRET-BODY"));
    assert_eq!(accepted.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// Consecutive calls to one server reuse the kept-alive connection.
#[tokio::test]
async fn consecutive_calls_reuse_one_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let body = ok_body().to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let (mut buf, mut request) = (vec![0u8; 16384], Vec::new());
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    // A request ends with its JSON body.
                    if request.ends_with(b"}") {
                        request.clear();
                        if tcp.write_all(reply.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    let client = client_with(fast_retry(1));
    for _ in 0..3 {
        let reply = client
            .complete(&request(format!("http://127.0.0.1:{port}/v1")))
            .await
            .unwrap();
        assert_eq!(reply.text, "Hello there!");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::Relaxed), 1);
}
