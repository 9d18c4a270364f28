//! `/overview`, the dashboard's home: for a period (last hour, 24 h, 7 or 30 days) and all
//! accounts or one, the numbers of `GET /v1/stats` (the same service function) drawn as inline
//! SVG made here — replies per hour stacked `sent` / `skipped` / `failed`, customer messages per
//! hour, model latency p50 / p95, tokens per day against each account's daily budget — with the
//! top skip and failure reasons, the webhook outbox and a numeric summary. No script, library or
//! CDN: every bar and point carries an SVG `<title>` with its exact number (and `data-` attributes
//! with the bucket and value), every chart a title and description for assistive technology.

use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::render::{self, FormState, Section};
use super::session::Session;
use crate::app::SharedApp;
use crate::http::error::ApiError;
use crate::service::stats::{self as service, AccountTokens, Period, Stats};

/// The selectors (a plain GET form).
#[derive(Debug, Default, Deserialize)]
pub struct Choice {
    pub period: Option<String>,
    pub account: Option<String>,
}

const FIELDS: [&str; 2] = ["period", "account"];

pub async fn page(
    State(app): State<SharedApp>,
    session: Session,
    Query(q): Query<Choice>,
) -> Response {
    let account = q
        .account
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty());
    let mut state = FormState::with([
        (
            "period",
            q.period
                .clone()
                .unwrap_or_else(|| Period::default().as_str().into()),
        ),
        ("account", account.clone().unwrap_or_default()),
    ]);
    let period = Period::parse(q.period.as_deref()).unwrap_or_else(|e| {
        state.api_error(ApiError::from(e), &FIELDS);
        Period::default()
    });
    let stats = if state.failed() {
        None
    } else {
        match service::overview(&app, period, account.as_deref()).await {
            Ok(s) => Some(s),
            Err(e) => {
                let e = ApiError::from(e);
                if e.status.is_server_error() {
                    return render::api_error_page(&e);
                }
                state.api_error(e, &FIELDS);
                None
            }
        }
    };
    let accounts = crate::service::accounts::live_ids(&app);
    let body = html! {
        form.card.filters method="get" action="/overview" {
            (render::form_error(&state))
            (period_select(&state))
            (account_select(&state, &accounts))
            button type="submit" { "Show" }
        }
        @if let Some(s) = &stats { (overview(s)) }
    };
    render::respond(
        state.status(),
        render::page("Overview", Some(&session), Section::Overview, body),
    )
}

fn period_select(state: &FormState) -> Markup {
    let current = state.value("period");
    html! {
        div.field {
            label for="overview-period" { "Period" }
            select #overview-period name="period" aria-invalid=[state.error("period").map(|_| "true")]
                aria-describedby=[render::described_by(state, "overview-period", "period", false)] {
                @for p in Period::ALL {
                    option value=(p.as_str()) selected[current == p.as_str()] { (p.label()) }
                }
            }
            (render::field_error(state, "overview-period", "period"))
        }
    }
}

fn account_select(state: &FormState, accounts: &[String]) -> Markup {
    let current = state.value("account");
    // A value typed into the URL that is no account stays selected, with its error.
    let unknown = !current.is_empty() && !accounts.iter().any(|a| a == current);
    html! {
        div.field {
            label for="overview-account" { "Account" }
            select #overview-account name="account" aria-invalid=[state.error("account").map(|_| "true")]
                aria-describedby=[render::described_by(state, "overview-account", "account", false)] {
                option value="" selected[current.is_empty()] { "All accounts" }
                @for a in accounts { option value=(a) selected[current == a.as_str()] { (a) } }
                @if unknown { option value=(current) selected { (current) } }
            }
            (render::field_error(state, "overview-account", "account"))
        }
    }
}

