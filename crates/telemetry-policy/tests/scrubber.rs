//! Properties of the scrubber: it catches every generated shape of personal data, and it never
//! rejects what events legitimately hold.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use telemetry_model::{Catalog, CountBucket, DurationBucket, EncodedEvent, HourTimestamp, Name};
use telemetry_policy::{MachineIdentity, ScrubReason, Scrubber};
use telemetry_testkit::fixtures;

const FLOWKIT_CATALOG: &str = include_str!("../../flowkit/catalog.toml");

fn identity() -> MachineIdentity {
    MachineIdentity {
        hostname: Some("ci-worker-42".to_owned()),
        username: Some("jdoe".to_owned()),
        home_dir: Some("/home/jdoe".to_owned()),
    }
}

fn catalog_names() -> Vec<String> {
    let catalog = Catalog::from_toml(FLOWKIT_CATALOG).unwrap();
    telemetry_model::Section::ALL
        .iter()
        .flat_map(|section| catalog.entries(*section).to_vec())
        .map(|entry| entry.name.to_string())
        .collect()
}

fn scrubber() -> Scrubber {
    Scrubber::new(identity(), catalog_names())
}

/// Personal data of every shape the promise names, with the reason it must be caught for.
fn personal_data() -> impl Strategy<Value = (String, ScrubReason)> {
    prop_oneof![
        "[a-z0-9._%+-]{1,20}@[a-z0-9-]{1,15}\\.[a-z]{2,6}".prop_map(|s| (s, ScrubReason::Email)),
        (0u8..=255, 0u8..=255, 0u8..=255, 0u8..=255)
            .prop_map(|(a, b, c, d)| (format!("{a}.{b}.{c}.{d}"), ScrubReason::IpAddress)),
        any::<[u16; 8]>().prop_map(|parts| {
            let text = parts
                .iter()
                .map(|part| format!("{part:x}"))
                .collect::<Vec<_>>()
                .join(":");
            (text, ScrubReason::IpAddress)
        }),
        "(https?|ftp|ssh)://[a-z0-9.-]{1,20}(/[a-z0-9]{0,10})?".prop_map(|s| (s, ScrubReason::Url)),
        "[a-z][a-z0-9-]{0,12}(\\.[a-z][a-z0-9-]{0,12}){1,3}\\.(com|net|org|io|internal|corp|local)"
            .prop_map(|s| (s, ScrubReason::HostName)),
        "/[A-Za-z0-9_. -]{1,20}(/[A-Za-z0-9_. -]{1,20}){0,4}"
            .prop_map(|s| (s, ScrubReason::FilePath)),
        "[A-Za-z0-9_-]{1,12}/[A-Za-z0-9_.-]{1,12}".prop_map(|s| (s, ScrubReason::FilePath)),
        "~/[A-Za-z0-9_.-]{0,20}".prop_map(|s| (s, ScrubReason::FilePath)),
        "[A-Z]:\\\\[A-Za-z0-9_]{1,12}".prop_map(|s| (s, ScrubReason::FilePath)),
        "(sk_live_|ghp_|github_pat_|xoxb-|glpat-|AKIA)[A-Za-z0-9]{16,40}"
            .prop_map(|s| (s, ScrubReason::Credential)),
        "eyJ[A-Za-z0-9_-]{10,40}\\.eyJ[A-Za-z0-9_-]{10,40}\\.[A-Za-z0-9_-]{10,40}"
            .prop_map(|s| (s, ScrubReason::Credential)),
        // Random 32-character keys over the usual alphabets (hex, base62, base64).
        "[0-9a-f]{32,64}"
            .prop_filter("has at least four digits", |s| s
                .chars()
                .filter(char::is_ascii_digit)
                .count()
                >= 4)
            .prop_map(|s| (s, ScrubReason::Credential)),
        "[A-Za-z0-9]{32,48}"
            .prop_filter("mixes classes like a random key", |s| {
                s.chars().any(|c| c.is_ascii_uppercase())
                    && s.chars().filter(char::is_ascii_digit).count() >= 4
            })
            .prop_map(|s| (s, ScrubReason::Credential)),
        Just(("ci-worker-42".to_owned(), ScrubReason::MachineHostname)),
        Just(("jdoe".to_owned(), ScrubReason::Username)),
    ]
}

