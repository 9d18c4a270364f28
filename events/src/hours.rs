//! Business hours: when a WhatsApp business is open, so the AI answers only then.
//!
//! A schedule is a time zone and weekly opening ranges in local time, as an admin writes them:
//!
//! ```json
//! {"time_zone": "Europe/Lisbon",
//!  "ranges": [{"days": "mon-fri", "open": "09:00", "close": "18:00"},
//!             {"days": "sat", "open": "10:00", "close": "13:00"}]}
//! ```
//!
//! The module is pure: no I/O and no clock, the instant asked about is always passed in. Every
//! method parses the (small) schedule into a private compiled form first, so a schedule that was
//! never validated cannot make it panic: [`BusinessHours::is_open`] treats an invalid schedule as
//! "always open" and [`BusinessHours::next_open`] answers `None` for it.
//!
//! # Local time and daylight saving
//!
//! Each range, on each local date it applies to, becomes an interval of instants
//! `[open, close)`: its local opening and closing times resolved in the schedule's time zone.
//! A local time that does not exist on that date (skipped by a spring-forward change) resolves
//! to the first instant after the gap; a local time that exists twice (repeated by a fall-back
//! change) resolves to the earlier of the two. The business is open at an instant when one of
//! these intervals holds it. Resolving this way keeps the order of local times, so ranges that
//! do not overlap in local time never overlap as instants, and ranges that touch (including at
//! midnight, `"24:00"` of one day and `"00:00"` of the next) still touch.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::DomainError;

/// The most ranges a schedule may have.
pub const MAX_RANGES: usize = 50;

/// The field every validation error names.
const FIELD: &str = "business_hours";

/// Minutes in a day: the value of `"24:00"`.
const DAY_MINUTES: u16 = 24 * 60;

/// Abbreviations of the days, Monday first (the index is `num_days_from_monday`).
const DAY_ABBREVIATIONS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Names of the days in messages, Monday first.
const DAY_NAMES: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Every day, as a bit set (bit 0 = Monday).
const EVERY_DAY: u8 = 0b111_1111;

/// Local dates looked at before the date of the instant asked about. One would do in any real
/// time zone; two also cover the historical day-long clock changes of the tz database.
const DAYS_BEHIND: u64 = 2;

/// Local dates looked at from the date of the instant asked about onwards. A valid schedule
/// opens within 8 days of any instant; an opening can however fall entirely into a
/// daylight-saving gap on one date (a range such as `02:10-02:40` on the Sunday of a
/// spring-forward change), and then its next occurrence is a week later: 16 days cover that.
const DAYS_AHEAD: u64 = 16;

/// How far from a skipped local time the instant ending its gap is searched for, in seconds.
/// UTC offsets stay within ±26 hours, so the gap's end is within 27 hours of the local time
/// read as UTC.
const GAP_SEARCH_SECONDS: i64 = 27 * 3600;

/// A time zone and weekly opening ranges, as an admin sets them (JSON):
///
/// ```json
/// {"time_zone": "Europe/Lisbon", "ranges": [{"days": "mon-fri", "open": "09:00", "close": "18:00"}, {"days": "sat", "open": "10:00", "close": "13:00"}]}
/// ```
///
/// Deserializing does not check it: call [`BusinessHours::validate`] before storing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    /// IANA time zone name, e.g. `"Europe/Lisbon"` (exact spelling, as in the tz database).
    pub time_zone: String,
    /// The weekly opening ranges, 1 to [`MAX_RANGES`] of them, not overlapping.
    pub ranges: Vec<HoursRange>,
}

/// One weekly opening range: the days it applies to and its local opening and closing times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursRange {
    /// Days: "mon".."sun", a span "mon-fri" (a wrapping span like "fri-mon" is allowed), or a comma list "mon,wed,fri" of days and spans; case-insensitive; "daily" = every day.
    pub days: String,
    /// "HH:MM" local time, 00:00..=23:59.
    pub open: String,
    /// "HH:MM" local time after `open`, up to "24:00" (end of the day). A range never crosses midnight: write two ranges.
    pub close: String,
}

impl BusinessHours {
    /// Checks the schedule; errors name the field "business_hours" with a message saying what is
    /// wrong and which range (1-based), e.g. "unknown time zone \"Mars/Base\"",
    /// "range 2: close 09:00 is not after open 17:00", "range 3 overlaps range 1 on Monday",
    /// "range 1: unknown day \"funday\"", "range 1: open \"9am\" is not HH:MM", "no ranges" (an empty list is refused: to turn business hours off, the setting is cleared instead), "more than 50 ranges".
    /// Overlap means two ranges share a day and their [open, close) intervals intersect (touching, 09:00-12:00 and 12:00-18:00, is fine).
    ///
    /// The first problem found is reported: the time zone, then the number of ranges, then each
    /// range in order (its days, open, close, then overlaps with the ranges before it).
    pub fn validate(&self) -> Result<(), DomainError> {
        self.compile().map(drop)
    }

