//! The collector's report page in a real browser.
//!
//! A real collector (the library's `Server` with TLS from the `--dev` CA and certificate, a
//! SQLite store in a temporary directory, flowkit's catalog) receives batches of events over
//! HTTPS. Headless Chromium then opens the page the collector serves (`GET /`, with the token as
//! the HTTP Basic password) and the file `report --html` writes, and the test reads the DOM
//! Chromium built: the charts' SVG elements and their bars, the feature names and the headline
//! numbers, against what was sent.
//!
//! Chromium trusts the collector's certificate through `--ignore-certificate-errors-spki-list`
//! with the hash of the collector's own key: any other certificate would still be refused.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chromium;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chromium::Chromium;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use telemetry::internals::model::wire::WireBatch;
use telemetry::internals::model::{
    Arch, Catalog, DeploymentStage, DurationBucket, ErrorSummary, Event, EventId, EventType,
    HourTimestamp, Interface, Name, OsFamily, RunOutcome, SCHEMA_VERSION, Section, SessionId,
    UtcDate, Version,
};
use telemetry_collector::auth::Token;
use telemetry_collector::dev::DevFiles;
use telemetry_collector::ingest::IngestConfig;
use telemetry_collector::report::ReportQuery;
use telemetry_collector::server::{Server, ServerConfig};
use telemetry_collector::store::{SqliteStore, Store};
use telemetry_collector::validate::{Catalogs, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio_rustls::TlsConnector;
use {DurationBucket as D, RunOutcome as O};

/// The catalog the collector checks flowkit's events against.
const FLOWKIT_CATALOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crates/flowkit/catalog.toml"
);

/// One anonymous session of the traffic sent: an `sdk_usage` event and its runs, all on one
/// day, `days_ago` days before today.
struct Session {
    sdk_version: &'static str,
    os: OsFamily,
    runtime_version: &'static str,
    features: &'static [&'static str],
    days_ago: u64,
    runs: &'static [(RunOutcome, DurationBucket, Option<&'static str>)],
}

/// The sessions the report counts.
const SESSIONS: &[Session] = &[
    Session {
        sdk_version: "0.2.0",
        os: OsFamily::Linux,
        runtime_version: "1.95",
        features: &["caching", "retries"],
        days_ago: 0,
        runs: &[
            (O::Completed, D::UnderOneSecond, None),
            (O::Completed, D::OneToTenSeconds, None),
            (O::Failed, D::TenToSixtySeconds, Some("value_error")),
        ],
    },
    Session {
        sdk_version: "0.2.0",
        os: OsFamily::Macos,
        runtime_version: "1.95",
        features: &["caching"],
        days_ago: 0,
        runs: &[
            (O::Completed, D::OneToTenSeconds, None),
            (O::Crashed, D::OneToSixHours, Some("crash")),
        ],
    },
    Session {
        sdk_version: "0.1.0",
        os: OsFamily::Linux,
        runtime_version: "1.94",
        features: &["parameters"],
        days_ago: 1,
        runs: &[
            (O::Completed, D::OverSixHours, None),
            (O::Cancelled, D::OneToFiveMinutes, None),
        ],
    },
    Session {
        sdk_version: "0.10.0",
        os: OsFamily::Windows,
        runtime_version: "1.95",
        features: &[],
        days_ago: 3,
        runs: &[
            (O::Failed, D::OneToTenSeconds, Some("timeout_error")),
            (O::Failed, D::OneToTenSeconds, Some("value_error")),
        ],
    },
];

/// A session whose user opted out after it sent: its deletion request erases it.
const ERASED: Session = Session {
    sdk_version: "0.2.0",
    os: OsFamily::Linux,
    runtime_version: "1.95",
    features: &["serve"],
    days_ago: 0,
    runs: &[(O::Completed, D::UnderOneSecond, None)],
};

