//! A wagate gateway started in-process on 127.0.0.1:0 over a fresh PostgreSQL database, and the
//! HTTP calls the benchmark makes to it (configured as in tests/api/replies.rs).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tempfile::TempDir;
use wagate::config::Config;
use wagate::startup::{self, Running};

use crate::Result;

/// The sandbox account every message goes to (the prefix of the accounts, when there are several).
pub const ACCOUNT: &str = "bench";

/// The account of chat `i` among `accounts` sandbox accounts (`bench`, or `bench0`, `bench1`, …).
pub fn account_of(i: usize, accounts: usize) -> String {
    if accounts <= 1 {
        ACCOUNT.to_string()
    } else {
        format!("{ACCOUNT}{}", i % accounts)
    }
}

pub struct Gateway {
    running: Option<Running>,
    pub api: Api,
    _dir: TempDir,
}

/// An HTTP client of the gateway with an admin token (cheap to clone).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    token: String,
    client: reqwest::Client,
}

/// `<digits>@s.whatsapp.net` for chat `i`, and its sender number.
pub fn jid(i: usize) -> (String, String) {
    let from = format!("4917{i:08}");
    (format!("{from}@s.whatsapp.net"), from)
}

/// Chat index of a chat stream id (`bench/4917xxxxxxxx@s.whatsapp.net`, or of `benchN/…`).
pub fn chat_index(stream_id: &str) -> Option<usize> {
    let (account, jid) = stream_id.split_once('/')?;
    let n = account.strip_prefix(ACCOUNT)?;
    if !n.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    jid.strip_prefix("4917")?
        .strip_suffix("@s.whatsapp.net")?
        .parse()
        .ok()
}

impl Gateway {
    /// Starts a gateway on `database_url`, sized so that the model-call limits never bind.
    pub async fn start(database_url: &str, concurrency: usize) -> Result<Gateway> {
        Self::start_node(database_url, concurrency, None).await
    }