    /// Whether the business is open at `at`.
    ///
    /// An invalid schedule (one [`BusinessHours::validate`] refuses) counts as always open.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        match self.compile() {
            Ok(compiled) => matches!(compiled.state_at(at), State::Open),
            Err(_) => true,
        }
    }

    /// When the business is closed at `at`: the instant (UTC) it opens next — it identifies this
    /// closed period (every instant of one closed period gives the same answer). `None` when it is
    /// open at `at`, or when the schedule never opens (invalid schedule).
    ///
    /// The answer is the start of an open *period*: ranges that touch, also across midnight
    /// (`mon 18:00-24:00` and `tue 00:00-06:00`), form one period, which opens at its first
    /// range's opening time.
    pub fn next_open(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.compile().ok()?.state_at(at) {
            State::ClosedUntil(opens) => Some(opens),
            State::Open | State::Unknown => None,
        }
    }

    /// Parses and checks the schedule into the form the queries use.
    fn compile(&self) -> Result<Compiled, DomainError> {
        let tz = Tz::from_str(&self.time_zone).map_err(|_| {
            DomainError::invalid(
                FIELD,
                format!("unknown time zone {:?}", self.time_zone.as_str()),
            )
        })?;
        if self.ranges.is_empty() {
            return Err(DomainError::invalid(FIELD, "no ranges"));
        }
        if self.ranges.len() > MAX_RANGES {
            return Err(DomainError::invalid(
                FIELD,
                format!("more than {MAX_RANGES} ranges"),
            ));
        }

        let mut parsed: Vec<ParsedRange> = Vec::with_capacity(self.ranges.len());
        for (index, range) in self.ranges.iter().enumerate() {
            let number = index + 1;
            let this = ParsedRange::parse(range).map_err(|message| {
                DomainError::invalid(FIELD, format!("range {number}: {message}"))
            })?;
            if let Some((other, day)) = parsed
                .iter()
                .enumerate()
                .find_map(|(other, earlier)| this.overlap_day(earlier).map(|day| (other, day)))
            {
                return Err(DomainError::invalid(
                    FIELD,
                    format!(
                        "range {number} overlaps range {} on {}",
                        other + 1,
                        DAY_NAMES[day]
                    ),
                ));
            }
            parsed.push(this);
        }

        Ok(Compiled::new(tz, &parsed))
    }
}

/// One range, parsed: its days as a bit set (bit 0 = Monday) and its times in minutes since
/// local midnight, `open < close <= 24:00`.
#[derive(Debug, Clone, Copy)]
struct ParsedRange {
    days: u8,
    open: u16,
    close: u16,
}

impl ParsedRange {
    /// Parses one range; the error is the message without the range number.
    fn parse(range: &HoursRange) -> Result<Self, String> {
        let days = parse_days(&range.days)?;
        let open = parse_time(&range.open, false).map_err(|e| e.message("open", &range.open))?;
        let close = parse_time(&range.close, true).map_err(|e| e.message("close", &range.close))?;
        if close <= open {
            return Err(format!(
                "close {} is not after open {}",
                Hhmm(close),
                Hhmm(open)
            ));
        }
        Ok(Self { days, open, close })
    }

    /// The first day (Monday first) on which both ranges are open at the same time, if any.
    fn overlap_day(&self, other: &Self) -> Option<usize> {
        let shared = self.days & other.days;
        let intersect = self.open < other.close && other.open < self.close;
        // `trailing_zeros` of a non-zero u8 is below 8.
        (shared != 0 && intersect).then(|| shared.trailing_zeros() as usize)
    }
}

/// An opening interval within one local day, in minutes since local midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval {
    open: u16,
    close: u16,
}

/// A valid schedule, ready for queries.
#[derive(Debug)]
struct Compiled {
    tz: Tz,
    /// The opening intervals of every weekday, Monday first, each weekday's sorted by time and
    /// with touching intervals merged.
    intervals: Vec<Interval>,
    /// The intervals of weekday `w` (0 = Monday) are `intervals[day_start[w]..day_start[w + 1]]`.
    day_start: [usize; 8],
}

/// Where an instant stands in a compiled schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Open at the instant.
    Open,
    /// Closed at the instant; the next open period starts at this instant.
    ClosedUntil(DateTime<Utc>),
    /// Closed, with no opening found: only at the edges of the representable time range.
    Unknown,
}

impl Compiled {
    /// Builds the per-weekday intervals of non-overlapping ranges.
    fn new(tz: Tz, ranges: &[ParsedRange]) -> Self {
        let mut intervals = Vec::with_capacity(ranges.len() * 2);
        let mut day_start = [0; 8];
        for (day, start) in day_start.iter_mut().enumerate().take(7) {
            let first = intervals.len();
            *start = first;
            intervals.extend(ranges.iter().filter(|r| r.days & (1 << day) != 0).map(|r| {
                Interval {
                    open: r.open,
                    close: r.close,
                }
            }));
            intervals[first..].sort_unstable_by_key(|i| i.open);
            // Merge touching intervals (validation refused overlapping ones).
            let mut kept = first;
            for i in first..intervals.len() {
                if kept > first && intervals[kept - 1].close >= intervals[i].open {
                    intervals[kept - 1].close = intervals[kept - 1].close.max(intervals[i].close);
                } else {
                    intervals[kept] = intervals[i];
                    kept += 1;
                }
            }
            intervals.truncate(kept);
        }
        day_start[7] = intervals.len();
        Self {
            tz,
            intervals,
            day_start,
        }
    }