/// A session whose run names a feature the catalog does not declare: refused.
const UNDECLARED: Session = Session {
    sdk_version: "0.2.0",
    os: OsFamily::Linux,
    runtime_version: "1.95",
    features: &["teleportation"],
    days_ago: 0,
    runs: &[(O::Completed, D::UnderOneSecond, None)],
};

/// The headline numbers of that traffic.
const EXPECTED_STATS: &[(&str, u64)] = &[
    ("events", 13),
    ("sessions", 4),
    ("runs", 9),
    ("erased-sessions", 1),
    ("refused", 1),
];

/// The features used, most adopted first (sessions); every other feature of the catalog
/// follows at 0, in alphabetical order.
const EXPECTED_ADOPTION: &[(&str, u64)] = &[("caching", 2), ("parameters", 1), ("retries", 1)];

/// The other charts, bar by bar in the order drawn.
const EXPECTED_CHARTS: &[(&str, &[(&str, u64)])] = &[
    (
        "chart-sdk-versions",
        &[("0.10.0", 1), ("0.2.0", 2), ("0.1.0", 1)],
    ),
    (
        "chart-outcomes",
        &[
            ("completed", 4),
            ("failed", 3),
            ("cancelled", 1),
            ("crashed", 1),
        ],
    ),
    (
        "chart-exception-types",
        &[("value_error", 2), ("crash", 1), ("timeout_error", 1)],
    ),
    (
        "chart-durations",
        &[
            ("<1s", 1),
            ("1-10s", 4),
            ("10-60s", 1),
            ("1-5min", 1),
            ("5-30min", 0),
            ("30-60min", 0),
            ("1-6h", 1),
            (">6h", 1),
        ],
    ),
    ("chart-runtimes", &[("rust 1.95", 3), ("rust 1.94", 1)]),
    ("chart-os", &[("linux", 2), ("macos", 1), ("windows", 1)]),
    ("chart-refused", &[("undeclared_name", 1)]),
];

/// Events per day, by days before today; the other days of the report have none.
const EXPECTED_EVENTS_BY_DAYS_AGO: &[(u64, u64)] = &[(0, 7), (1, 3), (3, 3)];

/// A collector serving on 127.0.0.1 with a fresh store, and an HTTPS client that trusts it.
struct Collector {
    runtime: Runtime,
    address: SocketAddr,
    files: DevFiles,
    store: SqliteStore,
    client: TlsConnector,
    now: HourTimestamp,
    _dir: tempfile::TempDir,
}

