//! Enterprise policy files: what an organisation decides for every user of a machine.
//!
//! A policy file is TOML; every key is optional, and whatever it sets users cannot change:
//!
//! ```toml
//! enabled = false                             # off for everyone (or true: on for everyone)
//! endpoint = "file:///var/lib/telemetry"      # where telemetry goes: file:// or https://
//! ca_file = "/etc/pki/corp-root.pem"          # extra CA for a self-hosted https endpoint
//! allow_prompt = false                        # never ask users
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use telemetry_model::Endpoint;
use telemetry_model::redact::{redacted_parser_message, redacted_path};

use crate::env::EnvSnapshot;
use crate::settings::{EnvPrefix, Setting, parse_endpoint};

/// The largest policy file read; anything bigger is not a policy file.
const MAX_POLICY_FILE_BYTES: u64 = 64 * 1024;

/// What a policy file decides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The file it came from.
    pub path: PathBuf,
    /// `enabled`: on or off for everyone, when set.
    pub enabled: Option<bool>,
    /// `endpoint`: where telemetry goes, when set.
    pub endpoint: Option<Endpoint>,
    /// `ca_file`: an extra CA for a self-hosted HTTPS endpoint, when set.
    pub ca_file: Option<PathBuf>,
    /// `allow_prompt`: whether users may be asked; `true` when not set.
    pub allow_prompt: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    enabled: Option<bool>,
    endpoint: Option<String>,
    ca_file: Option<PathBuf>,
    allow_prompt: Option<bool>,
}

/// Why a policy file could not be used. Any of these keeps telemetry off.
///
/// Messages show the path shortened by [`redacted_path`](crate::redacted_path) (it may come
/// from an environment variable of any length) and never quote a value of the file unredacted.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file named by the environment variable does not exist or cannot be read.
    #[error("cannot read the telemetry policy file {}: {source}", redacted_path(.path))]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not valid policy TOML.
    #[error("the telemetry policy file {} is invalid: {detail}", redacted_path(.path))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line when the parser knows it, and any value it quotes
        /// redacted.
        detail: String,
    },
}

impl PolicyError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            PolicyError::Read { path, .. } | PolicyError::Invalid { path, .. } => path,
        }
    }
}

/// Where an SDK looks for its policy file when the variable is not set.
pub fn default_policy_path(sdk_name: &str) -> PathBuf {
    PathBuf::from(format!("/etc/{sdk_name}/telemetry-policy.toml"))
}

/// Finds and reads the policy in force: the file named by `PREFIX_TELEMETRY_POLICY_FILE`
/// (which must exist), else the SDK's default path (which may be absent).
pub fn load_policy(
    prefix: &EnvPrefix,
    env: &EnvSnapshot,
    default_path: &Path,
) -> Result<Option<Policy>, PolicyError> {
    let variable = prefix.variable(Setting::PolicyFile);
    match env.get(&variable) {
        Some(Ok(path)) if Path::new(path).is_absolute() => Policy::load(Path::new(path)).map(Some),
        Some(_) => Err(PolicyError::Invalid {
            path: PathBuf::from(format!("${variable}")),
            detail:
                "the variable is empty, relative or not valid Unicode; expected an absolute path"
                    .to_owned(),
        }),
        None => match Policy::load(default_path) {
            Err(PolicyError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            other => other.map(Some),
        },
    }
}

impl Policy {
    /// Reads and checks one policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let read_error = |source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let metadata = fs::metadata(path).map_err(read_error)?;
        if metadata.len() > MAX_POLICY_FILE_BYTES {
            return Err(PolicyError::Invalid {
                path: path.to_path_buf(),
                detail: format!("larger than {MAX_POLICY_FILE_BYTES} bytes"),
            });
        }
        let bytes = fs::read(path).map_err(read_error)?;
        Policy::parse(path, &bytes)
    }

    /// Parses the contents of a policy file; `path` is only used in messages.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Policy, PolicyError> {
        let invalid = |detail: String| PolicyError::Invalid {
            path: path.to_path_buf(),
            detail,
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| invalid("the file is not UTF-8 text".to_owned()))?;
        let file: PolicyFile =
            toml::from_str(text).map_err(|error| invalid(toml_error_with_line(text, &error)))?;
        let endpoint = file
            .endpoint
            .as_deref()
            .map(parse_endpoint)
            .transpose()
            .map_err(|error| invalid(format!("`endpoint`: {error}")))?;
        if let Some(ca_file) = &file.ca_file
            && !ca_file.is_absolute()
        {
            return Err(invalid("`ca_file` must be an absolute path".to_owned()));
        }
        Ok(Policy {
            path: path.to_path_buf(),
            enabled: file.enabled,
            endpoint,
            ca_file: file.ca_file,
            allow_prompt: file.allow_prompt.unwrap_or(true),
        })
    }
}

