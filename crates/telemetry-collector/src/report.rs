//! The report: what an SDK's maintainers learn from the events, in totals and per day.
//!
//! Reports carry counts only: no session id, event id or exact time leaves the store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use telemetry_model::UtcDate;

/// Which report to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportQuery {
    /// The SDK.
    pub sdk: String,
    /// The last day of the report (UTC), usually today.
    pub until: UtcDate,
    /// How many days, ending with `until`.
    pub days: u32,
}

impl ReportQuery {
    /// The default number of days in a report.
    pub const DEFAULT_DAYS: u32 = 30;
    /// The most days one report covers.
    pub const MAX_DAYS: u32 = 3_660;

    /// The report on `sdk` over the `days` days that end today (UTC).
    pub fn ending_today(sdk: &str, days: u32) -> ReportQuery {
        ReportQuery {
            sdk: sdk.to_owned(),
            until: UtcDate::today(),
            days,
        }
    }

    /// The first day of the report.
    pub fn from(&self) -> UtcDate {
        let span = u64::from(self.days.saturating_sub(1)) * 86_400;
        UtcDate::from_unix_seconds(self.until.unix_seconds().saturating_sub(span))
    }

    /// The days of the report as day numbers since 1970-01-01, inclusive.
    pub fn day_numbers(&self) -> (i64, i64) {
        (day_number(self.from()), day_number(self.until))
    }
}

/// Days since 1970-01-01 of a date.
pub fn day_number(date: UtcDate) -> i64 {
    i64::try_from(date.unix_seconds() / 86_400).unwrap_or(i64::MAX)
}

/// The date of a day number.
pub fn date_of(day: i64) -> UtcDate {
    UtcDate::from_unix_seconds(u64::try_from(day).unwrap_or(0).saturating_mul(86_400))
}

/// How many sessions used a feature, and what share of all sessions that is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Adoption {
    /// Sessions that used the feature.
    pub sessions: u64,
    /// `sessions` divided by all sessions of the period (0 when there were none).
    pub share: f64,
}

/// The numbers of one period (the whole report, or one day).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Events stored (summaries and runs).
    pub events: u64,
    /// Distinct anonymous sessions.
    pub sessions: u64,
    /// `run` events.
    pub runs: u64,
    /// Each feature the catalog declares, with its adoption.
    pub features: BTreeMap<String, Adoption>,
    /// Exception types, as the number of events that reported each.
    pub exception_types: BTreeMap<String, u64>,
    /// Runs by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Runs by duration bucket.
    pub durations: BTreeMap<String, u64>,
    /// Sessions by SDK version.
    pub sdk_versions: BTreeMap<String, u64>,
    /// Sessions by language runtime and its version (`rust 1.95`).
    pub runtimes: BTreeMap<String, u64>,
    /// Sessions by operating system family.
    pub os: BTreeMap<String, u64>,
}

/// One day of a report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Day {
    /// The day, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Whether the day's numbers come from aggregates kept past the retention (its events are
    /// gone; its sessions cannot be told apart from another day's).
    pub aggregated: bool,
    /// The day's numbers.
    #[serde(flatten)]
    pub summary: Summary,
}

/// A report for one SDK.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The SDK.
    pub sdk: String,
    /// The first day, `YYYY-MM-DD`.
    pub from: String,
    /// The last day, `YYYY-MM-DD`.
    pub until: String,
    /// The whole period.
    pub totals: Summary,
    /// Every day of the period, oldest first, including days without events.
    pub days: Vec<Day>,
    /// Events refused in the period, by reason, for every SDK (a refused event's SDK is not
    /// trusted, so it is not recorded).
    pub refused: BTreeMap<String, u64>,
    /// Sessions erased on request in the period.
    pub erased_sessions: u64,
}

impl Report {
    /// Fills in shares and every catalog feature, so unused features show as 0.
    pub(crate) fn finish(&mut self, features: &[String]) {
        let summaries = std::iter::once(&mut self.totals)
            .chain(self.days.iter_mut().map(|day| &mut day.summary));
        for summary in summaries {
            for feature in features {
                summary.features.entry(feature.clone()).or_default();
            }
            let sessions = summary.sessions;
            for adoption in summary.features.values_mut() {
                adoption.share = if sessions == 0 {
                    0.0
                } else {
                    adoption.sessions as f64 / sessions as f64
                };
            }
        }
    }
}