/// An answer from the collector.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Collector {
    fn start() -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let files = DevFiles::ensure(&data_dir).unwrap();
        let mut catalogs = Catalogs::default();
        catalogs
            .load(&format!("flowkit={FLOWKIT_CATALOG}"))
            .unwrap();
        let config = ServerConfig {
            tls: telemetry_collector::tls::server_config(&files.cert, &files.key).unwrap(),
            catalogs: Arc::new(catalogs),
            token: Token::from_file(&files.token).unwrap(),
            retention: Duration::from_secs(90 * 86_400),
            limits: Limits::default(),
            ingest: IngestConfig::default(),
            max_connections: 64,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = SqliteStore::open(&data_dir).unwrap();
        let server = runtime.block_on(async {
            store.register_catalogs(&config.catalogs).await.unwrap();
            Server::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config)
                .await
                .unwrap()
        });
        let address = server.local_addr().unwrap();
        // The server runs until the runtime is dropped with the collector.
        runtime.spawn(server.run(Arc::new(store.clone()), std::future::pending()));

        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(&files.ca).unwrap() {
            roots.add(certificate.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Collector {
            runtime,
            address,
            files,
            store,
            client: TlsConnector::from(Arc::new(client)),
            now: HourTimestamp::now(),
            _dir: dir,
        }
    }

    fn token(&self) -> String {
        std::fs::read_to_string(&self.files.token)
            .unwrap()
            .trim()
            .to_owned()
    }

    /// One request over a new TLS connection, verified against the collector's CA.
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        self.runtime.block_on(async {
            let tcp = TcpStream::connect(self.address).await.unwrap();
            let name = ServerName::try_from("127.0.0.1").unwrap();
            let mut tls = self.client.connect(name, tcp).await.unwrap();
            let mut request = format!(
                "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
                self.address,
                body.len()
            );
            for (name, value) in headers {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
            request.push_str("\r\n");
            tls.write_all(request.as_bytes()).await.unwrap();
            tls.write_all(body).await.unwrap();
            tls.flush().await.unwrap();
            let mut response = Vec::new();
            // A server that closes without TLS's close_notify has still said everything.
            if let Err(error) = tls.read_to_end(&mut response).await {
                assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
            }
            let response = String::from_utf8(response).unwrap();
            let (head, body) = response.split_once("\r\n\r\n").unwrap();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|status| status.parse().ok())
                .unwrap();
            Answer {
                status,
                head: head.to_owned(),
                body: body.to_owned(),
            }
        })
    }

    /// Posts one batch and returns the collector's `{"accepted","duplicates","rejected"}`.
    fn send(&self, events: Vec<Event>) -> serde_json::Value {
        let batch = WireBatch {
            schema_version: SCHEMA_VERSION,
            events,
        };
        let body = serde_json::to_vec(&batch).unwrap();
        let answer = self.request(
            "POST",
            "/v1/events",
            &[("content-type", "application/json")],
            &body,
        );
        assert_eq!(answer.status, 200, "{answer:?}");
        serde_json::from_str(&answer.body).unwrap()
    }

    /// Sends the traffic the `EXPECTED_…` tables describe: the sessions, a session that is then
    /// erased, and an event that is refused.
    fn send_the_traffic(&self) {
        let mut events: Vec<Event> = SESSIONS
            .iter()
            .flat_map(|session| self.events_of(session, SessionId::random()))
            .collect();
        let erased = SessionId::random();
        events.extend(self.events_of(&ERASED, erased));
        events.extend(
            self.events_of(&UNDECLARED, SessionId::random())
                .into_iter()
                .filter(|event| event.event_type == EventType::Run),
        );
        let answer = self.send(events);
        assert_eq!(
            answer,
            serde_json::json!({"accepted": 15, "duplicates": 0, "rejected": 1})
        );
        let mut deletion = self.event(&ERASED, erased, EventType::DeletionRequest, None);
        deletion.features.clear();
        let answer = self.send(vec![deletion]);
        assert_eq!(
            answer,
            serde_json::json!({"accepted": 1, "duplicates": 0, "rejected": 0})
        );
    }

    fn events_of(&self, session: &Session, id: SessionId) -> Vec<Event> {
        std::iter::once(self.event(session, id, EventType::SdkUsage, None))
            .chain(
                session
                    .runs
                    .iter()
                    .map(|run| self.event(session, id, EventType::Run, Some(*run))),
            )
            .collect()
    }

    fn event(
        &self,
        session: &Session,
        id: SessionId,
        event_type: EventType,
        run: Option<(RunOutcome, DurationBucket, Option<&'static str>)>,
    ) -> Event {
        let name = |text: &str| Name::new(text).unwrap();
        let version = |text: &str| Version::new(text).unwrap();
        let mut errors = ErrorSummary::default();
        if let Some((_, _, Some(exception))) = run {
            errors
                .exception_types
                .insert(name(exception), telemetry::CountBucket::One);
        }
        Event {
            event_id: EventId::random(),
            session_id: id,
            timestamp: self.day(session.days_ago),
            event_type,
            sdk_name: name("flowkit"),
            sdk_version: version(session.sdk_version),
            library_version: version("0.1.0"),
            runtime: name("rust"),
            runtime_version: version(session.runtime_version),
            os: session.os,
            arch: Arch::X86_64,
            interface: Interface::Cli,
            ci: false,
            deployment: DeploymentStage::Development,
            integrations: Default::default(),
            features: session
                .features
                .iter()
                .map(|feature| name(feature))
                .collect(),
            block_types: Default::default(),
            commands: Default::default(),
            metrics: Default::default(),
            errors,
            duration: run.map_or(DurationBucket::OneToFiveMinutes, |(_, duration, _)| {
                duration
            }),
            concurrency_peak: None,
            outcome: run.map(|(outcome, _, _)| outcome),
        }
    }

    /// This hour, `days_ago` days back.
    fn day(&self, days_ago: u64) -> HourTimestamp {
        HourTimestamp::from_unix_seconds(self.now.unix_seconds() - days_ago * 86_400)
    }

    /// The page's address, with the token as the HTTP Basic password as a browser sends it.
    fn page_url(&self) -> String {
        format!("https://report:{}@{}/", self.token(), self.address)
    }

    /// The flag that makes Chromium trust this collector's key and no other.
    fn trust_flag(&self) -> String {
        let key = std::fs::read_to_string(&self.files.key).unwrap();
        let key = rcgen::KeyPair::from_pem(&key).unwrap();
        chromium::trust_only_key(&key.public_key_der())
    }

    /// Writes the report as `telemetry-collector report --html FILE` does: the store's report
    /// for the last 30 days, rendered.
    fn write_report_file(&self, path: &Path) {
        let query = ReportQuery {
            sdk: "flowkit".to_owned(),
            until: UtcDate::today(),
            days: ReportQuery::DEFAULT_DAYS,
        };
        let report = self.runtime.block_on(self.store.report(&query)).unwrap();
        std::fs::write(path, telemetry_collector::html::render(&report)).unwrap();
    }
}

