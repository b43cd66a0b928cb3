//! The scrubber: defence in depth behind the by-construction guarantees.
//!
//! Events are built only from catalog names, buckets and hour timestamps, so personal data has
//! no way in. The scrubber checks anyway: it reads every string of every serialized event (keys
//! and values) and rejects the whole event when one looks like personal data. Rejected events
//! are dropped and counted by [`ScrubReason`]; their contents are never logged.
//!
//! The event id and the session id are the only exempt fields: they are random UUIDs.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv6Addr;
use std::sync::LazyLock;

use serde::Serialize;
use telemetry_model::Version;

use crate::env::EnvSnapshot;
use crate::schema_words::SCHEMA_WORDS;

/// Why an event was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScrubReason {
    /// Something like an email address (any `@`).
    Email,
    /// An IPv4 or IPv6 address.
    IpAddress,
    /// A URL (`scheme://…`, `www.…`, `mailto:`).
    Url,
    /// A host name such as `db.internal.example.com`.
    HostName,
    /// A file-system path: absolute, relative with separators, or starting with `~`.
    FilePath,
    /// This machine's host name.
    MachineHostname,
    /// The current user's name.
    Username,
    /// The current user's home directory.
    HomeDirectory,
    /// Something like a credential: a known provider's key format, a JWT, a payment card
    /// number (13 to 19 digits that pass the Luhn check), or a long high-entropy string.
    Credential,
    /// Control characters, or JSON this scrubber cannot read.
    Malformed,
}

impl ScrubReason {
    /// Every reason, in a stable order.
    pub const ALL: [ScrubReason; 10] = [
        ScrubReason::Email,
        ScrubReason::IpAddress,
        ScrubReason::Url,
        ScrubReason::HostName,
        ScrubReason::FilePath,
        ScrubReason::MachineHostname,
        ScrubReason::Username,
        ScrubReason::HomeDirectory,
        ScrubReason::Credential,
        ScrubReason::Malformed,
    ];

    /// The snake_case spelling used by `status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScrubReason::Email => "email",
            ScrubReason::IpAddress => "ip_address",
            ScrubReason::Url => "url",
            ScrubReason::HostName => "host_name",
            ScrubReason::FilePath => "file_path",
            ScrubReason::MachineHostname => "machine_hostname",
            ScrubReason::Username => "username",
            ScrubReason::HomeDirectory => "home_directory",
            ScrubReason::Credential => "credential",
            ScrubReason::Malformed => "malformed",
        }
    }
}

impl fmt::Display for ScrubReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who and where this process runs: values that must never appear in an event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineIdentity {
    /// The machine's host name.
    pub hostname: Option<String>,
    /// The current user's name.
    pub username: Option<String>,
    /// The current user's home directory.
    pub home_dir: Option<String>,
}

impl MachineIdentity {
    /// Reads the host name from the kernel (or `HOSTNAME`/`COMPUTERNAME`), the user name from
    /// `USER`, `LOGNAME` or `USERNAME`, and the home directory from `HOME` or `USERPROFILE`.
    pub fn detect(env: &EnvSnapshot) -> MachineIdentity {
        let var = |names: &[&str]| {
            names.iter().find_map(|name| match env.get(name) {
                Some(Ok(value)) if !value.trim().is_empty() => Some(value.trim().to_owned()),
                _ => None,
            })
        };
        let kernel_hostname = ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|path| std::fs::read_to_string(path).ok())
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty());
        MachineIdentity {
            hostname: kernel_hostname.or_else(|| var(&["HOSTNAME", "COMPUTERNAME"])),
            username: var(&["USER", "LOGNAME", "USERNAME"]),
            home_dir: var(&["HOME", "USERPROFILE"]),
        }
    }
}

/// Prefixes of well-known credential formats.
const CREDENTIAL_PREFIXES: &[&str] = &[
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "pk_live_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxs-",
    "AKIA",
    "ASIA",
    "AIza",
    "npm_",
    "pypi-",
    "hf_",
    "sk-",
    "SG.",
    "shpat_",
    "dop_v1_",
];

/// Prefixes of tokens that are credentials whatever follows them, however short: GitHub's
/// (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`) and npm's (`npm_`) are each a token
/// of their own format, and a short or truncated one is still a piece of a secret. A declared
/// name may start the same way (`npm_registry`): names the scrubber is told to allow are exempt.
const SHORT_TOKEN_PREFIXES: [&str; 7] = [
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "npm_",
];