/// Text around the data, as it would appear in a message or a name.
fn surrounding() -> impl Strategy<Value = (String, String)> {
    let side = prop_oneof![
        Just(String::new()),
        Just(" ".to_owned()),
        "[a-z ]{0,8} ",
        " \\(",
        ", "
    ];
    (
        side.clone(),
        side.prop_map(|side| side.chars().rev().collect::<String>()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn no_false_negatives_on_generated_shapes(((data, _reason), (before, after)) in (personal_data(), surrounding())) {
        let text = format!("{before}{data}{after}");
        let found = scrubber().check_text(&text);
        prop_assert!(found.is_some(), "missed {text:?}");
        // In an event, anywhere: a feature, a metric key, an error name.
        for json in [
            format!("{{\"features\":[{}]}}", serde_json::to_string(&text).unwrap()),
            format!("{{\"metrics\":{{{}:\"1\"}}}}", serde_json::to_string(&text).unwrap()),
        ] {
            prop_assert!(scrubber().check_json(&json).is_err(), "missed in {json}");
        }
    }

    #[test]
    fn no_false_positives_on_real_events(
        features in proptest::sample::subsequence(catalog_names(), 0..12),
        seconds in 0u64..8_000_000_000,
        duration in proptest::sample::select(DurationBucket::ALL.to_vec()),
        count in proptest::sample::select(CountBucket::ALL.to_vec()),
    ) {
        let mut event = fixtures::run_event();
        event.timestamp = HourTimestamp::from_unix_seconds(seconds);
        event.duration = duration;
        event.features = features.iter().map(|name| Name::new(name).unwrap()).collect();
        event.metrics = features.iter().map(|name| (Name::new(name).unwrap(), count)).collect();
        event.errors.exception_types = features.iter().map(|name| (Name::new(name).unwrap(), count)).collect();
        let encoded = EncodedEvent::encode(&event).unwrap();
        prop_assert_eq!(scrubber().check_json(encoded.json()), Ok(()), "{}", encoded.json());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The worker sends alike runs as copies of a checked event under new ids: the scrubber
    /// must judge every copy exactly as it judged the original, rejected or not.
    #[test]
    fn copies_under_new_ids_are_judged_like_the_original(
        features in proptest::sample::subsequence(
            [catalog_names(), vec!["jdoe".to_owned(), "ci".to_owned()]].concat(),
            0..6,
        ),
        // Versions shaped like IPv4 addresses are no longer versions at all; the user's name
        // among the features is what gets a copy rejected.
        version in prop_oneof![
            Just("0.1.0"),
            Just("10.0.19045.3803"),
            Just("3.13.0rc1"),
            Just("2.3.4-rc.1"),
        ],
    ) {
        let mut event = fixtures::run_event();
        event.features = features.iter().map(|name| Name::new(name).unwrap()).collect();
        event.sdk_version = telemetry_model::Version::new(version).unwrap();
        let original = EncodedEvent::encode(&event).unwrap();
        let verdict = scrubber().check_json(original.json());
        for _ in 0..3 {
            let copy = original.with_id(telemetry_model::EventId::random()).unwrap();
            prop_assert_ne!(copy.id(), original.id());
            prop_assert_eq!(scrubber().check_json(copy.json()), verdict);
        }
    }
}

#[test]
fn every_catalog_name_passes() {
    let scrubber = scrubber();
    for name in catalog_names() {
        assert_eq!(scrubber.check_text(&name), None, "{name}");
    }
}

/// A scrubber for a machine whose names are `host`, `user` and `home`, allowing the flowkit
/// catalog's names and `extra`, as the facade allows its SDK's and runtime's names.
fn scrubber_on(host: &str, user: &str, home: &str, extra: &[&str]) -> Scrubber {
    let identity = MachineIdentity {
        hostname: Some(host.to_owned()),
        username: Some(user.to_owned()),
        home_dir: Some(home.to_owned()),
    };
    let allowed = catalog_names()
        .into_iter()
        .chain(extra.iter().map(|name| (*name).to_owned()));
    Scrubber::new(identity, allowed)
}

/// Allowing a name exempts its content from the checks, never this machine's names: a catalog
/// (or SDK, or runtime) name that is the user's or the host's name is rejected in every event.
#[test]
fn allowing_a_name_never_exempts_this_machines_names() {
    let scrubber = scrubber_on(
        "ci-worker-42.corp.example",
        "jdoe",
        "/home/jdoe",
        &[
            "jdoe",
            "ci-worker-42",
            "ci-worker-42.corp.example",
            "/home/jdoe/x",
            "flowkit",
        ],
    );
    let cases = [
        ("jdoe", Some(ScrubReason::Username)),
        ("ci-worker-42", Some(ScrubReason::MachineHostname)),
        (
            "ci-worker-42.corp.example",
            Some(ScrubReason::MachineHostname),
        ),
        ("/home/jdoe/x", Some(ScrubReason::HomeDirectory)),
        ("flowkit", None),
        ("retries", None),
        ("concurrent_task_runner", None),
    ];
    for (text, expected) in cases {
        assert_eq!(scrubber.check_text(text), expected, "{text:?}");
    }

    // A user whose name is one of the catalog's: every event that uses it is dropped.
    let scrubber = scrubber_on("box", "retries", "/home/retries", &["flowkit", "rust"]);
    assert_eq!(scrubber.check_text("retries"), Some(ScrubReason::Username));
    let event = EncodedEvent::encode(&fixtures::run_event()).unwrap();
    assert!(event.json().contains("\"retries\""), "{}", event.json());
    assert_eq!(
        scrubber.check_json(event.json()),
        Err(ScrubReason::Username)
    );
}

/// The schema's own words are the same in every event from every machine: a user or host
/// that happens to share one (an enum spelling, a field name) loses nothing.
#[test]
fn the_schemas_own_words_are_exempt_whoever_runs_it() {
    let event = EncodedEvent::encode(&fixtures::run_event()).unwrap();
    for word in [
        "linux",
        "x86_64",
        "cli",
        "run",
        "development",
        "completed",
        "features",
        "other",
    ] {
        let scrubber = scrubber_on(word, word, &format!("/home/{word}"), &["flowkit", "rust"]);
        assert_eq!(scrubber.check_text(word), None, "{word}");
        assert_eq!(scrubber.check_json(event.json()), Ok(()), "{word}");
    }
}

/// `refuses_name`, the start-up check of every declared name: a name that is, or contains
/// word for word, the host's name (full or short), the user's name or the home directory's own
/// name is refused; a name that only shares letters with one is not.
#[test]
fn refuses_names_that_are_or_contain_this_machines_names() {
    let alices = scrubber_on(
        "build-box-7.corp.example",
        "alice",
        "/var/lib/jenkins",
        &["alice", "alice_flow", "flowkit", "rust"],
    );
    let cases = [
        ("alice", Some(ScrubReason::Username)),
        ("alice_flow", Some(ScrubReason::Username)),
        ("flow_alice", Some(ScrubReason::Username)),
        ("my_alice_flow", Some(ScrubReason::Username)),
        ("Alice", Some(ScrubReason::Username)),
        ("build_box_7", Some(ScrubReason::MachineHostname)),
        ("build_box_7_runs", Some(ScrubReason::MachineHostname)),
        (
            "build_box_7_corp_example",
            Some(ScrubReason::MachineHostname),
        ),
        ("jenkins", Some(ScrubReason::HomeDirectory)),
        ("jenkins_jobs", Some(ScrubReason::HomeDirectory)),
        ("malice", None),
        ("palace", None),
        ("alicesync", None),
        ("build_box", None),
        ("box_7", None),
        ("corp", None),
        ("var", None),
        ("flowkit", None),
        ("rust", None),
        ("", None),
    ];
    for (name, expected) in cases {
        assert_eq!(alices.refuses_name(name), expected, "{name:?}");
    }

    // Windows homes name their directory after a backslash.
    let windows = scrubber_on("desk", "bob", "C:\\Users\\bobby", &[]);
    assert_eq!(
        windows.refuses_name("bobby_tasks"),
        Some(ScrubReason::HomeDirectory)
    );
    assert_eq!(windows.refuses_name("users"), None);

    // On an ordinary machine, flowkit's own names are all fine.
    let ordinary = scrubber();
    for name in catalog_names()
        .iter()
        .map(String::as_str)
        .chain(["flowkit", "rust"])
    {
        assert_eq!(ordinary.refuses_name(name), None, "{name}");
    }
}

/// The shapes a privacy review found the scrubber missing, each with the reason it is caught
/// for, alone and inside text as an event string could hold it.
#[test]
fn finds_the_shapes_the_privacy_review_found() {
    let cases = [
        // IPv4 with a port, inside IPv6, and zero-padded.
        ("10.0.0.1:8080", ScrubReason::IpAddress),
        ("connect to 10.0.0.1:8080 failed", ScrubReason::IpAddress),
        ("::ffff:10.0.0.1", ScrubReason::IpAddress),
        ("::ffff:a00:1", ScrubReason::IpAddress),
        ("::1", ScrubReason::IpAddress),
        ("[2001:db8::1]:8443", ScrubReason::IpAddress),
        ("192.168.001.010", ScrubReason::IpAddress),
        ("010.000.000.001:22", ScrubReason::IpAddress),
        // Zero-width and other invisible characters: refused in a name, and hiding nothing.
        ("retr\u{200B}ies", ScrubReason::Malformed),
        ("retries\u{200C}", ScrubReason::Malformed),
        ("\u{200D}retries", ScrubReason::Malformed),
        ("retr\u{2060}ies", ScrubReason::Malformed),
        ("\u{FEFF}retries", ScrubReason::Malformed),
        ("flow\u{00AD}kit", ScrubReason::Malformed),
        ("retries\u{E0061}\u{E006C}", ScrubReason::Malformed),
        ("alice\u{200B}@example.com", ScrubReason::Email),
        ("alice@\u{200C}example.com", ScrubReason::Email),
        (
            "db\u{200D}.internal\u{2060}.example.com",
            ScrubReason::HostName,
        ),
        ("db.internal\u{FEFF}.example.com", ScrubReason::HostName),
        ("10.0\u{200B}.0.1", ScrubReason::IpAddress),
        ("/home\u{200B}/x", ScrubReason::FilePath),
        ("jd\u{200B}oe", ScrubReason::Username),
        ("ci-worker\u{200B}-42", ScrubReason::MachineHostname),
        // Payment card numbers that pass the Luhn check, together or grouped.
        ("4111111111111111", ScrubReason::Credential),
        ("4111 1111 1111 1111", ScrubReason::Credential),
        ("4111-1111-1111-1111", ScrubReason::Credential),
        ("5555555555554444", ScrubReason::Credential),
        ("378282246310005", ScrubReason::Credential),
        ("3782 822463 10005", ScrubReason::Credential),
        ("6011000990139424", ScrubReason::Credential),
        ("4000056655665556", ScrubReason::Credential),
        ("4222222222222", ScrubReason::Credential),
        ("card:4111111111111111;", ScrubReason::Credential),
        ("order 12 4111 1111 1111 1111", ScrubReason::Credential),
        // GitHub and npm tokens, however short, and other lower-case formats of a name's shape.
        ("ghp_x", ScrubReason::Credential),
        ("ghp_abc123", ScrubReason::Credential),
        ("gho_16C7e42F292c", ScrubReason::Credential),
        ("ghu_AbCd", ScrubReason::Credential),
        ("ghs_0", ScrubReason::Credential),
        ("ghr_1B4a2e77838347a7E420ce178F2E7", ScrubReason::Credential),
        ("github_pat_11ABC", ScrubReason::Credential),
        ("npm_a", ScrubReason::Credential),
        ("npm_abcdef", ScrubReason::Credential),
        ("token=npm_Xy12", ScrubReason::Credential),
        ("Bearer ghp_abc", ScrubReason::Credential),
        ("hf_abcdefgh", ScrubReason::Credential),
        ("sk_live_abcdefgh", ScrubReason::Credential),
        // Percent-escaped paths, addresses and hosts, escaped once or twice.
        ("%2Fhome%2Falice", ScrubReason::FilePath),
        ("%2fetc%2fpasswd", ScrubReason::FilePath),
        ("C%3A%5CUsers", ScrubReason::FilePath),
        ("C%3A%5CUsers%5Cbob", ScrubReason::FilePath),
        ("data%2Fcustomers.csv", ScrubReason::FilePath),
        ("%7E%2F.ssh", ScrubReason::FilePath),
        ("%252Fhome%252Falice", ScrubReason::FilePath),
        ("%2Fhome%2Fjdoe%2Fx", ScrubReason::HomeDirectory),
        ("alice%40example.com", ScrubReason::Email),
        ("https%3A%2F%2Fexample.com", ScrubReason::Url),
        ("db%2Einternal%2Eexample%2Ecom", ScrubReason::HostName),
        ("10%2E0%2E0%2E1", ScrubReason::IpAddress),
        ("jd%6Fe", ScrubReason::Username),
        ("line%0Abreak", ScrubReason::Malformed),
        ("retr%E2%80%8Bies", ScrubReason::Malformed),
    ];
    assert_all_found(&cases);
}

/// Checks that each text, alone and inside a sentence, is found for its reason by `check_text`
/// and in an event by `check_json`; lists every miss at once.
fn assert_all_found(cases: &[(&str, ScrubReason)]) {
    let scrubber = scrubber();
    let mut misses = Vec::new();
    for &(data, expected) in cases {
        for text in [data.to_owned(), format!("peer ({data}), retrying")] {
            let found = scrubber.check_text(&text);
            let json = format!(
                "{{\"features\":[{}]}}",
                serde_json::to_string(&text).unwrap()
            );
            let in_event = scrubber.check_json(&json);
            if found != Some(expected) || in_event != Err(expected) {
                misses.push(format!(
                    "{text:?}: expected {expected}, found {found:?} and {in_event:?}"
                ));
            }
        }
    }
    assert!(
        misses.is_empty(),
        "{} misses:\n{}",
        misses.len(),
        misses.join("\n")
    );
}

/// Versions in the strict grammar pass, however long and however many digits they mix with
/// letters; they are exempt from the content checks because the grammar leaves room for
/// nothing else.
#[test]
fn strict_versions_pass() {
    let scrubber = scrubber();
    let versions = [
        "1",
        "1.95",
        "0.1.0",
        "3.13.0rc1",
        "1.0a1.dev2",
        "1.0rc1.post2.dev3",
        "1.95.0-nightly",
        "0.4.0-beta.1",
        "10.0.19045.3803",
        "10.0.19045.3803-preview.12",
        "2026.1.15-nightly.20260115",
        "123456789.987654321.1-rc.9",
        "4.8.4084.0-alpha.7",
    ];
    let refused: Vec<_> = versions
        .iter()
        .filter_map(|version| {
            assert!(telemetry_model::Version::is_valid(version), "{version}");
            scrubber
                .check_text(version)
                .map(|reason| format!("{version}: {reason}"))
        })
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
}

/// Long numbers that are not card numbers pass: the Luhn check fails, the digits are part of a
/// word, or the groups are not a card's.
#[test]
fn long_numbers_that_are_not_cards_pass() {
    let scrubber = scrubber();
    for text in [
        "4111111111111112",
        "4111 1111 1111 1112",
        "task_4111111111111111",
        "a4111111111111111",
        "4111111111111111x",
        "2026-11-28 14 00 00 00",
        "1 2 3 4 5 6 7 8 9 1 2 3 4 5 6",
        "12-34-56-78-91-23-45",
        "41111111111111111111",
        "9999999999990",
    ] {
        assert_eq!(scrubber.check_text(text), None, "{text:?}");
    }
}

/// Names that only look like the start of a token pass: a declared name, a prefix inside a
/// word, a prefix with nothing after it.
#[test]
fn names_like_token_prefixes_pass_when_declared_or_inside_a_word() {
    let declared = scrubber_on(
        "box",
        "jdoe",
        "/home/jdoe",
        &["npm_registry", "ghs_feature"],
    );
    for text in [
        "npm_registry",
        "ghs_feature",
        "uses npm_registry",
        "uses_npm_packages",
        "high_ghp_x",
        "npm_",
        "ghp_",
        "github_pat_",
        "npm",
        "gh_pages",
        "github_actions",
    ] {
        assert_eq!(declared.check_text(text), None, "{text:?}");
    }
    // Not declared, the same names are refused.
    assert_eq!(
        scrubber().check_text("npm_registry"),
        Some(ScrubReason::Credential)
    );
}

/// Text around the data that keeps it a word of its own: empty, or ending (before it) and
/// starting (after it) with a space or punctuation, around random letters and digits.
fn loose_surrounding() -> impl Strategy<Value = (String, String)> {
    let side = prop_oneof![
        Just(String::new()),
        "[A-Za-z0-9 ]{0,12}[ ,;(=]",
        "[a-z ]{0,8} ",
    ];
    (
        side.clone(),
        side.prop_map(|side| side.chars().rev().collect::<String>()),
    )
}

/// A card number that passes the Luhn check: a known issuer's prefix, random digits and the
/// check digit, in groups of four separated by nothing, spaces or dashes.
fn card_number() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["4", "51", "55", "37", "6011", "35"]),
        "[0-9]{16}",
        prop::sample::select(vec!["", " ", "-"]),
    )
        .prop_map(|(prefix, random, separator)| {
            let length = if prefix == "37" { 15 } else { 16 };
            let mut digits: Vec<u32> = prefix
                .chars()
                .chain(random.chars())
                .take(length - 1)
                .map(|c| c.to_digit(10).unwrap())
                .collect();
            // The check digit makes the Luhn sum a multiple of 10.
            let sum: u32 = digits
                .iter()
                .rev()
                .enumerate()
                .map(|(position, &digit)| match position % 2 {
                    0 if digit * 2 > 9 => digit * 2 - 9,
                    0 => digit * 2,
                    _ => digit,
                })
                .sum();
            digits.push((10 - sum % 10) % 10);
            let text: String = digits
                .iter()
                .map(|digit| char::from_digit(*digit, 10).unwrap())
                .collect();
            text.as_bytes()
                .chunks(4)
                .map(|chunk| std::str::from_utf8(chunk).unwrap())
                .collect::<Vec<_>>()
                .join(separator)
        })
}