/// Every feature flowkit's catalog declares.
fn catalog_features() -> Vec<String> {
    let catalog = Catalog::from_toml(&std::fs::read_to_string(FLOWKIT_CATALOG).unwrap()).unwrap();
    catalog
        .entries(Section::Features)
        .iter()
        .map(|entry| entry.name.to_string())
        .collect()
}

/// One bar as Chromium's DOM has it.
#[derive(Debug, PartialEq, Eq)]
struct DrawnBar {
    name: String,
    value: u64,
    title: String,
}

/// The `<svg id="…">` element of a chart, as serialized by Chromium.
fn chart<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("Chromium rendered no chart {id}:\n{dom}"));
    let end = start + dom[start..].find("</svg>").unwrap();
    &dom[start..end]
}

/// The bars of a chart, in document order, each with its title.
fn drawn_bars(svg: &str) -> Vec<DrawnBar> {
    svg.split("<rect ")
        .skip(1)
        .filter(|rect| {
            attribute(rect, "class").is_some_and(|class| class.split(' ').any(|c| c == "bar"))
        })
        .map(|rect| {
            let inside = &rect[..rect.find("</rect>").unwrap_or(rect.len())];
            DrawnBar {
                name: attribute(rect, "data-name").unwrap(),
                value: attribute(rect, "data-value").unwrap().parse().unwrap(),
                title: text_between(inside, "<title>", "</title>").unwrap_or_default(),
            }
        })
        .collect()
}

/// The names written beside the bars of a chart, as a reader sees them.
fn labels(svg: &str) -> Vec<String> {
    svg.split("<text class=\"label\"")
        .skip(1)
        .filter_map(|text| text_between(text, ">", "</text>"))
        .collect()
}

/// A headline number.
fn stat(dom: &str, id: &str) -> u64 {
    let start = dom
        .find(&format!("id=\"stat-{id}\""))
        .unwrap_or_else(|| panic!("Chromium rendered no stat-{id}:\n{dom}"));
    let dd = &dom[start + dom[start..].find("<dd ").unwrap()..];
    attribute(dd, "data-value").unwrap().parse().unwrap()
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let tag = format!(" {}", &tag[..tag.find('>')?]);
    let value = text_between(&tag, &format!(" {name}=\""), "\"")?;
    Some(unescape(&value))
}

