//! Settings from environment variables, parsed strictly.
//!
//! A value that is not understood is an error naming the variable and what it accepts;
//! the facade then keeps telemetry off for the process. Nothing here ever turns telemetry on
//! by guessing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::env::EnvSnapshot;

/// The default number of events per batch.
pub const DEFAULT_BATCH_SIZE: usize = 100;

/// The largest batch size accepted.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// The default time between deliveries.
pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_secs(300);

/// The longest batch interval accepted: one day.
pub const MAX_BATCH_INTERVAL: Duration = Duration::from_secs(86_400);

/// The prefix of an SDK's environment variables, such as `FLOWKIT`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EnvPrefix(String);

/// A prefix that is not upper-case letters, digits and underscores.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid environment prefix: use A-Z, 0-9 and _, starting with a letter")]
pub struct InvalidPrefix(String);

impl EnvPrefix {
    /// Checks and wraps a prefix.
    pub fn new(prefix: &str) -> Result<EnvPrefix, InvalidPrefix> {
        let valid = prefix.len() <= 32
            && prefix.starts_with(|first: char| first.is_ascii_uppercase())
            && prefix
                .bytes()
                .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_');
        if valid {
            Ok(EnvPrefix(prefix.to_owned()))
        } else {
            Err(InvalidPrefix(prefix.chars().take(40).collect()))
        }
    }

    /// The prefix itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of one of the SDK's telemetry variables, such as `FLOWKIT_SDK_TELEMETRY_ENABLED`.
    pub fn variable(&self, setting: Setting) -> String {
        format!("{}_{}", self.0, setting.suffix())
    }
}

/// One setting read from the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Setting {
    /// `PREFIX_SDK_TELEMETRY_ENABLED`.
    Enabled,
    /// `PREFIX_SDK_TELEMETRY_ENDPOINT`.
    Endpoint,
    /// `PREFIX_SDK_TELEMETRY_BATCH_SIZE`.
    BatchSize,
    /// `PREFIX_SDK_TELEMETRY_BATCH_INTERVAL_SECONDS`.
    BatchInterval,
    /// `PREFIX_SDK_TELEMETRY_CA_FILE`.
    CaFile,
    /// `PREFIX_SDK_TELEMETRY_BUFFER`.
    Buffer,
    /// `PREFIX_SDK_TELEMETRY_DEBUG`.
    Debug,
    /// `PREFIX_TELEMETRY_POLICY_FILE`.
    PolicyFile,
}

impl Setting {
    /// Every setting.
    pub const ALL: [Setting; 8] = [
        Setting::Enabled,
        Setting::Endpoint,
        Setting::BatchSize,
        Setting::BatchInterval,
        Setting::CaFile,
        Setting::Buffer,
        Setting::Debug,
        Setting::PolicyFile,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Setting::Enabled => "SDK_TELEMETRY_ENABLED",
            Setting::Endpoint => "SDK_TELEMETRY_ENDPOINT",
            Setting::BatchSize => "SDK_TELEMETRY_BATCH_SIZE",
            Setting::BatchInterval => "SDK_TELEMETRY_BATCH_INTERVAL_SECONDS",
            Setting::CaFile => "SDK_TELEMETRY_CA_FILE",
            Setting::Buffer => "SDK_TELEMETRY_BUFFER",
            Setting::Debug => "SDK_TELEMETRY_DEBUG",
            Setting::PolicyFile => "TELEMETRY_POLICY_FILE",
        }
    }

    fn accepted(self) -> &'static str {
        match self {
            Setting::Enabled | Setting::Debug => "true, false, 1, 0, yes or no (any case)",
            Setting::Endpoint => "an https:// URL, or file:///absolute/dir for offline export",
            Setting::BatchSize => "a whole number from 1 to 10000",
            Setting::BatchInterval => {
                "a number of seconds above 0 and at most 86400, such as 300 or 0.5"
            }
            Setting::CaFile | Setting::PolicyFile => "an absolute path to a file",
            Setting::Buffer => "memory or sqlite",
        }
    }
}

/// Where telemetry goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An HTTPS URL to POST batches to.
    Https(String),
    /// A directory to append JSONL files to (offline export).
    File(PathBuf),
}

