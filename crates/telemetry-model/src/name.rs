//! The only strings an event may carry: short identifiers and version numbers.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest [`Name`], in bytes.
pub const MAX_NAME_LEN: usize = 40;

/// The longest [`Version`], in bytes.
pub const MAX_VERSION_LEN: usize = 32;

/// A short lowercase identifier such as `retries` or `value_error`:
/// 1 to 40 characters of `a-z`, `0-9` and `_`, starting with a letter.
///
/// Every name in an event is a `Name`, and the recording APIs only produce names declared
/// in the SDK's [`Catalog`](crate::Catalog). The shape alone rules out email addresses,
/// paths, host names, IP addresses and most tokens; the catalog rules out the rest.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<str>);

/// The error for a string that is not a valid [`Name`] or [`Version`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdentifier {
    /// The string is not a valid name.
    #[error(
        "`{0}` is not a valid name: use 1-{MAX_NAME_LEN} characters of a-z, 0-9 and _, starting with a letter"
    )]
    Name(String),
    /// The string is not a valid version.
    #[error(
        "`{0}` is not a valid version: use up to {MAX_VERSION_LEN} characters like 1.2.3 or 1.2.3-beta.1"
    )]
    Version(String),
}

/// Shortens a rejected value before it is quoted in an error message, so that an error
/// about a huge or hostile string stays readable.
fn excerpt(text: &str) -> String {
    const LIMIT: usize = 48;
    let mut shown: String = text
        .chars()
        .take(LIMIT)
        .flat_map(char::escape_default)
        .collect();
    if text.chars().count() > LIMIT {
        shown.push('…');
    }
    shown
}

impl Name {
    /// Checks `text` and makes it a name.
    pub fn new(text: &str) -> Result<Name, InvalidIdentifier> {
        if Name::is_valid(text) {
            Ok(Name(Arc::from(text)))
        } else {
            Err(InvalidIdentifier::Name(excerpt(text)))
        }
    }

    /// Whether `text` has the shape of a name.
    pub fn is_valid(text: &str) -> bool {
        let bytes = text.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_NAME_LEN
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|&byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        Name::new(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Name {
    fn schema_name() -> Cow<'static, str> {
        "Name".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An identifier declared in the SDK's catalog.",
            "type": "string",
            "pattern": "^[a-z][a-z0-9_]{0,39}$"
        })
    }
}

/// A version number such as `1.2.3`, `3.11` or `0.4.0-beta.1`:
/// dot-separated digits, then optionally `-` and a pre-release of `0-9`, `a-z`, `A-Z` and `.`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(Arc<str>);

impl Version {
    /// Checks `text` and makes it a version.
    pub fn new(text: &str) -> Result<Version, InvalidIdentifier> {
        if Version::is_valid(text) {
            Ok(Version(Arc::from(text)))
        } else {
            Err(InvalidIdentifier::Version(excerpt(text)))
        }
    }

    /// Whether `text` has the shape of a version.
    pub fn is_valid(text: &str) -> bool {
        if text.is_empty() || text.len() > MAX_VERSION_LEN {
            return false;
        }
        let (release, pre_release) = match text.split_once('-') {
            Some((release, pre_release)) => (release, Some(pre_release)),
            None => (text, None),
        };
        let release_ok = release
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()));
        let pre_release_ok = pre_release.is_none_or(|pre_release| {
            pre_release.split('.').all(|part| {
                !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_alphanumeric())
            })
        });
        release_ok && pre_release_ok
    }

    /// The version as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Version, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        Version::new(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Version {
    fn schema_name() -> Cow<'static, str> {
        "Version".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A version number such as 1.2.3 or 1.2.3-beta.1.",
            "type": "string",
            "maxLength": MAX_VERSION_LEN,
            "pattern": "^[0-9]+(\\.[0-9]+)*(-[0-9A-Za-z]+(\\.[0-9A-Za-z]+)*)?$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let cases = [
            ("retries", true),
            ("value_error", true),
            ("s3", true),
            ("a", true),
            ("a234567890123456789012345678901234567890", true),
            ("a2345678901234567890123456789012345678901", false),
            ("", false),
            ("Retries", false),
            ("1retry", false),
            ("_retry", false),
            ("my-flow", false),
            ("alice@example.com", false),
            ("/home/alice", false),
            ("10.0.0.1", false),
            ("é", false),
            ("retry ", false),
        ];
        for (text, valid) in cases {
            assert_eq!(Name::new(text).is_ok(), valid, "{text:?}");
        }
    }

    #[test]
    fn versions() {
        let cases = [
            ("1.2.3", true),
            ("3.11", true),
            ("1", true),
            ("0.4.0-beta.1", true),
            ("1.95.0-nightly", true),
            ("", false),
            ("v1.2.3", false),
            ("1..2", false),
            ("1.2.3-", false),
            ("1.2.3-beta_1", false),
            ("1.2.3+build", false),
            ("1.2.3-alice@example.com", false),
            ("1.2.3-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
        ];
        for (text, valid) in cases {
            assert_eq!(Version::new(text).is_ok(), valid, "{text:?}");
        }
    }

    #[test]
    fn errors_quote_a_short_escaped_excerpt() {
        let long = format!("{}\n", "x".repeat(500));
        let message = Name::new(&long).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
}
