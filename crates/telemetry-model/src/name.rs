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
    /// The string is not a valid [`Version`].
    #[error(
        "`{text}` is not a valid version ({problem}): use 1 to 4 dot-separated numbers without leading zeros \
         (four only when one is above 255), optionally followed by -alpha, -beta, -rc, -dev, -pre, -preview \
         or -nightly and an optional number, or by a1, b1, rc1, .post1 or .dev1; at most {MAX_VERSION_LEN} characters, \
         such as 1.2.3, 3.12 or 1.0.0-rc.1"
    )]
    Version {
        /// The string, shortened and escaped for the message.
        text: String,
        /// What is wrong with it.
        problem: &'static str,
    },
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

/// A version number in a closed grammar, so that a version field can hold a version and nothing
/// else (no name, address, path or token hidden in a pre-release tag):
///
/// - A numeric core of one to four numbers separated by dots, such as `1`, `3.12`, `1.2.3` or
///   `10.0.19045.3803`. A number has no leading zero (`0` itself is fine) and at most nine
///   digits: longer runs of digits are what card and phone numbers look like, and no release
///   needs them (a date such as `20260115` fits).
/// - Four numbers only when one of them is above 255. Four numbers of at most 255 are exactly an
///   IPv4 address (`10.0.0.1`), which can never be told apart from one and must never leave the
///   machine, so they are refused as ambiguous.
/// - Then optionally one pre-release tag, in one of two closed forms:
///   - `-` and one of `alpha`, `beta`, `rc`, `dev`, `pre`, `preview` or `nightly`, optionally
///     followed by a number, directly or after a dot: `1.0.0-rc.1`, `1.0.0-beta2`,
///     `1.95.0-nightly`;
///   - the Python (PEP 440) suffixes, in this order and each optional: `a`, `b` or `rc` and a
///     number, `.post` and a number, `.dev` and a number: `3.13.0rc1`, `1.0.post1`,
///     `2.0.dev3`, `1.0a1.dev2`.
/// - At most [`MAX_VERSION_LEN`] bytes.
///
/// Build metadata and local versions (`1.2.3+build.5`, `1.0+ubuntu1`) are refused by
/// [`Version::new`]; [`Version::normalize`] drops them and then checks the rest.
///
/// Tags are lower case, as `cargo` and `pip` print them; the grammar is closed on purpose, so a
/// tag that is not listed (`1.0.0-alice`) is refused rather than guessed at.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(Arc<str>);

/// The words a `-` pre-release tag may use.
const PRE_RELEASE_WORDS: [&str; 7] = ["alpha", "beta", "rc", "dev", "pre", "preview", "nightly"];

/// The most digits in one number of a version.
const MAX_VERSION_NUMBER_DIGITS: usize = 9;

impl Version {
    /// Checks `text` and makes it a version. Build metadata (`+…`) is refused: use
    /// [`Version::normalize`] for versions that may carry it.
    pub fn new(text: &str) -> Result<Version, InvalidIdentifier> {
        match check_version(text) {
            Ok(()) => Ok(Version(Arc::from(text))),
            Err(problem) => Err(InvalidIdentifier::Version {
                text: excerpt(text),
                problem,
            }),
        }
    }

    /// Drops build metadata or a local version (everything from the first `+`, as in
    /// `1.2.3+build.5` or `1.0+ubuntu1`), then checks the rest as [`Version::new`] does.
    /// Build metadata says which build, not which release, and may name a machine or a person.
    pub fn normalize(text: &str) -> Result<Version, InvalidIdentifier> {
        let release = text.split_once('+').map_or(text, |(release, _)| release);
        Version::new(release)
    }

    /// Whether `text` is a version in the grammar above.
    pub fn is_valid(text: &str) -> bool {
        check_version(text).is_ok()
    }