impl Endpoint {
    /// Parses `https://…` or `file:///absolute/dir`.
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
            Ok(Endpoint::Https(text.to_owned()))
        } else if lower.starts_with("file://") {
            let rest = &text["file://".len()..];
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(EndpointError::RelativeFile);
            }
            let decoded = percent_decode(path).ok_or(EndpointError::BadEscape)?;
            Ok(Endpoint::File(PathBuf::from(decoded)))
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

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Https(url) => f.write_str(url),
            Endpoint::File(dir) => write!(f, "file://{}", dir.display()),
        }
    }
}

/// Why an endpoint was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
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

/// Which buffer holds events until they are delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// A bounded in-memory buffer; pending events are lost when the process ends.
    Memory,
    /// A durable SQLite spool in the state directory.
    Sqlite,
}

impl BufferKind {
    /// `memory` or `sqlite`.
    pub fn as_str(self) -> &'static str {
        match self {
            BufferKind::Memory => "memory",
            BufferKind::Sqlite => "sqlite",
        }
    }
}

/// The telemetry settings found in the environment. `None` means the variable was not set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `PREFIX_SDK_TELEMETRY_ENABLED`.
    pub enabled: Option<bool>,
    /// `PREFIX_SDK_TELEMETRY_ENDPOINT`.
    pub endpoint: Option<Endpoint>,
    /// `PREFIX_SDK_TELEMETRY_BATCH_SIZE`.
    pub batch_size: Option<usize>,
    /// `PREFIX_SDK_TELEMETRY_BATCH_INTERVAL_SECONDS`.
    pub batch_interval: Option<Duration>,
    /// `PREFIX_SDK_TELEMETRY_CA_FILE`.
    pub ca_file: Option<PathBuf>,
    /// `PREFIX_SDK_TELEMETRY_BUFFER`.
    pub buffer: Option<BufferKind>,
    /// `PREFIX_SDK_TELEMETRY_DEBUG`.
    pub debug: bool,
    /// `PREFIX_TELEMETRY_POLICY_FILE`.
    pub policy_file: Option<PathBuf>,
    /// `DO_NOT_TRACK` is set to anything but `0` or `false`.
    pub do_not_track: bool,
}

/// A setting whose value is not understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?} is not valid{detail}: expected {accepted}")]
pub struct SettingError {
    /// The variable's full name.
    pub variable: String,
    /// The value, shortened to 60 characters.
    pub value: String,
    /// More about what is wrong, starting with `; ` when present.
    pub detail: String,
    /// What the variable accepts.
    pub accepted: &'static str,
    /// Which setting it is.
    pub setting: Setting,
}

impl Settings {
    /// Reads every setting of the SDK with the given prefix, and `DO_NOT_TRACK`.
    ///
    /// Stops at the first invalid value and reports it; the caller should then keep telemetry off.
    pub fn from_env(prefix: &EnvPrefix, env: &EnvSnapshot) -> Result<Settings, SettingError> {
        let reader = Reader { prefix, env };
        Ok(Settings {
            enabled: reader.read(Setting::Enabled, |value| parse_bool(value).ok_or(None))?,
            endpoint: reader.read(Setting::Endpoint, |value| {
                Endpoint::parse(value).map_err(|error| Some(error.to_string()))
            })?,
            batch_size: reader.read(Setting::BatchSize, parse_batch_size)?,
            batch_interval: reader.read(Setting::BatchInterval, parse_interval)?,
            ca_file: reader.read(Setting::CaFile, parse_absolute_path)?,
            buffer: reader.read(Setting::Buffer, |value| {
                match value.trim().to_ascii_lowercase().as_str() {
                    "memory" => Ok(BufferKind::Memory),
                    "sqlite" => Ok(BufferKind::Sqlite),
                    _ => Err(None),
                }
            })?,
            debug: reader
                .read(Setting::Debug, |value| parse_bool(value).ok_or(None))?
                .unwrap_or(false),
            policy_file: reader.read(Setting::PolicyFile, parse_absolute_path)?,
            do_not_track: do_not_track(env),
        })
    }
}

