//! Shortening and redacting what users supplied before a message shows it.
//!
//! A message about a bad setting or file helps most when it shows what was read. But the value
//! may be a credential pasted into the wrong variable, a URL with a token in its query or a
//! password before its host, or 100 KB of something else, and messages end up in terminals,
//! CI logs and bug reports. So every message of the workspace that echoes a value passes it
//! through one of these functions (the policy's errors, the transport's, the facade's
//! `status --json` and its tracing): there is one place that decides what "shown safely"
//! means. It lives in the model, which every other crate depends on.

use std::path::Path;

/// The most characters of a user-supplied value that a message shows.
pub const MAX_ECHOED_CHARS: usize = 100;

/// The most characters of a parser's message (which may quote several values) that an error
/// shows; each value within it is also cut to [`MAX_ECHOED_CHARS`].
const MAX_PARSER_MESSAGE_CHARS: usize = 300;

/// A setting's value as a message may show it: any URL in it without its query and fragment,
/// anything that looks like user information (`user:password@`) removed, and at most
/// [`MAX_ECHOED_CHARS`] characters.
///
/// ```
/// use telemetry_model::redact::redacted_value;
///
/// assert_eq!(redacted_value("see https://alice:S3cret@host/v1?token=x"), "see https://host/v1");
/// assert_eq!(redacted_value(&"x".repeat(500)).chars().count(), 101);
/// ```
pub fn redacted_value(value: &str) -> String {
    truncated(redacted_tokens(value, usize::MAX), MAX_ECHOED_CHARS)
}

/// A URL as a message may show it: without user information, query or fragment, and at most
/// [`MAX_ECHOED_CHARS`] characters. Text that is not quite a URL is treated the same way, so a
/// malformed endpoint (no scheme, a typo in it) cannot carry a password into a message.
///
/// ```
/// use telemetry_model::redact::redacted_url;
///
/// assert_eq!(redacted_url("https://alice:S3cret@host/v1?token=x#y"), "https://host/v1");
/// assert_eq!(redacted_url("alice:S3cret@host/v1"), "host/v1");
/// ```
pub fn redacted_url(url: &str) -> String {
    truncated(redacted_url_token(url.trim()), MAX_ECHOED_CHARS)
}

/// A path as a message may show it: at most about [`MAX_ECHOED_CHARS`] characters, keeping its
/// start and its end (the file's name), with `…` for what was left out.
pub fn redacted_path(path: &Path) -> String {
    const HEAD_CHARS: usize = 40;
    let text = path.to_string_lossy();
    let length = text.chars().count();
    if length <= MAX_ECHOED_CHARS {
        return text.into_owned();
    }
    let head: String = text.chars().take(HEAD_CHARS).collect();
    let tail: String = text
        .chars()
        .skip(length - (MAX_ECHOED_CHARS - HEAD_CHARS))
        .collect();
    format!("{head}…{tail}")
}

/// A parser's message about a user's file, which may quote what it read: each quoted value
/// redacted as by [`redacted_value`] and the whole cut to a few hundred characters.
pub fn redacted_parser_message(message: &str) -> String {
    truncated(
        redacted_tokens(message, MAX_ECHOED_CHARS),
        MAX_PARSER_MESSAGE_CHARS,
    )
}

/// Redacts each whitespace- or quote-delimited token of `text` on its own, cutting each to
/// `max_token_chars`.
fn redacted_tokens(text: &str, max_token_chars: usize) -> String {
    let is_delimiter =
        |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | '(' | ')');
    let mut redacted = String::with_capacity(text.len().min(1024));
    let mut rest = text;
    while !rest.is_empty() {
        let token_end = rest.find(is_delimiter).unwrap_or(rest.len());
        let (token, after) = rest.split_at(token_end);
        let token = if token.contains("://") {
            redacted_url_token(token)
        } else {
            without_user_info(token)
        };
        redacted.push_str(&truncated(token, max_token_chars));
        let delimiter_end = after
            .char_indices()
            .find(|&(_, c)| !is_delimiter(c))
            .map_or(after.len(), |(index, _)| index);
        redacted.push_str(&after[..delimiter_end]);
        rest = &after[delimiter_end..];
    }
    redacted
}

