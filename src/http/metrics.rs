//! `GET /metrics` in the Prometheus text format (0.0.4), encoded by `prometheus-client`
//! (ADR 0019).
//!
//! Two sources, one each per metric:
//! - [`Snapshot`]: read at scrape time from where the values live. Reply counts, tokens and model
//!   latency are folds of the event history (so they are monotonic across restarts and equal on
//!   every node sharing a store: a counter a restart resets would make `rate()` lie after each
//!   deploy); outbox counts come from the store; the process-local counters (webhook attempts,
//!   store errors) and gauges (actors, start, checkpoint) are copied from the `App`, which
//!   increments them where they happen.
//! - [`HttpMetrics`]: request counts and latency by matched route, recorded by [`track`] in a
//!   registry owned by one router (no global recorder: a test process runs many gateways).
//!
//! No label carries a phone number, a message or a key: only statuses, kinds, HTTP methods and
//! route templates (`/v1/accounts/{id}`, never the path).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wagate_projections::messages::{ReplyTotals, LATENCY_BUCKETS};

use crate::app::SharedApp;
use crate::store::outbox;

pub fn router() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Upper bounds (seconds) of `http_request_duration_seconds`.
const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `route` label of a request no route matched (404s of unknown paths): never the path.
const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

type DurationFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Request metrics of one HTTP app (one per router, so one per gateway in a test process).
#[derive(Debug)]
pub struct HttpMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: DurationFamily,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: DurationFamily =
            Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS));
        let mut registry = Registry::default();
        registry.register(
            "http_requests",
            "HTTP requests answered by this process, by method, matched route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (until the response head), by method and matched route",
            durations.clone(),
        );
        Self {
            registry,
            requests,
            durations,
        }
    }
}

impl HttpMetrics {
    fn record(&self, method: &Method, route: Option<&MatchedPath>, status: u16, seconds: f64) {
        let method = method_label(method);
        let route = route.map_or(UNMATCHED, MatchedPath::as_str).to_string();
        self.durations
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(seconds);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }
}

/// The `method` label: the standard methods by name, anything else as `other` (a client can send
/// any token as a method; labels must stay a small set).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: counts and times every request by its matched route. Installed with
/// `Router::layer`, which wraps each route (so [`MatchedPath`] is known) and the fallback.
pub async fn track(State(m): State<Arc<HttpMetrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let response = next.run(req).await;
    m.record(
        &method,
        route.as_ref(),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// What `/metrics` reads from the app at scrape time.
#[derive(Debug)]
struct Snapshot {
    totals: ReplyTotals,
    folded: i64,
    /// Outbox rows by status and the age of the oldest pending one; `None` when the store failed.
    outbox: Option<([u64; 4], f64)>,
    attempts: [u64; 3],
    /// Running actors: accounts, chats, reply workers.
    actors: [u64; 3],
    store_errors: u64,
    start: Option<(u64, f64)>,
    checkpoint: i64,
    /// Appends refused by their account lease's fence.
    fenced: u64,
    /// Leases held now, and taken, taken over, released, lost since start (ADR 0026); `None` on
    /// SQLite.
    cluster: Option<(u64, [u64; 4])>,
}

const OUTBOX_STATUSES: [&str; 4] = ["pending", "delivered", "dead", "cancelled"];

impl Snapshot {
    async fn read(app: &SharedApp) -> Self {
        let outbox = match outbox::stats(&app.store).await {
            Ok((counts, oldest_pending)) => {
                let by = OUTBOX_STATUSES.map(|status| {
                    counts
                        .iter()
                        .find(|(s, _)| s == status)
                        .map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0))
                });
                Some((by, oldest_pending))
            }
            Err(e) => {
                app.note_store_error();
                tracing::warn!(error = %e, "metrics: cannot count webhook deliveries");
                None
            }
        };
        let actors = match app.gateway() {
            Ok(g) => {
                let c = g.counts().await;
                [c.accounts, c.chats, c.reply_workers].map(|n| n as u64)
            }
            Err(_) => [0; 3],
        };
        let c = &app.delivery_counters;
        Self {
            totals: app.messages().totals(),
            folded: app.folded(),
            outbox,
            attempts: [
                c.delivered.load(Ordering::Relaxed),
                c.failed_attempts.load(Ordering::Relaxed),
                c.dead.load(Ordering::Relaxed),
            ],
            actors,
            store_errors: app.store_errors(),
            start: app
                .start_stats
                .get()
                .map(|s| (s.events_folded, s.elapsed.as_secs_f64())),
            checkpoint: app.checkpoint_stats.position(),
            fenced: app.commit_stats.fenced.load(Ordering::Relaxed),
            cluster: app.cluster.get().map(|c| {
                let s = &c.stats;
                (
                    c.held().len() as u64,
                    [&s.acquired, &s.takeovers, &s.released, &s.lost]
                        .map(|n| n.load(Ordering::Relaxed)),
                )
            }),
        }
    }
}

