//! The committed JSON Schema must match the Rust types.

use telemetry_model::wire::event_schema_text;

#[test]
fn committed_event_schema_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/event.schema.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = event_schema_text();
    assert!(
        committed == generated,
        "docs/event.schema.json is stale or missing: run `cargo xtask codegen` and commit the result"
    );
}

#[test]
fn every_object_in_the_schema_forbids_unknown_properties() {
    let schema: serde_json::Value = serde_json::from_str(&event_schema_text()).unwrap();
    let mut objects = 0;
    let mut stack = vec![&schema];
    while let Some(node) = stack.pop() {
        match node {
            serde_json::Value::Object(map) => {
                if map.get("type") == Some(&serde_json::Value::from("object"))
                    && map.contains_key("properties")
                {
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
    assert!(objects >= 2, "expected the event and its error summary, found {objects} objects");
}
