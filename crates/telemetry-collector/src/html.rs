//! The report as one self-contained HTML page: headline numbers, then charts of feature
//! adoption, events per day, SDK versions, errors, run durations, runtimes and operating
//! systems, and the events refused.
//!
//! The page loads nothing. Its CSS is inline, its charts are inline SVG drawn by the `chart`
//! module, and its Content-Security-Policy forbids every fetch, so it looks the same served by
//! the collector (`GET /`), written by `report --html`, or opened from an archive years later,
//! and it tells no one that it was opened.
//!
//! The templates are maud's: the HTML and SVG are checked when the crate compiles and every
//! value is escaped by construction, so a name in a report can never become markup.
//!
//! Each chart is an `<svg id="chart-…">` with one `<rect class="bar" data-name="…"
//! data-value="…">` per item and a `<title>` per bar; the headline numbers are
//! `<div class="stat" id="stat-…">` with a `data-value`. Tests, and anyone who scrapes the
//! page, can rely on these.

mod chart;

use std::cmp::Ordering;
use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use telemetry_model::{DurationBucket, RunOutcome};

use self::chart::{Bar, Tone, Width};
use crate::report::{Adoption, Report, Summary};
use crate::validate::Refusal;

/// Renders the report as a page.
pub fn render(report: &Report) -> String {
    page(report).into_string()
}

/// What the page forbids: everything but its own inline styles. No script, image, font or
/// connection can be loaded, whatever a report might contain.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";

const STYLE: &str = include_str!("html/page.css");

fn page(report: &Report) -> Markup {
    let totals = &report.totals;
    let refused: u64 = report.refused.values().sum();
    let days = report.days.len();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(CONTENT_SECURITY_POLICY);
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (report.sdk) " telemetry · " (report.from) " to " (report.until) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { span.sdk { (report.sdk) } " telemetry" }
                    p.period {
                        time datetime=(report.from) { (report.from) }
                        " to "
                        time datetime=(report.until) { (report.until) }
                        " · " (days) @if days == 1 { " day" } @else { " days" } " (UTC)"
                    }
                }
                main {
                    dl.stats {
                        (stat("events", "Events", totals.events))
                        (stat("sessions", "Sessions", totals.sessions))
                        (stat("runs", "Runs", totals.runs))
                        (stat("erased-sessions", "Erased sessions", report.erased_sessions))
                        (stat("refused", "Refused events", refused))
                    }
                    @if totals.events == 0 {
                        p.notice #no-events { "No events in this period." }
                    }
                    section #adoption .wide {
                        h2 { "Feature adoption" }
                        p.note { "Share of sessions that used each feature the catalog declares." }
                        (adoption(totals))
                    }
                    section #activity .wide {
                        h2 { "Events per day" }
                        (events_per_day(report))
                    }
                    section #versions {
                        h2 { "SDK versions" }
                        p.note { "Sessions by SDK version, newest first." }
                        (sdk_versions(totals))
                    }
                    section #durations {
                        h2 { "Run durations" }
                        p.note { "Runs by how long they took, shortest first." }
                        (durations(totals))
                    }
                    section #errors {
                        h2 { "Errors" }
                        h3 { "Run outcomes" }
                        (outcomes(totals))
                        h3 { "Exception types" }
                        p.note { "Events that reported each exception type." }
                        (exception_types(totals))
                    }
                    section #environment {
                        h2 { "Environment" }
                        h3 { "Runtimes" }
                        (by_count("chart-runtimes", "Sessions by runtime", &totals.runtimes, "sessions", "No sessions in this period."))
                        h3 { "Operating systems" }
                        (by_count("chart-os", "Sessions by operating system", &totals.os, "sessions", "No sessions in this period."))
                    }
                    section #refusals .wide {
                        h2 { "Refused events" }
                        p.note { "Events the collector refused in this period, for every SDK, by reason. Refused events are counted, never stored." }
                        (refusals(&report.refused))
                    }
                }
                footer {
                    p {
                        "Counts only: no session id, event id or exact time leaves the collector's store. "
                        "Made by telemetry-collector " (env!("CARGO_PKG_VERSION")) "."
                    }
                }
            }
        }
    }
}

fn stat(id: &str, name: &str, value: u64) -> Markup {
    html! {
        div.stat id=(format!("stat-{id}")) {
            dt { (name) }
            dd data-value=(value) { (group_digits(value)) }
        }
    }
}

/// Shown instead of a chart that would have nothing to show.
fn empty(id: &str, message: &str) -> Markup {
    html! { p.empty data-chart=(id) { (message) } }
}