/// One URL without its query, fragment and user information.
fn redacted_url_token(url: &str) -> String {
    let before_query = url.find(['?', '#']).map_or(url, |end| &url[..end]);
    without_user_info(before_query)
}

/// Removes every `…@` segment (from the last `/` or `\` before an `@` through the `@`), which
/// is where a URL keeps its user name and password. Conservative on purpose: it also shortens
/// an email address to its domain, which a message never needs either.
fn without_user_info(text: &str) -> String {
    let mut kept = String::with_capacity(text.len());
    let mut segment_start = 0;
    for c in text.chars() {
        if c == '@' {
            kept.truncate(segment_start);
            continue;
        }
        kept.push(c);
        if c == '/' || c == '\\' {
            segment_start = kept.len();
        }
    }
    kept
}

/// `text` cut to `max_chars` characters, with `…` when something was cut.
fn truncated(text: String, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text,
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(redact: fn(&str) -> String, input: &str, expected: &str) {
        assert_eq!(redact(input), expected, "{input:?}");
    }

    #[test]
    fn urls_lose_user_info_query_and_fragment() {
        let cases = [
            ("https://alice:S3cret@host/v1?token=x#y", "https://host/v1"),
            ("https://host/v1", "https://host/v1"),
            ("HTTPS://alice@host:8443/v1#frag", "HTTPS://host:8443/v1"),
            ("https://a@b@host/", "https://host/"),
            ("https://alice%3AS3cret@host", "https://host"),
            ("alice:S3cret@host/v1?token=x", "host/v1"),
            ("https:/\\alice:S3cret@host", "https:/\\host"),
            ("  https://host/v1?q  ", "https://host/v1"),
            ("file:///var/lib/export", "file:///var/lib/export"),
            ("", ""),
        ];
        for (input, expected) in cases {
            check(redacted_url, input, expected);
        }
    }

    #[test]
    fn values_lose_user_info_and_url_queries_anywhere() {
        let cases = [
            ("300", "300"),
            ("maybe so", "maybe so"),
            ("alice:S3cret@host", "host"),
            (
                "invalid type: string \"https://alice:S3cret@host/v1?token=x\", expected a boolean",
                "invalid type: string \"https://host/v1\", expected a boolean",
            ),
            ("unknown field `alice:S3cret@host`", "unknown field `host`"),
            ("a?b#c", "a?b#c"),
        ];
        for (input, expected) in cases {
            check(redacted_value, input, expected);
        }
    }

    #[test]
    fn long_values_are_cut_to_about_a_hundred_characters() {
        let long = "é".repeat(130 * 1024);
        for redacted in [
            redacted_value(&long),
            redacted_url(&format!("https://{long}/v1")),
            redacted_path(Path::new(&format!("/{long}/telemetry_state.toml"))),
        ] {
            assert_eq!(redacted.chars().count(), MAX_ECHOED_CHARS + 1, "{redacted}");
            assert!(redacted.contains('…'), "{redacted}");
        }
        let path = redacted_path(Path::new(&format!("/{long}/telemetry_state.toml")));
        assert!(path.ends_with("/telemetry_state.toml"), "{path}");
        let short = "/home/user/.flowkit/telemetry_state.toml";
        assert_eq!(redacted_path(Path::new(short)), short);
        let message = redacted_parser_message(&format!(
            "invalid type: string \"{long}\", expected a boolean"
        ));
        assert!(message.ends_with("…\", expected a boolean"), "{message}");
        let spaced = redacted_parser_message(&"x y ".repeat(10_000));
        assert_eq!(spaced.chars().count(), MAX_PARSER_MESSAGE_CHARS + 1);
    }
}
