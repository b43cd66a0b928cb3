use super::*;
use crate::report::Day;

/// A report of two days, with a feature no one used.
fn sample() -> Report {
    let counts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), *value))
            .collect()
    };
    let mut report = Report {
        sdk: "flowkit".to_owned(),
        from: "2025-11-27".to_owned(),
        until: "2025-11-28".to_owned(),
        totals: Summary {
            events: 12,
            sessions: 4,
            runs: 9,
            exception_types: counts(&[("timeout_error", 2), ("value_error", 3)]),
            outcomes: counts(&[("completed", 6), ("failed", 2), ("crashed", 1)]),
            durations: counts(&[("<1s", 1), ("1-10s", 4), ("1-6h", 2), (">6h", 2)]),
            sdk_versions: counts(&[("0.9.2", 1), ("0.10.0", 3)]),
            runtimes: counts(&[("rust 1.95", 4)]),
            os: counts(&[("linux", 3), ("macos", 1)]),
            ..Summary::default()
        },
        days: vec![
            Day {
                date: "2025-11-27".to_owned(),
                aggregated: false,
                summary: Summary {
                    events: 5,
                    sessions: 2,
                    runs: 4,
                    ..Summary::default()
                },
            },
            Day {
                date: "2025-11-28".to_owned(),
                aggregated: false,
                summary: Summary {
                    events: 7,
                    sessions: 3,
                    runs: 5,
                    ..Summary::default()
                },
            },
        ],
        refused: counts(&[("undeclared_name", 2), ("schema", 1)]),
        erased_sessions: 1,
    };
    for (feature, sessions) in [("caching", 3), ("retries", 1), ("schedules", 0)] {
        report.totals.features.insert(
            feature.to_owned(),
            Adoption {
                sessions,
                share: 0.0,
            },
        );
    }
    report.finish(&[]);
    report
}

/// The bars of the chart with this id, as `(data-name, data-value)` in document order, with the
/// attribute escapes undone.
fn bars(page: &str, id: &str) -> Vec<(String, String)> {
    let start = page
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id} in {page}"));
    let end = start + page[start..].find("</svg>").unwrap_or(0);
    let svg = &page[start..end];
    svg.split("<rect ")
        .skip(1)
        .filter(|rect| attribute(rect, "class").is_some_and(|class| class.starts_with("bar")))
        .map(|rect| {
            (
                attribute(rect, "data-name").unwrap_or_default(),
                attribute(rect, "data-value").unwrap_or_default(),
            )
        })
        .collect()
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    // Attribute values are escaped, so the first `>` ends the tag.
    let tag = format!(" {}", &tag[..tag.find('>')?]);
    let needle = format!(" {name}=\"");
    let value = &tag[tag.find(&needle)? + needle.len()..];
    let value = &value[..value.find('"')?];
    Some(
        value
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#39;", "'")
            .replace("&amp;", "&"),
    )
}

/// The `data-value` of a headline number.
fn stat(page: &str, id: &str) -> Option<String> {
    let start = page.find(&format!("id=\"stat-{id}\""))?;
    let dd = &page[start + page[start..].find("<dd ")?..];
    attribute(dd, "data-value")
}

fn names(bars: &[(String, String)]) -> Vec<&str> {
    bars.iter().map(|(name, _)| name.as_str()).collect()
}

#[test]
fn every_catalog_feature_has_a_bar_most_adopted_first() {
    let page = render(&sample());
    let adoption = bars(&page, "chart-adoption");
    assert_eq!(
        adoption,
        [
            ("caching".to_owned(), "3".to_owned()),
            ("retries".to_owned(), "1".to_owned()),
            ("schedules".to_owned(), "0".to_owned()),
        ]
    );
    assert!(
        page.contains("<title>caching: 3 of 4 sessions (75%)</title>"),
        "{page}"
    );
    assert!(
        page.contains("<title>schedules: 0 of 4 sessions (0%)</title>"),
        "{page}"
    );
}