/// The model latency histogram as the read model folded it: cumulative counts per bucket of
/// [`LATENCY_BUCKETS`], the count and the sum.
#[derive(Debug)]
struct FoldedHistogram<'a>(&'a ReplyTotals);

impl TypedMetric for FoldedHistogram<'_> {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for FoldedHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let t = self.0;
        // The encoder accumulates: hand it each bucket's own count.
        let mut below = 0;
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .zip(t.latency_buckets)
            .map(|(le, cumulative)| {
                let own = cumulative.saturating_sub(below);
                below = cumulative;
                (*le, own)
            })
            .collect();
        encoder.encode_histogram::<NoLabelSet>(
            t.latency_sum_ms as f64 / 1000.0,
            t.latency_count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One family of samples; `name` is without the `_total` that a counter gets on encoding.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(L, M)],
) -> Result<(), std::fmt::Error> {
    let Some((_, first)) = samples.first() else {
        return Ok(());
    };
    let mut f = e.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, metric) in samples {
        metric.encode(f.encode_family(labels)?)?;
    }
    Ok(())
}

/// A family of one unlabelled sample.
fn one<M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> Result<(), std::fmt::Error> {
    let no_labels: [(&str, &str); 0] = [];
    family(e, name, help, &[(no_labels, metric)])
}

/// `[(key, value)]` for each of `values` beside its sample.
fn by<M: EncodeMetric, const N: usize>(
    key: &'static str,
    values: [&'static str; N],
    metrics: [M; N],
) -> Vec<([(&'static str, &'static str); 1], M)> {
    values
        .into_iter()
        .zip(metrics)
        .map(|(v, m)| ([(key, v)], m))
        .collect()
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = &self.totals;
        // From history.
        family(
            &mut e,
            "wagate_ai_replies",
            "AI replies by outcome, from the event history (generated counts every reply the model produced).",
            &by(
                "status",
                ["generated", "sent", "failed", "skipped"],
                [t.generated, t.sent, t.failed, t.skipped].map(ConstCounter::new),
            ),
        )?;
        one(
            &mut e,
            "wagate_ai_replies_pending",
            "Replies requested and not decided yet.",
            ConstGauge::new(t.pending),
        )?;
        family(
            &mut e,
            "wagate_model_tokens",
            "Tokens the model reported in usage.",
            &by(
                "kind",
                ["prompt", "completion"],
                [t.prompt_tokens, t.completion_tokens].map(ConstCounter::new),
            ),
        )?;
        one(
            &mut e,
            "wagate_model_latency_seconds",
            "Model call latency of generated replies.",
            FoldedHistogram(t),
        )?;
        one(
            &mut e,
            "wagate_events_position",
            "The last event position folded into the read models.",
            ConstGauge::new(self.folded),
        )?;

        // Webhooks.
        if let Some((by_status, lag)) = self.outbox {
            family(
                &mut e,
                "wagate_webhook_deliveries",
                "Webhook deliveries by status, in the store.",
                &by("status", OUTBOX_STATUSES, by_status.map(ConstGauge::new)),
            )?;
            one(
                &mut e,
                "wagate_webhook_delivery_lag_seconds",
                "Age of the oldest pending webhook delivery (0 when none).",
                ConstGauge::new(lag),
            )?;
        }
        family(
            &mut e,
            "wagate_webhook_attempts",
            "Webhook delivery attempts made by this process, by result.",
            &by(
                "result",
                ["delivered", "failed", "dead"],
                self.attempts.map(ConstCounter::new),
            ),
        )?;

        // This process.
        family(
            &mut e,
            "wagate_actors",
            "Running actors by kind.",
            &by(
                "kind",
                ["account", "chat", "reply_worker"],
                self.actors.map(ConstGauge::new),
            ),
        )?;
        one(
            &mut e,
            "wagate_store_errors",
            "Event store failures seen by this process.",
            ConstCounter::new(self.store_errors),
        )?;
        if let Some((events_folded, seconds)) = self.start {
            one(
                &mut e,
                "wagate_start_events_folded",
                "Events this process folded into its read models at start (ADR 0015).",
                ConstGauge::new(events_folded),
            )?;
            one(
                &mut e,
                "wagate_start_seconds",
                "How long this process took to build its read models at start.",
                ConstGauge::new(seconds),
            )?;
        }
        one(
            &mut e,
            "wagate_read_model_checkpoint_position",
            "Position of the read-model checkpoint this process last loaded or wrote (0: none).",
            ConstGauge::new(self.checkpoint),
        )?;
        one(
            &mut e,
            "wagate_fenced_appends",
            "Reply steps this process appended under an account lease that had moved on: refused, nothing written (ADR 0026).",
            ConstCounter::new(self.fenced),
        )?;
        if let Some((held, counts)) = self.cluster {
            one(
                &mut e,
                "wagate_account_leases_held",
                "Account leases this node holds: the accounts whose replies it runs.",
                ConstGauge::new(held),
            )?;
            family(
                &mut e,
                "wagate_account_lease_changes",
                "Account leases this node took (acquired; takeover: another node held it before), gave up (released) or found taken at a renewal (lost).",
                &by(
                    "change",
                    ["acquired", "takeover", "released", "lost"],
                    counts.map(ConstCounter::new),
                ),
            )?;
        }
        Ok(())
    }
}

