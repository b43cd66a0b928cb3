//! Every exported line is a valid event for an independent validator, and on the hour.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use flowkit::instrumentation::integrations;
use flowkit::{
    Block, BlockKind, Deployment, ErrorKind, Flow, FlowKit, Params, Task, TaskError, TaskRunner,
};
use telemetry::Integration;
use telemetry_e2e::{enabled_flowkit_config, exported_lines, validate_with_python};

#[test]
fn a_flowkit_workload_exports_schema_valid_events() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    let config = enabled_flowkit_config(&dir.path().join("home"), &export);
    let kit = FlowKit::start(&config);
    kit.register_block(Block {
        name: "db".into(),
        kind: BlockKind::DatabaseCredentials,
        value: "x".into(),
    });
    kit.integration_loaded(integrations::AWS, true);
    kit.integration_loaded(Integration::OTHER, false);
    let flow = Flow::new("workload")
        .runner(TaskRunner::Concurrent { max_workers: 2 })
        .uses_block("db")
        .task(
            Task::new("a", |_| Ok(1.into()))
                .retries(1, Duration::ZERO)
                .cached(),
        )
        .task(
            Task::new("b", |context| match context.attempt {
                1 => Err(TaskError::new(
                    ErrorKind::Custom("MyOwnError".into()),
                    "nope",
                )),
                _ => Ok(2.into()),
            })
            .retries(1, Duration::ZERO)
            .asynchronous(),
        )
        .task(Task::new("c", |context| match context.params.get("fail") {
            Some(_) => Err(TaskError::new(ErrorKind::Timeout, "slow")),
            None => Ok(3.into()),
        }));
    let mut failing = Params::new();
    failing.insert("fail".into(), "1".into());
    for _ in 0..3 {
        kit.run(&flow, &Params::new());
    }
    kit.run(&flow, &failing);
    kit.run(
        &Flow::new("missing-block").uses_block("nope"),
        &Params::new(),
    );
    kit.serve(
        &[Deployment::new("nightly", flow).every(Duration::from_secs(60))],
        2,
    );
    drop(kit);

    let lines = exported_lines(&export);
    assert_eq!(lines.len(), 3 + 1 + 1 + 2 + 1, "{lines:#?}");
    assert_eq!(validate_with_python(&lines), Ok(lines.len()));
    for line in &lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let timestamp = event["timestamp"].as_str().unwrap();
        assert!(timestamp.ends_with(":00:00Z"), "{timestamp}");
    }
    assert!(
        lines.iter().any(|line| line.contains("\"timeout_error\"")),
        "mapped exception types appear"
    );
    assert!(
        lines.iter().any(|line| line.contains("\"other\"")),
        "undeclared ones appear as other"
    );
    assert!(
        lines
            .iter()
            .all(|line| !line.contains("MyOwnError") && !line.contains("someone-elses-plugin"))
    );
}

#[test]
fn the_independent_validator_rejects_what_the_schema_forbids() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    let kit = FlowKit::start(&enabled_flowkit_config(&dir.path().join("home"), &export));
    kit.run(
        &Flow::new("one").task(Task::new("t", |_| Ok(1.into()))),
        &Params::new(),
    );
    drop(kit);
    let valid = exported_lines(&export).remove(0);
    let event: serde_json::Value = serde_json::from_str(&valid).unwrap();
    let broken = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut event = event.clone();
        change(&mut event);
        event.to_string()
    };
    let cases = [
        (
            "an unknown field",
            broken(&|event| event["flow_name"] = "etl".into()),
        ),
        (
            "minutes in the timestamp",
            broken(&|event| event["timestamp"] = "2026-11-28T14:37:00Z".into()),
        ),
        (
            "an exact duration",
            broken(&|event| event["duration"] = "1.234s".into()),
        ),
        (
            "a free-text feature",
            broken(&|event| event["features"] = serde_json::json!(["alice@example.com"])),
        ),
        (
            "a missing session id",
            broken(&|event| {
                event.as_object_mut().unwrap().remove("session_id");
            }),
        ),
        (
            "an unknown error field",
            broken(&|event| event["errors"]["message"] = "boom".into()),
        ),
    ];
    assert_eq!(validate_with_python(&[valid]), Ok(1));
    for (what, line) in cases {
        assert!(
            validate_with_python(&[line]).is_err(),
            "the schema accepted {what}"
        );
    }
}