/// Every feature of the catalog, most adopted first, as a share of all sessions.
fn adoption(totals: &Summary) -> Markup {
    const ID: &str = "chart-adoption";
    if totals.features.is_empty() {
        return empty(ID, "The catalog declares no features.");
    }
    let mut features: Vec<(&String, &Adoption)> = totals.features.iter().collect();
    features.sort_by(|(a_name, a), (b_name, b)| {
        b.sessions.cmp(&a.sessions).then_with(|| a_name.cmp(b_name))
    });
    let bars: Vec<Bar> = features
        .into_iter()
        .map(|(name, adoption)| {
            let share = if totals.sessions == 0 {
                0.0
            } else {
                adoption.share.clamp(0.0, 1.0)
            };
            Bar {
                name: name.clone(),
                value: adoption.sessions,
                fraction: share,
                shown: percent(share),
                title: format!(
                    "{name}: {} of {} sessions ({})",
                    group_digits(adoption.sessions),
                    group_digits(totals.sessions),
                    percent(share)
                ),
                tone: Tone::Plain,
            }
        })
        .collect();
    chart::rows(
        ID,
        "Feature adoption, share of sessions",
        Width::Full,
        &bars,
    )
}

fn events_per_day(report: &Report) -> Markup {
    const ID: &str = "chart-events-per-day";
    if report.days.iter().all(|day| day.summary.events == 0) {
        return empty(ID, "No events in this period.");
    }
    let largest = report
        .days
        .iter()
        .map(|day| day.summary.events)
        .max()
        .unwrap_or(0);
    let bars: Vec<Bar> = report
        .days
        .iter()
        .map(|day| {
            let summary = &day.summary;
            let mut title = format!(
                "{}: {} events, {} sessions, {} runs",
                day.date,
                group_digits(summary.events),
                group_digits(summary.sessions),
                group_digits(summary.runs)
            );
            if day.aggregated {
                title.push_str(" (kept as aggregates past the retention)");
            }
            Bar {
                name: day.date.clone(),
                value: summary.events,
                fraction: chart::ratio(summary.events, largest),
                shown: group_digits(summary.events),
                title,
                tone: if day.aggregated {
                    Tone::Faded
                } else {
                    Tone::Plain
                },
            }
        })
        .collect();
    let aggregated = report.days.iter().any(|day| day.aggregated);
    html! {
        (chart::columns(ID, "Events per day", Width::Full, &bars))
        @if aggregated {
            p.note { "Faded days are past the retention: their events are deleted and only their day's counts are kept." }
        }
    }
}

fn sdk_versions(totals: &Summary) -> Markup {
    let mut versions: Vec<(&String, &u64)> = totals.sdk_versions.iter().collect();
    versions.sort_by(|(a, _), (b, _)| compare_versions(b, a));
    counts_chart(
        "chart-sdk-versions",
        "Sessions by SDK version",
        versions,
        "sessions",
        "No sessions in this period.",
    )
}

/// Run outcomes in the order the model declares them, with a colour each, then any the model
/// does not know (from an older or newer collector's aggregates).
fn outcomes(totals: &Summary) -> Markup {
    const ID: &str = "chart-outcomes";
    if totals.outcomes.values().all(|count| *count == 0) {
        return empty(ID, "No runs in this period.");
    }
    let known = RUN_OUTCOMES.map(|outcome| outcome_name(outcome).to_owned());
    let ordered = ordered_keys(&totals.outcomes, &known);
    let completed = totals.outcomes.get("completed").copied().unwrap_or(0);
    let runs: u64 = totals.outcomes.values().sum();
    let bars: Vec<Bar> = Bar::for_counts(ordered, |name, count| {
        format!(
            "{name}: {} of {} runs",
            group_digits(count),
            group_digits(runs)
        )
    })
    .into_iter()
    .map(|bar| {
        let tone = match bar.name.as_str() {
            "completed" => Tone::Good,
            "failed" | "crashed" => Tone::Bad,
            _ => Tone::Neutral,
        };
        bar.with_tone(tone)
    })
    .collect();
    html! {
        p.note {
            (group_digits(completed)) " of " (group_digits(runs)) " runs completed ("
            (percent(chart::ratio(completed, runs))) ")."
        }
        (chart::rows(ID, "Runs by outcome", Width::Half, &bars))
    }
}

fn exception_types(totals: &Summary) -> Markup {
    let mut types: Vec<(&String, &u64)> = totals.exception_types.iter().collect();
    types.sort_by(|(a_name, a), (b_name, b)| b.cmp(a).then_with(|| a_name.cmp(b_name)));
    counts_chart(
        "chart-exception-types",
        "Events by exception type",
        types,
        "events",
        "No exceptions reported in this period.",
    )
}

/// Every duration bucket, shortest first as the model declares them, including empty ones so
/// the shape of the distribution shows.
fn durations(totals: &Summary) -> Markup {
    const ID: &str = "chart-durations";
    if totals.durations.values().all(|count| *count == 0) {
        return empty(ID, "No runs in this period.");
    }
    let known = DurationBucket::ALL.map(|bucket| bucket.as_str().to_owned());
    let ordered = ordered_keys(&totals.durations, &known);
    let bars = Bar::for_counts(ordered, |name, count| {
        format!("{name}: {} runs", group_digits(count))
    });
    chart::rows(ID, "Runs by duration", Width::Half, &bars)
}