fn text_between(text: &str, open: &str, close: &str) -> Option<String> {
    let start = text.find(open)? + open.len();
    let end = start + text[start..].find(close)?;
    Some(unescape(&text[start..end]))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

fn pairs(bars: &[DrawnBar]) -> Vec<(String, u64)> {
    bars.iter()
        .map(|bar| (bar.name.clone(), bar.value))
        .collect()
}

fn owned(expected: &[(&str, u64)]) -> Vec<(String, u64)> {
    expected
        .iter()
        .map(|(name, value)| ((*name).to_owned(), *value))
        .collect()
}

/// Checks a page Chromium rendered against the traffic sent.
fn check_page(collector: &Collector, dom: &str) {
    for (id, expected) in EXPECTED_STATS {
        assert_eq!(stat(dom, id), *expected, "stat-{id}");
    }

    // Every catalog feature has a bar, a visible name and a title, used or not.
    let adoption = chart(dom, "chart-adoption");
    let drawn = drawn_bars(adoption);
    let mut unused: Vec<String> = catalog_features()
        .into_iter()
        .filter(|feature| !EXPECTED_ADOPTION.iter().any(|(used, _)| used == feature))
        .collect();
    unused.sort();
    let mut expected = owned(EXPECTED_ADOPTION);
    expected.extend(unused.into_iter().map(|feature| (feature, 0)));
    assert_eq!(pairs(&drawn), expected, "chart-adoption");
    let names: Vec<String> = expected.iter().map(|(name, _)| name.clone()).collect();
    assert_eq!(
        labels(adoption),
        names,
        "the names beside the adoption bars"
    );
    assert_eq!(drawn[0].title, "caching: 2 of 4 sessions (50%)");
    assert!(drawn.iter().all(|bar| !bar.title.is_empty()), "{drawn:?}");

    for (id, expected) in EXPECTED_CHARTS {
        let drawn = drawn_bars(chart(dom, id));
        assert_eq!(pairs(&drawn), owned(expected), "{id}");
        assert!(
            drawn.iter().all(|bar| !bar.title.is_empty()),
            "{id}: {drawn:?}"
        );
    }

    // One bar per day of the report, oldest first, the events on the days they were sent.
    let days = drawn_bars(chart(dom, "chart-events-per-day"));
    assert_eq!(days.len(), ReportQuery::DEFAULT_DAYS as usize, "{days:?}");
    let expected_by_date: BTreeMap<String, u64> = EXPECTED_EVENTS_BY_DAYS_AGO
        .iter()
        .map(|(days_ago, events)| (collector.day(*days_ago).date().to_string(), *events))
        .collect();
    for day in &days {
        let expected = expected_by_date.get(&day.name).copied().unwrap_or(0);
        assert_eq!(day.value, expected, "{}: {days:?}", day.name);
    }
    let dates: Vec<&str> = days.iter().map(|day| day.name.as_str()).collect();
    let mut sorted = dates.clone();
    sorted.sort_unstable();
    assert_eq!(dates, sorted, "days oldest first");
    assert_eq!(
        dates.last().copied(),
        Some(UtcDate::today().to_string()).as_deref()
    );

    // What a reader sees besides the charts.
    assert!(
        dom.contains("<h1><span class=\"sdk\">flowkit</span> telemetry</h1>"),
        "{dom}"
    );
    assert!(!dom.contains("No events in this period."), "{dom}");
}

#[test]
fn the_served_page_shows_what_was_sent() {
    let collector = Collector::start();
    collector.send_the_traffic();
    let Some(chromium) = Chromium::find("the_served_page_shows_what_was_sent") else {
        return;
    };
    let rendered = chromium.dump_dom(&collector.page_url(), &[&collector.trust_flag()]);
    check_page(&collector, &rendered.stdout);
}

#[test]
fn the_report_file_shows_what_was_sent() {
    let collector = Collector::start();
    collector.send_the_traffic();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.html");
    collector.write_report_file(&file);
    let Some(chromium) = Chromium::find("the_report_file_shows_what_was_sent") else {
        return;
    };
    let url = format!("file://{}", file.display());
    check_page(&collector, &chromium.dump_dom(&url, &[]).stdout);

    // Painted too, not only parsed: a screenshot a person can look at.
    let png = screenshot_path("collector-report.png");
    let _ = std::fs::remove_file(&png);
    chromium.screenshot(&url, &png, (1280, 1900), &[]);
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        png.display()
    );
    assert!(bytes.len() > 20_000, "{} is nearly empty", png.display());
    eprintln!("the report page as Chromium paints it: {}", png.display());
}

