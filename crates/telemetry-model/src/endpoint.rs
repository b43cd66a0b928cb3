//! Where telemetry goes: one endpoint type for every crate, so the facade's settings, the
//! enterprise policy and the transports accept and refuse exactly the same text.
//!
//! [`Endpoint::parse`] checks everything that can be checked from the text alone. What needs
//! the disk (that an export directory is not a file, nor reaches `/dev` through a symbolic
//! link) is checked by `telemetry_policy::parse_endpoint`, which is what settings and policy
//! files go through.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::redact::redacted_url;

/// Where telemetry goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An HTTPS URL to POST batches to.
    Https(String),
    /// A directory to append JSONL files to (offline export).
    File(PathBuf),
}

impl Endpoint {
    /// Parses `https://…` or `file:///absolute/dir`, checking all that the text shows: the
    /// scheme, the host and port of a URL (no credentials, no `%`-escaped host names, ports
    /// from 1 to 65535), and that a directory is absolute, free of control characters, and
    /// not under `/dev` once `.` and `..` are resolved.
    ///
    /// It does not look at the disk: a `file://` path that exists as a file, or that reaches
    /// `/dev` through a symbolic link, passes here. Settings and policy files are checked with
    /// `telemetry_policy::parse_endpoint`, which adds those checks; use it for any endpoint a
    /// user supplies.
    ///
    /// ```
    /// use telemetry_model::Endpoint;
    ///
    /// assert_eq!(
    ///     Endpoint::parse("file:///var/lib/t%20x").unwrap(),
    ///     Endpoint::File("/var/lib/t x".into())
    /// );
    /// let error = Endpoint::parse("https://localhost:99999/v1").unwrap_err();
    /// assert_eq!(error.to_string(), "the port must be a number from 1 to 65535");
    /// ```
    pub fn parse(text: &str) -> Result<Endpoint, EndpointError> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("https://") {
            let rest = &text["https://".len()..];
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.is_empty() || authority.starts_with(':') {
                return Err(EndpointError::MissingHost);
            }
            if authority.contains('@') {
                return Err(EndpointError::Credentials);
            }
            if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(EndpointError::Whitespace);
            }
            check_authority(authority)?;
            Ok(Endpoint::Https(text.to_owned()))
        } else if lower.starts_with("file://") {
            let rest = &text["file://".len()..];
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(EndpointError::RelativeFile);
            }
            let decoded = percent_decode(path).ok_or(EndpointError::BadEscape)?;
            if decoded.chars().any(char::is_control) {
                return Err(EndpointError::ControlCharacter);
            }
            let dir = PathBuf::from(decoded);
            if lexically_normal(&dir).starts_with("/dev") {
                return Err(EndpointError::DeviceDir);
            }
            Ok(Endpoint::File(dir))
        } else if lower.starts_with("http://") {
            Err(EndpointError::PlainHttp)
        } else {
            Err(EndpointError::Scheme)
        }
    }

    /// A `file://` endpoint for a directory.
    pub fn file(dir: impl Into<PathBuf>) -> Endpoint {
        Endpoint::File(dir.into())
    }

    /// The kind of transport the endpoint needs: `https` or `file`.
    pub fn transport_name(&self) -> &'static str {
        match self {
            Endpoint::Https(_) => "https",
            Endpoint::File(_) => "file",
        }
    }
}

/// Shows an HTTPS endpoint as [`redacted_url`] does (no query or fragment, which may hold a
/// token, and at most about 100 characters), since this is what `status` and messages print;
/// the transport uses the full URL inside [`Endpoint::Https`]. A directory is shown in full.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Https(url) => f.write_str(&redacted_url(url)),
            Endpoint::File(dir) => write!(f, "file://{}", dir.display()),
        }
    }
}