/// The numbers and charts of one answer.
fn overview(s: &Stats) -> Markup {
    let t = &s.totals;
    let who = s.account.as_deref().unwrap_or("all accounts");
    let lat = &s.latency_summary_ms;
    html! {
        p.muted #overview-scope {
            (s.period.label()) " (" (stamp(&s.from)) " to " (stamp(&s.to)) "), " (who)
            ". Hourly buckets (UTC); tokens per UTC day."
        }
        section aria-labelledby="summary-h" {
            h2 #summary-h { "Summary" }
            dl.summary #summary {
                div { dt { "Replies sent" } dd #total-sent { (t.sent) } }
                div { dt { "Skipped" } dd #total-skipped { (t.skipped) } }
                div { dt { "Failed" } dd #total-failed { (t.failed) } }
                div { dt { "Messages received" } dd #total-inbound { (t.inbound) } }
                div { dt { "Model tokens" } dd #total-tokens { (t.tokens) } }
                div { dt { "Latency p50 / p95" } dd #total-latency {
                    (ms(lat.p50)) " / " (ms(lat.p95))
                } }
            }
        }
        section aria-labelledby="replies-h" {
            h2 #replies-h { "Replies per hour" }
            (legend(&[("sent", "sent"), ("skipped", "skipped"), ("failed", "failed")]))
            (bar_chart(
                "chart-replies",
                "Replies per hour by outcome",
                &format!("{} sent, {} skipped, {} failed in the period.", t.sent, t.skipped, t.failed),
                s.period,
                &s.replies.iter().map(|b| Bar {
                    start: b.start,
                    segments: vec![
                        ("sent", b.sent, "sent"),
                        ("skipped", b.skipped, "skipped"),
                        ("failed", b.failed, "failed"),
                    ],
                }).collect::<Vec<_>>(),
            ))
        }
        section aria-labelledby="inbound-h" {
            h2 #inbound-h { "Messages received per hour" }
            (bar_chart(
                "chart-inbound",
                "Customer messages received per hour",
                &format!("{} messages received in the period.", t.inbound),
                s.period,
                &s.inbound.iter().map(|b| Bar {
                    start: b.start,
                    segments: vec![("inbound", b.count, "received")],
                }).collect::<Vec<_>>(),
            ))
        }
        section aria-labelledby="latency-h" {
            h2 #latency-h { "Model latency (ms)" }
            (legend(&[("p50", "p50"), ("p95", "p95")]))
            (latency_chart(s))
        }
        section aria-labelledby="tokens-h" {
            h2 #tokens-h { "Tokens per day" }
            @if s.tokens.is_empty() { p { "No accounts." } }
            div.token-charts { @for a in &s.tokens { (token_chart(a)) } }
        }
        div.columns {
            section aria-labelledby="reasons-h" {
                h2 #reasons-h { "Top skip and failure reasons" }
                @if s.top_reasons.is_empty() { p #no-reasons { "No reply was skipped or failed in the period." } } @else {
                    div.scroll { table #top-reasons {
                        thead { tr { th scope="col" { "Outcome" } th scope="col" { "Reason" } th scope="col" { "Replies" } } }
                        tbody { @for r in &s.top_reasons {
                            tr {
                                td { span class=(format!("badge {}", r.status)) { (r.status) } }
                                td { code { (r.reason_code) } }
                                td.num { (r.count) }
                            }
                        } }
                    } }
                }
            }
            section aria-labelledby="deliveries-h" {
                h2 #deliveries-h { "Webhook deliveries" }
                div.scroll { table #webhook-deliveries {
                    thead { tr { th scope="col" { "State" } th scope="col" { "Deliveries" } } }
                    tbody {
                        tr { td { "Pending" } td.num #deliveries-pending { (s.webhook_deliveries.pending) } }
                        tr { td { "Pending after a failed attempt" } td.num #deliveries-failed { (s.webhook_deliveries.failed) } }
                        tr { td { "Dead-lettered" } td.num #deliveries-dead { (s.webhook_deliveries.dead) } }
                    }
                } }
                p.hint { "All webhooks, now (not limited to the period or account). "
                    a href="/webhooks" { "Webhooks" } }
            }
        }
    }
}

fn stamp(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn ms(v: Option<u64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v} ms"))
}

fn legend(items: &[(&str, &str)]) -> Markup {
    html! {
        ul.legend aria-hidden="true" {
            @for (class, label) in items { li { span class=(format!("swatch {class}")) {} (label) } }
        }
    }
}

/// The drawing's size (SVG user units; the chart scales to its box).
const W: f64 = 900.0;
const H: f64 = 240.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 30.0;

/// A round upper bound for an axis (1, 2 or 5 × 10ⁿ), at least 1.
fn nice_max(v: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if step.saturating_mul(m) >= v {
                return step.saturating_mul(m).max(1);
            }
        }
        step = step.saturating_mul(10);
    }
}

fn plot_w() -> f64 {
    W - LEFT - RIGHT
}

fn plot_h() -> f64 {
    H - TOP - BOTTOM
}

/// The y of value `v` on an axis up to `max`.
fn y_of(v: u64, max: u64) -> f64 {
    TOP + plot_h() - plot_h() * (v as f64) / (max as f64)
}

/// The horizontal grid with its values (0, half, max).
fn y_axis(max: u64) -> Markup {
    // The middle line only where it is a whole number (an axis up to 5 has none).
    let ticks: Vec<u64> = if max.is_multiple_of(2) {
        vec![0, max / 2, max]
    } else {
        vec![0, max]
    };
    html! {
        g.axis aria-hidden="true" {
            @for v in ticks {
                line x1=(LEFT) x2=(W - RIGHT) y1=(fmt(y_of(v, max))) y2=(fmt(y_of(v, max))) {}
                text x=(LEFT - 6.0) y=(fmt(y_of(v, max) + 4.0)) text-anchor="end" {
                    (v)
                }
            }
        }
    }
}

/// Labels under the first, middle and last of `n` slots.
fn x_axis(starts: &[String]) -> Markup {
    let n = starts.len();
    if n == 0 {
        return html! {};
    }
    let slot = plot_w() / n as f64;
    let mut picks = vec![0];
    if n > 2 {
        picks.push(n / 2);
    }
    if n > 1 {
        picks.push(n - 1);
    }
    html! {
        g.axis aria-hidden="true" {
            @for i in picks {
                @let x = LEFT + slot * (i as f64 + 0.5);
                @let anchor = if n > 1 && i == 0 { "start" } else if n > 1 && i == n - 1 { "end" } else { "middle" };
                @let x = match anchor { "start" => LEFT, "end" => W - RIGHT, _ => x };
                text x=(fmt(x)) y=(fmt(H - 8.0)) text-anchor=(anchor) { (starts[i]) }
            }
        }
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.2}")
}

/// How a bucket's start is labelled under the axis.
fn short(period: Period, t: &DateTime<Utc>) -> String {
    match period {
        Period::Hour | Period::Day => t.format("%H:%M").to_string(),
        Period::Week | Period::Month => t.format("%b %-d %H:00").to_string(),
    }
}

/// One hour's bar: its segments (CSS class, value, what the value counts), stacked from the
/// bottom.
struct Bar {
    start: DateTime<Utc>,
    segments: Vec<(&'static str, u64, &'static str)>,
}

/// The non-empty segments of a bar with their top and height on an axis up to `max`.
fn stacked(b: &Bar, max: u64) -> Vec<(&'static str, u64, &'static str, f64, f64)> {
    let mut below = 0;
    b.segments
        .iter()
        .filter(|s| s.1 > 0)
        .map(|&(class, value, what)| {
            let top = y_of(below + value, max);
            let height = y_of(below, max) - top;
            below += value;
            (class, value, what, top, height)
        })
        .collect()
}

fn bar_chart(id: &str, title: &str, desc: &str, period: Period, bars: &[Bar]) -> Markup {
    let max = nice_max(
        bars.iter()
            .map(|b| b.segments.iter().map(|s| s.1).sum::<u64>())
            .max()
            .unwrap_or(0),
    );
    let n = bars.len().max(1);
    let slot = plot_w() / n as f64;
    let width = (slot * 0.8).clamp(0.6, 40.0);
    let starts: Vec<String> = bars.iter().map(|b| short(period, &b.start)).collect();
    html! {
        figure.chart {
            svg id=(id) viewBox=(format!("0 0 {W} {H}")) role="img" preserveAspectRatio="xMidYMid meet"
                aria-labelledby=(format!("{id}-title {id}-desc")) {
                title id=(format!("{id}-title")) { (title) }
                desc id=(format!("{id}-desc")) { (desc) }
                (y_axis(max))
                @for (i, b) in bars.iter().enumerate() {
                    @let x = LEFT + slot * i as f64 + (slot - width) / 2.0;
                    g.bar {
                        @for (class, value, what, top, height) in stacked(b, max) {
                            rect class=(class) x=(fmt(x)) y=(fmt(top)) width=(fmt(width)) height=(fmt(height))
                                data-series=(class) data-start=(rfc3339(&b.start)) data-value=(value) {
                                title { (stamp(&b.start)) " — " (value) " " (what) }
                            }
                        }
                    }
                }
                (x_axis(&starts))
            }
        }
    }
}

fn latency_chart(s: &Stats) -> Markup {
    let id = "chart-latency";
    let max = nice_max(s.latency_ms.iter().filter_map(|b| b.p95).max().unwrap_or(0));
    let n = s.latency_ms.len().max(1);
    let slot = plot_w() / n as f64;
    let x_of = |i: usize| LEFT + slot * (i as f64 + 0.5);
    let series = |pick: fn(&service::LatencyBucket) -> Option<u64>| -> Vec<(usize, u64)> {
        s.latency_ms
            .iter()
            .enumerate()
            .filter_map(|(i, b)| pick(b).map(|v| (i, v)))
            .collect()
    };
    let p50 = series(|b| b.p50);
    let p95 = series(|b| b.p95);
    let points = |pts: &[(usize, u64)]| -> String {
        pts.iter()
            .map(|(i, v)| format!("{},{}", fmt(x_of(*i)), fmt(y_of(*v, max))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let starts: Vec<String> = s
        .latency_ms
        .iter()
        .map(|b| short(s.period, &b.start))
        .collect();
    let lat = &s.latency_summary_ms;
    html! {
        figure.chart {
            svg id=(id) viewBox=(format!("0 0 {W} {H}")) role="img" preserveAspectRatio="xMidYMid meet"
                aria-labelledby=(format!("{id}-title {id}-desc")) {
                title id=(format!("{id}-title")) { "Model latency per hour, p50 and p95 (ms)" }
                desc id=(format!("{id}-desc")) {
                    @if lat.count == 0 { "No model calls in the period." } @else {
                        (lat.count) " model answers; p50 " (ms(lat.p50)) ", p95 " (ms(lat.p95)) " over the period."
                    }
                }
                (y_axis(max))
                @for (class, pts) in [("p95", &p95), ("p50", &p50)] {
                    @if pts.len() > 1 { polyline class=(format!("line {class}")) points=(points(pts)) {} }
                    @for (i, v) in pts.iter() {
                        @let b = &s.latency_ms[*i];
                        circle class=(format!("dot {class}")) cx=(fmt(x_of(*i))) cy=(fmt(y_of(*v, max))) r="4"
                            data-series=(class) data-start=(rfc3339(&b.start)) data-value=(v) {
                            title { (stamp(&b.start)) " — " (class) " " (v) " ms (" (b.count) " model answers)" }
                        }
                    }
                }
                (x_axis(&starts))
            }
        }
    }
}

fn token_chart(a: &AccountTokens) -> Markup {
    let id = format!("chart-tokens-{}", a.account_id);
    let used: u64 = a.days.iter().map(|d| d.tokens).sum();
    let top = a.days.iter().map(|d| d.tokens).max().unwrap_or(0);
    let max = nice_max(top.max(a.daily_token_budget));
    let n = a.days.len().max(1);
    let slot = plot_w() / n as f64;
    let width = (slot * 0.7).clamp(1.0, 60.0);
    let day = |d: &NaiveDate| d.format("%Y-%m-%d").to_string();
    let starts: Vec<String> = a
        .days
        .iter()
        .map(|d| d.day.format("%b %-d").to_string())
        .collect();
    let budget = if a.daily_token_budget == 0 {
        "no daily token budget".to_string()
    } else {
        format!("daily token budget {}", a.daily_token_budget)
    };
    html! {
        figure.chart.tokens {
            figcaption { strong { (a.account_id) } " — " (used) " tokens; " (budget) }
            svg id=(id) viewBox=(format!("0 0 {W} {H}")) role="img" preserveAspectRatio="xMidYMid meet"
                aria-labelledby=(format!("{id}-title {id}-desc")) data-account=(a.account_id) {
                title id=(format!("{id}-title")) { "Tokens per day of " (a.account_id) }
                desc id=(format!("{id}-desc")) { (used) " tokens in the period; " (budget) "." }
                (y_axis(max))
                @for (i, d) in a.days.iter().enumerate() {
                    @if d.tokens > 0 {
                        @let x = LEFT + slot * i as f64 + (slot - width) / 2.0;
                        @let y = y_of(d.tokens, max);
                        rect.tokens x=(fmt(x)) y=(fmt(y)) width=(fmt(width)) height=(fmt(TOP + plot_h() - y))
                            data-series="tokens" data-start=(day(&d.day)) data-value=(d.tokens) {
                            title { (day(&d.day)) " — " (d.tokens) " tokens" }
                        }
                    }
                }
                @if a.daily_token_budget > 0 {
                    @let y = y_of(a.daily_token_budget, max);
                    line.budget x1=(LEFT) x2=(W - RIGHT) y1=(fmt(y)) y2=(fmt(y))
                        data-series="budget" data-value=(a.daily_token_budget) {
                        title { "Daily token budget — " (a.daily_token_budget) " tokens" }
                    }
                }
                (x_axis(&starts))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_round_up() {
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(1), 1);
        assert_eq!(nice_max(3), 5);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(11), 20);
        assert_eq!(nice_max(5001), 10000);
    }

    #[test]
    fn bars_carry_their_exact_numbers() {
        let start: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().expect("time");
        let svg = bar_chart(
            "c",
            "T",
            "D",
            Period::Day,
            &[Bar {
                start,
                segments: vec![
                    ("sent", 3, "sent"),
                    ("skipped", 0, "skipped"),
                    ("failed", 1, "failed"),
                ],
            }],
        )
        .into_string();
        assert!(
            svg.contains("<title>2026-12-06 12:00 UTC — 3 sent</title>"),
            "{svg}"
        );
        assert!(svg.contains("<title>2026-12-06 12:00 UTC — 1 failed</title>"));
        assert!(!svg.contains("skipped</title>"), "no empty segment");
        assert!(svg.contains(r#"data-start="2026-12-06T12:00:00Z""#));
    }
}
