//! The overview's numbers (`GET /v1/stats`, the dashboard's `/overview`), folded from the `chat`
//! streams: per account and UTC hour, the replies that ended `sent`, `skipped` or `failed`, the
//! reasons of the skipped and failed ones, the model latency of generated replies and the
//! customer messages received; per account and UTC day, the model tokens used.
//!
//! Every bucket is placed by the time the event was recorded (its commit time, stored with it),
//! never the wall clock, so a replay draws the same charts. Memory is bounded by time, not by the
//! history: the fold keeps [`KEEP_DAYS`] days of buckets behind the newest event it folded and
//! drops older ones as it goes (oldest first, by event time), so a replay keeps the same ones.
//! Latency is kept per bucket as a histogram with a fixed precision ([`Latency`]): exact below
//! 128 ms, within 1/64 above, whatever the number of replies.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use wagate_events::chat::ChatEvent;
use wagate_events::reason::ReasonCode;

/// How many days of buckets the model keeps behind its newest event (the longest period asked
/// for is 30 days; one more covers the partial first day).
pub const KEEP_DAYS: i64 = 31;

const HOUR: i64 = 3600;

/// The hour (seconds since the epoch / 3600) that holds `at`.
pub fn hour_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(HOUR)
}

/// The start of hour number `hour`.
pub fn hour_start(hour: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(hour * HOUR, 0)
        .single()
        .unwrap_or_default()
}

/// How a reply ended, for the reasons' counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ending {
    Skipped,
    Failed,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
}

/// How many replies ended one way for one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    pub ending: Ending,
    pub code: ReasonCode,
    pub count: u64,
}

/// A latency histogram of fixed precision: a value below 128 ms is its own bucket; above, a
/// bucket holds the values that share their 7 highest bits (within 1/64 of each other). At
/// most a few thousand buckets whatever the values, usually a handful; integer arithmetic only,
/// so every platform buckets alike.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// Bucket number → replies.
    buckets: BTreeMap<u16, u64>,
}

impl Latency {
    fn bucket(ms: u64) -> u16 {
        if ms < 128 {
            return ms as u16;
        }
        let top = 63 - u64::from(ms.leading_zeros()); // >= 7
        let shift = top - 6;
        let mantissa = ms >> shift; // 64..=127
        (128 + (shift - 1) * 64 + (mantissa - 64)) as u16
    }

    /// The smallest value of bucket `b` (what a percentile in it answers).
    fn floor(b: u16) -> u64 {
        let b = u64::from(b);
        if b < 128 {
            return b;
        }
        let shift = (b - 128) / 64 + 1;
        let mantissa = 64 + (b - 128) % 64;
        mantissa << shift
    }

    pub fn record(&mut self, ms: u64) {
        *self.buckets.entry(Self::bucket(ms)).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Latency) {
        for (b, n) in &other.buckets {
            *self.buckets.entry(*b).or_default() += n;
        }
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The `p`th percentile (nearest rank, `p` in 1..=100) in milliseconds, as the lower bound of
    /// its bucket (exact below 128 ms); `None` without values.
    pub fn percentile(&self, p: u64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (n * p.clamp(1, 100)).div_ceil(100).max(1);
        let mut seen = 0;
        for (b, c) in &self.buckets {
            seen += c;
            if seen >= rank {
                return Some(Self::floor(*b));
            }
        }
        self.buckets.keys().next_back().map(|b| Self::floor(*b))
    }
}

/// One account's numbers in one hour.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourStats {
    /// Replies that ended in each way in this hour.
    pub sent: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Customer messages received (not the account's own, `from_me`).
    pub inbound: u64,
    /// The skipped and failed replies by reason (a few entries).
    pub reasons: Vec<ReasonCount>,
    /// Model latency of the replies generated in this hour (not echo mode or notices, which
    /// call no model).
    pub latency: Latency,
}

impl HourStats {
    fn add(&mut self, other: &HourStats) {
        self.sent += other.sent;
        self.skipped += other.skipped;
        self.failed += other.failed;
        self.inbound += other.inbound;
        for r in &other.reasons {
            self.count_reason(r.ending, r.code, r.count);
        }
        self.latency.merge(&other.latency);
    }