#[test]
fn a_collector_without_events_says_so() {
    let collector = Collector::start();
    let Some(chromium) = Chromium::find("a_collector_without_events_says_so") else {
        return;
    };
    let dom = chromium
        .dump_dom(&collector.page_url(), &[&collector.trust_flag()])
        .stdout;
    assert!(dom.contains("No events in this period."), "{dom}");
    for id in ["events", "sessions", "runs", "erased-sessions", "refused"] {
        assert_eq!(stat(&dom, id), 0, "stat-{id}");
    }
    let mut features = catalog_features();
    features.sort();
    let drawn = drawn_bars(chart(&dom, "chart-adoption"));
    assert_eq!(
        pairs(&drawn),
        features
            .into_iter()
            .map(|feature| (feature, 0))
            .collect::<Vec<_>>()
    );
    for id in [
        "chart-events-per-day",
        "chart-sdk-versions",
        "chart-outcomes",
        "chart-durations",
        "chart-refused",
    ] {
        assert!(!dom.contains(&format!("<svg id=\"{id}\"")), "{id}: {dom}");
        assert!(dom.contains(&format!("data-chart=\"{id}\"")), "{id}: {dom}");
    }
}

#[test]
fn the_page_needs_the_token() {
    let collector = Collector::start();
    collector.send_the_traffic();
    let token = collector.token();
    let basic = |user_and_password: &str| {
        format!("Basic {}", chromium::base64(user_and_password.as_bytes()))
    };
    let cases: &[(Option<String>, u16)] = &[
        (None, 401),
        (Some(format!("Bearer {token}x")), 401),
        (Some(basic(&format!("{token}:report"))), 401),
        (Some("Basic".to_owned()), 401),
        (Some(format!("Bearer {token}")), 200),
        (Some(basic(&format!("report:{token}"))), 200),
    ];
    for (authorization, status) in cases {
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|value| ("authorization", value.as_str()))
            .collect();
        let answer = collector.request("GET", "/", &headers, b"");
        assert_eq!(answer.status, *status, "{authorization:?}: {answer:?}");
        if answer.status == 401 {
            assert!(
                answer
                    .head
                    .to_ascii_lowercase()
                    .contains("www-authenticate: basic"),
                "a browser must be asked for the password: {answer:?}"
            );
            assert!(!answer.body.contains("chart-"), "{answer:?}");
        } else {
            assert!(
                answer.body.contains("<svg id=\"chart-adoption\""),
                "{answer:?}"
            );
        }
    }

    // Chromium without the token gets no report: the collector asks for a password no one
    // types, and nothing of the page arrives.
    let Some(chromium) = Chromium::find("the_page_needs_the_token") else {
        return;
    };
    let url = format!("https://{}/", collector.address);
    let dom = chromium.dump_dom(&url, &[&collector.trust_flag()]).stdout;
    // The connection itself was trusted: what is missing is the report, not the server.
    assert!(!dom.contains("ERR_"), "{dom}");
    assert!(!dom.contains("chart-"), "{dom}");
    assert!(!dom.contains("flowkit"), "{dom}");
}

/// Where a test leaves a picture for people: the target directory's scratch space.
fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}
