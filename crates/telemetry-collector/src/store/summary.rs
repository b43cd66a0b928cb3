//! What every store shares about reports: the queries behind each dimension, written once for
//! both SQL dialects, and how their rows become a [`Report`].

use crate::report::{Day, Report, ReportQuery, Summary, date_of};

use super::Counts;

/// The SQL dialect a query is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A report dimension: a query giving `(day, key, value)` rows.
struct Dimension {
    name: &'static str,
    sql: &'static str,
}

/// `{day}` is the day column or -1 for totals; `{where}` selects the SDK `$1` and days `$2..=$3`
/// and leaves out days already rolled up; `{names}` joins an event's names as `n.section` and
/// `n.name`.
const DIMENSIONS: &[Dimension] = &[
    Dimension {
        name: "events",
        sql: "SELECT {day}, '', COUNT(*) FROM events e WHERE {where} GROUP BY 1",
    },
    Dimension {
        name: "sessions",
        sql: "SELECT {day}, '', COUNT(DISTINCT {session}) FROM events e WHERE {where} GROUP BY 1",
    },
    Dimension {
        name: "runs",
        sql: "SELECT {day}, '', COUNT(*) FROM events e WHERE {where} AND e.event_type = 'run' GROUP BY 1",
    },
    Dimension {
        name: "feature",
        sql: "SELECT {day}, n.name, COUNT(DISTINCT {session}) FROM events e {names}
              WHERE {where} AND n.section = 'feature' GROUP BY 1, 2",
    },
    Dimension {
        name: "exception_type",
        sql: "SELECT {day}, n.name, COUNT(*) FROM events e {names}
              WHERE {where} AND n.section = 'exception_type' GROUP BY 1, 2",
    },
    Dimension {
        name: "outcome",
        sql: "SELECT {day}, e.outcome, COUNT(*) FROM events e
              WHERE {where} AND e.event_type = 'run' GROUP BY 1, 2",
    },
    Dimension {
        name: "duration",
        sql: "SELECT {day}, e.duration, COUNT(*) FROM events e
              WHERE {where} AND e.event_type = 'run' GROUP BY 1, 2",
    },
    Dimension {
        name: "sdk_version",
        sql: "SELECT {day}, e.sdk_version, COUNT(DISTINCT {session}) FROM events e
              WHERE {where} GROUP BY 1, 2",
    },
    Dimension {
        name: "runtime",
        sql: "SELECT {day}, e.runtime || ' ' || e.runtime_version, COUNT(DISTINCT {session})
              FROM events e WHERE {where} GROUP BY 1, 2",
    },
    Dimension {
        name: "os",
        sql: "SELECT {day}, e.os, COUNT(DISTINCT {session}) FROM events e
              WHERE {where} GROUP BY 1, 2",
    },
];

/// One row of a dimension: `(day or -1, dimension, key, value)`.
pub(crate) type Row = (i64, &'static str, String, i64);

/// The dimension queries in `dialect`, per day or for the whole range, each with its name.
pub(crate) fn dimension_queries(dialect: Dialect, per_day: bool) -> Vec<(&'static str, String)> {
    let (parameters, names, day_type, session) = match dialect {
        Dialect::Sqlite => (
            ["?1", "?2", "?3"],
            "JOIN event_names n ON n.event = e.id",
            "e.day",
            "e.session",
        ),
        // The names are an array column of `section:name[:bucket]` words.
        Dialect::Postgres => (
            ["$1", "$2", "$3"],
            "CROSS JOIN LATERAL (SELECT split_part(word, ':', 1) AS section,
                 split_part(word, ':', 2) AS name FROM unnest(e.names) AS word) AS n",
            "e.day::bigint",
            "e.session_id",
        ),
    };
    let filter = format!(
        "e.sdk = {sdk} AND e.day BETWEEN {from} AND {until} AND NOT EXISTS
         (SELECT 1 FROM daily_rollups r WHERE r.sdk = e.sdk AND r.day = e.day)",
        sdk = parameters[0],
        from = parameters[1],
        until = parameters[2],
    );
    let day = if per_day {
        day_type
    } else {
        match dialect {
            Dialect::Sqlite => "-1",
            Dialect::Postgres => "-1::bigint",
        }
    };
    DIMENSIONS
        .iter()
        .map(|dimension| {
            let sql = dimension
                .sql
                .replace("{day}", day)
                .replace("{where}", &filter)
                .replace("{names}", names)
                .replace("{session}", session);
            (dimension.name, sql)
        })
        .collect()
}

fn add_row(summary: &mut Summary, dimension: &str, key: String, value: u64) {
    let add = |counts: &mut Counts| *counts.entry(key.clone()).or_default() += value;
    match dimension {
        "events" => summary.events += value,
        "sessions" => summary.sessions += value,
        "runs" => summary.runs += value,
        "feature" => summary.features.entry(key.clone()).or_default().sessions += value,
        "exception_type" => add(&mut summary.exception_types),
        "outcome" => add(&mut summary.outcomes),
        "duration" => add(&mut summary.durations),
        "sdk_version" => add(&mut summary.sdk_versions),
        "runtime" => add(&mut summary.runtimes),
        "os" => add(&mut summary.os),
        _ => {}
    }
}

/// What a store read for one report, from one snapshot.
#[derive(Debug, Default)]
pub(crate) struct ReportRows {
    /// Live events, per day.
    pub(crate) per_day: Vec<Row>,
    /// Live events, for the whole range (day -1).
    pub(crate) totals: Vec<Row>,
    /// Aggregates of days past the retention: `(day, dimension, key, value)`.
    pub(crate) rolled_up: Vec<(i64, String, String, i64)>,
    /// The SDK's declared features.
    pub(crate) features: Vec<String>,
    /// Refused events in the range, by reason.
    pub(crate) refused: Vec<(String, i64)>,
    /// Sessions erased in the range.
    pub(crate) erased_sessions: i64,
}

/// Turns what a store read into the report.
pub(crate) fn assemble(query: &ReportQuery, rows: ReportRows) -> Report {
    let (from, until) = query.day_numbers();
    let count = |value: i64| u64::try_from(value).unwrap_or(0);
    let mut days: Vec<Day> = (from..=until)
        .map(|day| Day {
            date: date_of(day).to_string(),
            ..Day::default()
        })
        .collect();
    let index = |day: i64| usize::try_from(day - from).ok();
    for (day, dimension, key, value) in rows.per_day {
        if let Some(entry) = index(day).and_then(|i| days.get_mut(i)) {
            add_row(&mut entry.summary, dimension, key, count(value));
        }
    }
    let mut totals = Summary::default();
    for (_, dimension, key, value) in rows.totals {
        add_row(&mut totals, dimension, key, count(value));
    }
    // Days past the retention: their aggregates, added to the totals as they are (a session seen
    // on two such days counts twice there; the days carry no ids to tell).
    for (day, dimension, key, value) in rows.rolled_up {
        if let Some(entry) = index(day).and_then(|i| days.get_mut(i)) {
            entry.aggregated = true;
            add_row(&mut entry.summary, &dimension, key.clone(), count(value));
        }
        add_row(&mut totals, &dimension, key, count(value));
    }
    let mut report = Report {
        sdk: query.sdk.clone(),
        from: date_of(from).to_string(),
        until: date_of(until).to_string(),
        totals,
        days,
        refused: rows
            .refused
            .into_iter()
            .map(|(reason, value)| (reason, count(value)))
            .collect(),
        erased_sessions: count(rows.erased_sessions),
    };
    report.finish(&rows.features);
    report
}