    /// The version as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks `text` against the grammar of [`Version`]; the error says what is wrong with it.
/// It reads the bytes once and never allocates: the scrubber calls it for strings of every event.
fn check_version(text: &str) -> Result<(), &'static str> {
    if text.is_empty() {
        return Err("it is empty");
    }
    if text.len() > MAX_VERSION_LEN {
        return Err("it is longer than 32 characters");
    }
    let mut rest = text.as_bytes();
    let mut numbers = [0u32; 4];
    let mut count = 0;
    loop {
        numbers[count] = version_number(&mut rest)?;
        count += 1;
        let another = rest.first() == Some(&b'.') && rest.get(1).is_some_and(u8::is_ascii_digit);
        if count == numbers.len() || !another {
            break;
        }
        rest = &rest[1..];
    }
    if count == numbers.len() && numbers.iter().all(|&number| number <= 255) {
        return Err("four numbers of at most 255 read as an IPv4 address");
    }
    if let Some(tag) = rest.strip_prefix(b"-") {
        rest = tag;
        let word = lowercase_word(&mut rest);
        if !PRE_RELEASE_WORDS
            .iter()
            .any(|allowed| allowed.as_bytes() == word)
        {
            return Err("the pre-release tag is not one of the accepted words");
        }
        if !rest.is_empty() {
            if let Some(after_dot) = rest.strip_prefix(b".") {
                rest = after_dot;
            }
            version_number(&mut rest)?;
        }
    } else {
        if rest.first().is_some_and(u8::is_ascii_lowercase) {
            let word = lowercase_word(&mut rest);
            if !matches!(word, b"a" | b"b" | b"rc") {
                return Err("the pre-release suffix is not a, b or rc and a number");
            }
            version_number(&mut rest)?;
        }
        for label in [&b".post"[..], b".dev"] {
            if let Some(after) = rest.strip_prefix(label) {
                rest = after;
                version_number(&mut rest)?;
            }
        }
    }
    match rest.first() {
        None => Ok(()),
        Some(b'+') => Err("it has build metadata (`+…`), which Version::normalize drops"),
        Some(_) => Err("something follows the version"),
    }
}

/// Reads one number of a version from the start of `rest`; the error is what is wrong with it.
fn version_number(rest: &mut &[u8]) -> Result<u32, &'static str> {
    let mut value: u32 = 0;
    let mut digits = 0;
    for &byte in rest.iter().take_while(|byte| byte.is_ascii_digit()) {
        if digits == 1 && value == 0 {
            return Err("a number has a leading zero");
        }
        if digits == MAX_VERSION_NUMBER_DIGITS {
            return Err("a number has more than 9 digits");
        }
        value = value * 10 + u32::from(byte - b'0');
        digits += 1;
    }
    if digits == 0 {
        return Err("a number is missing");
    }
    *rest = &rest[digits..];
    Ok(value)
}

/// Takes the lower-case letters at the start of `rest`.
fn lowercase_word<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let letters = rest
        .iter()
        .take_while(|byte| byte.is_ascii_lowercase())
        .count();
    let (word, after) = rest.split_at(letters);
    *rest = after;
    word
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

/// Any number of a version: no leading zero, at most nine digits.
macro_rules! any_number {
    () => {
        "(0|[1-9][0-9]{0,8})"
    };
}

/// A number of at most 255, without leading zero: what an IPv4 address is made of.
macro_rules! small_number {
    () => {
        "(0|[1-9][0-9]?|1[0-9]{2}|2[0-4][0-9]|25[0-5])"
    };
}

/// A number above 255, without leading zero, of at most nine digits.
macro_rules! big_number {
    () => {
        "(25[6-9]|2[6-9][0-9]|[3-9][0-9]{2}|[1-9][0-9]{3,8})"
    };
}

/// The grammar of [`Version`] as the pattern of its JSON Schema. It uses no look-around, so
/// that every validator reads it alike; a four-number core spells out where its first number
/// above 255 is.
const VERSION_PATTERN: &str = concat!(
    "^(",
    any_number!(),
    "(\\.",
    any_number!(),
    "){0,2}|",
    big_number!(),
    "\\.",
    any_number!(),
    "\\.",
    any_number!(),
    "\\.",
    any_number!(),
    "|",
    small_number!(),
    "\\.",
    big_number!(),
    "\\.",
    any_number!(),
    "\\.",
    any_number!(),
    "|",
    small_number!(),
    "\\.",
    small_number!(),
    "\\.",
    big_number!(),
    "\\.",
    any_number!(),
    "|",
    small_number!(),
    "\\.",
    small_number!(),
    "\\.",
    small_number!(),
    "\\.",
    big_number!(),
    ")(-(alpha|beta|rc|dev|pre|preview|nightly)(\\.?",
    any_number!(),
    ")?|((a|b|rc)",
    any_number!(),
    ")?(\\.post",
    any_number!(),
    ")?(\\.dev",
    any_number!(),
    ")?)$"
);