/// Whether `DO_NOT_TRACK` asks for no tracking: set to anything except `0` or `false`.
/// An empty value counts as set, because when in doubt telemetry stays off.
pub fn do_not_track(env: &EnvSnapshot) -> bool {
    match env.get("DO_NOT_TRACK") {
        None => false,
        Some(Err(_)) => true,
        Some(Ok(value)) => {
            let value = value.trim();
            !(value == "0" || value.eq_ignore_ascii_case("false"))
        }
    }
}

struct Reader<'a> {
    prefix: &'a EnvPrefix,
    env: &'a EnvSnapshot,
}

impl Reader<'_> {
    /// Reads one variable; `parse` returns an optional detail when it rejects the value.
    fn read<T>(
        &self,
        setting: Setting,
        parse: impl FnOnce(&str) -> Result<T, Option<String>>,
    ) -> Result<Option<T>, SettingError> {
        let variable = self.prefix.variable(setting);
        let error = |value: &str, detail: Option<String>| SettingError {
            variable: variable.clone(),
            value: value.chars().take(60).collect(),
            detail: detail
                .map(|detail| format!("; {detail}"))
                .unwrap_or_default(),
            accepted: setting.accepted(),
            setting,
        };
        match self.env.get(&variable) {
            None => Ok(None),
            Some(Err(_)) => Err(error("", Some("the value is not valid Unicode".to_owned()))),
            Some(Ok(value)) => parse(value)
                .map(Some)
                .map_err(|detail| error(value, detail)),
        }
    }
}

/// Parses `true/false/1/0/yes/no` in any case, ignoring surrounding spaces.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn parse_batch_size(value: &str) -> Result<usize, Option<String>> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(None);
    }
    match value.parse::<usize>() {
        Ok(size) if (1..=MAX_BATCH_SIZE).contains(&size) => Ok(size),
        _ => Err(None),
    }
}