/// `text` with the characters of paths, addresses and hosts percent-escaped, in either case,
/// once or twice.
fn percent_escaped(text: &str, lower: bool, twice: bool) -> String {
    let mut escaped = String::new();
    for c in text.chars() {
        match c {
            '/' | '\\' | ':' | '@' | '.' | '~' => {
                let code = format!("{:02X}", u32::from(c));
                let code = if lower { code.to_lowercase() } else { code };
                escaped.push_str(if twice { "%25" } else { "%" });
                escaped.push_str(&code);
            }
            _ => escaped.push(c),
        }
    }
    escaped
}

/// The shapes the privacy review found missed, generated: IPv4 with a port, inside IPv6 and
/// zero-padded; card numbers; GitHub and npm tokens of any length; escaped paths.
fn reviewed_shapes() -> impl Strategy<Value = String> {
    let quad = (0u8..=255, 0u8..=255, 0u8..=255, 0u8..=255);
    prop_oneof![
        (quad.clone(), 0u16..).prop_map(|((a, b, c, d), port)| format!("{a}.{b}.{c}.{d}:{port}")),
        quad.clone()
            .prop_map(|(a, b, c, d)| format!("::ffff:{a}.{b}.{c}.{d}")),
        (quad, prop::array::uniform4(1usize..=3)).prop_map(|((a, b, c, d), [wa, wb, wc, wd])| {
            format!("{a:0wa$}.{b:0wb$}.{c:0wc$}.{d:0wd$}")
        }),
        card_number(),
        (
            prop::sample::select(vec![
                "ghp_",
                "gho_",
                "ghu_",
                "ghs_",
                "ghr_",
                "github_pat_",
                "npm_"
            ]),
            "[A-Za-z0-9_]{1,12}",
        )
            .prop_map(|(prefix, rest)| format!("{prefix}{rest}")),
        (
            prop_oneof![
                "/[a-z]{1,8}(/[a-z0-9._-]{1,8}){0,3}",
                "[A-Z]:\\\\[A-Za-z]{1,8}(\\\\[A-Za-z0-9]{1,8}){0,2}",
                "~/[a-z.]{1,8}",
            ],
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(path, lower, twice)| percent_escaped(&path, lower, twice)),
    ]
}