fn by_count(
    id: &str,
    caption: &str,
    counts: &BTreeMap<String, u64>,
    unit: &str,
    nothing: &str,
) -> Markup {
    let mut sorted: Vec<(&String, &u64)> = counts.iter().collect();
    sorted.sort_by(|(a_name, a), (b_name, b)| b.cmp(a).then_with(|| a_name.cmp(b_name)));
    counts_chart(id, caption, sorted, unit, nothing)
}

fn counts_chart(
    id: &str,
    caption: &str,
    counts: Vec<(&String, &u64)>,
    unit: &str,
    nothing: &str,
) -> Markup {
    if counts.iter().all(|(_, count)| **count == 0) {
        return empty(id, nothing);
    }
    let bars = Bar::for_counts(
        counts
            .into_iter()
            .map(|(name, count)| (name.clone(), *count)),
        |name, count| format!("{name}: {} {unit}", group_digits(count)),
    );
    chart::rows(id, caption, Width::Half, &bars)
}

fn refusals(refused: &BTreeMap<String, u64>) -> Markup {
    const ID: &str = "chart-refused";
    if refused.values().all(|count| *count == 0) {
        return empty(ID, "None refused.");
    }
    let known = Refusal::ALL.map(|reason| reason.key().to_owned());
    let ordered = ordered_keys(refused, &known);
    let bars = Bar::for_counts(
        ordered.into_iter().filter(|(_, count)| *count > 0),
        |name, count| {
            let why = Refusal::from_key(name).map_or("", refusal_meaning);
            format!("{name}: {} events{why}", group_digits(count))
        },
    )
    .into_iter()
    .map(|bar| bar.with_tone(Tone::Bad))
    .collect::<Vec<_>>();
    chart::rows(ID, "Refused events by reason", Width::Full, &bars)
}

/// What a refusal reason means, for a bar's title.
fn refusal_meaning(reason: Refusal) -> &'static str {
    match reason {
        Refusal::Schema => " (not an event of the schema)",
        Refusal::UnknownSdk => " (an SDK without a catalog here)",
        Refusal::UndeclaredName => " (a name the catalog does not declare)",
        Refusal::Inconsistent => " (fields that do not fit the event's type)",
        Refusal::Future => " (a timestamp in the future)",
        Refusal::TooOld => " (older than the retention)",
        Refusal::Erased => " (a session that asked to be erased)",
    }
}

/// Every run outcome, in the order the model declares them.
const RUN_OUTCOMES: [RunOutcome; 4] = [
    RunOutcome::Completed,
    RunOutcome::Failed,
    RunOutcome::Cancelled,
    RunOutcome::Crashed,
];

/// An outcome's name on the wire and in reports. The match has no wildcard, so a new outcome
/// in the model fails to compile here until the page knows where to put it.
fn outcome_name(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Completed => "completed",
        RunOutcome::Failed => "failed",
        RunOutcome::Cancelled => "cancelled",
        RunOutcome::Crashed => "crashed",
    }
}

/// The `known` keys in their order (0 for those not counted), then any other counted key in
/// alphabetical order.
fn ordered_keys(counts: &BTreeMap<String, u64>, known: &[String]) -> Vec<(String, u64)> {
    let mut ordered: Vec<(String, u64)> = known
        .iter()
        .map(|key| (key.clone(), counts.get(key).copied().unwrap_or(0)))
        .collect();
    ordered.extend(
        counts
            .iter()
            .filter(|(key, _)| !known.contains(key))
            .map(|(key, count)| (key.clone(), *count)),
    );
    ordered
}

/// Orders versions as releases follow each other: `0.10.0` after `0.9.2`, and `1.0.0-rc.1`
/// before `1.0.0`. Text that is not a number compares as text.
fn compare_versions(a: &str, b: &str) -> Ordering {
    let split = |version: &str| -> (Vec<String>, Option<String>) {
        let (release, pre) = match version.split_once('-') {
            Some((release, pre)) => (release, Some(pre.to_owned())),
            None => (version, None),
        };
        (release.split('.').map(str::to_owned).collect(), pre)
    };
    let compare_part = |a: &String, b: &String| match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    };
    let (a_release, a_pre) = split(a);
    let (b_release, b_pre) = split(b);
    let mut parts = a_release.iter().zip(&b_release);
    let release = parts
        .find_map(|(a, b)| Some(compare_part(a, b)).filter(|order| order.is_ne()))
        .unwrap_or_else(|| a_release.len().cmp(&b_release.len()));
    release
        .then_with(|| match (&a_pre, &b_pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => a.cmp(b),
        })
        .then_with(|| a.cmp(b))
}

/// A share as a whole percentage; a share too small to round to 1% but not zero is `<1%`, so
/// that "someone used it" never reads as "no one did".
fn percent(share: f64) -> String {
    let share = if share.is_finite() {
        share.clamp(0.0, 1.0)
    } else {
        0.0
    };
    if share == 0.0 {
        "0%".to_owned()
    } else if share < 0.01 {
        "<1%".to_owned()
    } else if share < 1.0 && share > 0.99 {
        ">99%".to_owned()
    } else {
        format!("{:.0}%", share * 100.0)
    }
}

/// A count with its thousands grouped: `12,345`.
fn group_digits(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests;