    fn count_reason(&mut self, ending: Ending, code: ReasonCode, n: u64) {
        match self
            .reasons
            .iter_mut()
            .find(|r| r.ending == ending && r.code == code)
        {
            Some(r) => r.count += n,
            None => self.reasons.push(ReasonCount {
                ending,
                code,
                count: n,
            }),
        }
    }
}

/// One hour of a period, summed over the accounts asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourRow {
    pub start: DateTime<Utc>,
    pub sent: u64,
    pub skipped: u64,
    pub failed: u64,
    pub inbound: u64,
    /// Replies whose latency is counted, and their p50 / p95 (ms).
    pub latency_count: u64,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
}

/// The overview's read model. Serializable whole: it is part of the messages read model's
/// checkpoint (ADR 0015).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsModel {
    /// Hour number → account id → its numbers.
    hours: BTreeMap<i64, BTreeMap<String, HourStats>>,
    /// UTC day → account id → model tokens (`total_tokens` of the replies generated and the
    /// transcriptions made that day).
    days: BTreeMap<NaiveDate, BTreeMap<String, u64>>,
    /// The hour of the newest event folded: buckets more than [`KEEP_DAYS`] behind it are gone.
    newest_hour: i64,
}

impl StatsModel {
    /// Folds one chat event of account `account`, recorded at `at`.
    pub fn apply(&mut self, account: &str, at: DateTime<Utc>, event: &ChatEvent) {
        let hour = hour_of(at);
        if hour > self.newest_hour {
            self.newest_hour = hour;
            self.evict();
        }
        if hour < self.oldest_hour() {
            return;
        }
        match event {
            ChatEvent::MessageReceived { from_me: false, .. } => {
                self.at(hour, account).inbound += 1;
            }
            ChatEvent::AiReplySent { .. } => self.at(hour, account).sent += 1,
            ChatEvent::AiReplySkipped { reason, .. } => {
                let s = self.at(hour, account);
                s.skipped += 1;
                s.count_reason(Ending::Skipped, reason.kind(), 1);
            }
            ChatEvent::AiReplyFailed { reason, .. } => {
                let s = self.at(hour, account);
                s.failed += 1;
                s.count_reason(Ending::Failed, reason.kind(), 1);
            }
            ChatEvent::AiReplyGenerated {
                model,
                usage,
                latency_ms,
                notice,
                ..
            } => {
                if notice.is_none() && model != "echo" {
                    self.at(hour, account).latency.record(*latency_ms);
                }
                self.count_tokens(account, at, usage.total_tokens);
            }
            // A transcription's tokens count like a reply's (none without a reported usage).
            ChatEvent::MessageTranscribed {
                usage: Some(usage), ..
            } => self.count_tokens(account, at, usage.total_tokens),
            _ => {}
        }
    }

    fn count_tokens(&mut self, account: &str, at: DateTime<Utc>, tokens: u64) {
        if tokens > 0 {
            *self
                .days
                .entry(at.date_naive())
                .or_default()
                .entry(account.to_string())
                .or_default() += tokens;
        }
    }

    fn at(&mut self, hour: i64, account: &str) -> &mut HourStats {
        let accounts = self.hours.entry(hour).or_default();
        if !accounts.contains_key(account) {
            accounts.insert(account.to_string(), HourStats::default());
        }
        accounts
            .get_mut(account)
            .expect("the account's bucket was just inserted")
    }

    /// The oldest hour kept.
    fn oldest_hour(&self) -> i64 {
        self.newest_hour - KEEP_DAYS * 24 + 1
    }

    /// The oldest day kept.
    fn oldest_day(&self) -> NaiveDate {
        hour_start(self.oldest_hour()).date_naive()
    }

    fn evict(&mut self) {
        let oldest = self.oldest_hour();
        if self
            .hours
            .first_key_value()
            .is_some_and(|(h, _)| *h < oldest)
        {
            self.hours = self.hours.split_off(&oldest);
        }
        let day = self.oldest_day();
        if self.days.first_key_value().is_some_and(|(d, _)| *d < day) {
            self.days = self.days.split_off(&day);
        }
    }

