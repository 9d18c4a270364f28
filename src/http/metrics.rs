//! `GET /metrics` in the Prometheus text format.
//!
//! Reply counts, tokens and model latency derive from the folded event history, so they are
//! monotonic across restarts and equal on every node sharing a store (a counter a restart resets
//! would make `rate()` lie after each deploy). Process-local counters (webhook attempts, store
//! errors) and gauges (actors, delivery lag) come from this process. No label carries a phone
//! number, a message or a key: only statuses and kinds.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_projections::messages::{ReplyTotals, LATENCY_BUCKETS};

use crate::app::SharedApp;
use crate::store::outbox;

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(metrics))
}

struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Prometheus metrics: replies by status, model latency, tokens, webhook deliveries, delivery
/// lag, actors, store errors.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(State(app): State<SharedApp>) -> Response {
    let mut t = Text(String::with_capacity(4096));

    // From history.
    let totals = app.messages().totals();
    let ReplyTotals {
        generated,
        sent,
        failed,
        skipped,
        pending,
        prompt_tokens: prompt,
        completion_tokens: completion,
        latency_buckets: buckets,
        latency_count: lat_count,
        ..
    } = totals;
    let lat_sum = totals.latency_sum_ms as f64 / 1000.0;
    t.family(
        "wagate_ai_replies_total",
        "counter",
        "AI replies by outcome, from the event history (generated counts every reply the model produced).",
    );
    for (status, n) in [
        ("generated", generated),
        ("sent", sent),
        ("failed", failed),
        ("skipped", skipped),
    ] {
        t.sample("wagate_ai_replies_total", &[("status", status)], n);
    }
    t.family(
        "wagate_ai_replies_pending",
        "gauge",
        "Replies requested and not decided yet.",
    );
    t.sample("wagate_ai_replies_pending", &[], pending);
    t.family(
        "wagate_model_tokens_total",
        "counter",
        "Tokens the model reported in usage.",
    );
    t.sample("wagate_model_tokens_total", &[("kind", "prompt")], prompt);
    t.sample(
        "wagate_model_tokens_total",
        &[("kind", "completion")],
        completion,
    );
    t.family(
        "wagate_model_latency_seconds",
        "histogram",
        "Model call latency of generated replies.",
    );
    for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
        t.sample(
            "wagate_model_latency_seconds_bucket",
            &[("le", &le.to_string())],
            buckets[i],
        );
    }
    t.sample(
        "wagate_model_latency_seconds_bucket",
        &[("le", "+Inf")],
        lat_count,
    );
    t.sample("wagate_model_latency_seconds_sum", &[], lat_sum);
    t.sample("wagate_model_latency_seconds_count", &[], lat_count);
    t.family(
        "wagate_events_position",
        "gauge",
        "The last event position folded into the read models.",
    );
    t.sample("wagate_events_position", &[], app.folded());

    // Webhooks.
    t.family(
        "wagate_webhook_deliveries",
        "gauge",
        "Webhook deliveries by status, in the store.",
    );
    let mut lag = 0.0;
    match outbox::stats(&app.store).await {
        Ok((counts, oldest_pending)) => {
            for status in ["pending", "delivered", "dead", "cancelled"] {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == status)
                    .map_or(0, |(_, n)| *n);
                t.sample("wagate_webhook_deliveries", &[("status", status)], n);
            }
            lag = oldest_pending;
        }
        Err(e) => {
            app.note_store_error();
            tracing::warn!(error = %e, "metrics: cannot count webhook deliveries");
        }
    }
    t.family(
        "wagate_webhook_attempts_total",
        "counter",
        "Webhook delivery attempts made by this process, by result.",
    );
    let c = &app.delivery_counters;
    for (result, n) in [
        ("delivered", c.delivered.load(Ordering::Relaxed)),
        ("failed", c.failed_attempts.load(Ordering::Relaxed)),
        ("dead", c.dead.load(Ordering::Relaxed)),
    ] {
        t.sample("wagate_webhook_attempts_total", &[("result", result)], n);
    }
    t.family(
        "wagate_webhook_delivery_lag_seconds",
        "gauge",
        "Age of the oldest pending webhook delivery (0 when none).",
    );
    t.sample("wagate_webhook_delivery_lag_seconds", &[], lag);

    // This process.
    t.family("wagate_actors", "gauge", "Running actors by kind.");
    let counts = match app.gateway() {
        Ok(g) => g.counts().await,
        Err(_) => Default::default(),
    };
    t.sample("wagate_actors", &[("kind", "account")], counts.accounts);
    t.sample("wagate_actors", &[("kind", "chat")], counts.chats);
    t.sample(
        "wagate_actors",
        &[("kind", "reply_worker")],
        counts.reply_workers,
    );
    t.family(
        "wagate_store_errors_total",
        "counter",
        "Event store failures seen by this process.",
    );
    t.sample("wagate_store_errors_total", &[], app.store_errors());
    if let Some(start) = app.start_stats.get() {
        t.family(
            "wagate_start_events_folded",
            "gauge",
            "Events this process folded into its read models at start (ADR 0015).",
        );
        t.sample("wagate_start_events_folded", &[], start.events_folded);
        t.family(
            "wagate_start_seconds",
            "gauge",
            "How long this process took to build its read models at start.",
        );
        t.sample("wagate_start_seconds", &[], start.elapsed.as_secs_f64());
    }
    t.family(
        "wagate_read_model_checkpoint_position",
        "gauge",
        "Position of the read-model checkpoint this process last loaded or wrote (0: none).",
    );
    t.sample(
        "wagate_read_model_checkpoint_position",
        &[],
        app.checkpoint_stats.position(),
    );

    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        t.0,
    )
        .into_response()
}