fn parse_interval(value: &str) -> Result<Duration, Option<String>> {
    let value = value.trim();
    // Only plain decimal numbers: no signs, exponents, `inf` or `nan`.
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|byte| byte.is_ascii_digit() || byte == b'.')
        && value.bytes().filter(|&byte| byte == b'.').count() <= 1
        && value != ".";
    if !plain {
        return Err(None);
    }
    let seconds: f64 = value.parse().map_err(|_| None)?;
    if seconds <= 0.0 || seconds > MAX_BATCH_INTERVAL.as_secs_f64() {
        return Err(None);
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_absolute_path(value: &str) -> Result<PathBuf, Option<String>> {
    let path = Path::new(value);
    if value.is_empty() || !path.is_absolute() {
        return Err(Some("the path is not absolute".to_owned()));
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, SettingError> {
        let prefix = EnvPrefix::new("FLOWKIT").unwrap();
        Settings::from_env(&prefix, &EnvSnapshot::from_pairs(vars.iter().copied()))
    }

    fn check_ok(vars: &[(&str, &str)], check: impl Fn(&Settings) -> bool) {
        let parsed = settings(vars).unwrap_or_else(|error| panic!("{vars:?}: {error}"));
        assert!(check(&parsed), "{vars:?} gave {parsed:?}");
    }

    fn check_err(vars: &[(&str, &str)], expected: &str) {
        let error = settings(vars).expect_err("expected an error").to_string();
        assert!(
            error.contains(expected),
            "expected `{expected}` in `{error}`"
        );
    }

    #[test]
    fn nothing_set_means_nothing_decided() {
        assert_eq!(settings(&[]).unwrap(), Settings::default());
    }

    #[test]
    fn accepts_valid_values() {
        const ENABLED: &str = "FLOWKIT_SDK_TELEMETRY_ENABLED";
        for (value, expected) in [
            ("1", true),
            ("TRUE", true),
            (" yes ", true),
            ("No", false),
            ("0", false),
        ] {
            check_ok(&[(ENABLED, value)], |s| s.enabled == Some(expected));
        }
        check_ok(&[("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "10000")], |s| {
            s.batch_size == Some(10_000)
        });
        check_ok(
            &[("FLOWKIT_SDK_TELEMETRY_BATCH_INTERVAL_SECONDS", "0.25")],
            |s| s.batch_interval == Some(Duration::from_millis(250)),
        );
        check_ok(
            &[("FLOWKIT_SDK_TELEMETRY_ENDPOINT", "file:///var/lib/t%20x")],
            |s| s.endpoint == Some(Endpoint::File("/var/lib/t x".into())),
        );
        check_ok(
            &[("FLOWKIT_SDK_TELEMETRY_ENDPOINT", "https://t.example.com/v1")],
            |s| matches!(&s.endpoint, Some(Endpoint::Https(url)) if url == "https://t.example.com/v1"),
        );
        check_ok(&[("FLOWKIT_SDK_TELEMETRY_BUFFER", "Memory")], |s| {
            s.buffer == Some(BufferKind::Memory)
        });
        check_ok(&[("FLOWKIT_SDK_TELEMETRY_DEBUG", "1")], |s| s.debug);
        check_ok(&[("FLOWKIT_TELEMETRY_POLICY_FILE", "/etc/p.toml")], |s| {
            s.policy_file.is_some()
        });
    }

    #[test]
    fn rejects_invalid_values_naming_the_variable() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "FLOWKIT_SDK_TELEMETRY_ENABLED",
                "maybe",
                "expected true, false, 1, 0, yes or no",
            ),
            (
                "FLOWKIT_SDK_TELEMETRY_ENABLED",
                "",
                "FLOWKIT_SDK_TELEMETRY_ENABLED=\"\" is not valid",
            ),
            (
                "FLOWKIT_SDK_TELEMETRY_BATCH_SIZE",
                "abc",
                "FLOWKIT_SDK_TELEMETRY_BATCH_SIZE=\"abc\" is not valid",
            ),
            ("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "0", "from 1 to 10000"),
            (
                "FLOWKIT_SDK_TELEMETRY_BATCH_SIZE",
                "10001",
                "from 1 to 10000",
            ),
            ("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "-5", "from 1 to 10000"),
            ("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "1e3", "from 1 to 10000"),
            (
                "FLOWKIT_SDK_TELEMETRY_BATCH_INTERVAL_SECONDS",
                "0",
                "above 0",
            ),
            (
                "FLOWKIT_SDK_TELEMETRY_BATCH_INTERVAL_SECONDS",
                "inf",
                "above 0",
            ),
            (
                "FLOWKIT_SDK_TELEMETRY_BATCH_INTERVAL_SECONDS",
                "NaN",
                "above 0",
            ),
            (
                "FLOWKIT_SDK_TELEMETRY_BATCH_INTERVAL_SECONDS",
                "86401",
                "at most 86400",
            ),
            (
                "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
                "http://t.example.com",
                "plain http:// is not allowed",
            ),
            (
                "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
                "ftp://t.example.com",
                "https:// or file://",
            ),
            ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", "https://", "no host"),
            (
                "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
                "https://u:p@t.example.com",
                "credentials",
            ),
            (
                "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
                "file://relative/dir",
                "absolute directory",
            ),
            (
                "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
                "file:///bad%zz",
                "%-escape",
            ),
            ("FLOWKIT_SDK_TELEMETRY_BUFFER", "disk", "memory or sqlite"),
            ("FLOWKIT_SDK_TELEMETRY_CA_FILE", "ca.pem", "not absolute"),
        ];
        for (variable, value, expected) in cases {
            check_err(&[(variable, value)], expected);
        }
    }

    #[test]
    fn do_not_track_is_set_unless_zero_or_false() {
        for (value, expected) in [
            ("1", true),
            ("true", true),
            ("", true),
            ("yes", true),
            ("0", false),
            ("False", false),
        ] {
            check_ok(&[("DO_NOT_TRACK", value)], |s| s.do_not_track == expected);
        }
    }

    #[test]
    fn prefixes_must_be_upper_case_identifiers() {
        assert!(EnvPrefix::new("FLOWKIT").is_ok());
        assert!(EnvPrefix::new("MY_SDK2").is_ok());
        for bad in ["", "flowkit", "1SDK", "MY-SDK", "SDK "] {
            assert!(EnvPrefix::new(bad).is_err(), "{bad:?}");
        }
    }
}
