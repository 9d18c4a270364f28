//! `GET /metrics`: valid Prometheus text with every documented family, request metrics by
//! route template (never the path), and one registry per gateway.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::both_stores;
use crate::helpers::{Backend, TestApp};

/// Every family of docs/API.md "Metrics" with its type (`wagate_webhook_deliveries` and the lag
/// need the store, which answers in these tests).
const FAMILIES: &[(&str, &str)] = &[
    ("wagate_ai_replies_total", "counter"),
    ("wagate_ai_replies_pending", "gauge"),
    ("wagate_model_tokens_total", "counter"),
    ("wagate_model_latency_seconds", "histogram"),
    ("wagate_events_position", "gauge"),
    ("wagate_webhook_deliveries", "gauge"),
    ("wagate_webhook_delivery_lag_seconds", "gauge"),
    ("wagate_webhook_attempts_total", "counter"),
    ("wagate_actors", "gauge"),
    ("wagate_store_errors_total", "counter"),
    ("wagate_start_events_folded", "gauge"),
    ("wagate_start_seconds", "gauge"),
    ("wagate_read_model_checkpoint_position", "gauge"),
    ("http_requests_total", "counter"),
    ("http_request_duration_seconds", "histogram"),
];

/// One sample line.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses a sample line of the text format 0.0.4: `name{label="value",…} value` (label values
/// quoted with `\\`, `\"` and `\n` escapes; no timestamp: we never write one). `None` when the
/// line does not have that shape.
fn sample(line: &str) -> Option<Sample> {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..end];
    if !is_name(name) {
        return None;
    }
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        rest = body;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once("=\"")?;
            if !is_name(key) || key.starts_with("__") {
                return None;
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let close = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        _ => return None,
                    },
                    (_, c) => value.push(c),
                }
            };
            labels
                .insert(key.to_string(), value)
                .is_none()
                .then_some(())?;
            rest = &after[close + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = rest.strip_prefix(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse::<f64>().ok().filter(|v| v.is_finite())?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Checks the exposition line by line (HELP, then TYPE, then the samples of each family, every
/// sample in its declared family and of the text format's shape) and returns the samples and the
/// families with their types.
fn parse(text: &str) -> (Vec<Sample>, HashMap<String, String>) {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(is_name(name) && !help.is_empty(), "{line}");
            assert!(helped.insert(name.to_string()), "HELP twice: {line}");
            current = None;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(helped.contains(name), "TYPE without HELP: {line}");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "type: {line}"
            );
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "TYPE twice: {line}"
            );
            current = Some(name.to_string());
        } else {
            let s = sample(line).unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let family = current
                .as_deref()
                .unwrap_or_else(|| panic!("sample outside a family: {line}"));
            let own = match types[family].as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|x| s.name.strip_suffix(x) == Some(family)),
                _ => s.name == family,
            };
            assert!(own, "sample of family {family}: {line}");
            samples.push(s);
        }
    }
    (samples, types)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// The exposition parses, carries every documented family with its type, and the request
/// metrics name route templates, never a path (no account id, no phone number).
async fn exposition_is_valid_prometheus_text(app: TestApp) {
    app.create_account("acme").await;
    let r = app.admin("GET", "/v1/accounts/acme", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let phone = "491709876543";
    let r = app
        .admin("GET", &format!("/v1/no-such-route/{phone}"), None)
        .await;
    assert_eq!(r.status, 404);
    let r = app.call("BREW", "/healthz", None, None).await;
    assert_eq!(r.status, 405);
    app.metrics().await;

    let r = app.call("GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200);
    let ct = r.headers["content-type"].to_str().unwrap_or_default();
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let (s, types) = parse(&r.text);
    if std::env::var_os("WAGATE_PRINT_METRICS").is_some() {
        println!("{}", r.text);
    }
    for (name, kind) in FAMILIES {
        assert_eq!(
            types.get(*name).map(String::as_str),
            Some(*kind),
            "{name}: {}",
            r.text
        );
    }

    let account = [
        ("method", "GET"),
        ("route", "/v1/accounts/{acc}"),
        ("status", "200"),
    ];
    assert_eq!(
        value(&s, "http_requests_total", &account),
        Some(1.0),
        "{}",
        r.text
    );
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert_eq!(value(&s, "http_requests_total", &unmatched), Some(1.0));
    let brew = [
        ("method", "other"),
        ("route", "/healthz"),
        ("status", "405"),
    ];
    assert_eq!(
        value(&s, "http_requests_total", &brew),
        Some(1.0),
        "{}",
        r.text
    );
    let scrapes = [("method", "GET"), ("route", "/metrics"), ("status", "200")];
    assert_eq!(value(&s, "http_requests_total", &scrapes), Some(1.0));
    assert!(!r.text.contains(phone) && !r.text.contains("acme") && !r.text.contains("BREW"));

    let route = [("route", "/v1/accounts/{acc}")];
    let buckets: Vec<(&str, f64)> = s
        .iter()
        .filter(|x| x.name == "http_request_duration_seconds_bucket")
        .filter(|x| x.labels.get("route").map(String::as_str) == Some(route[0].1))
        .map(|x| (x.labels["le"].as_str(), x.value))
        .collect();
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&("+Inf", 1.0)));
    assert_eq!(
        value(&s, "http_request_duration_seconds_count", &route),
        Some(1.0)
    );

    assert!(value(&s, "wagate_actors", &[("kind", "chat")]).is_some());
    assert_eq!(
        value(&s, "wagate_ai_replies_total", &[("status", "sent")]),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "wagate_events_position", &[]),
        Some(app.head().await as f64)
    );
    assert_eq!(value(&s, "wagate_store_errors_total", &[]), Some(0.0));
}
both_stores!(exposition, exposition_is_valid_prometheus_text);

/// Two gateways in one process keep their own request metrics (no global recorder).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gateway_counts_its_own_requests() {
    let (Some(a), Some(b)) = (
        TestApp::spawn(Backend::Sqlite).await,
        TestApp::spawn(Backend::Sqlite).await,
    ) else {
        return;
    };
    for _ in 0..3 {
        assert_eq!(a.call("GET", "/healthz", None, None).await.status, 200);
    }
    let healthz = [("method", "GET"), ("route", "/healthz"), ("status", "200")];
    let (sa, _) = parse(&a.metrics().await);
    let (sb, _) = parse(&b.metrics().await);
    assert_eq!(value(&sa, "http_requests_total", &healthz), Some(3.0));
    assert_eq!(value(&sb, "http_requests_total", &healthz), None);
}