/// Prometheus metrics: replies by status, model latency, tokens, webhook deliveries, delivery
/// lag, actors, store errors.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(
    State(app): State<SharedApp>,
    http: Option<Extension<Arc<HttpMetrics>>>,
) -> Response {
    let mut scrape = Registry::default();
    scrape.register_collector(Box::new(Snapshot::read(&app).await));
    let mut text = String::with_capacity(8192);
    let encoded = prometheus_text::encode(&mut text, &scrape).and_then(|()| match &http {
        Some(Extension(m)) => prometheus_text::encode(&mut text, &m.registry),
        None => Ok(()),
    });
    if let Err(e) = encoded {
        // Only a `fmt::Write` into a `String`: cannot fail short of a bug.
        tracing::error!(error = %e, "metrics: encoding failed");
        return crate::http::error::ApiError::internal().into_response();
    }
    ([(CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The read model's cumulative buckets come out unchanged: the encoder's accumulation is
    /// undone before, so a 0.3 s and a 3 s call count once under 0.5 and twice from 4 up.
    #[test]
    fn folded_histogram_keeps_the_cumulative_buckets() {
        let mut totals = ReplyTotals::default();
        for ms in [300u64, 3000] {
            let s = ms as f64 / 1000.0;
            totals.latency_count += 1;
            totals.latency_sum_ms += ms;
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                if s <= *le {
                    totals.latency_buckets[i] += 1;
                }
            }
        }
        #[derive(Debug)]
        struct One(ReplyTotals);
        impl Collector for One {
            fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
                one(&mut e, "lat", "Latency.", FoldedHistogram(&self.0))
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(One(totals)));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).expect("encodes");
        let buckets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("lat_bucket"))
            .collect();
        assert_eq!(
            buckets,
            [
                "lat_bucket{le=\"0.05\"} 0",
                "lat_bucket{le=\"0.1\"} 0",
                "lat_bucket{le=\"0.25\"} 0",
                "lat_bucket{le=\"0.5\"} 1",
                "lat_bucket{le=\"1\"} 1",
                "lat_bucket{le=\"2\"} 1",
                "lat_bucket{le=\"4\"} 2",
                "lat_bucket{le=\"8\"} 2",
                "lat_bucket{le=\"15\"} 2",
                "lat_bucket{le=\"30\"} 2",
                "lat_bucket{le=\"60\"} 2",
                "lat_bucket{le=\"120\"} 2",
                "lat_bucket{le=\"+Inf\"} 2",
            ]
        );
        assert!(text.contains("\nlat_sum 3.3\n") && text.contains("\nlat_count 2\n"));
        assert!(text.starts_with("# HELP lat Latency.\n# TYPE lat histogram\n"));
    }
}
