//! The JSON Schema generated from the Rust types is strict: no object accepts unknown fields.
//! (That the committed copy in `docs/` is up to date is checked by the xtask tidy tests.)

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use telemetry_model::wire::event_schema_text;

#[test]
fn every_object_in_the_schema_forbids_unknown_properties() {
    let schema: serde_json::Value = serde_json::from_str(&event_schema_text()).unwrap();
    let mut objects = 0;
    let mut stack = vec![&schema];
    while let Some(node) = stack.pop() {
        match node {
            serde_json::Value::Object(map) => {
                if map.get("type") == Some(&serde_json::Value::from("object")) {
                    objects += 1;
                    assert_eq!(
                        map.get("additionalProperties"),
                        Some(&serde_json::Value::Bool(false)),
                        "object schema allows unknown properties: {node}"
                    );
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    assert!(
        objects >= 3,
        "expected the event, its metrics and its error summary, found {objects} objects"
    );
}