/// Whether `word` is one of [`SHORT_TOKEN_PREFIXES`] followed by at least one character of a
/// token (a letter, a digit or `_`).
fn starts_with_short_token(word: &str) -> bool {
    SHORT_TOKEN_PREFIXES.iter().any(|prefix| {
        word.strip_prefix(prefix).is_some_and(|rest| {
            rest.bytes()
                .next()
                .is_some_and(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
        })
    })
}

/// Whether `head`, what comes before the first `_` of a short identifier, begins one of the
/// lower-case [`CREDENTIAL_PREFIXES`] or [`SHORT_TOKEN_PREFIXES`]. Most names fail on their
/// length or a few bytes: comparing every short identifier with every prefix doubled the
/// scrubber's time for the names that make up most of an event.
fn is_lowercase_token_head(head: &[u8]) -> bool {
    match head.len() {
        2 => matches!(head, b"sk" | b"rk" | b"pk" | b"hf"),
        3 => matches!(
            head,
            b"ghp" | b"gho" | b"ghu" | b"ghs" | b"ghr" | b"npm" | b"dop"
        ),
        5 => head == b"shpat",
        6 => head == b"github",
        _ => false,
    }
}

/// The shortest string the entropy check considers.
const MIN_SECRET_LEN: usize = 20;

/// Checks serialized events for anything that looks like personal data.
///
/// Two kinds of strings are exempt from some checks, and they are told apart:
///
/// - The event schema's own words (field names such as `features`, enum spellings such as
///   `linux` or `1-10s`, and the catalog's `other`) are generated from the model's event types
///   into this crate by `cargo xtask codegen`, and are the same bytes in every event from every
///   machine: they are exempt from every check, so a user
///   who happens to be called `linux` still sends events.
/// - The names the caller allows (the catalog's names, the SDK's name, the runtime's name) are
///   exempt from the checks on their content (a long name with digits can look like a random key,
///   `npm_registry` like an npm token), but never from the checks against this machine: a
///   declared name that is the user's or the host's name, or holds the home directory, is
///   rejected like any other string. A catalog can be built at run time from anything, so it is not trusted to be
///   free of them; [`Scrubber::refuses_name`] finds such names once, at start-up.
#[derive(Clone, Debug)]
pub struct Scrubber {
    identity: Vec<(ScrubReason, String)>,
    /// The same values as words (`build-box-7` as `build`, `box`, `7`), with the home
    /// directory's own name, for [`Scrubber::refuses_name`].
    identity_words: Vec<(ScrubReason, Vec<String>)>,
    home_dir: Option<String>,
    known: KnownStrings,
}

/// Strings the scrubber knows in advance, and how each is exempt.
type KnownStrings = HashMap<Cow<'static, str>, Known, BuildHasherDefault<Fnv1a>>;

/// How a string the scrubber knows in advance is exempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    /// A word of the event schema: exempt from every check.
    SchemaWord,
    /// A name the caller allowed: exempt from the checks on content, not from those against
    /// this machine. Both are fixed when the scrubber is built, so the verdict of those checks
    /// is kept here rather than found again in every event.
    Allowed(Option<ScrubReason>),
}

impl Default for Scrubber {
    /// A scrubber that knows nothing about this machine and allows only the schema's words.
    fn default() -> Scrubber {
        Scrubber::new(MachineIdentity::default(), [])
    }
}

/// The event schema's own words ([`SCHEMA_WORDS`]) as the table every scrubber starts from.
/// Each scrubber copies it and adds its allowed names; the words are borrowed, so a copy
/// allocates only the table.
fn schema_known() -> &'static KnownStrings {
    static KNOWN: LazyLock<KnownStrings> = LazyLock::new(|| {
        SCHEMA_WORDS
            .iter()
            .map(|word| (Cow::Borrowed(*word), Known::SchemaWord))
            .collect()
    });
    &KNOWN
}

/// The words of `text`: its runs of letters and digits, compared without case.
fn words(text: &str) -> impl Iterator<Item = &str> {
    tokens(text, char::is_alphanumeric)
}