    /// Whether the schedule is open at `at`, or when it opens next.
    ///
    /// Walks the local dates around `at` in order and, on each, its intervals resolved to
    /// instants, which come out ordered and disjoint. The first non-empty one that ends after
    /// `at` either holds `at` (open) or starts after it: then nothing between `at` and its start
    /// is open, so that start is the start of the next open period.
    fn state_at(&self, at: DateTime<Utc>) -> State {
        let Some(local) = local_time(&self.tz, at) else {
            return State::Unknown;
        };
        let today = local.date();
        let mut date = today
            .checked_sub_days(Days::new(DAYS_BEHIND))
            .unwrap_or(today);
        let Some(last) = today.checked_add_days(Days::new(DAYS_AHEAD)) else {
            return State::Unknown;
        };
        while date <= last {
            let weekday = date.weekday().num_days_from_monday() as usize;
            let day = &self.intervals[self.day_start[weekday]..self.day_start[weekday + 1]];
            for interval in day {
                let (Some(start), Some(end)) = (
                    self.resolve(date, interval.open),
                    self.resolve(date, interval.close),
                ) else {
                    continue;
                };
                if end <= start || end <= at {
                    continue;
                }
                return if start <= at {
                    State::Open
                } else {
                    State::ClosedUntil(start)
                };
            }
            match date.succ_opt() {
                Some(next) => date = next,
                None => break,
            }
        }
        State::Unknown
    }

    /// The instant of a local time (`minutes` since midnight of `date`, up to 24:00, which is
    /// midnight of the next date): the earlier one when it is repeated, the first instant after
    /// the gap when it is skipped. `None` only outside the representable time range.
    fn resolve(&self, date: NaiveDate, minutes: u16) -> Option<DateTime<Utc>> {
        let local = if minutes >= DAY_MINUTES {
            date.succ_opt()?.and_time(NaiveTime::MIN)
        } else {
            let time =
                NaiveTime::from_hms_opt(u32::from(minutes / 60), u32::from(minutes % 60), 0)?;
            date.and_time(time)
        };
        match self.tz.from_local_datetime(&local) {
            chrono::LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
            chrono::LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
            chrono::LocalResult::None => gap_end(&self.tz, local),
        }
    }
}

/// The local time of `at` in `tz`; `None` outside the representable range.
fn local_time(tz: &Tz, at: DateTime<Utc>) -> Option<NaiveDateTime> {
    let utc = at.naive_utc();
    utc.checked_add_offset(tz.offset_from_utc_datetime(&utc).fix())
}

/// The first instant after the gap that skips the local time `local`: the instant whose local
/// time is after `local` while the second before it is not. Binary search on whole seconds (the
/// tz database changes offsets on whole seconds).
fn gap_end(tz: &Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let after = |seconds: i64| -> Option<bool> {
        let at = DateTime::from_timestamp(seconds, 0)?;
        Some(local_time(tz, at)? > local)
    };
    let read_as_utc = local.and_utc().timestamp();
    let mut before_gap = read_as_utc.checked_sub(GAP_SEARCH_SECONDS)?;
    let mut after_gap = read_as_utc.checked_add(GAP_SEARCH_SECONDS)?;
    if after(before_gap)? || !after(after_gap)? {
        return None;
    }
    while after_gap - before_gap > 1 {
        let middle = before_gap + (after_gap - before_gap) / 2;
        if after(middle)? {
            after_gap = middle;
        } else {
            before_gap = middle;
        }
    }
    DateTime::from_timestamp(after_gap, 0)
}

/// Parses a days expression into a bit set (bit 0 = Monday); the error is the message.
fn parse_days(text: &str) -> Result<u8, String> {
    if text.trim().is_empty() {
        return Err("days is empty".to_owned());
    }
    let mut days = 0;
    for part in text.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("empty day in {text:?}"));
        }
        if part.eq_ignore_ascii_case("daily") {
            days |= EVERY_DAY;
            continue;
        }
        let day = |name: &str| -> Result<usize, String> {
            let name = name.trim();
            DAY_ABBREVIATIONS
                .iter()
                .position(|abbreviation| abbreviation.eq_ignore_ascii_case(name))
                .ok_or_else(|| format!("unknown day {name:?}"))
        };
        match part.split_once('-') {
            None => days |= 1 << day(part)?,
            Some((first, last)) => {
                let (first, last) = (day(first)?, day(last)?);
                // Walk from the first day to the last, wrapping after Sunday.
                let mut d = first;
                loop {
                    days |= 1 << d;
                    if d == last {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
        }
    }
    Ok(days)
}

/// Why a time of day was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeError {
    /// Not two digits, a colon and two digits.
    Format,
    /// Well formed but not a time of day (beyond 23:59, or 24:00 for a closing time).
    Range { allow_end_of_day: bool },
}

impl TimeError {
    /// The message for the field `name` holding `text`.
    fn message(self, name: &str, text: &str) -> String {
        match self {
            Self::Format => format!("{name} {text:?} is not HH:MM"),
            Self::Range { allow_end_of_day } => format!(
                "{name} {text:?} is not a time of day (00:00 to {})",
                if allow_end_of_day { "24:00" } else { "23:59" }
            ),
        }
    }
}