impl JsonSchema for Version {
    fn schema_name() -> Cow<'static, str> {
        "Version".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A version number such as 1.2.3, 3.12, 1.0.0-rc.1 or 3.13.0rc1: one to four numbers without leading zeros (four only when one is above 255, so that it cannot read as an IPv4 address), then optionally a pre-release tag from a closed set.",
            "type": "string",
            "maxLength": MAX_VERSION_LEN,
            "pattern": VERSION_PATTERN
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

    /// The grammar by example; `Version::normalize` differs from `Version::new` only on `+`.
    #[test]
    fn versions() {
        let cases = [
            // Numeric cores of one to four numbers.
            ("1", true),
            ("0", true),
            ("3.11", true),
            ("1.2.3", true),
            ("0.1.0", true),
            ("1.95", true),
            ("20260115", true),
            ("2026.1.15", true),
            ("999999999.0", true),
            ("10.0.19045.3803", true),
            ("4.8.4084.0", true),
            ("256.0.0.0", true),
            ("1.2.3.4.5", false),
            ("1000000000.0", false),
            ("01.2.3", false),
            ("1.02", false),
            ("1.2.00", false),
            ("", false),
            ("v1.2.3", false),
            (".1", false),
            ("1.", false),
            ("1..2", false),
            (" 1.2.3", false),
            ("1.2.3 ", false),
            ("１.2.3", false),
            // Four numbers of at most 255 are an IPv4 address, with or without leading zeros.
            ("10.0.0.1", false),
            ("3.12.1.5", false),
            ("255.255.255.255", false),
            ("1.2.3.4-rc.1", false),
            ("192.168.001.010", false),
            ("192.168.1.1", false),
            // `-` tags from the closed set, with an optional number.
            ("0.4.0-beta.1", true),
            ("1.95.0-nightly", true),
            ("1.0.0-rc.1", true),
            ("1.0.0-rc1", true),
            ("1.0.0-beta2", true),
            ("1.0.0-alpha", true),
            ("2.0-dev.3", true),
            ("2.0.0-pre", true),
            ("9.0.0-preview.7", true),
            ("1.0.0-rc.01", false),
            ("1.0.0-rc.", false),
            ("1.0.0-rc-1", false),
            ("1.0.0-rc.1.2", false),
            ("1.0.0-RC1", false),
            ("1.0.0-", false),
            ("1.0.0-alice", false),
            ("1.0.0-beta_1", false),
            ("1.0.0-alpha.beta", false),
            ("1.2.3-alice@example.com", false),
            ("1.2.3-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
            // Python's suffixes, in PEP 440's order.
            ("3.13.0rc1", true),
            ("1.0a1", true),
            ("1.0b2", true),
            ("1.0.post1", true),
            ("2.0.dev3", true),
            ("1.0a1.dev2", true),
            ("1.0rc1.post2.dev3", true),
            ("1.0c1", false),
            ("1.0a", false),
            ("1.0.dev3.post1", false),
            ("1.0.post", false),
            ("1.0-post1", false),
            ("1.0.0-rc1.post1", false),
            // Build metadata and local versions: refused by `new`, dropped by `normalize`.
            ("1.2.3+build", false),
            ("1.0+ubuntu1", false),
            // Whatever else a version string could smuggle.
            ("/home/alice", false),
            ("alice", false),
            ("1.2.3\n", false),
            ("1.2.3\u{200b}", false),
            ("4111111111111111", false),
            ("1.0.0-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
        ];
        for (text, valid) in cases {
            assert_eq!(Version::new(text).is_ok(), valid, "{text:?}");
            assert_eq!(Version::is_valid(text), valid, "{text:?}");
            if !text.contains('+') {
                assert_eq!(Version::normalize(text), Version::new(text), "{text:?}");
            }
        }
        let normalized = [
            ("1.2.3+build.5", Some("1.2.3")),
            ("1.0+ubuntu1", Some("1.0")),
            ("1.0.0-rc.1+alice.host.example", Some("1.0.0-rc.1")),
            ("3.13.0rc1+local", Some("3.13.0rc1")),
            ("1.2.3+", Some("1.2.3")),
            ("+1.2.3", None),
            ("1.0.0-alice+build", None),
            ("10.0.0.1+build", None),
        ];
        for (text, expected) in normalized {
            let version = Version::normalize(text).ok();
            assert_eq!(version.as_ref().map(Version::as_str), expected, "{text:?}");
        }
    }

    /// Every refusal says what is wrong and what is accepted, so that an SDK author who passed
    /// `1.0.0-alice` or `10.0.0.1` can fix it from the message alone.
    #[test]
    fn version_errors_say_what_is_wrong_and_what_is_accepted() {
        let cases = [
            ("", "it is empty"),
            (
                "1.0.0-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "longer than 32",
            ),
            ("v1", "a number is missing"),
            ("192.168.001.010", "a number has a leading zero"),
            ("10.0.0.1", "read as an IPv4 address"),
            ("1234567890", "more than 9 digits"),
            (
                "1.0.0-alice",
                "the pre-release tag is not one of the accepted words",
            ),
            ("1.0c1", "the pre-release suffix is not a, b or rc"),
            ("1.2.3+build", "Version::normalize drops"),
            ("1.2.3 beta", "something follows the version"),
        ];
        for (text, problem) in cases {
            let message = Version::new(text).unwrap_err().to_string();
            assert!(message.contains(problem), "{text:?}: {message}");
            assert!(
                message.contains("use 1 to 4 dot-separated numbers"),
                "{text:?}: {message}"
            );
        }
    }

    /// The JSON Schema's pattern, as an independent validator reads it.
    fn schema_pattern() -> regex::Regex {
        let schema = serde_json::to_value(schemars::schema_for!(Version)).unwrap();
        regex::Regex::new(schema["pattern"].as_str().unwrap()).unwrap()
    }

    /// Strings near the grammar: versions, versions with one byte changed, and noise over the
    /// alphabet versions are made of.
    fn version_like() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        // The pattern without its anchors; some of what it makes is longer than a version.
        let valid = || {
            proptest::string::string_regex(&VERSION_PATTERN[1..VERSION_PATTERN.len() - 1]).unwrap()
        };
        let mutated = (
            valid(),
            any::<prop::sample::Index>(),
            prop::sample::select(b"0123456789.-+abcdeilnoprstvwxyz_ A".to_vec()),
            0..3,
        )
            .prop_map(|(text, at, byte, how)| {
                let mut bytes = text.into_bytes();
                let at = at.index(bytes.len() + 1);
                match how {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ if at < bytes.len() => bytes[at] = byte,
                    _ => bytes.push(byte),
                }
                String::from_utf8(bytes).unwrap()
            });
        prop_oneof![
            valid(),
            mutated,
            "[0-9]{1,4}(\\.[0-9]{1,4}){0,4}",
            "[0-9.a-z+-]{0,34}",
            any::<String>(),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2_000))]

