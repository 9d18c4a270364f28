//! whatsapp-rust's HTTP client trait on reqwest (every outbound HTTP call of wagate goes through
//! reqwest). The library uses it to fetch the current WhatsApp Web version and for media
//! download/upload.
//!
//! Only the buffered `execute` is implemented: the streaming variants (`execute_streaming`,
//! `execute_upload`) keep the trait's "unsupported" defaults. The library falls back to buffered
//! transfers when `supports_streaming()` is false (in-memory download, `Client::upload`); only
//! `Client::upload_stream` needs `execute_upload`, and wagate does not use it.

use std::time::Duration;

use async_trait::async_trait;
use wacore::net::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::anyhow;

/// Time to establish a TCP + TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a whole exchange, body included (media can be several MB).
const TOTAL_TIMEOUT: Duration = Duration::from_secs(120);

/// [`HttpClient`] on a shared reqwest client. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct ReqwestHttpClient {
    client: reqwest::Client,
}

impl ReqwestHttpClient {
    pub(crate) fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            .build()?;
        Ok(Self { client })
    }
}

#[async_trait]
impl HttpClient for ReqwestHttpClient {
    /// A completed exchange is `Ok` whatever its status (the library reads 401/403/404/410 to
    /// refresh media auth); `Err` only when there was no exchange (DNS, connect, TLS, timeout).
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| anyhow::anyhow!("invalid HTTP method {:?}", request.method))?;
        let mut builder = self.client.request(method, request.url.as_str());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let response = builder.send().await.map_err(without_url)?;
        let status_code = response.status().as_u16();
        let body = response.bytes().await.map_err(without_url)?.to_vec();
        Ok(HttpResponse { status_code, body })
    }
}

/// Media URLs carry auth tokens in their query: keep them out of errors (and so out of logs).
fn without_url(error: reqwest::Error) -> anyhow::Error {
    anyhow::Error::new(error.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// One-shot HTTP server on loopback answering `status` with `body`; returns its base URL
    /// and a handle yielding the raw request it read.
    async fn serve_once(
        status: &'static str,
        body: &'static str,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())
                                .flatten()
                        })
                        .unwrap_or(0);
                    if request.len() >= head_end + 4 + length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            String::from_utf8_lossy(&request).to_string()
        });
        (format!("http://{addr}"), task)
    }

    #[tokio::test]
    async fn get_returns_status_and_body() {
        let (url, server) = serve_once("200 OK", "hello").await;
        let client = ReqwestHttpClient::new().unwrap();
        let response = client
            .execute(HttpRequest::get(format!("{url}/v")).with_header("x-test", "1"))
            .await
            .unwrap();
        assert_eq!(response.status_code, 200);
        assert_eq!(response.body, b"hello");
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /v HTTP/1.1"));
        assert!(request.to_ascii_lowercase().contains("x-test: 1"));
    }

    #[tokio::test]
    async fn non_2xx_is_a_response_not_an_error() {
        let (url, _server) = serve_once("403 Forbidden", "no").await;
        let client = ReqwestHttpClient::new().unwrap();
        let response = client.execute(HttpRequest::get(url)).await.unwrap();
        assert_eq!(response.status_code, 403);
        assert_eq!(response.body, b"no");
    }

    #[tokio::test]
    async fn post_sends_the_body() {
        let (url, server) = serve_once("201 Created", "").await;
        let client = ReqwestHttpClient::new().unwrap();
        let response = client
            .execute(HttpRequest::post(format!("{url}/up")).with_body(b"payload".to_vec()))
            .await
            .unwrap();
        assert_eq!(response.status_code, 201);
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /up HTTP/1.1"));
        assert!(request.ends_with("payload"));
    }

    #[tokio::test]
    async fn no_exchange_is_an_error() {
        // A port nobody listens on (bound, then released).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = ReqwestHttpClient::new().unwrap();
        let result = client
            .execute(HttpRequest::get(format!("http://{addr}/?token=secret")))
            .await;
        let error = result.unwrap_err();
        assert!(!format!("{error:#}").contains("secret"));
    }
}