    /// The hours from the one holding `from` to the one holding `to`, each summed over `account`
    /// (all accounts when `None`); hours without events are zeros.
    pub fn hours(
        &self,
        account: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<HourRow> {
        (hour_of(from)..=hour_of(to))
            .map(|h| {
                let s = self.hour_sum(h, account);
                HourRow {
                    start: hour_start(h),
                    sent: s.sent,
                    skipped: s.skipped,
                    failed: s.failed,
                    inbound: s.inbound,
                    latency_count: s.latency.count(),
                    p50_ms: s.latency.percentile(50),
                    p95_ms: s.latency.percentile(95),
                }
            })
            .collect()
    }

    fn hour_sum(&self, hour: i64, account: Option<&str>) -> HourStats {
        let mut sum = HourStats::default();
        if let Some(accounts) = self.hours.get(&hour) {
            match account {
                Some(a) => {
                    if let Some(s) = accounts.get(a) {
                        sum.add(s);
                    }
                }
                None => accounts.values().for_each(|s| sum.add(s)),
            }
        }
        sum
    }

    /// The skip and failure reasons of the replies that ended between the hours holding `from`
    /// and `to`, most frequent first (then by ending and code, so the order is stable).
    pub fn reasons(
        &self,
        account: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<ReasonCount> {
        let mut sum = HourStats::default();
        for h in self
            .hours
            .range(hour_of(from)..=hour_of(to))
            .map(|(h, _)| *h)
        {
            sum.add(&self.hour_sum(h, account));
        }
        let mut out = sum.reasons;
        out.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.ending.cmp(&b.ending))
                .then_with(|| a.code.as_str().cmp(b.code.as_str()))
        });
        out
    }

    /// The model latency of the replies generated between the hours holding `from` and `to`.
    pub fn latency(
        &self,
        account: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Latency {
        let mut sum = Latency::default();
        for h in self
            .hours
            .range(hour_of(from)..=hour_of(to))
            .map(|(h, _)| *h)
        {
            sum.merge(&self.hour_sum(h, account).latency);
        }
        sum
    }

    /// Model tokens account `account` used on UTC day `day` (0 when out of the kept days).
    pub fn tokens_on(&self, account: &str, day: NaiveDate) -> u64 {
        self.days
            .get(&day)
            .and_then(|a| a.get(account))
            .copied()
            .unwrap_or(0)
    }

    /// The accounts with tokens counted on the days from `from` to `to`.
    pub fn accounts_with_tokens(&self, from: NaiveDate, to: NaiveDate) -> Vec<String> {
        let mut out: Vec<String> = self
            .days
            .range(from..=to)
            .flat_map(|(_, a)| a.keys().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The days from `from` to `to`, oldest first.
    pub fn days(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
        let n = (to - from).num_days();
        (0..=n.max(-1)).map(|i| from + Duration::days(i)).collect()
    }

    /// How many hour buckets (per account) the model holds (its memory).
    pub fn buckets(&self) -> usize {
        self.hours.values().map(BTreeMap::len).sum::<usize>()
            + self.days.values().map(BTreeMap::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(v: serde_json::Value) -> ChatEvent {
        serde_json::from_value(v).expect("a chat event")
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("a time")
    }

    fn received(from_me: bool) -> ChatEvent {
        event(
            json!({"MessageReceived":{"message_id":"m","from":"1","text":"hi","from_me":from_me,"at":"2026-11-25T10:00:00Z"}}),
        )
    }

    fn generated(latency: u64, tokens: u64, model: &str) -> ChatEvent {
        event(
            json!({"AiReplyGenerated":{"reply_id":"r","text":"x","model":model,"usage":{"prompt_tokens":0,"completion_tokens":tokens,"total_tokens":tokens},"latency_ms":latency}}),
        )
    }

    fn sent() -> ChatEvent {
        event(json!({"AiReplySent":{"reply_id":"r","message_id":"o"}}))
    }

    fn skipped(code: &str) -> ChatEvent {
        event(json!({"AiReplySkipped":{"reply_id":"r","reason":{"code":code}}}))
    }

    fn failed(code: &str) -> ChatEvent {
        event(json!({"AiReplyFailed":{"reply_id":"r","reason":{"code":code}}}))
    }

    #[test]
    fn counts_endings_reasons_inbound_and_tokens_by_hour_and_account() {
        let mut m = StatsModel::default();
        let ten = t("2026-11-25T10:05:00Z");
        let eleven = t("2026-11-25T11:59:59Z");
        m.apply("acme", ten, &received(false));
        m.apply("acme", ten, &received(true));
        m.apply("acme", ten, &generated(40, 18, "gpt"));
        m.apply("acme", ten, &sent());
        m.apply("acme", ten, &skipped("no_api_key"));
        m.apply("beta", ten, &received(false));
        m.apply("beta", eleven, &failed("interrupted"));
        m.apply("beta", eleven, &skipped("no_api_key"));
        m.apply("beta", eleven, &generated(0, 0, "echo"));

        let all = m.hours(None, t("2026-11-25T09:30:00Z"), eleven);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].start, t("2026-11-25T09:00:00Z"));
        assert_eq!((all[0].sent, all[0].inbound), (0, 0));
        assert_eq!(
            (all[1].sent, all[1].skipped, all[1].failed, all[1].inbound),
            (1, 1, 0, 2)
        );
        assert_eq!((all[1].p50_ms, all[1].p95_ms), (Some(40), Some(40)));
        assert_eq!(
            (
                all[2].sent,
                all[2].skipped,
                all[2].failed,
                all[2].latency_count
            ),
            (0, 1, 1, 0),
            "echo mode calls no model"
        );
        let acme = m.hours(Some("acme"), eleven, eleven);
        assert_eq!(acme[0].failed, 0);

        let reasons = m.reasons(None, ten, eleven);
        assert_eq!(
            reasons,
            vec![
                ReasonCount {
                    ending: Ending::Skipped,
                    code: ReasonCode::NoApiKey,
                    count: 2
                },
                ReasonCount {
                    ending: Ending::Failed,
                    code: ReasonCode::Interrupted,
                    count: 1
                },
            ]
        );
        assert_eq!(m.reasons(Some("beta"), ten, ten), vec![]);
        assert_eq!(m.tokens_on("acme", ten.date_naive()), 18);
        assert_eq!(m.tokens_on("beta", ten.date_naive()), 0);
        assert_eq!(
            m.accounts_with_tokens(ten.date_naive(), ten.date_naive()),
            ["acme"]
        );
    }

    #[test]
    fn latency_percentiles_are_exact_below_128_ms_and_within_a_64th_above() {
        let mut l = Latency::default();
        for ms in 1..=100 {
            l.record(ms);
        }
        assert_eq!(l.percentile(50), Some(50));
        assert_eq!(l.percentile(95), Some(95));
        for ms in [128, 129, 1000, 1234, 65_432, 120_000, u64::MAX] {
            let b = Latency::bucket(ms);
            let floor = Latency::floor(b);
            assert!(floor <= ms && ms - floor <= ms / 64, "{ms}: {floor}");
            assert_eq!(Latency::bucket(floor), b);
        }
        let mut one = Latency::default();
        one.record(1500);
        assert_eq!(one.percentile(50), Some(1488));
        assert_eq!(Latency::default().percentile(50), None);
    }

    #[test]
    fn keeps_thirty_one_days_behind_the_newest_event() {
        let mut m = StatsModel::default();
        let start = t("2026-10-01T00:30:00Z");
        for day in 0..40 {
            let at = start + Duration::days(day);
            m.apply("acme", at, &received(false));
            m.apply("acme", at, &generated(10, 5, "gpt"));
        }
        let newest = start + Duration::days(39);
        let kept: u64 = m
            .hours(None, newest - Duration::days(60), newest)
            .iter()
            .map(|h| h.inbound)
            .sum();
        assert_eq!(kept, 31);
        // Days: the one holding the oldest hour kept, and every later one.
        assert_eq!(m.buckets(), 31 + 32);
        assert_eq!(
            m.tokens_on("acme", (start + Duration::days(7)).date_naive()),
            0
        );
        assert_eq!(
            m.tokens_on("acme", (start + Duration::days(8)).date_naive()),
            5
        );
        // An event older than what is kept changes nothing.
        let before = m.clone();
        m.apply("acme", start, &received(false));
        assert_eq!(m, before);
        // The model reads back from its checkpoint form.
        let back: StatsModel =
            serde_json::from_str(&serde_json::to_string(&m).expect("json")).expect("reads back");
        assert_eq!(back, m);
    }
}
