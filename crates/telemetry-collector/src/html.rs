//! The report as one self-contained HTML page.

use crate::report::Report;

/// Renders the report as a page.
pub fn render(report: &Report) -> String {
    let json = serde_json::to_string_pretty(report).unwrap_or_default();
    format!(
        "<!doctype html><meta charset=utf-8><title>{}</title><pre>{}</pre>",
        escape(&report.sdk),
        escape(&json)
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
