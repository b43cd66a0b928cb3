//! What flowkit users type never reaches an export: flow and task names, parameters, error
//! messages and error kinds are theirs. (The scrubber and the full property suite build on this.)

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowkit::{ErrorKind, Flow, FlowKit, Params, Task, TaskError};
use proptest::prelude::*;
use telemetry_e2e::{enabled_flowkit_config_with, exported_lines};

/// Personal and sensitive data of the shapes the promise names.
fn sensitive() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{3,10}\\.[a-z]{2,8}@[a-z]{3,10}\\.(com|org|io)",
        "/(home|Users|var|tmp)/[a-z]{3,8}/[a-z]{3,8}\\.(csv|json|py)",
        "~/[a-z]{3,8}/[a-z]{3,8}",
        "(10|172|192)\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        "[a-z]{4,10}\\.(internal|corp|example)\\.(com|net)",
        "(sk_live_|ghp_|AKIA|xoxb-)[A-Za-z0-9]{20,32}",
        "eyJ[A-Za-z0-9_-]{10,20}\\.eyJ[A-Za-z0-9_-]{10,20}\\.[A-Za-z0-9_-]{10,20}",
        "[\\PC]{12,40}",
    ]
    .prop_filter("long enough to be unmistakable", |text| {
        text.chars().count() >= 12 || text.contains(['@', '/', '.'])
    })
}

/// A file name made from `text`: path separators and NUL cannot be in one.
fn path_safe(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '/' && *c != '\0')
        .take(60)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn user_data_never_reaches_the_export(
        flow_name in sensitive(),
        task_name in sensitive(),
        key in sensitive(),
        value in sensitive(),
        message in sensitive(),
        kind in sensitive(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        // The state and export directories and the environment carry the user's data too.
        let export = dir.path().join(format!("export-{}", path_safe(&value)));
        let home = dir.path().join(format!("home-{}", path_safe(&key)));
        let vars = [("USER", flow_name.as_str()), ("AWS_SECRET_ACCESS_KEY", message.as_str()), ("PWD", task_name.as_str())];
        let kit = FlowKit::start(&enabled_flowkit_config_with(&home, &export, &vars));
        let failing_message = message.clone();
        let failing_kind = kind.clone();
        let flow = Flow::new(flow_name.clone())
            .task(Task::new(task_name.clone(), |_| Ok(serde_json::Value::Null)))
            .task(Task::new("fails", move |_| {
                Err(TaskError::new(ErrorKind::Custom(failing_kind.clone()), failing_message.clone()))
            }));
        let params: Params = [(key.clone(), value.clone())].into_iter().collect();
        kit.run(&flow, &params);
        // Someone else's plugin, whatever its name: reported only as `other`.
        kit.integration_loaded(telemetry::Integration::OTHER, true);
        drop(kit);

        let lines = exported_lines(&export);
        prop_assert_eq!(lines.len(), 2);
        let home_text = home.display().to_string();
        let export_text = export.display().to_string();
        for line in &lines {
            for secret in [&flow_name, &task_name, &key, &value, &message, &kind, &home_text, &export_text] {
                let escaped = serde_json::to_string(secret).unwrap();
                prop_assert!(!line.contains(secret.as_str()), "{:?} leaked into {}", secret, line);
                prop_assert!(!line.contains(escaped.trim_matches('"')), "{:?} leaked into {}", secret, line);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Data written into the spool by someone else (an edited file, another program) gets the
    /// same checks as a new event before it leaves: whatever is put in a name, a version or a
    /// list of names, it never reaches the export.
    #[test]
    fn user_data_written_into_the_spool_never_leaves(
        secret in sensitive(),
        target in proptest::sample::select(vec![
            r#""features":[]"#,
            r#""sdk_name":"flowkit""#,
            r#""sdk_version":""#,
            r#""runtime":"rust""#,
            r#""commands":[]"#,
        ]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let export = dir.path().join("export");
        // First the runs wait in the spool: the destination is down.
        let down = [("FLOWKIT_SDK_TELEMETRY_ENDPOINT", "https://127.0.0.1:1/v1/events")];
        let kit = FlowKit::start(&enabled_flowkit_config_with(&home, &export, &down));
        kit.run(&Flow::new("etl").task(Task::new("load", |_| Ok(serde_json::Value::Null))), &Params::new());
        drop(kit);

        // Someone writes the secret into every waiting event.
        let quoted = serde_json::to_string(&secret).unwrap();
        let inner = &quoted[1..quoted.len() - 1];
        let replacement = match target {
            r#""features":[]"# => format!(r#""features":[{quoted}]"#),
            r#""commands":[]"# => format!(r#""commands":[{quoted}]"#),
            r#""sdk_version":""# => format!(r#""sdk_version":"{inner}-"#),
            r#""sdk_name":"flowkit""# => format!(r#""sdk_name":{quoted}"#),
            _ => format!(r#""runtime":{quoted}"#),
        };
        let spool = rusqlite::Connection::open(home.join("telemetry_spool.sqlite3")).unwrap();
        let edited = spool
            .execute("UPDATE events SET json = replace(json, ?1, ?2)", [target, replacement.as_str()])
            .unwrap();
        prop_assert!(edited > 0);
        drop(spool);

        // Then the destination is up: the spool is delivered, and the secret stays behind.
        let kit = FlowKit::start(&enabled_flowkit_config_with(&home, &export, &[]));
        kit.telemetry().flush(std::time::Duration::from_secs(10)).unwrap();
        drop(kit);
        for line in exported_lines(&export) {
            prop_assert!(!line.contains(inner), "{:?} left through {}", secret, line);
        }
    }
}
