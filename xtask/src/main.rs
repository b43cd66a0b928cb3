fn main() {
    print!("{}", telemetry_model::wire::event_schema_text());
}