/// FNV-1a, for the allowlist: a small set fixed when the scrubber is built, of short strings,
/// looked up for most strings of every event. The standard library's SipHash guards a table
/// against keys chosen to collide, which a set this size does not need, at several times the
/// cost per lookup.
#[derive(Clone, Copy, Debug)]
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Scrubber {
    /// A scrubber that also rejects `identity`'s values, and does not judge the content of the
    /// `allowed` strings (the catalog's names, the SDK's and the runtime's names), so legitimate
    /// names cannot be mistaken for personal data. An allowed string is still rejected when it
    /// is this machine's host or user name or holds its home directory: allowing a name never
    /// exempts it from those. The event schema's own words need no allowing.
    pub fn new(identity: MachineIdentity, allowed: impl IntoIterator<Item = String>) -> Scrubber {
        let mut values = Vec::new();
        if let Some(hostname) = identity.hostname {
            values.push((ScrubReason::MachineHostname, hostname.to_lowercase()));
            // A fully qualified name's first label is the host's short name.
            if let Some((short, _)) = hostname.split_once('.') {
                values.push((ScrubReason::MachineHostname, short.to_lowercase()));
            }
        }
        if let Some(username) = identity.username {
            values.push((ScrubReason::Username, username.to_lowercase()));
        }
        let home_dir = identity.home_dir.filter(|home| home.len() > 1);
        let mut identity_words: Vec<(ScrubReason, Vec<String>)> = values
            .iter()
            .map(|(reason, value)| (*reason, words(value).map(str::to_lowercase).collect()))
            .collect();
        // The home directory's own name (`alice` of `/home/alice`, `bob` of `C:\Users\bob`).
        if let Some(home_name) = home_dir
            .as_deref()
            .and_then(|home| home.rsplit(['/', '\\']).find(|part| !part.is_empty()))
        {
            let home_words = words(home_name).map(str::to_lowercase).collect();
            identity_words.push((ScrubReason::HomeDirectory, home_words));
        }
        identity_words.retain(|(_, words)| !words.is_empty());
        let mut scrubber = Scrubber {
            identity: values,
            identity_words,
            home_dir,
            known: HashMap::default(),
        };
        // A schema word stays a schema word when it is allowed as well.
        let mut known = schema_known().clone();
        for name in allowed {
            let verdict = scrubber.home_or_identity(&name);
            known
                .entry(Cow::Owned(name))
                .or_insert(Known::Allowed(verdict));
        }
        scrubber.known = known;
        scrubber
    }

    /// Whether a name the SDK declares (a catalog name, the SDK's name or the runtime's name)
    /// is or contains, word for word, this machine's host name (full or short), the current user's
    /// name or the name of the home directory; `Some` says which. Words are runs of letters and
    /// digits, compared without case, so with the user `alice` and the host `build-box-7`,
    /// `alice`, `alice_flow` and `build_box_7_runs` are refused, and `malice` and `palace` are not.
    ///
    /// The facade calls it at start-up for every such name. Declared names are allowed in every
    /// event without their content being judged, and each event is checked only for an exact
    /// match with this machine's names, so this is where a declared name that merely contains
    /// one is caught, before anything is recorded.
    pub fn refuses_name(&self, name: &str) -> Option<ScrubReason> {
        let name_words: Vec<&str> = words(name).collect();
        self.identity_words.iter().find_map(|(reason, identity)| {
            name_words
                .windows(identity.len())
                .any(|window| {
                    window.iter().zip(identity).all(|(word, identity_word)| {
                        word.eq_ignore_ascii_case(identity_word)
                            || (!word.is_ascii() && word.to_lowercase() == *identity_word)
                    })
                })
                .then_some(*reason)
        })
    }

    /// Checks one serialized event (a JSON object); `Err` names the first problem found.
    pub fn check_json(&self, json: &str) -> Result<(), ScrubReason> {
        let mut exempt_next_value = false;
        let mut strings = JsonStrings::new(json);
        while let Some(item) = strings.next() {
            let (text, is_key) = item.map_err(|()| ScrubReason::Malformed)?;
            if is_key {
                exempt_next_value = text == "event_id" || text == "session_id";
                self.check_text(&text).map_or(Ok(()), Err)?;
            } else if std::mem::take(&mut exempt_next_value) {
                continue;
            } else {
                self.check_text(&text).map_or(Ok(()), Err)?;
            }
        }
        Ok(())
    }

    /// Checks one string; `Some` names the first problem found.
    pub fn check_text(&self, text: &str) -> Option<ScrubReason> {
        // Most strings in an event are short identifiers: for those only an exact match with
        // this machine's names (from which only the schema's words are exempt) or the prefix
        // of a lower-case token format (from which allowed names are exempt too) can be a
        // problem. Both are rare, so the common path compares bytes and never hashes.
        if let Some(head) = short_identifier_head(text) {
            if let Some((reason, _)) = self.identity.iter().find(|(_, value)| text == value) {
                return (self.known.get(text) != Some(&Known::SchemaWord)).then_some(*reason);
            }
            // A token of a lower-case format (`ghp_…`, `npm_…`, `hf_…`) has this shape too.
            let token = head < text.len()
                && is_lowercase_token_head(&text.as_bytes()[..head])
                && (starts_with_short_token(text) || looks_like_credential(text));
            return (token && !self.known.contains_key(text)).then_some(ScrubReason::Credential);
        }
        match self.known.get(text) {
            Some(Known::SchemaWord) => return None,
            Some(Known::Allowed(verdict)) => return *verdict,
            None => {}
        }
        // Every event holds an hour timestamp and a few version numbers. Of all the checks
        // below, only this machine's names can match strings of those shapes (the proof is in
        // the tests): check just those. A version is exempt from the other checks only when it
        // follows `Version`'s strict grammar, which has no room for an IP address (four
        // numbers of at most 255 are refused), a long run of digits, a word or a separator.
        if is_hour_timestamp(text) || Version::is_valid(text) {
            return self.home_or_identity(text);
        }
        self.check_any_text(text)
    }

    /// The checks that can find something in an hour timestamp, a version in the strict
    /// grammar or an allowed name: those against this machine.
    fn home_or_identity(&self, text: &str) -> Option<ScrubReason> {
        if let Some(home) = &self.home_dir
            && text.contains(home.as_str())
        {
            return Some(ScrubReason::HomeDirectory);
        }
        self.identity_in(text)
    }

    /// This machine's host name or user name as a token of `text`.
    fn identity_in(&self, text: &str) -> Option<ScrubReason> {
        for (reason, value) in &self.identity {
            let mut identity_tokens = tokens(text, |c| {
                c.is_alphanumeric() || matches!(c, '_' | '.' | '-')
            });
            // `value` is lower case already; only a non-ASCII token needs full case folding.
            if identity_tokens.any(|token| {
                token.eq_ignore_ascii_case(value)
                    || (!token.is_ascii() && token.to_lowercase() == *value)
            }) {
                return Some(*reason);
            }
        }
        None
    }

    /// Whether a word of `text` (after its start, or after a character that is not a letter,
    /// digit or `_`) starts like a GitHub or npm token and is not a name the scrubber knows.
    fn holds_short_token(&self, text: &str) -> bool {
        text.match_indices(['g', 'n']).any(|(start, _)| {
            let after_word = text[..start]
                .bytes()
                .next_back()
                .is_some_and(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
            let rest = &text[start..];
            let word = &rest[..rest
                .bytes()
                .position(|byte| !(byte.is_ascii_alphanumeric() || byte == b'_'))
                .unwrap_or(rest.len())];
            !after_word && starts_with_short_token(word) && !self.known.contains_key(word)
        })
    }

    /// Every check, for a string that is neither a short identifier nor allowed.
    fn check_any_text(&self, text: &str) -> Option<ScrubReason> {
        // Nothing here allocates for an ordinary string: it runs for strings of every event.
        let ascii = text.is_ascii();
        let control = if ascii {
            text.bytes().any(|byte| byte.is_ascii_control())
        } else {
            text.chars().any(char::is_control)
        };
        if control {
            return Some(ScrubReason::Malformed);
        }
        if !ascii && text.chars().any(is_invisible) {
            // Refused whatever it says, since no event string needs one; but the checks read
            // the text as it displays, so that the reason counted is the data it tried to
            // hide (`alice\u{200B}@example.com` is an email), when it hid any.
            let visible: String = text.chars().filter(|&c| !is_invisible(c)).collect();
            return Some(
                self.check_any_text(&visible)
                    .unwrap_or(ScrubReason::Malformed),
            );
        }
        if let Some(decoded) = percent_decoded(text) {
            // A path, an address or a host in a URL's escapes (`%2Fhome%2Falice`,
            // `alice%40example.com`) is found in the decoded text; the text as written is
            // checked as well below.
            if let Some(reason) = self.check_any_text(&decoded) {
                return Some(reason);
            }
        }
        if let Some(home) = &self.home_dir
            && text.contains(home.as_str())
        {
            return Some(ScrubReason::HomeDirectory);
        }
        if text.contains('@') {
            return Some(ScrubReason::Email);
        }
        if text.contains("://")
            || starts_with_ignore_ascii_case(text, "www.")
            || starts_with_ignore_ascii_case(text, "mailto:")
        {
            return Some(ScrubReason::Url);
        }
        if text.contains(['/', '\\']) || text.starts_with('~') {
            return Some(ScrubReason::FilePath);
        }
        if tokens(text, |c| c.is_ascii_hexdigit() || c == '.' || c == ':').any(is_ip_address) {
            return Some(ScrubReason::IpAddress);
        }
        if let Some(reason) = self.identity_in(text) {
            return Some(reason);
        }
        if tokens(text, |c| c.is_ascii_alphanumeric() || c == '.' || c == '-').any(is_host_name) {
            return Some(ScrubReason::HostName);
        }
        if holds_card_number(text) || self.holds_short_token(text) {
            return Some(ScrubReason::Credential);
        }
        if tokens(text, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-' | '.')
        })
        .any(|token| {
            // A version in the strict grammar is digits, dots and a word from a closed set:
            // long ones mix classes like a key does, but cannot hold one.
            looks_like_credential(token)
                && !self.known.contains_key(token)
                && !Version::is_valid(token)
        }) {
            return Some(ScrubReason::Credential);
        }
        None
    }
}