/// Why an endpoint was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// `http://` is never allowed: telemetry travels encrypted or not at all.
    #[error("plain http:// is not allowed; use https://")]
    PlainHttp,
    /// Neither `https://` nor `file://`.
    #[error("the scheme must be https:// or file://")]
    Scheme,
    /// `https://` without a host.
    #[error("the URL has no host")]
    MissingHost,
    /// `https://user:secret@host`: credentials must not sit in a URL that is shown by `status`.
    #[error("the URL must not contain credentials (user@ or user:password@)")]
    Credentials,
    /// Whitespace or control characters.
    #[error("the URL contains whitespace or control characters")]
    Whitespace,
    /// `file://dir` without an absolute path.
    #[error("a file:// endpoint needs an absolute directory, like file:///var/lib/telemetry")]
    RelativeFile,
    /// A malformed `%xx` escape.
    #[error("the path has a malformed %-escape")]
    BadEscape,
    /// A port that is not a number from 1 to 65535.
    #[error("the port must be a number from 1 to 65535")]
    InvalidPort,
    /// A host name with `%xx` escapes: they would let one name pass for another in a message
    /// or a check, and no real host needs them.
    #[error(
        "the host name must not contain %-escapes; write it plainly, like telemetry.example.com"
    )]
    EscapedHost,
    /// A host that is neither a plain name nor an address.
    #[error(
        "the host must be a name of at most 253 letters, digits, '-' and '.' (punycode for international names), an IPv4 address or an [IPv6] address"
    )]
    InvalidHost,
    /// NUL or another control character in a `file://` path, raw or `%`-escaped.
    #[error("the path must not contain NUL or other control characters, raw or %-escaped")]
    ControlCharacter,
    /// A `file://` path under `/dev`, as written or (found by the policy's check on disk)
    /// through a symbolic link.
    #[error(
        "a file:// endpoint must be a directory for export files, not a device or anything under /dev"
    )]
    DeviceDir,
    /// A `file://` path that exists and is not a directory (found by the policy's check on
    /// disk).
    #[error(
        "a file:// endpoint must name a directory for export files; this path exists and is not a directory"
    )]
    NotADirectory,
}

/// Checks the `host[:port]` of an `https://` URL (user information is refused before).
fn check_authority(authority: &str) -> Result<(), EndpointError> {
    let port = match authority.strip_prefix('[') {
        // An IPv6 address: `[::1]` or `[::1]:8443`.
        Some(bracketed) => {
            let (address, after) = bracketed
                .split_once(']')
                .ok_or(EndpointError::InvalidHost)?;
            let is_address_char = |c: char| c.is_ascii_hexdigit() || c == ':' || c == '.';
            check_host(address, is_address_char)?;
            match after {
                "" => None,
                after => Some(after.strip_prefix(':').ok_or(EndpointError::InvalidHost)?),
            }
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            let is_name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
            check_host(host, is_name_char)?;
            port
        }
    };
    if let Some(port) = port {
        // Digits only: `u16::from_str` would also take a `+`.
        let valid = port.bytes().all(|byte| byte.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|number| number != 0);
        if !valid {
            return Err(EndpointError::InvalidPort);
        }
    }
    Ok(())
}

/// Checks that a host is not empty, no longer than DNS allows (253 characters), and made only
/// of `allowed` characters, naming `%`-escapes apart because they are the likeliest way to
/// disguise a name.
fn check_host(host: &str, allowed: impl Fn(char) -> bool) -> Result<(), EndpointError> {
    const MAX_HOST_CHARS: usize = 253;
    if host.contains('%') {
        return Err(EndpointError::EscapedHost);
    }
    if host.is_empty() || host.len() > MAX_HOST_CHARS || !host.chars().all(allowed) {
        return Err(EndpointError::InvalidHost);
    }
    Ok(())
}

