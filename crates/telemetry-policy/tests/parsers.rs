//! Hostile input to every parser that reads files or variables: never a panic, always a clear
//! error, and never a decision of consent.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use proptest::prelude::*;
use telemetry_model::Catalog;
use telemetry_policy::{
    DecisionInputs, EnvPrefix, EnvSnapshot, Policy, Settings, StateError, StateStore, decide,
};

/// TOML that is close to valid: real keys and tables with mangled values, duplicates, types.
fn near_valid_toml() -> impl Strategy<Value = String> {
    const KEYS: [&str; 9] = [
        "enabled",
        "prompted",
        "session_id",
        "decision_date",
        "consent_version",
        "endpoint",
        "ca_file",
        "allow_prompt",
        "retries",
    ];
    let key = prop_oneof![
        proptest::sample::select(&KEYS[..]).prop_map(str::to_owned),
        "[a-z_]{1,12}",
    ];
    let value = prop_oneof![
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("\"true\"".to_owned()),
        Just("1".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("\"2026-11-28\"".to_owned()),
        Just("2026-11-28".to_owned()),
        Just("\"http://example.com\"".to_owned()),
        Just("\"file://relative\"".to_owned()),
        Just("[true]".to_owned()),
        Just("{ enabled = true }".to_owned()),
        "\"[^\"\\\\]{0,20}\"",
        "[^\\n]{0,10}",
    ];
    let line = (key, value).prop_map(|(key, value)| format!("{key} = {value}"));
    let header = prop_oneof![
        Just("[telemetry]"),
        Just("[telemetry"),
        Just("[[telemetry]]"),
        Just("[features]"),
        Just("")
    ];
    (header, proptest::collection::vec(line, 0..6), any::<bool>()).prop_map(
        |(header, lines, duplicate)| {
            let mut text = format!("{header}\n{}\n", lines.join("\n"));
            if duplicate {
                text.push_str("enabled = true\nenabled = true\n");
            }
            text
        },
    )
}

fn arbitrary_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        near_valid_toml().prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn state_files_never_panic_and_never_invent_consent(bytes in arbitrary_input()) {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::in_dir(dir.path());
        std::fs::write(store.path(), &bytes).unwrap();
        match store.load() {
            Ok(state) => {
                // Whatever parsed, consent only exists if the file literally says so.
                let text = String::from_utf8_lossy(&bytes);
                if state.enabled == Some(true) {
                    prop_assert!(text.contains("enabled = true") || text.contains("enabled=true"), "{}", text);
                }
            }
            Err(error) => {
                prop_assert!(matches!(error, StateError::Corrupt { .. }), "{error}");
                let message = error.to_string();
                prop_assert!(message.contains("telemetry_state.toml") && message.contains("damaged"), "{message}");
                // An unreadable state is undecided: the decision is off.
                let decision = decide(DecisionInputs { user: None, ..DecisionInputs::default() });
                prop_assert!(!decision.enabled);
            }
        }
    }

    #[test]
    fn policy_files_never_panic_and_errors_name_the_file(bytes in arbitrary_input()) {
        let path = Path::new("/etc/flowkit/telemetry-policy.toml");
        match Policy::parse(path, &bytes) {
            Ok(policy) => {
                let text = String::from_utf8_lossy(&bytes);
                if policy.enabled == Some(true) {
                    prop_assert!(text.contains("enabled = true"), "{}", text);
                }
            }
            Err(error) => prop_assert!(error.to_string().contains("/etc/flowkit/telemetry-policy.toml"), "{error}"),
        }
    }

    #[test]
    fn catalogs_never_panic_and_errors_say_what_is_wrong(bytes in arbitrary_input()) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(error) = Catalog::from_toml(&text) {
            prop_assert!(error.to_string().starts_with("catalog"), "{error}");
        }
    }

    #[test]
    fn settings_never_panic_and_invalid_values_never_enable(
        name in prop_oneof![
            Just("ENABLED"), Just("ENDPOINT"), Just("BATCH_SIZE"),
            Just("BATCH_INTERVAL_SECONDS"), Just("CA_FILE"), Just("BUFFER"), Just("DEBUG"),
        ],
        value in "\\PC{0,40}",
    ) {
        let prefix = EnvPrefix::new("FLOWKIT").unwrap();
        let variable = format!("FLOWKIT_SDK_TELEMETRY_{name}");
        let env = EnvSnapshot::from_pairs([(variable.as_str(), value.as_str())]);
        match Settings::from_env(&prefix, &env) {
            Ok(settings) => {
                if settings.enabled == Some(true) {
                    prop_assert!(matches!(value.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
                }
            }
            Err(error) => {
                let message = error.to_string();
                prop_assert!(message.starts_with(&variable), "{message}");
                prop_assert!(message.contains("expected"), "{message}");
                let decision = decide(DecisionInputs { invalid_setting: true, env: Some(true), user: Some(true), ..DecisionInputs::default() });
                prop_assert!(!decision.enabled);
            }
        }
    }
}

/// A session id text: random v4 ids, other UUID versions and well-known values, and junk.
fn session_id_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("00000000-0000-0000-0000-000000000000".to_owned()),
        Just("ffffffff-ffff-ffff-ffff-ffffffffffff".to_owned()),
        // Version 1 (time and node), 3 and 5 (names), 7 (time): none random.
        "[0-9a-f]{8}-[0-9a-f]{4}-[1357][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        // Version 4 with a wrong variant.
        "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-7c-f][0-9a-f]{3}-[0-9a-f]{12}",
        // Well-formed random ids.
        "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        "\\PC{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the state file holds as a session id, the id a process sends is a random
    /// version 4 UUID; the file's own is kept only when it is one and is young, and a replaced
    /// one is gone from the file.
    #[test]
    fn only_young_random_ids_are_ever_sent(
        text in session_id_text(),
        dated in proptest::option::of(0u64..60),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let today = telemetry_model::UtcDate::today();
        let date_line = dated.map_or(String::new(), |days_ago| {
            let made = telemetry_model::UtcDate::from_unix_seconds(
                today.unix_seconds().saturating_sub(days_ago * 86_400),
            );
            format!("session_date = \"{made}\"\n")
        });
        let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
        std::fs::write(
            dir.path().join("telemetry_state.toml"),
            format!("[telemetry]\nenabled = true\nsession_id = \"{escaped}\"\n{date_line}"),
        )
        .unwrap();
        let store = StateStore::in_dir(dir.path());
        // An unreadable file is reported, never used: nothing is sent under it.
        let Ok(state) = store.load() else {
            return Ok(());
        };
        let held = state.session_id;
        let (_, (id, made, _)) = store
            .update(|state| state.ensure_session_id(today, 30))
            .unwrap();
        prop_assert!(id.is_random_v4(), "{id} is sent");
        let young = dated.is_some_and(|days| days < 30);
        let kept = held.is_some_and(|held| held.is_random_v4()) && young;
        prop_assert_eq!(!made, kept, "{} kept: {}", text, !made);
        if made {
            let file = std::fs::read_to_string(dir.path().join("telemetry_state.toml")).unwrap();
            prop_assert!(!file.contains(&text) || text.is_empty() || text.len() < 4, "{} still in the file", text);
        }
    }
}