/// Parses "HH:MM" into minutes since midnight: 00:00..=23:59, or also 24:00 when
/// `allow_end_of_day`.
fn parse_time(text: &str, allow_end_of_day: bool) -> Result<u16, TimeError> {
    let &[h1, h2, b':', m1, m2] = text.as_bytes() else {
        return Err(TimeError::Format);
    };
    let digit = |b: u8| -> Result<u16, TimeError> {
        if b.is_ascii_digit() {
            Ok(u16::from(b - b'0'))
        } else {
            Err(TimeError::Format)
        }
    };
    let hours = digit(h1)? * 10 + digit(h2)?;
    let minutes = digit(m1)? * 10 + digit(m2)?;
    let total = hours * 60 + minutes;
    let fits = minutes < 60 && (total < DAY_MINUTES || (allow_end_of_day && total == DAY_MINUTES));
    if fits {
        Ok(total)
    } else {
        Err(TimeError::Range { allow_end_of_day })
    }
}

/// Minutes since midnight shown as "HH:MM".
struct Hhmm(u16);

impl fmt::Display for Hhmm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn range(days: &str, open: &str, close: &str) -> HoursRange {
        HoursRange {
            days: days.to_owned(),
            open: open.to_owned(),
            close: close.to_owned(),
        }
    }

    fn hours(time_zone: &str, ranges: &[(&str, &str, &str)]) -> BusinessHours {
        BusinessHours {
            time_zone: time_zone.to_owned(),
            ranges: ranges
                .iter()
                .map(|&(days, open, close)| range(days, open, close))
                .collect(),
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    /// The validation message of a schedule, asserting the field.
    fn error(hours: &BusinessHours) -> String {
        match hours.validate() {
            Err(DomainError::Invalid { field, message }) => {
                assert_eq!(field, "business_hours");
                message
            }
            other => panic!("expected an invalid business_hours, got {other:?}"),
        }
    }

    fn weekdays_lisbon() -> BusinessHours {
        hours(
            "Europe/Lisbon",
            &[("mon-fri", "09:00", "18:00"), ("sat", "10:00", "13:00")],
        )
    }

    #[test]
    fn hours_json_round_trips_and_refuses_unknown_fields() {
        let json = r#"{"time_zone": "Europe/Lisbon", "ranges": [{"days": "mon-fri", "open": "09:00", "close": "18:00"}, {"days": "sat", "open": "10:00", "close": "13:00"}]}"#;
        let parsed: BusinessHours = serde_json::from_str(json).unwrap();
        assert_eq!(parsed, weekdays_lisbon());
        assert!(parsed.validate().is_ok());
        let back: BusinessHours =
            serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
        assert_eq!(back, parsed);

        let extra_top = r#"{"time_zone": "UTC", "ranges": [], "holidays": []}"#;
        let err = serde_json::from_str::<BusinessHours>(extra_top).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `holidays`"),
            "{err}"
        );
        let extra_range = r#"{"time_zone": "UTC", "ranges": [{"days": "mon", "open": "09:00", "close": "10:00", "note": "x"}]}"#;
        let err = serde_json::from_str::<BusinessHours>(extra_range).unwrap_err();
        assert!(err.to_string().contains("unknown field `note`"), "{err}");
    }

    #[test]
    fn hours_validation_messages() {
        let cases: &[(BusinessHours, &str)] = &[
            (
                hours("Mars/Base", &[("mon", "09:00", "17:00")]),
                "unknown time zone \"Mars/Base\"",
            ),
            (hours("UTC", &[]), "no ranges"),
            (
                hours(
                    "UTC",
                    &[("mon", "09:00", "17:00"), ("tue", "17:00", "09:00")],
                ),
                "range 2: close 09:00 is not after open 17:00",
            ),
            (
                hours("UTC", &[("tue", "09:00", "09:00")]),
                "range 1: close 09:00 is not after open 09:00",
            ),
            (
                hours(
                    "UTC",
                    &[
                        ("mon", "09:00", "12:00"),
                        ("tue", "09:00", "12:00"),
                        ("sun-mon", "11:00", "13:00"),
                    ],
                ),
                "range 3 overlaps range 1 on Monday",
            ),
            (
                hours("UTC", &[("mon,funday", "09:00", "17:00")]),
                "range 1: unknown day \"funday\"",
            ),
            (
                hours("UTC", &[("mon-funday", "09:00", "17:00")]),
                "range 1: unknown day \"funday\"",
            ),
            (
                hours("UTC", &[("", "09:00", "17:00")]),
                "range 1: days is empty",
            ),
            (
                hours("UTC", &[("mon,,fri", "09:00", "17:00")]),
                "range 1: empty day in \"mon,,fri\"",
            ),
            (
                hours("UTC", &[("mon", "9am", "17:00")]),
                "range 1: open \"9am\" is not HH:MM",
            ),
            (
                hours("UTC", &[("mon", "9:00", "17:00")]),
                "range 1: open \"9:00\" is not HH:MM",
            ),
            (
                hours("UTC", &[("mon", "09:00", "5pm")]),
                "range 1: close \"5pm\" is not HH:MM",
            ),
            (
                hours("UTC", &[("mon", "24:00", "24:00")]),
                "range 1: open \"24:00\" is not a time of day (00:00 to 23:59)",
            ),
            (
                hours("UTC", &[("mon", "09:00", "24:01")]),
                "range 1: close \"24:01\" is not a time of day (00:00 to 24:00)",
            ),
            (
                hours("UTC", &[("mon", "09:60", "10:00")]),
                "range 1: open \"09:60\" is not a time of day (00:00 to 23:59)",
            ),
        ];
        for (schedule, message) in cases {
            assert_eq!(error(schedule), *message, "{schedule:?}");
        }

        let too_many = BusinessHours {
            time_zone: "UTC".to_owned(),
            ranges: vec![range("mon", "09:00", "10:00"); MAX_RANGES + 1],
        };
        assert_eq!(error(&too_many), "more than 50 ranges");

        // The full error renders with its field.
        let err = hours("Mars/Base", &[]).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "business_hours: unknown time zone \"Mars/Base\""
        );
    }

    #[test]
    fn hours_validation_accepts_what_is_allowed() {
        let ok = [
            hours("UTC", &[("daily", "00:00", "24:00")]),
            hours(
                "America/Sao_Paulo",
                &[("MON-Fri", "09:00", "12:00"), ("mon-fri", "12:00", "18:00")],
            ),
            hours(
                "UTC",
                &[("fri-mon", "09:00", "17:00"), ("tue-thu", "09:00", "17:00")],
            ),
            hours(
                "UTC",
                &[
                    ("mon, wed ,fri", "09:00", "17:00"),
                    ("tue,thu,sat-sun", "09:00", "17:00"),
                ],
            ),
            hours(
                "UTC",
                &[("mon", "18:00", "24:00"), ("tue", "00:00", "06:00")],
            ),
            // A range's own days may repeat.
            hours("UTC", &[("mon-fri,wed", "09:00", "17:00")]),
            BusinessHours {
                time_zone: "UTC".to_owned(),
                ranges: (0..MAX_RANGES)
                    .map(|i| {
                        let open = u16::try_from(i).unwrap() * 20;
                        range(
                            "daily",
                            &Hhmm(open).to_string(),
                            &Hhmm(open + 20).to_string(),
                        )
                    })
                    .collect(),
            },
        ];
        for schedule in &ok {
            assert_eq!(schedule.validate(), Ok(()), "{schedule:?}");
        }
    }

    #[test]
    fn hours_day_expressions() {
        let bits = |text: &str| parse_days(text).unwrap();
        assert_eq!(bits("mon"), 0b000_0001);
        assert_eq!(bits("SUN"), 0b100_0000);
        assert_eq!(bits("mon-fri"), 0b001_1111);
        assert_eq!(bits("fri-mon"), 0b111_0001);
        assert_eq!(bits("sun-sun"), 0b100_0000);
        assert_eq!(bits("mon,wed,fri"), 0b001_0101);
        assert_eq!(bits("mon,sat-sun"), 0b110_0001);
        assert_eq!(bits("Daily"), EVERY_DAY);
        assert_eq!(bits("sat-fri"), EVERY_DAY);
    }

    #[test]
    fn hours_weekday_boundaries() {
        // Lisbon is at UTC+0 in January.
        let h = weekdays_lisbon();
        // Monday 2026-01-05.
        assert!(!h.is_open(utc(2026, 1, 5, 8, 59, 59)));
        assert!(h.is_open(utc(2026, 1, 5, 9, 0, 0)));
        assert!(h.is_open(utc(2026, 1, 5, 17, 59, 59)));
        assert!(!h.is_open(utc(2026, 1, 5, 18, 0, 0)));
        assert_eq!(
            h.next_open(utc(2026, 1, 5, 8, 59, 59)),
            Some(utc(2026, 1, 5, 9, 0, 0))
        );
        assert_eq!(h.next_open(utc(2026, 1, 5, 9, 0, 0)), None);
        assert_eq!(
            h.next_open(utc(2026, 1, 5, 18, 0, 0)),
            Some(utc(2026, 1, 6, 9, 0, 0))
        );
        // Friday evening to Saturday morning.
        assert!(!h.is_open(utc(2026, 1, 9, 18, 0, 0)));
        assert_eq!(
            h.next_open(utc(2026, 1, 9, 18, 0, 0)),
            Some(utc(2026, 1, 10, 10, 0, 0))
        );
        // Saturday.
        assert!(!h.is_open(utc(2026, 1, 10, 9, 59, 59)));
        assert!(h.is_open(utc(2026, 1, 10, 10, 0, 0)));
        assert!(h.is_open(utc(2026, 1, 10, 12, 59, 59)));
        assert!(!h.is_open(utc(2026, 1, 10, 13, 0, 0)));
        // Sunday is closed all day; it opens Monday.
        assert!(!h.is_open(utc(2026, 1, 11, 12, 0, 0)));
        assert_eq!(
            h.next_open(utc(2026, 1, 11, 12, 0, 0)),
            Some(utc(2026, 1, 12, 9, 0, 0))
        );
        // Summer time: Lisbon is UTC+1, 09:00 local is 08:00Z.
        assert!(!h.is_open(utc(2026, 7, 6, 7, 59, 59)));
        assert!(h.is_open(utc(2026, 7, 6, 8, 0, 0)));
        assert!(h.is_open(utc(2026, 7, 6, 16, 59, 59)));
        assert!(!h.is_open(utc(2026, 7, 6, 17, 0, 0)));
    }

    #[test]
    fn hours_sao_paulo_has_a_fixed_offset() {
        // UTC-3 all year: 09:00 local is 12:00Z, in January and in July.
        let h = hours("America/Sao_Paulo", &[("mon-fri", "09:00", "18:00")]);
        for (month, day) in [(1, 5), (7, 6)] {
            assert!(!h.is_open(utc(2026, month, day, 11, 59, 59)));
            assert!(h.is_open(utc(2026, month, day, 12, 0, 0)));
            assert!(h.is_open(utc(2026, month, day, 20, 59, 59)));
            assert!(!h.is_open(utc(2026, month, day, 21, 0, 0)));
        }
        // Friday 21:00Z (18:00 local) is Saturday 00:00Z: still Friday locally, closed.
        assert!(!h.is_open(utc(2026, 1, 10, 1, 0, 0)));
    }

    #[test]
    fn hours_close_at_end_of_day() {
        let h = hours("UTC", &[("wed", "20:00", "24:00")]);
        // Wednesday 2026-01-07.
        assert!(h.is_open(utc(2026, 1, 7, 23, 59, 59)));
        assert!(!h.is_open(utc(2026, 1, 8, 0, 0, 0)));
        assert_eq!(
            h.next_open(utc(2026, 1, 8, 0, 0, 0)),
            Some(utc(2026, 1, 14, 20, 0, 0))
        );
        let always = hours("Europe/Berlin", &[("daily", "00:00", "24:00")]);
        for at in [
            utc(2026, 1, 1, 0, 0, 0),
            utc(2026, 3, 29, 1, 0, 0),
            utc(2026, 10, 25, 0, 30, 0),
            utc(2026, 10, 25, 1, 30, 0),
        ] {
            assert!(always.is_open(at));
            assert_eq!(always.next_open(at), None);
        }
    }

    #[test]
    fn hours_wrapping_spans_and_lists() {
        // Friday to Monday.
        let h = hours("UTC", &[("fri-mon", "10:00", "16:00")]);
        // 2026-01-09 is a Friday.
        for day in [9, 10, 11, 12] {
            assert!(h.is_open(utc(2026, 1, day, 12, 0, 0)), "day {day}");
        }
        for day in [13, 14, 15] {
            assert!(!h.is_open(utc(2026, 1, day, 12, 0, 0)), "day {day}");
        }
        assert_eq!(
            h.next_open(utc(2026, 1, 13, 12, 0, 0)),
            Some(utc(2026, 1, 16, 10, 0, 0))
        );

        let h = hours("UTC", &[("mon,wed,fri-sat", "10:00", "16:00")]);
        let open_days: Vec<u32> = (5..12)
            .filter(|&day| h.is_open(utc(2026, 1, day, 12, 0, 0)))
            .collect();
        assert_eq!(open_days, [5, 7, 9, 10]);
    }

    #[test]
    fn hours_touching_ranges_form_one_period() {
        let h = hours(
            "UTC",
            &[
                ("mon", "18:00", "24:00"),
                ("tue", "00:00", "06:00"),
                ("tue", "06:00", "07:00"),
            ],
        );
        // Monday 2026-01-05 18:00 to Tuesday 07:00 is one open period.
        assert!(!h.is_open(utc(2026, 1, 5, 17, 59, 59)));
        for at in [
            utc(2026, 1, 5, 18, 0, 0),
            utc(2026, 1, 5, 23, 59, 59),
            utc(2026, 1, 6, 0, 0, 0),
            utc(2026, 1, 6, 6, 0, 0),
            utc(2026, 1, 6, 6, 59, 59),
        ] {
            assert!(h.is_open(at), "{at}");
            assert_eq!(h.next_open(at), None, "{at}");
        }
        // After it, the next period starts next Monday 18:00, not at Tuesday's 00:00 or 06:00.
        assert!(!h.is_open(utc(2026, 1, 6, 7, 0, 0)));
        assert_eq!(
            h.next_open(utc(2026, 1, 6, 7, 0, 0)),
            Some(utc(2026, 1, 12, 18, 0, 0))
        );
        assert_eq!(
            h.next_open(utc(2026, 1, 11, 23, 59, 59)),
            Some(utc(2026, 1, 12, 18, 0, 0))
        );
    }

    #[test]
    fn hours_touching_at_a_skipped_midnight_stays_one_period() {
        // Santiago skips 00:00-01:00 on Sunday 2026-09-06 (-04 -> -03, at 04:00Z): Saturday's
        // 24:00 and Sunday's 00:00 both resolve to 04:00Z, so the period is not interrupted.
        let h = hours(
            "America/Santiago",
            &[("sat", "20:00", "24:00"), ("sun", "00:00", "02:00")],
        );
        assert!(!h.is_open(utc(2026, 9, 5, 23, 59, 59)));
        assert!(h.is_open(utc(2026, 9, 6, 0, 0, 0)));
        assert!(h.is_open(utc(2026, 9, 6, 3, 59, 59)));
        assert!(h.is_open(utc(2026, 9, 6, 4, 0, 0)));
        assert!(h.is_open(utc(2026, 9, 6, 4, 59, 59)));
        assert!(!h.is_open(utc(2026, 9, 6, 5, 0, 0)));
        assert_eq!(
            h.next_open(utc(2026, 9, 6, 5, 0, 0)),
            Some(utc(2026, 9, 12, 23, 0, 0))
        );
    }

    #[test]
    fn hours_next_open_is_the_same_across_a_closed_period() {
        let h = hours("Europe/Berlin", &[("mon-fri", "09:00", "18:00")]);
        // Friday 2026-01-09 18:00 CET (17:00Z) to Monday 2026-01-12 09:00 CET (08:00Z).
        let start = utc(2026, 1, 9, 17, 0, 0);
        let end = utc(2026, 1, 12, 8, 0, 0);
        assert!(h.is_open(start - chrono::Duration::seconds(1)));
        assert!(h.is_open(end));
        let mut at = start;
        while at < end {
            assert!(!h.is_open(at), "{at}");
            assert_eq!(h.next_open(at), Some(end), "{at}");
            at += chrono::Duration::minutes(7);
        }
        assert_eq!(h.next_open(end - chrono::Duration::seconds(1)), Some(end));
    }

    #[test]
    fn hours_berlin_daylight_saving() {
        let h = hours("Europe/Berlin", &[("mon-fri", "09:00", "18:00")]);
        // Clocks go 02:00 -> 03:00 on Sunday 2026-03-29: Monday 09:00 CEST is 07:00Z.
        assert!(!h.is_open(utc(2026, 3, 30, 6, 59, 59)));
        assert!(h.is_open(utc(2026, 3, 30, 7, 0, 0)));
        assert!(h.is_open(utc(2026, 3, 30, 15, 59, 59)));
        assert!(!h.is_open(utc(2026, 3, 30, 16, 0, 0)));
        assert_eq!(
            h.next_open(utc(2026, 3, 27, 17, 0, 0)),
            Some(utc(2026, 3, 30, 7, 0, 0))
        );
        // The Friday before still opens at 09:00 CET, 08:00Z.
        assert!(!h.is_open(utc(2026, 3, 27, 7, 59, 59)));
        assert!(h.is_open(utc(2026, 3, 27, 8, 0, 0)));
        // Clocks go 03:00 -> 02:00 on Sunday 2026-10-25: Monday 09:00 CET is 08:00Z.
        assert!(!h.is_open(utc(2026, 10, 26, 7, 59, 59)));
        assert!(h.is_open(utc(2026, 10, 26, 8, 0, 0)));
        assert!(!h.is_open(utc(2026, 10, 26, 17, 0, 0)));
        assert_eq!(
            h.next_open(utc(2026, 10, 23, 16, 0, 0)),
            Some(utc(2026, 10, 26, 8, 0, 0))
        );
    }

    #[test]
    fn hours_opening_in_a_spring_forward_gap_opens_after_it() {
        // 02:30 does not exist on 2026-03-29 in Berlin: it opens at 03:00 CEST, 01:00Z.
        let h = hours("Europe/Berlin", &[("sun", "02:30", "04:00")]);
        assert!(!h.is_open(utc(2026, 3, 29, 0, 59, 59)));
        assert!(h.is_open(utc(2026, 3, 29, 1, 0, 0)));
        assert!(h.is_open(utc(2026, 3, 29, 1, 59, 59)));
        assert!(!h.is_open(utc(2026, 3, 29, 2, 0, 0)));
        assert_eq!(
            h.next_open(utc(2026, 3, 29, 0, 30, 0)),
            Some(utc(2026, 3, 29, 1, 0, 0))
        );
        assert_eq!(
            h.next_open(utc(2026, 3, 22, 12, 0, 0)),
            Some(utc(2026, 3, 29, 1, 0, 0))
        );
        // The Sunday after, 02:30 CEST is 00:30Z again.
        assert_eq!(
            h.next_open(utc(2026, 3, 29, 2, 0, 0)),
            Some(utc(2026, 4, 5, 0, 30, 0))
        );

        // New York: 2026-03-08 clocks go 02:00 EST -> 03:00 EDT: opens at 03:00 EDT, 07:00Z.
        let h = hours("America/New_York", &[("sun", "02:30", "04:00")]);
        assert!(!h.is_open(utc(2026, 3, 8, 6, 59, 59)));
        assert!(h.is_open(utc(2026, 3, 8, 7, 0, 0)));
        assert!(!h.is_open(utc(2026, 3, 8, 8, 0, 0)));
        assert_eq!(
            h.next_open(utc(2026, 3, 8, 5, 0, 0)),
            Some(utc(2026, 3, 8, 7, 0, 0))
        );
    }

    #[test]
    fn hours_range_entirely_in_a_gap_opens_the_next_week() {
        let h = hours("Europe/Berlin", &[("sun", "02:10", "02:40")]);
        // On 2026-03-29 02:10-02:40 does not exist: never open that day.
        assert!(!h.is_open(utc(2026, 3, 29, 1, 0, 0)));
        // From the Sunday before (after its 02:10-02:40 CET), the next opening is two weeks on.
        assert_eq!(
            h.next_open(utc(2026, 3, 22, 2, 0, 0)),
            Some(utc(2026, 4, 5, 0, 10, 0))
        );
        assert_eq!(
            h.next_open(utc(2026, 3, 29, 1, 0, 0)),
            Some(utc(2026, 4, 5, 0, 10, 0))
        );
    }

    #[test]
    fn hours_fall_back_takes_the_earlier_instant() {
        // 02:30 exists twice on 2026-10-25 in Berlin (00:30Z CEST and 01:30Z CET): it opens at
        // the first and stays open through the repeated hour until 04:00 CET, 03:00Z.
        let h = hours("Europe/Berlin", &[("sun", "02:30", "04:00")]);
        assert!(!h.is_open(utc(2026, 10, 25, 0, 29, 59)));
        for at in [
            utc(2026, 10, 25, 0, 30, 0),
            utc(2026, 10, 25, 1, 0, 0),
            utc(2026, 10, 25, 1, 15, 0),
            utc(2026, 10, 25, 2, 59, 59),
        ] {
            assert!(h.is_open(at), "{at}");
        }
        assert!(!h.is_open(utc(2026, 10, 25, 3, 0, 0)));

        // New York: 2026-11-01 clocks go 02:00 EDT -> 01:00 EST. Monday 09:00 EST is 14:00Z.
        let h = hours("America/New_York", &[("mon-fri", "09:00", "17:00")]);
        assert!(!h.is_open(utc(2026, 11, 2, 13, 59, 59)));
        assert!(h.is_open(utc(2026, 11, 2, 14, 0, 0)));
        assert_eq!(
            h.next_open(utc(2026, 10, 31, 12, 0, 0)),
            Some(utc(2026, 11, 2, 14, 0, 0))
        );
        // The Friday before, 09:00 EDT is 13:00Z; the Monday after spring forward too.
        assert!(h.is_open(utc(2026, 10, 30, 13, 0, 0)));
        assert!(!h.is_open(utc(2026, 3, 9, 12, 59, 59)));
        assert!(h.is_open(utc(2026, 3, 9, 13, 0, 0)));
        // The ambiguous hour itself: 01:30 local happens at 05:30Z and 06:30Z.
        let h = hours("America/New_York", &[("sun", "01:30", "01:45")]);
        assert!(h.is_open(utc(2026, 11, 1, 5, 30, 0)));
        assert!(!h.is_open(utc(2026, 11, 1, 6, 30, 0)));
        assert_eq!(
            h.next_open(utc(2026, 11, 1, 6, 30, 0)),
            Some(utc(2026, 11, 8, 6, 30, 0))
        );
    }

    #[test]
    fn hours_invalid_schedule_is_always_open_and_never_opens_next() {
        let at = utc(2026, 1, 4, 12, 0, 0);
        for schedule in [
            hours("Mars/Base", &[("mon", "09:00", "17:00")]),
            hours("UTC", &[]),
            hours("UTC", &[("funday", "09:00", "17:00")]),
            hours(
                "UTC",
                &[("mon", "09:00", "17:00"), ("mon", "10:00", "11:00")],
            ),
        ] {
            assert!(schedule.is_open(at), "{schedule:?}");
            assert_eq!(schedule.next_open(at), None, "{schedule:?}");
        }
    }

    #[test]
    fn hours_never_panics_at_the_edges_of_time() {
        let schedules = [
            hours("Pacific/Kiritimati", &[("daily", "00:00", "24:00")]),
            hours("Pacific/Kiritimati", &[("mon", "09:00", "10:00")]),
            hours("Etc/GMT+12", &[("sun", "23:00", "24:00")]),
            hours("Europe/Berlin", &[("mon-fri", "09:00", "18:00")]),
        ];
        let instants = [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            DateTime::<Utc>::MIN_UTC + chrono::Duration::days(3),
            DateTime::<Utc>::MAX_UTC - chrono::Duration::days(3),
            DateTime::<Utc>::UNIX_EPOCH,
            utc(1850, 1, 1, 0, 0, 0),
        ];
        for schedule in &schedules {
            for at in instants {
                let open = schedule.is_open(at);
                let next = schedule.next_open(at);
                assert!(!(open && next.is_some()), "{schedule:?} at {at}");
                if let Some(next) = next {
                    assert!(next > at);
                    assert!(schedule.is_open(next));
                }
            }
        }
    }

    #[test]
    fn hours_next_open_is_an_opening_for_every_zone_change_of_a_year() {
        // Every hour of 2026 in a few zones: closed instants point at an open instant after
        // them with closed time right before it; open instants have no next opening.
        for zone in [
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
            "Asia/Kolkata",
        ] {
            let h = hours(
                zone,
                &[
                    ("mon-fri", "09:00", "12:30"),
                    ("mon-fri", "13:30", "18:00"),
                    ("sat", "22:00", "24:00"),
                    ("sun", "00:00", "03:00"),
                ],
            );
            let mut at = utc(2026, 1, 1, 0, 0, 0);
            while at < utc(2027, 1, 1, 0, 0, 0) {
                match h.next_open(at) {
                    None => assert!(h.is_open(at), "{zone} {at}"),
                    Some(next) => {
                        assert!(!h.is_open(at), "{zone} {at}");
                        assert!(next > at, "{zone} {at}");
                        assert!(next - at <= chrono::Duration::days(3), "{zone} {at}");
                        assert!(h.is_open(next), "{zone} {at}");
                        assert!(
                            !h.is_open(next - chrono::Duration::seconds(1)),
                            "{zone} {at}"
                        );
                    }
                }
                at += chrono::Duration::minutes(89);
            }
        }
    }
}