/// The characters a privacy review found hiding data.
const ZERO_WIDTH: [char; 5] = ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}'];

/// `text` with `c` inserted before its `at`-th character.
fn insert_char(text: &str, at: prop::sample::Index, c: char) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = at.index(chars.len() + 1);
    chars[..at]
        .iter()
        .chain([c].iter())
        .chain(chars[at..].iter())
        .collect()
}

/// Whether `name`'s words (split at `_`) hold the words of `identity` in a row.
fn holds_words(name: &str, identity: &[&str]) -> bool {
    format!("_{name}_").contains(&format!("_{}_", identity.join("_")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// Every reviewed shape, anywhere in a string of random text, is caught, in the string
    /// and in an event.
    #[test]
    fn reviewed_shapes_never_pass(data in reviewed_shapes(), (before, after) in loose_surrounding()) {
        let text = format!("{before}{data}{after}");
        let scrubber = scrubber();
        prop_assert!(scrubber.check_text(&text).is_some(), "missed {text:?}");
        for json in [
            format!("{{\"features\":[{}]}}", serde_json::to_string(&text).unwrap()),
            format!("{{\"metrics\":{{{}:\"1\"}}}}", serde_json::to_string(&text).unwrap()),
        ] {
            prop_assert!(scrubber.check_json(&json).is_err(), "missed in {json}");
        }
    }

    /// A zero-width character anywhere in personal data hides nothing: the string is caught for
    /// the same reason as without it. Anywhere in a declared name, it makes the name refused.
    #[test]
    fn zero_width_characters_hide_nothing(
        ((data, _reason), (before, after)) in (personal_data(), surrounding()),
        name in proptest::sample::select(catalog_names()),
        at in any::<prop::sample::Index>(),
        c in proptest::sample::select(ZERO_WIDTH.to_vec()),
    ) {
        let scrubber = scrubber();
        let text = format!("{before}{data}{after}");
        let hidden = insert_char(&text, at, c);
        prop_assert_eq!(scrubber.check_text(&hidden), scrubber.check_text(&text), "{:?}", hidden);
        let hidden_name = insert_char(&name, at, c);
        prop_assert_eq!(scrubber.check_text(&hidden_name), Some(ScrubReason::Malformed), "{:?}", hidden_name);
    }

    /// Percent-escaping the separators of personal data hides nothing either.
    #[test]
    fn percent_escapes_hide_nothing(
        ((data, _reason), (before, after)) in (personal_data(), surrounding()),
        lower in any::<bool>(),
        twice in any::<bool>(),
    ) {
        let scrubber = scrubber();
        let text = format!("{before}{data}{after}");
        let escaped = percent_escaped(&text, lower, twice);
        prop_assert!(scrubber.check_text(&escaped).is_some(), "missed {escaped:?}");
    }

    /// The false-positive guard: names shaped like catalog names, once declared, and versions
    /// in the strict grammar pass in every position of an event, and `refuses_name` lets the
    /// names through, unless a name holds this machine's user or host name word for word.
    #[test]
    fn declared_names_and_strict_versions_pass(
        names in proptest::collection::vec("[a-z][a-z0-9_]{0,40}", 1..6),
        version in strict_version(),
    ) {
        let identity_words: [&[&str]; 3] = [&["jdoe"], &["ci", "worker", "42"], &["ci", "worker", "42", "corp", "example"]];
        prop_assume!(names.iter().all(|name| identity_words.iter().all(|words| !holds_words(name, words))));
        let scrubber = scrubber_on("ci-worker-42.corp.example", "jdoe", "/home/jdoe", &names.iter().map(String::as_str).collect::<Vec<_>>());
        for name in &names {
            prop_assert_eq!(scrubber.check_text(name), None, "{}", name);
            prop_assert_eq!(scrubber.refuses_name(name), None, "{}", name);
        }
        prop_assert_eq!(scrubber.check_text(&version), None, "{}", version);
        let valid_names: Vec<Name> = names.iter().filter_map(|name| Name::new(name).ok()).collect();
        let mut event = fixtures::run_event();
        event.sdk_version = telemetry_model::Version::new(&version).unwrap();
        event.runtime_version = telemetry_model::Version::new(&version).unwrap();
        event.features = valid_names.iter().cloned().collect();
        event.metrics = valid_names.iter().map(|name| (name.clone(), CountBucket::One)).collect();
        event.errors.exception_types = valid_names.iter().map(|name| (name.clone(), CountBucket::One)).collect();
        let encoded = EncodedEvent::encode(&event).unwrap();
        prop_assert_eq!(scrubber.check_json(encoded.json()), Ok(()), "{}", encoded.json());
    }
}

/// Versions in the strict grammar: one to three numbers, or four with one above 255, and every
/// kind of pre-release tag.
fn strict_version() -> impl Strategy<Value = String> {
    let number = "(0|[1-9][0-9]{0,3})";
    let regex = |pattern: String| proptest::string::string_regex(&pattern).unwrap();
    let core = prop_oneof![
        regex(format!("{number}(\\.{number}){{0,2}}")),
        regex(format!(
            "{number}\\.{number}\\.[3-9][0-9]{{2,3}}\\.{number}"
        )),
    ];
    let tag = prop_oneof![
        Just(String::new()),
        "-(alpha|beta|rc|dev|pre|preview|nightly)(\\.?[1-9][0-9]{0,2})?",
        "(a|b|rc)[1-9][0-9]{0,2}(\\.post[0-9])?(\\.dev[0-9])?",
        "\\.post[0-9]{1,2}",
        "\\.dev[0-9]{1,2}",
    ];
    (core, tag)
        .prop_map(|(core, tag)| format!("{core}{tag}"))
        .prop_filter("fits the grammar", |version| {
            telemetry_model::Version::is_valid(version)
        })
}