    /// A gateway as node `node_id` (several on one database: ADR 0026).
    pub async fn start_node(
        database_url: &str,
        concurrency: usize,
        node_id: Option<&str>,
    ) -> Result<Gateway> {
        let dir = tempfile::tempdir()?;
        let key: Vec<u8> = (0..64u8)
            .map(|i| i.wrapping_mul(7).wrapping_add(3))
            .collect();
        let mut vars = HashMap::new();
        for (k, v) in [
            ("WAGATE_LISTEN", "127.0.0.1:0".to_string()),
            ("WAGATE_DATA_DIR", dir.path().display().to_string()),
            ("WAGATE_DATABASE_URL", database_url.to_string()),
            (
                "WAGATE_JWT_SECRET",
                "wagate-bench-jwt-secret-0123456789abcdefghijkl".to_string(),
            ),
            (
                "WAGATE_MASTER_KEY",
                base64::engine::general_purpose::STANDARD.encode(key),
            ),
            (
                "WAGATE_ADMIN_PASSWORD",
                "bench Kettle 7 umbrella orbit".to_string(),
            ),
            ("WAGATE_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8".to_string()),
            ("WAGATE_MAX_MODEL_CALLS", "20000".to_string()),
            ("WAGATE_MAX_MODEL_CALLS_PER_ACCOUNT", "20000".to_string()),
            // The load comes through one admin token: no per-caller API rate limit.
            ("WAGATE_API_RATE_LIMIT_PER_SECOND", "0".to_string()),
        ] {
            vars.insert(k.to_string(), v);
        }
        if let Some(id) = node_id {
            vars.insert("WAGATE_NODE_ID".into(), id.to_string());
        }
        let (config, _) = Config::from_vars(&vars).map_err(|e| format!("gateway config: {e}"))?;
        let running = startup::start(config)
            .await
            .map_err(|e| format!("gateway start: {e}"))?;
        let token = running
            .app
            .config
            .jwt
            .issue("bench", Duration::from_secs(3600))
            .map_err(|e| format!("admin token: {e}"))?
            .0;
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(concurrency.max(1))
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Gateway {
            api: Api {
                base: format!("http://{}", running.addr),
                token,
                client,
            },
            running: Some(running),
            _dir: dir,
        })
    }

    /// Stops the gateway (at most 30 s; replies still in flight are abandoned).
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            if tokio::time::timeout(Duration::from_secs(30), r.stop())
                .await
                .is_err()
            {
                eprintln!("warning: the gateway did not stop within 30 s");
            }
        }
    }
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<(u16, String)> {
        let resp = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    /// `POST path` with a JSON body: (status, body text).
    pub async fn post(&self, path: &str, body: Value) -> Result<(u16, String)> {
        self.call(reqwest::Method::POST, path, body).await
    }

    /// Global AI config pointing at the stub (`<stub>/v1`), replies without delay, the loop
    /// guard's quick answers off; and the
    /// sandbox account (kept when an earlier gateway on the same store created it).
    pub async fn configure(&self, stub_base: &str, timeout_seconds: u32) -> Result<()> {
        self.configure_accounts(stub_base, timeout_seconds, 1).await
    }

    /// As [`Api::configure`], with `accounts` sandbox accounts (see [`account_of`]).
    pub async fn configure_accounts(
        &self,
        stub_base: &str,
        timeout_seconds: u32,
        accounts: usize,
    ) -> Result<()> {
        let body = json!({
            "enabled": true,
            "base_url": format!("{stub_base}/v1"),
            "api_key": "sk-bench-key",
            "model_name": "stub-model",
            "default_system_prompt": "You are a helpful shop assistant.",
            "reply_delay_seconds": 0,
            "timeout_seconds": timeout_seconds,
            // The benchmark's clients answer like bots (each message right after the reply): the
            // loop guard's quick answers would skip replies past the fifth in a chat.
            "loop_guard_quick_seconds": 0
        });
        let (status, text) = self
            .call(reqwest::Method::PUT, "/v1/ai/global", body)
            .await?;
        if status != 200 {
            return Err(format!("PUT /v1/ai/global: {status} {text}").into());
        }
        for a in 0..accounts.max(1) {
            let id = account_of(a, accounts);
            let body = json!({"id": id, "name": "Bench", "transport": "sandbox"});
            let (status, text) = self
                .call(reqwest::Method::POST, "/v1/accounts", body)
                .await?;
            let existed =
                status == 409 && text.contains(&format!("account id {id} is already taken"));
            if status != 201 && !existed {
                return Err(format!("POST /v1/accounts: {status} {text}").into());
            }
        }
        Ok(())
    }

    /// `GET path`: (status, JSON body).
    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// Injects one inbound message; the gateway answers 202 once the message is committed. A 503
    /// (store busy) is retried like a webhook sender would, up to 20 times; returns the number
    /// of retries.
    pub async fn inject(&self, chat: usize, id: &str, text: &str) -> Result<u32> {
        self.inject_into(ACCOUNT, chat, id, text).await
    }

    /// As [`Api::inject`], into `account`.
    pub async fn inject_into(
        &self,
        account: &str,
        chat: usize,
        id: &str,
        text: &str,
    ) -> Result<u32> {
        let (jid, from) = jid(chat);
        let body = json!({"chat_id": jid, "from": from, "text": text, "id": id});
        let path = format!("/v1/accounts/{account}/sandbox/inbound");
        let mut retries = 0;
        loop {
            let (status, resp) = self
                .call(reqwest::Method::POST, &path, body.clone())
                .await?;
            match status {
                202 => return Ok(retries),
                503 if retries < 20 => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(retries))).await;
                }
                _ => return Err(format!("inbound {id}: {status} {resp}").into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_index_round_trips() {
        let (j, _) = jid(1234);
        assert_eq!(chat_index(&format!("{ACCOUNT}/{j}")), Some(1234));
        assert_eq!(chat_index("other/491700001234@s.whatsapp.net"), None);
        assert_eq!(
            chat_index(&format!("{}/{j}", account_of(1234, 6))),
            Some(1234)
        );
    }
}