/// `path` with `.` and `..` resolved without looking at the disk, so that `/tmp/../dev/null`
/// is seen as `/dev/null`.
fn lexically_normal(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks `Endpoint::parse`: `Ok` holds the endpoint expected, `Err` a part of the message.
    fn check_endpoint(text: &str, expected: Result<Endpoint, &str>) {
        match (Endpoint::parse(text), expected) {
            (Ok(endpoint), Ok(expected)) => assert_eq!(endpoint, expected, "{text:?}"),
            (Err(error), Err(needle)) => {
                let message = error.to_string();
                assert!(
                    message.contains(needle),
                    "{text:?}: `{message}` lacks `{needle}`"
                );
            }
            (outcome, expected) => panic!("{text:?}: {outcome:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn everything_the_text_shows_is_checked() {
        let https = |url: &str| Ok(Endpoint::Https(url.to_owned()));
        let cases: Vec<(String, Result<Endpoint, &str>)> = vec![
            (
                "https://t.example.com".into(),
                https("https://t.example.com"),
            ),
            (
                "https://localhost:8443/v1".into(),
                https("https://localhost:8443/v1"),
            ),
            (
                "https://[::1]:8443/v1".into(),
                https("https://[::1]:8443/v1"),
            ),
            (
                "https://127.0.0.1:1/ingest?v=1".into(),
                https("https://127.0.0.1:1/ingest?v=1"),
            ),
            (
                "https://localhost:65535/".into(),
                https("https://localhost:65535/"),
            ),
            (
                "https://localhost:99999/v1".into(),
                Err("port must be a number from 1 to 65535"),
            ),
            (
                "https://localhost:0/v1".into(),
                Err("port must be a number from 1 to 65535"),
            ),
            (
                "https://localhost:/v1".into(),
                Err("port must be a number from 1 to 65535"),
            ),
            (
                "https://localhost:44a3/v1".into(),
                Err("port must be a number from 1 to 65535"),
            ),
            (
                "https://localhost:99999999999999999999999/".into(),
                Err("port must be a number"),
            ),
            (
                "https://[::1]:0/".into(),
                Err("port must be a number from 1 to 65535"),
            ),
            (
                "https://ex%41mple.com/".into(),
                Err("host name must not contain %-escapes"),
            ),
            (
                "https://[fe80::1%25eth0]/".into(),
                Err("host name must not contain %-escapes"),
            ),
            ("https://exa\\mple.com/".into(), Err("the host must be")),
            ("https://ex[ample.com/".into(), Err("the host must be")),
            ("https://[::1/".into(), Err("the host must be")),
            (
                format!("https://{}.com/", "a".repeat(250)),
                Err("the host must be"),
            ),
            ("https://alice:S3cret@host/v1".into(), Err("credentials")),
            (
                "file:///var/lib/t%20x".into(),
                Ok(Endpoint::File("/var/lib/t x".into())),
            ),
            ("file:///tmp/a%00b".into(), Err("NUL")),
            ("file:///tmp/a\0b".into(), Err("NUL")),
            ("file:///tmp/a%0Ab".into(), Err("NUL")),
            (
                "file:///dev/null".into(),
                Err("not a device or anything under /dev"),
            ),
            (
                "file:///dev".into(),
                Err("not a device or anything under /dev"),
            ),
            (
                "file:///dev/".into(),
                Err("not a device or anything under /dev"),
            ),
            (
                "file:///dev/shm/export".into(),
                Err("not a device or anything under /dev"),
            ),
            (
                "file://localhost/dev/null".into(),
                Err("not a device or anything under /dev"),
            ),
            (
                "file:///tmp/../dev/null".into(),
                Err("not a device or anything under /dev"),
            ),
            (
                "file:///%64ev/null".into(),
                Err("not a device or anything under /dev"),
            ),
        ];
        for (text, expected) in cases {
            check_endpoint(&text, expected);
        }
    }

    #[test]
    fn display_hides_queries_and_long_hosts() {
        let endpoint = Endpoint::parse("https://t.example.com/v1?token=S3cret#frag").unwrap();
        assert_eq!(endpoint.to_string(), "https://t.example.com/v1");
        let long = Endpoint::parse(&format!("https://{}.com/", "a".repeat(200))).unwrap();
        assert_eq!(
            long.to_string().chars().count(),
            crate::redact::MAX_ECHOED_CHARS + 1
        );
    }
}