#[test]
fn each_chart_draws_what_the_report_counts_in_its_order() {
    let page = render(&sample());
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "chart-events-per-day",
            &[("2025-11-27", "5"), ("2025-11-28", "7")],
        ),
        ("chart-sdk-versions", &[("0.10.0", "3"), ("0.9.2", "1")]),
        (
            "chart-outcomes",
            &[
                ("completed", "6"),
                ("failed", "2"),
                ("cancelled", "0"),
                ("crashed", "1"),
            ],
        ),
        (
            "chart-exception-types",
            &[("value_error", "3"), ("timeout_error", "2")],
        ),
        ("chart-runtimes", &[("rust 1.95", "4")]),
        ("chart-os", &[("linux", "3"), ("macos", "1")]),
        (
            "chart-refused",
            &[("schema", "1"), ("undeclared_name", "2")],
        ),
    ];
    for (id, expected) in cases {
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        assert_eq!(bars(&page, id), expected, "{id}");
    }
    for (id, value) in [
        ("events", "12"),
        ("sessions", "4"),
        ("runs", "9"),
        ("erased-sessions", "1"),
        ("refused", "3"),
    ] {
        assert_eq!(stat(&page, id).as_deref(), Some(value), "{id}");
    }
}

#[test]
fn duration_buckets_are_in_the_models_order_not_alphabetical() {
    let page = render(&sample());
    let durations = bars(&page, "chart-durations");
    let expected: Vec<&str> = DurationBucket::ALL
        .iter()
        .map(|bucket| bucket.as_str())
        .collect();
    assert_eq!(names(&durations), expected);
    let values: Vec<&str> = durations.iter().map(|(_, value)| value.as_str()).collect();
    assert_eq!(values, ["1", "4", "0", "0", "0", "0", "2", "2"]);
}

#[test]
fn unknown_keys_follow_the_known_ones() {
    let mut report = sample();
    report.totals.durations.insert("2-3d".to_owned(), 1);
    report.totals.outcomes.insert("abandoned".to_owned(), 1);
    let page = render(&report);
    assert_eq!(names(&bars(&page, "chart-durations")).last(), Some(&"2-3d"));
    assert_eq!(
        names(&bars(&page, "chart-outcomes")),
        ["completed", "failed", "cancelled", "crashed", "abandoned"]
    );
}

#[test]
fn hostile_names_are_text_never_markup() {
    let hostile = [
        "<script>alert(1)</script>",
        "\"><img src=x onerror=alert(1)>",
        "</title></svg><script>x()</script>",
        "a & b ' c",
    ];
    let mut report = sample();
    report.sdk = hostile[0].to_owned();
    report.from = hostile[1].to_owned();
    for (index, name) in hostile.iter().enumerate() {
        let name = (*name).to_owned();
        let count = index as u64 + 1;
        report.totals.features.insert(
            name.clone(),
            Adoption {
                sessions: count,
                share: 0.5,
            },
        );
        report.totals.exception_types.insert(name.clone(), count);
        report.totals.outcomes.insert(name.clone(), count);
        report.totals.durations.insert(name.clone(), count);
        report.totals.sdk_versions.insert(name.clone(), count);
        report.totals.runtimes.insert(name.clone(), count);
        report.totals.os.insert(name.clone(), count);
        report.refused.insert(name.clone(), count);
        report.days[0].date = name;
    }
    let page = render(&report);
    for markup in ["<script", "<img", "</title></svg>", "onerror=alert(1)>"] {
        assert!(!page.contains(markup), "{markup} in {page}");
    }
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    for id in [
        "chart-adoption",
        "chart-exception-types",
        "chart-outcomes",
        "chart-durations",
        "chart-sdk-versions",
        "chart-runtimes",
        "chart-os",
        "chart-refused",
    ] {
        let drawn = bars(&page, id);
        for name in hostile {
            assert!(
                drawn.iter().any(|(drawn, _)| drawn == name),
                "{id} lacks {name:?}: {drawn:?}"
            );
        }
    }
}