/// Characters that display as nothing (zero-width spaces and joiners, the word joiner, the byte
/// order mark, the soft hyphen, fillers), change the direction of the text around them, or
/// select a variant of the character before them. Inside a string they can only split a word
/// that the checks look for, or carry bytes of their own (variation selectors and tag
/// characters can spell out any text).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{E0000}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

/// `text` with every percent-escape (`%2F`, `%3a`) decoded, again and again until none is
/// left, so that `%252F` (an escaped escape) is decoded too; `None` when it has none, which
/// costs one search for `%`. Bytes that are not UTF-8 after decoding become U+FFFD.
fn percent_decoded(text: &str) -> Option<String> {
    let mut bytes = percent_decode_once(text.as_bytes())?;
    // Every round makes the text shorter, so this ends.
    while let Some(again) = percent_decode_once(&bytes) {
        bytes = again;
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// `bytes` with each `%` and two hex digits replaced by the byte they spell; `None` when there
/// is no such escape.
fn percent_decode_once(bytes: &[u8]) -> Option<Vec<u8>> {
    let hex = |byte: u8| char::from(byte).to_digit(16);
    let escape_at = |index: usize| -> Option<u8> {
        if bytes.get(index) != Some(&b'%') {
            return None;
        }
        let high = hex(*bytes.get(index + 1)?)?;
        let low = hex(*bytes.get(index + 2)?)?;
        u8::try_from(high * 16 + low).ok()
    };
    let first = memchr::memchr_iter(b'%', bytes).find(|&index| escape_at(index).is_some())?;
    let mut decoded = Vec::with_capacity(bytes.len());
    decoded.extend_from_slice(&bytes[..first]);
    let mut index = first;
    while index < bytes.len() {
        match escape_at(index) {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    Some(decoded)
}

/// For a short identifier, the length of what comes before its first `_` (its whole length
/// when it has none); `None` for any other string. A short identifier is a lower-case letter,
/// then lower-case letters, digits and `_`, shorter than a secret: the shape of catalog names,
/// enum spellings and field names. A string of digits alone is not one: it could be a card
/// number. One pass over the bytes answers both.
fn short_identifier_head(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.len() >= MIN_SECRET_LEN || !bytes.first().is_some_and(u8::is_ascii_lowercase) {
        return None;
    }
    let mut head = bytes.len();
    for (index, &byte) in bytes.iter().enumerate() {
        if byte == b'_' {
            head = head.min(index);
        } else if !(byte.is_ascii_lowercase() || byte.is_ascii_digit()) {
            return None;
        }
    }
    Some(head)
}

/// `YYYY-MM-DDTHH:00:00Z` with any digits: the shape of an event's hour timestamp.
fn is_hour_timestamp(text: &str) -> bool {
    const SHAPE: &[u8; 20] = b"0000-00-00T00:00:00Z";
    text.len() == SHAPE.len()
        && text.bytes().zip(SHAPE).all(|(byte, &shape)| match shape {
            b'0' => byte.is_ascii_digit(),
            _ => byte == shape,
        })
}

/// Maximal runs of characters that satisfy `keep`.
fn tokens(text: &str, keep: impl Fn(char) -> bool) -> impl Iterator<Item = &str> {
    text.split(move |c: char| !keep(c))
        .filter(|token| !token.is_empty())
}

fn starts_with_ignore_ascii_case(text: &str, prefix: &str) -> bool {
    text.as_bytes()
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Whether `token`, a run of hex digits, dots and colons, is or holds an IP address: an IPv6
/// address (`fe80::1`, `::1`, `::ffff:10.0.0.1`), or an IPv4 address between any of its colons,
/// so with a port (`10.0.0.1:8080`) or inside an IPv6 address, too.
fn is_ip_address(token: &str) -> bool {
    let token = token.trim_matches('.');
    // Only a token with the separators of an IPv6 address is worth parsing as one. A leading
    // `::` is part of the address (`::1`); a trailing colon is punctuation.
    let address = token.trim_end_matches(':');
    let colons = address.bytes().filter(|&byte| byte == b':').count();
    (colons >= 2 && address.parse::<Ipv6Addr>().is_ok())
        || token
            .split(':')
            .any(|part| is_dotted_quad(part.trim_matches('.')))
}

/// Four numbers of at most 255 separated by dots, each of one to three digits: an IPv4
/// address, also in the zero-padded spelling (`192.168.001.010`) that the standard library's
/// parser refuses but `ping` and browsers read.
fn is_dotted_quad(text: &str) -> bool {
    let mut parts = 0;
    text.split('.').all(|part| {
        parts += 1;
        parts <= 4
            && (1..=3).contains(&part.len())
            && part.bytes().all(|byte| byte.is_ascii_digit())
            && part.parse::<u16>().is_ok_and(|number| number <= 255)
    }) && parts == 4
}

fn is_host_name(token: &str) -> bool {
    let token = token.trim_end_matches('.');
    // Loose on purpose: a label with a stray hyphen is still someone's host.
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-')
    };
    let Some((_, top_level)) = token.rsplit_once('.') else {
        return false;
    };
    token.split('.').all(valid_label)
        && token.starts_with(|c: char| c.is_ascii_alphabetic())
        && (2..=24).contains(&top_level.len())
        && top_level.bytes().all(|c| c.is_ascii_alphabetic())
}

fn looks_like_credential(token: &str) -> bool {
    if CREDENTIAL_PREFIXES
        .iter()
        .any(|prefix| token.starts_with(prefix) && token.len() >= prefix.len() + 8)
    {
        return true;
    }
    if token.starts_with("eyJ") && token.matches('.').count() == 2 && token.len() >= 20 {
        return true;
    }
    if token.len() < MIN_SECRET_LEN {
        return false;
    }
    let has_upper = token.chars().any(|c| c.is_ascii_uppercase());
    let has_lower = token.chars().any(|c| c.is_ascii_lowercase());
    let digits = token.chars().filter(char::is_ascii_digit).count();
    let classes = usize::from(has_upper) + usize::from(has_lower) + usize::from(digits > 0);
    // Identifiers (snake_case words) are lower-case letters with few digits; secrets mix classes.
    classes >= 2 && (has_upper || digits >= 4) && shannon_entropy(token) >= 3.0
}

/// The fewest and the most digits of a payment card number.
const CARD_DIGITS: std::ops::RangeInclusive<usize> = 13..=19;

/// Whether `text` holds a payment card number: 13 to 19 digits, written together or in groups of
/// three to six separated by single spaces or dashes (`4111 1111 1111 1111`,
/// `3782-822463-10005`), not inside a word, that pass the Luhn check, the check digit every
/// card number ends with. The check is what keeps other long numbers out: only one random
/// number in ten passes it. Nothing is allocated; the digits of a candidate are read on the
/// stack.
fn holds_card_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    let is_word = |index: usize| {
        bytes
            .get(index)
            .is_some_and(|&byte| byte.is_ascii_alphanumeric() || byte == b'_')
    };
    (0..bytes.len()).any(|start| {
        if !bytes[start].is_ascii_digit() || (start > 0 && is_word(start - 1)) {
            return false;
        }
        let mut digits = [0u8; 19];
        let mut count = 0;
        let mut groups = 0;
        let mut groups_fit = true;
        let mut index = start;
        loop {
            let group_start = index;
            while index < bytes.len() && bytes[index].is_ascii_digit() {
                if count < digits.len() {
                    digits[count] = bytes[index] - b'0';
                }
                count += 1;
                index += 1;
            }
            groups += 1;
            groups_fit &= (3..=6).contains(&(index - group_start));
            if count > *CARD_DIGITS.end() {
                return false;
            }
            if CARD_DIGITS.contains(&count)
                && (groups == 1 || groups_fit)
                && !is_word(index)
                && passes_luhn(&digits[..count])
            {
                return true;
            }
            let separated = matches!(bytes.get(index), Some(b' ' | b'-'))
                && bytes.get(index + 1).is_some_and(u8::is_ascii_digit);
            if !separated || !groups_fit {
                return false;
            }
            index += 1;
        }
    })
}

/// The Luhn check: from the right, every second digit doubled (less 9 when over 9), and the
/// sum a multiple of 10.
fn passes_luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(position, &digit)| {
            let digit = u32::from(digit);
            match position % 2 {
                0 => digit,
                _ if digit * 2 > 9 => digit * 2 - 9,
                _ => digit * 2,
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Bits of entropy per character of the string's own character distribution.
fn shannon_entropy(text: &str) -> f64 {
    let mut counts = [0u32; 256];
    for byte in text.bytes() {
        counts[usize::from(byte)] += 1;
    }
    let len = text.len() as f64;
    counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = f64::from(count) / len;
            -p * p.log2()
        })
        .sum()
}

/// The string literals of a JSON text, in order, each with whether it is an object key.
/// Numbers, booleans and nulls are skipped: they cannot carry text.
struct JsonStrings<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> JsonStrings<'a> {
    fn new(text: &'a str) -> JsonStrings<'a> {
        JsonStrings { text, position: 0 }
    }

    fn next(&mut self) -> Option<Result<(Cow<'a, str>, bool), ()>> {
        let bytes = self.text.as_bytes();
        let start = self.position + memchr::memchr(b'"', bytes.get(self.position..)?)?;
        let mut index = start + 1;
        let mut escaped = false;
        // Jump from quote or backslash to the next: the bytes between cannot end the string.
        loop {
            let Some(found) = bytes
                .get(index..)
                .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
            else {
                return Some(Err(()));
            };
            index += found;
            if bytes[index] == b'"' {
                break;
            }
            escaped = true;
            index += 2;
        }
        let raw = &self.text[start + 1..index];
        self.position = index + 1;
        let is_key = bytes[self.position..]
            .iter()
            .find(|byte| !byte.is_ascii_whitespace())
            .is_some_and(|&byte| byte == b':');
        let text = if escaped {
            match serde_json::from_str::<String>(&self.text[start..=index]) {
                Ok(decoded) => Cow::Owned(decoded),
                Err(_) => return Some(Err(())),
            }
        } else {
            Cow::Borrowed(raw)
        };
        Some(Ok((text, is_key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber() -> Scrubber {
        Scrubber::new(
            MachineIdentity {
                hostname: Some("build-box-7.corp.example".to_owned()),
                username: Some("alice".to_owned()),
                home_dir: Some("/home/alice".to_owned()),
            },
            [
                "retries".to_owned(),
                "integration_import_failures".to_owned(),
            ],
        )
    }

    #[test]
    fn finds_personal_data_of_every_shape() {
        let scrubber = scrubber();
        let cases = [
            ("alice@example.com", ScrubReason::Email),
            (
                "contact: bob.smith+tag@mail.example.org",
                ScrubReason::Email,
            ),
            ("10.20.30.40", ScrubReason::IpAddress),
            ("host 192.168.1.1 down", ScrubReason::IpAddress),
            ("2001:db8::ff00:42:8329", ScrubReason::IpAddress),
            ("fe80::1", ScrubReason::IpAddress),
            ("https://example.com/x", ScrubReason::Url),
            ("www.example.com", ScrubReason::Url),
            ("db.internal.example.com", ScrubReason::HostName),
            ("warehouse.corp", ScrubReason::HostName),
            ("/etc/passwd", ScrubReason::FilePath),
            ("data/customers.csv", ScrubReason::FilePath),
            ("C:\\Users\\bob", ScrubReason::FilePath),
            ("~/.ssh", ScrubReason::FilePath),
            ("/home/alice/x", ScrubReason::HomeDirectory),
            ("build-box-7", ScrubReason::MachineHostname),
            ("BUILD-BOX-7", ScrubReason::MachineHostname),
            ("alice", ScrubReason::Username),
            ("owner alice", ScrubReason::Username),
            (
                "sk_live_51HxDemoSecretToken9f8e7d6c",
                ScrubReason::Credential,
            ),
            (
                "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                ScrubReason::Credential,
            ),
            ("AKIAIOSFODNN7EXAMPLE", ScrubReason::Credential),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                ScrubReason::Credential,
            ),
            ("a8Fk2LmQ9xZ7pR4tW1vB6nC3", ScrubReason::Credential),
            ("line\nbreak", ScrubReason::Malformed),
        ];
        for (text, expected) in cases {
            assert_eq!(scrubber.check_text(text), Some(expected), "{text:?}");
        }
    }

    #[test]
    fn passes_what_events_legitimately_hold() {
        let scrubber = scrubber();
        for text in [
            "retries",
            "integration_import_failures",
            "concurrent_task_runner",
            "sequential_task_runner",
            "s3_bucket",
            "x86_64",
            "aarch64",
            "sdk_usage",
            "development",
            "1-10s",
            "<1s",
            ">6h",
            "101-1000",
            ">1000",
            "2026-11-28T14:00:00Z",
            "0.1.0",
            "1.95",
            "0.4.0-beta.1",
            "flowkit",
            "other",
            "rust",
            "alice_in_wonderland_feature",
            "connection_error",
            "aws",
            "",
        ] {
            assert_eq!(scrubber.check_text(text), None, "{text:?}");
        }
    }

    /// Versions in the strict grammar, or close to it: long numbers, four of them, and every
    /// kind of pre-release tag.
    const STRICT_VERSION: &str = "(0|[1-9][0-9]{0,8})(\\.(0|[1-9][0-9]{0,8})){0,3}\
        (-(alpha|beta|rc|dev|pre|preview|nightly)(\\.?[1-9][0-9]{0,3})?\
        |(a|b|rc)[0-9]{1,3}(\\.post[0-9]{1,3})?(\\.dev[0-9]{1,3})?)?";

    proptest::proptest! {
        /// The short cut for timestamps and versions finds exactly what every check would:
        /// strings of those shapes, against machine names and homes of every kind, including
        /// all-digit ones.
        #[test]
        fn the_timestamp_and_version_short_cut_loses_nothing(
            text in proptest::prop_oneof![
                "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:00:00Z",
                STRICT_VERSION,
                "[1-9][0-9]{0,3}(\\.[1-9][0-9]{0,3}){3}",
                "[0-9.]{1,24}",
            ],
            hostname in "[a-z0-9.-]{1,12}|[0-9]{1,4}|00Z|00",
            username in "[a-z0-9_]{1,8}|[0-9]{1,4}",
            home in "/home/[a-z]{1,6}|[0-9]{2,4}|C:\\\\Users\\\\[a-z]{1,5}",
        ) {
            let scrubber = Scrubber::new(
                MachineIdentity {
                    hostname: Some(hostname),
                    username: Some(username),
                    home_dir: Some(home),
                },
                ["retries".to_owned()],
            );
            proptest::prop_assume!(is_hour_timestamp(&text) || Version::is_valid(&text));
            proptest::prop_assert_eq!(
                scrubber.home_or_identity(&text),
                scrubber.check_any_text(&text),
                "{}",
                text
            );
        }
    }

    proptest::proptest! {
        /// The rules the privacy review added (IP addresses with ports, in IPv6 or zero-padded;
        /// card numbers; invisible characters; percent-escapes; GitHub and npm tokens) never
        /// fire on a name shaped like a catalog name or on a version in the strict grammar,
        /// but for a name that starts with a token's prefix.
        #[test]
        fn the_reviewed_rules_never_fire_on_names_or_strict_versions(
            text in proptest::prop_oneof!["[a-z][a-z0-9_]{0,40}", STRICT_VERSION],
        ) {
            proptest::prop_assume!(
                text.starts_with(|c: char| c.is_ascii_lowercase()) || Version::is_valid(&text)
            );
            let mut hex_tokens =
                tokens(&text, |c| c.is_ascii_hexdigit() || c == '.' || c == ':');
            proptest::prop_assert!(!hex_tokens.any(is_ip_address), "{}", text);
            proptest::prop_assert!(!holds_card_number(&text), "{}", text);
            proptest::prop_assert!(!text.chars().any(is_invisible), "{}", text);
            proptest::prop_assert!(percent_decoded(&text).is_none(), "{}", text);
            proptest::prop_assert_eq!(
                Scrubber::default().holds_short_token(&text),
                starts_with_short_token(&text),
                "{}",
                text
            );
        }
    }

    /// The short cut for lower-case tokens lets through no prefix of a name's shape.
    #[test]
    fn every_lower_case_token_prefix_passes_the_gate() {
        let prefixes = CREDENTIAL_PREFIXES.iter().chain(&SHORT_TOKEN_PREFIXES);
        for prefix in prefixes {
            let token = format!("{prefix}abcdefgh");
            if let Some(head) = short_identifier_head(&token) {
                assert!(
                    is_lowercase_token_head(&token.as_bytes()[..head]),
                    "{token}"
                );
                assert_eq!(
                    Scrubber::default().check_text(&token),
                    Some(ScrubReason::Credential),
                    "{token}"
                );
            }
        }
    }

    #[test]
    fn checks_keys_and_values_but_exempts_the_ids() {
        let scrubber = scrubber();
        let ok = r#"{"event_id":"6f1c1b0e-3c1a-4d4e-9b8a-2b7c8e9d0a1f","session_id":"AKIAIOSFODNN7EXAMPLEKEY","metrics":{"retries":"1"}}"#;
        assert_eq!(scrubber.check_json(ok), Ok(()));
        let cases = [
            (r#"{"features":["alice@example.com"]}"#, ScrubReason::Email),
            (r#"{"metrics":{"/tmp/x":"1"}}"#, ScrubReason::FilePath),
            (r#"{"features":["a\u0040b"]}"#, ScrubReason::Email),
            (r#"{"features":["a\/b"]}"#, ScrubReason::FilePath),
            (
                r#"{"event_id":"x","features":["10.0.0.1"]}"#,
                ScrubReason::IpAddress,
            ),
            (r#"{"features":["unterminated]}"#, ScrubReason::Malformed),
        ];
        for (json, expected) in cases {
            assert_eq!(scrubber.check_json(json), Err(expected), "{json}");
        }
    }
}
