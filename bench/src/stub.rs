//! The model stub: a tiny axum server on 127.0.0.1:0 answering `POST /v1/chat/completions` with
//! a fixed OpenAI-shaped completion (usage included), optionally after a delay.
//!
//! It runs in a child process (`wagate-bench stub --delay-ms N`): with 10,000 model calls in
//! flight, the gateway's client side and the stub's server side would need 20,000 sockets in one
//! process, over this machine's open-file limit. The child also keeps the stub out of the
//! measured RSS. It prints `LISTENING <addr>` on stdout and exits when its stdin closes.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpSocket;
use tokio::process::{Child, Command};

use crate::Result;

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1735732800,"model":"stub-model","choices":[{"index":0,"message":{"role":"assistant","content":"Thanks for your message! We are open today from 9 to 18."},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#;

#[derive(Clone)]
struct StubState {
    delay: Duration,
    calls: Arc<AtomicU64>,
}

async fn complete(State(st): State<StubState>, _body: axum::body::Bytes) -> impl IntoResponse {
    st.calls.fetch_add(1, Ordering::Relaxed);
    if !st.delay.is_zero() {
        tokio::time::sleep(st.delay).await;
    }
    ([(CONTENT_TYPE, "application/json")], COMPLETION)
}

/// The child process: serves until stdin closes.
pub async fn serve(delay: Duration) -> Result<()> {
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // A deep accept queue: thousands of model calls connect at nearly the same moment.
    let listener = socket.listen(8192)?;
    let local = listener.local_addr()?;
    let state = StubState {
        delay,
        calls: Arc::new(AtomicU64::new(0)),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(complete))
        .with_state(state);
    println!("LISTENING {local}");
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stdin_closed)
        .await?;
    Ok(())
}

/// A stub running in a child process.
pub struct Stub {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    child: Child,
}

impl Stub {
    pub async fn spawn(delay: Duration) -> Result<Stub> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("stub")
            .arg("--delay-ms")
            .arg(delay.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("stub: no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .map_err(|_| "the model stub did not start within 10 s")??
            .ok_or("the model stub exited before listening")?;
        let addr = line
            .strip_prefix("LISTENING ")
            .ok_or_else(|| format!("unexpected line from the model stub: {line}"))?;
        let addr: SocketAddr = addr.parse()?;
        if !addr.ip().is_loopback() {
            return Err(format!("the model stub listens on {addr}, not loopback").into());
        }
        Ok(Stub {
            base: format!("http://{addr}"),
            child,
        })
    }

    /// The child's process id (for its CPU use), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Closes the child's stdin (it stops serving) and waits for it, killing it after 5 s.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