#[test]
fn an_empty_report_says_so_instead_of_drawing_nothing() {
    let mut report = Report {
        sdk: "flowkit".to_owned(),
        from: "2025-11-01".to_owned(),
        until: "2025-11-30".to_owned(),
        days: (1..=30)
            .map(|day| Day {
                date: format!("2025-11-{day:02}"),
                ..Day::default()
            })
            .collect(),
        ..Report::default()
    };
    report.finish(&["caching".to_owned(), "retries".to_owned()]);
    let page = render(&report);
    assert!(page.contains("No events in this period."), "{page}");
    assert!(page.contains("None refused."), "{page}");
    for (id, message) in [
        ("chart-events-per-day", "No events in this period."),
        ("chart-outcomes", "No runs in this period."),
        ("chart-durations", "No runs in this period."),
        ("chart-sdk-versions", "No sessions in this period."),
        (
            "chart-exception-types",
            "No exceptions reported in this period.",
        ),
        ("chart-os", "No sessions in this period."),
        ("chart-refused", "None refused."),
    ] {
        assert!(
            page.contains(&format!(
                "<p class=\"empty\" data-chart=\"{id}\">{message}</p>"
            )),
            "{id}: {page}"
        );
        assert!(!page.contains(&format!("<svg id=\"{id}\"")), "{id}: {page}");
    }
    // Unused features still show, at 0%: "no one used it" is worth seeing.
    assert_eq!(
        bars(&page, "chart-adoption"),
        [
            ("caching".to_owned(), "0".to_owned()),
            ("retries".to_owned(), "0".to_owned())
        ]
    );
    for id in ["events", "sessions", "runs", "erased-sessions", "refused"] {
        assert_eq!(stat(&page, id).as_deref(), Some("0"), "{id}");
    }

    let nothing = render(&Report::default());
    assert!(
        nothing.contains("The catalog declares no features."),
        "{nothing}"
    );
    assert!(nothing.contains("0 days (UTC)"), "{nothing}");
}

#[test]
fn the_page_loads_nothing_from_anywhere() {
    let page = render(&sample());
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.contains("default-src 'none'"), "{page}");
    let without_svg_namespace = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for reference in ["http:", "https:", "//", "src=", "<link", "<script", "url("] {
        assert!(
            !without_svg_namespace.contains(reference),
            "{reference} in {page}"
        );
    }
}

#[test]
fn aggregated_days_are_drawn_apart() {
    let mut report = sample();
    report.days[0].aggregated = true;
    let page = render(&report);
    assert!(
        page.contains("class=\"bar faded\" data-name=\"2025-11-27\""),
        "{page}"
    );
    assert!(page.contains("Faded days are past the retention"), "{page}");
}

#[test]
fn versions_sort_as_releases_follow_each_other() {
    let mut versions = vec![
        "0.9.2",
        "0.10.0",
        "1.0.0",
        "1.0.0-rc.1",
        "0.9.10",
        "2",
        "1.0.0-beta",
        "nightly",
    ];
    versions.sort_by(|a, b| compare_versions(a, b));
    assert_eq!(
        versions,
        [
            "0.9.2",
            "0.9.10",
            "0.10.0",
            "1.0.0-beta",
            "1.0.0-rc.1",
            "1.0.0",
            "2",
            "nightly"
        ]
    );
}

#[test]
fn shares_and_counts_read_as_people_write_them() {
    let shares = [
        (0.0, "0%"),
        (0.001, "<1%"),
        (0.0099, "<1%"),
        (0.01, "1%"),
        (0.5, "50%"),
        (0.994, ">99%"),
        (1.0, "100%"),
        (f64::NAN, "0%"),
        (7.0, "100%"),
    ];
    for (share, expected) in shares {
        assert_eq!(percent(share), expected, "{share}");
    }
    let counts = [
        (0, "0"),
        (999, "999"),
        (1_000, "1,000"),
        (123_456, "123,456"),
        (1_234_567, "1,234,567"),
    ];
    for (count, expected) in counts {
        assert_eq!(group_digits(count), expected, "{count}");
    }
}

#[test]
fn outcome_names_are_the_wire_names() {
    for outcome in RUN_OUTCOMES {
        assert_eq!(
            serde_json::to_value(outcome).ok(),
            Some(serde_json::Value::from(outcome_name(outcome)))
        );
    }
}