        /// `Version::new` accepts exactly the strings of the grammar (as the schema's pattern
        /// spells it, read by the `regex` crate), and what it accepts reads back unchanged.
        #[test]
        fn versions_are_exactly_the_grammar(text in version_like()) {
            let in_grammar = text.len() <= MAX_VERSION_LEN && schema_pattern().is_match(&text);
            let version = Version::new(&text);
            proptest::prop_assert_eq!(version.is_ok(), in_grammar, "{:?}", text);
            if let Ok(version) = version {
                proptest::prop_assert_eq!(version.as_str(), text.as_str());
                proptest::prop_assert_eq!(version.to_string(), text.clone());
                let json = serde_json::to_string(&version).unwrap();
                proptest::prop_assert_eq!(serde_json::from_str::<Version>(&json).unwrap(), version);
            } else {
                let json = serde_json::to_string(&text).unwrap();
                proptest::prop_assert!(serde_json::from_str::<Version>(&json).is_err());
            }
        }

        /// `normalize` is `new` on what comes before the first `+`.
        #[test]
        fn normalize_drops_build_metadata_and_checks_the_rest(
            release in version_like(),
            build in "[0-9A-Za-z.+-]{0,12}",
        ) {
            let text = format!("{release}+{build}");
            let release = release.split('+').next().unwrap_or_default();
            proptest::prop_assert_eq!(Version::normalize(&text), Version::new(release));
            proptest::prop_assert!(Version::new(&text).is_err());
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