/// The parser's message, led by the line number when the parser knows where the error is.
/// The parser quotes values and keys it did not expect, so its message is redacted.
pub(crate) fn toml_error_with_line(text: &str, error: &toml::de::Error) -> String {
    let message = redacted_parser_message(error.message().trim_end_matches('.'));
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(
                "line {line}: {message}; accepted keys: enabled (true/false), endpoint (\"https://…\" or \"file:///dir\"), ca_file (\"/abs/path.pem\"), allow_prompt (true/false)"
            )
        }
        None => format!("{message}; accepted keys: enabled, endpoint, ca_file, allow_prompt"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(
            Path::new("/etc/flowkit/telemetry-policy.toml"),
            text.as_bytes(),
        )
    }

    #[test]
    fn parses_every_key() {
        let policy = parse(
            "enabled = false\nendpoint = \"file:///var/lib/export\"\nca_file = \"/etc/ca.pem\"\nallow_prompt = false\n",
        )
        .unwrap();
        assert_eq!(policy.enabled, Some(false));
        assert_eq!(
            policy.endpoint,
            Some(Endpoint::File("/var/lib/export".into()))
        );
        assert_eq!(policy.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert!(!policy.allow_prompt);
        let empty = parse("").unwrap();
        assert_eq!(
            (empty.enabled, empty.endpoint, empty.allow_prompt),
            (None, None, true)
        );
    }

    #[test]
    fn invalid_files_name_the_file_and_the_line() {
        let cases = [
            ("enabled = false\nenabeld = true\n", "line 2"),
            ("enabled = \"no\"\n", "line 1"),
            (
                "\n\nendpoint = \"http://x.example\"\n",
                "plain http:// is not allowed",
            ),
            ("ca_file = \"relative.pem\"\n", "absolute path"),
            ("enabled = false\n[section\n", "line 2"),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(
                error.contains("/etc/flowkit/telemetry-policy.toml"),
                "{error}"
            );
            assert!(
                error.contains(expected),
                "expected `{expected}` in `{error}`"
            );
        }
        let error = Policy::parse(Path::new("/p.toml"), b"\xff\xfe")
            .unwrap_err()
            .to_string();
        assert!(error.contains("not UTF-8"), "{error}");
    }

    #[test]
    fn the_variable_wins_over_the_default_path_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = EnvPrefix::new("FLOWKIT").unwrap();
        let default = dir.path().join("default.toml");
        let named = dir.path().join("named.toml");
        let env_none = EnvSnapshot::default();
        assert!(
            load_policy(&prefix, &env_none, &default).unwrap().is_none(),
            "no default file: no policy"
        );
        fs::write(&default, "enabled = true").unwrap();
        assert_eq!(
            load_policy(&prefix, &env_none, &default)
                .unwrap()
                .unwrap()
                .enabled,
            Some(true)
        );
        let env =
            EnvSnapshot::from_pairs([("FLOWKIT_TELEMETRY_POLICY_FILE", named.to_str().unwrap())]);
        let missing = load_policy(&prefix, &env, &default).unwrap_err();
        assert!(matches!(missing, PolicyError::Read { .. }), "{missing}");
        fs::write(&named, "enabled = false").unwrap();
        assert_eq!(
            load_policy(&prefix, &env, &default)
                .unwrap()
                .unwrap()
                .enabled,
            Some(false)
        );
        // A relative path is refused, never resolved against the working directory.
        let relative = EnvSnapshot::from_pairs([("FLOWKIT_TELEMETRY_POLICY_FILE", "policy.toml")]);
        assert!(matches!(
            load_policy(&prefix, &relative, &default),
            Err(PolicyError::Invalid { .. })
        ));
    }

    #[test]
    fn messages_never_echo_credentials_or_long_values() {
        let long = "x".repeat(60_000);
        let cases = [
            "enabled = \"https://alice:S3cret@host/v1?token=x\"\n".to_owned(),
            "\"alice:S3cret@host\" = true\n".to_owned(),
            format!("enabled = \"{long}\"\n"),
            format!("{long} = true\n"),
            format!("enabled = \"{}\"\n", "x y ".repeat(15_000)),
        ];
        let mut messages: Vec<String> = cases
            .iter()
            .map(|text| parse(text).unwrap_err().to_string())
            .collect();
        let long_path = format!("/{}", "x".repeat(130 * 1024));
        messages.push(Policy::load(Path::new(&long_path)).unwrap_err().to_string());
        let prefix = EnvPrefix::new("FLOWKIT").unwrap();
        let env = EnvSnapshot::from_pairs([("FLOWKIT_TELEMETRY_POLICY_FILE", long_path.as_str())]);
        messages.push(
            load_policy(&prefix, &env, Path::new("/nowhere"))
                .unwrap_err()
                .to_string(),
        );
        for message in messages {
            assert!(message.contains("policy file"), "{message}");
            for secret in ["alice", "S3cret", "token"] {
                assert!(
                    !message.contains(secret),
                    "`{secret}` echoed in `{message}`"
                );
            }
            assert!(
                message.len() < 700,
                "{} bytes echoed: {}",
                message.len(),
                &message[..700]
            );
        }
    }
}
