//! The catalog: everything an SDK declares it may collect, each item with a description.
//!
//! An SDK declares its catalog in TOML. The facade's `catalog!` macro reads that file when the
//! SDK compiles and turns every name into a typed handle constant such as a [`Feature`], so a
//! misspelt name is a compile error. Recording APIs take those handles, so a name that is not in
//! the catalog can never reach an event.
//!
//! Every handle carries the [`CatalogId`] of the catalog it was made from: the facade refuses a
//! handle of another catalog instead of recording whatever name sits at the same position.
//!
//! ```toml
//! [features]
//! retries = "Tasks or flows configured with automatic retries"
//!
//! [metrics]
//! flows_defined = "How many flows the program defined, bucketed"
//!
//! [exception_types]
//! timeout_error = "A task exceeded its timeout"
//! ```
//!
//! Sections, all optional: `features`, `metrics`, `exception_types`, `config_errors`,
//! `integrations`, `block_types`, `commands`. Names are short lowercase identifiers
//! (see [`Name`]); `other` is reserved in `exception_types` and `integrations`,
//! where it stands for everything not declared.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::name::Name;

/// The name that exception types and integrations not in the catalog are reported as.
pub const OTHER: &str = "other";

/// The most features a catalog may declare, so that a set of them fits in one [`FeatureSet`].
pub const MAX_FEATURES: usize = 128;

/// The most entries any other section may declare.
pub const MAX_SECTION_LEN: usize = 1_000;

/// The longest description, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 300;

/// One section of a catalog, by what its names stand for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// `features`: SDK features a program used, such as retries or caching.
    Features,
    /// `metrics`: counts reported as buckets, such as flows defined.
    Metrics,
    /// `exception_types`: error types that may be reported; others become `other`.
    ExceptionTypes,
    /// `config_errors`: kinds of configuration errors.
    ConfigErrors,
    /// `integrations`: integrations that may be reported installed or failing to import.
    Integrations,
    /// `block_types`: kinds of blocks (stored configuration objects) used.
    BlockTypes,
    /// `commands`: CLI commands used.
    Commands,
}

impl Section {
    /// Every section, in the order the catalog documents them.
    pub const ALL: [Section; 7] = [
        Section::Features,
        Section::Metrics,
        Section::ExceptionTypes,
        Section::ConfigErrors,
        Section::Integrations,
        Section::BlockTypes,
        Section::Commands,
    ];

    /// The TOML table name of the section.
    pub fn key(self) -> &'static str {
        match self {
            Section::Features => "features",
            Section::Metrics => "metrics",
            Section::ExceptionTypes => "exception_types",
            Section::ConfigErrors => "config_errors",
            Section::Integrations => "integrations",
            Section::BlockTypes => "block_types",
            Section::Commands => "commands",
        }
    }

    fn capacity(self) -> usize {
        match self {
            Section::Features => MAX_FEATURES,
            _ => MAX_SECTION_LEN,
        }
    }

    fn has_other(self) -> bool {
        matches!(self, Section::ExceptionTypes | Section::Integrations)
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A declared name and what it means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The name as it appears in events.
    pub name: Name,
    /// What the name means, for the generated docs and for users who read them.
    pub description: String,
}

/// Why a catalog was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The text is not TOML, or has an unknown section or a value that is not a string.
    #[error("catalog is not valid: {0}")]
    Syntax(String),
    /// A name has the wrong shape.
    #[error("catalog section `{section}`: {source}")]
    InvalidName {
        /// Where the name was declared.
        section: Section,
        /// What is wrong with it.
        source: crate::name::InvalidIdentifier,
    },
    /// A name is declared without a description.
    #[error(
        "catalog section `{section}`: `{name}` needs a description of 1-{MAX_DESCRIPTION_LEN} characters on one line"
    )]
    BadDescription {
        /// Where the name was declared.
        section: Section,
        /// The name.
        name: String,
    },
    /// `other` was declared where it is reserved.
    #[error("catalog section `{section}`: `other` is reserved for undeclared values; remove it")]
    Reserved {
        /// Where it was declared.
        section: Section,
    },
    /// A section declares more names than fit.
    #[error("catalog section `{section}` declares {count} names; at most {limit} are allowed")]
    TooMany {
        /// The section.
        section: Section,
        /// How many it declares.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    features: BTreeMap<String, String>,
    #[serde(default)]
    metrics: BTreeMap<String, String>,
    #[serde(default)]
    exception_types: BTreeMap<String, String>,
    #[serde(default)]
    config_errors: BTreeMap<String, String>,
    #[serde(default)]
    integrations: BTreeMap<String, String>,
    #[serde(default)]
    block_types: BTreeMap<String, String>,
    #[serde(default)]
    commands: BTreeMap<String, String>,
}

/// What an SDK may collect. Parse it with [`Catalog::from_toml`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Catalog {
    id: CatalogId,
    sections: [Vec<CatalogEntry>; 7],
}

/// The identity of a catalog: a fingerprint of every section's names in order.
///
/// Two catalogs share an id exactly when each handle stands for the same name in both, so a
/// handle is valid for every catalog with its id and refused by every other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CatalogId(u64);

impl CatalogId {
    /// No catalog: the id of an empty [`FeatureSet`] and of the `OTHER` handles, which every
    /// catalog accepts.
    const NONE: CatalogId = CatalogId(0);
    /// More than one catalog: the id of a [`FeatureSet`] that mixes them, which none accepts.
    const MIXED: CatalogId = CatalogId(u64::MAX);

    /// The id the facade's `catalog!` macro computed for a catalog at compile time.
    ///
    /// For generated code only: a made-up id matches no catalog, so it records nothing.
    #[doc(hidden)]
    pub const fn __from_generated(fingerprint: u64) -> CatalogId {
        CatalogId(fingerprint)
    }

    /// The fingerprint, as generated code writes it.
    pub const fn fingerprint(self) -> u64 {
        self.0
    }

    /// The id of sections with these names (FNV-1a over each section's key and names).
    fn of(sections: &[Vec<CatalogEntry>; 7]) -> CatalogId {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = OFFSET;
        let mut feed = |bytes: &[u8]| {
            for &byte in bytes {
                hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
            }
        };
        for (section, entries) in Section::ALL.iter().zip(sections) {
            feed(section.key().as_bytes());
            for entry in entries {
                // Names never hold these bytes, so no two different catalogs feed the same text.
                feed(&[0xff]);
                feed(entry.name.as_str().as_bytes());
            }
            feed(&[0xfe]);
        }
        // The two reserved values mean "no catalog" and "several catalogs".
        match hash {
            0 | u64::MAX => CatalogId(1),
            hash => CatalogId(hash),
        }
    }
}

macro_rules! handles {
    ($($(#[$doc:meta])* $handle:ident => $section:ident, $lookup:ident, $name_of:ident;)*) => {
        $(
            $(#[$doc])*
            ///
            /// A handle is a position in the catalog it came from, with that catalog's
            /// [`CatalogId`]; any other catalog refuses it.
            #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
            pub struct $handle {
                catalog: CatalogId,
                index: u16,
            }

            impl $handle {
                /// The handle the facade's `catalog!` macro generates for a declared name.
                ///
                /// For generated code only: a handle made up here names nothing in any other
                /// catalog, which refuses it.
                #[doc(hidden)]
                pub const fn __from_generated(catalog: CatalogId, index: u16) -> $handle {
                    $handle { catalog, index }
                }

                /// The position of the name in its catalog section.
                pub fn index(self) -> usize {
                    usize::from(self.index)
                }

                /// The catalog this handle belongs to.
                pub fn catalog_id(self) -> CatalogId {
                    self.catalog
                }

                /// Whether a catalog with this id accepts the handle.
                pub fn is_from(self, catalog: CatalogId) -> bool {
                    self.catalog == catalog
                }
            }

            impl Catalog {
                #[doc = concat!("Resolves a name declared in the `", stringify!($lookup), "` section at run time.")]
                ///
                /// SDKs use the constants the `catalog!` macro generates instead, which are
                /// checked when the SDK compiles; this is for tools that read catalogs.
                pub fn $lookup(&self, name: &str) -> Result<$handle, UnknownName> {
                    self.position(Section::$section, name)
                        .map(|index| $handle { catalog: self.id, index })
                }

                #[doc = concat!("The name behind a `", stringify!($handle), "` handle; `None` for a handle of another catalog.")]
                pub fn $name_of(&self, handle: $handle) -> Option<&Name> {
                    if handle.catalog != self.id {
                        return None;
                    }
                    self.name_at(Section::$section, handle.index())
                }
            }
        )*
    };
}

handles! {
    /// A feature declared in the catalog's `features` section.
    Feature => Features, feature, feature_name;
    /// A metric declared in the catalog's `metrics` section.
    Metric => Metrics, metric, metric_name;
    /// A kind of configuration error declared in the `config_errors` section.
    ///
    /// Named for what it is, a kind, so that it does not collide with an SDK's own
    /// `ConfigError` type.
    ConfigErrorKind => ConfigErrors, config_error, config_error_name;
    /// A block type declared in the `block_types` section.
    BlockType => BlockTypes, block_type, block_type_name;
    /// A command declared in the `commands` section.
    ///
    /// Named `CommandName` so that it does not collide with the `enum Command` of a clap CLI.
    CommandName => Commands, command, command_name;
}

macro_rules! allowlist_handles {
    ($($(#[$doc:meta])* $handle:ident => $section:ident, $lookup:ident, $name_of:ident;)*) => {
        $(
            $(#[$doc])*
            ///
            /// A declared name is a position in the catalog it came from, with that catalog's
            /// [`CatalogId`]; any other catalog refuses it. `OTHER` belongs to every catalog.
            #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
            pub struct $handle {
                catalog: CatalogId,
                index: u16,
            }

            impl $handle {
                /// Everything not declared in the catalog; reported as `other`.
                ///
                /// The only way to report an undeclared value: lookups of undeclared names
                /// fail, so reporting `other` is always written out.
                pub const OTHER: $handle = $handle { catalog: CatalogId::NONE, index: u16::MAX };

                /// The handle the facade's `catalog!` macro generates for a declared name.
                ///
                /// For generated code only: a handle made up here names nothing in any other
                /// catalog, which refuses it.
                #[doc(hidden)]
                pub const fn __from_generated(catalog: CatalogId, index: u16) -> $handle {
                    $handle { catalog, index }
                }

                /// The position of the name in its catalog section, or `None` for `other`.
                pub fn index(self) -> Option<usize> {
                    (self != $handle::OTHER).then_some(usize::from(self.index))
                }

                /// The catalog this handle belongs to; `None` for `OTHER`, which belongs to all.
                pub fn catalog_id(self) -> Option<CatalogId> {
                    (self != $handle::OTHER).then_some(self.catalog)
                }

                /// Whether a catalog with this id accepts the handle.
                pub fn is_from(self, catalog: CatalogId) -> bool {
                    self == $handle::OTHER || self.catalog == catalog
                }
            }

            impl Catalog {
                #[doc = concat!("Resolves a name from the `", stringify!($lookup), "s` allowlist at run time.")]
                ///
                #[doc = concat!("A name not declared there is an error, never a silent `other`: a caller that")]
                #[doc = concat!("means `other` writes `.unwrap_or(", stringify!($handle), "::OTHER)`.")]
                pub fn $lookup(&self, name: &str) -> Result<$handle, UnknownName> {
                    self.position(Section::$section, name)
                        .map(|index| $handle { catalog: self.id, index })
                }

                #[doc = concat!("The name behind a `", stringify!($handle), "` handle: `other` for `OTHER`, `None` for")]
                /// a handle of another catalog.
                pub fn $name_of(&self, handle: $handle) -> Option<Name> {
                    match handle.index() {
                        None => Some(other_name()),
                        Some(_) if handle.catalog != self.id => None,
                        Some(index) => self.name_at(Section::$section, index).cloned(),
                    }
                }
            }
        )*
    };
}

allowlist_handles! {
    /// An exception type from the `exception_types` allowlist, or [`ExceptionType::OTHER`].
    ExceptionType => ExceptionTypes, exception_type, exception_type_name;
    /// An integration from the `integrations` allowlist, or [`Integration::OTHER`].
    Integration => Integrations, integration, integration_name;
}

/// A name that the catalog does not declare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not declared in the catalog's `{section}` section")]
pub struct UnknownName {
    /// The section that was searched.
    pub section: Section,
    /// The name, shortened and escaped.
    pub name: String,
}

impl Catalog {
    /// Parses and validates a catalog written in TOML.
    pub fn from_toml(text: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogFile =
            toml::from_str(text).map_err(|error| CatalogError::Syntax(error.to_string()))?;
        let CatalogFile {
            features,
            metrics,
            exception_types,
            config_errors,
            integrations,
            block_types,
            commands,
        } = file;
        let tables = [
            features,
            metrics,
            exception_types,
            config_errors,
            integrations,
            block_types,
            commands,
        ];
        let mut sections: [Vec<CatalogEntry>; 7] = Default::default();
        for ((section, table), entries) in Section::ALL.into_iter().zip(tables).zip(&mut sections) {
            *entries = validate_section(section, table)?;
        }
        Ok(Catalog {
            id: CatalogId::of(&sections),
            sections,
        })
    }

    /// The catalog's identity, which every handle made from it carries.
    pub fn id(&self) -> CatalogId {
        self.id
    }

    /// The declared entries of one section, sorted by name.
    pub fn entries(&self, section: Section) -> &[CatalogEntry] {
        &self.sections[section as usize]
    }

    /// How many names a section declares.
    pub fn len(&self, section: Section) -> usize {
        self.entries(section).len()
    }

    /// Whether the catalog declares nothing at all.
    pub fn is_empty(&self) -> bool {
        self.sections.iter().all(Vec::is_empty)
    }

    fn name_at(&self, section: Section, index: usize) -> Option<&Name> {
        self.entries(section).get(index).map(|entry| &entry.name)
    }

    fn position(&self, section: Section, name: &str) -> Result<u16, UnknownName> {
        self.entries(section)
            .binary_search_by(|entry| entry.name.as_str().cmp(name))
            .ok()
            // Sections hold at most MAX_SECTION_LEN entries, so every index fits in u16.
            .and_then(|index| u16::try_from(index).ok())
            .ok_or_else(|| UnknownName {
                section,
                name: name
                    .chars()
                    .take(48)
                    .flat_map(char::escape_default)
                    .collect(),
            })
    }
}

/// The `other` name, which is a valid [`Name`] by construction.
pub(crate) fn other_name() -> Name {
    match Name::new(OTHER) {
        Ok(name) => name,
        Err(_) => unreachable!("`other` is a valid name"),
    }
}

fn validate_section(
    section: Section,
    table: BTreeMap<String, String>,
) -> Result<Vec<CatalogEntry>, CatalogError> {
    if table.len() > section.capacity() {
        return Err(CatalogError::TooMany {
            section,
            count: table.len(),
            limit: section.capacity(),
        });
    }
    // A BTreeMap is sorted by name, which keeps lookups a binary search and docs stable.
    table
        .into_iter()
        .map(|(name, description)| {
            let name =
                Name::new(&name).map_err(|source| CatalogError::InvalidName { section, source })?;
            if section.has_other() && name.as_str() == OTHER {
                return Err(CatalogError::Reserved { section });
            }
            let description = description.trim().to_owned();
            if description.is_empty()
                || description.chars().count() > MAX_DESCRIPTION_LEN
                || description.contains(['\n', '\r'])
            {
                return Err(CatalogError::BadDescription {
                    section,
                    name: name.to_string(),
                });
            }
            Ok(CatalogEntry { name, description })
        })
        .collect()
}

/// A set of features, such as those one flow run used. Copy, allocation-free.
///
/// The set takes the [`CatalogId`] of its first feature. Adding a feature of another catalog
/// marks the set as mixed, and no catalog accepts a mixed set, so a run that mixes catalogs is
/// refused rather than reported under the wrong names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FeatureSet {
    bits: u128,
    catalog: CatalogId,
}

impl Default for FeatureSet {
    fn default() -> FeatureSet {
        FeatureSet::new()
    }
}

impl FeatureSet {
    /// The empty set.
    pub const fn new() -> FeatureSet {
        FeatureSet {
            bits: 0,
            catalog: CatalogId::NONE,
        }
    }

    /// Adds a feature.
    pub fn insert(&mut self, feature: Feature) {
        self.adopt(feature.catalog);
        if let Some(bit) = 1u128.checked_shl(u32::from(feature.index)) {
            self.bits |= bit;
        }
    }

    /// The set with `feature` added.
    #[must_use]
    pub fn with(mut self, feature: Feature) -> FeatureSet {
        self.insert(feature);
        self
    }

    /// Whether the set holds `feature`.
    pub fn contains(self, feature: Feature) -> bool {
        feature.catalog == self.catalog
            && 1u128
                .checked_shl(u32::from(feature.index))
                .is_some_and(|bit| self.bits & bit != 0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.bits == 0
    }

    /// Whether a catalog with this id accepts the set: it is empty or all its features are
    /// that catalog's.
    pub fn is_from(self, catalog: CatalogId) -> bool {
        self.catalog == CatalogId::NONE || self.catalog == catalog
    }

    /// The features in the set, in catalog order.
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        let catalog = self.catalog;
        (0..MAX_FEATURES as u16)
            .map(move |index| Feature { catalog, index })
            .filter(move |&feature| self.contains(feature))
    }

    /// The union of two sets; mixed when they belong to different catalogs.
    #[must_use]
    pub fn union(mut self, other: FeatureSet) -> FeatureSet {
        if other.catalog != CatalogId::NONE {
            self.adopt(other.catalog);
        }
        self.bits |= other.bits;
        self
    }

    /// The raw bits, one per feature index.
    pub fn bits(self) -> u128 {
        self.bits
    }

    fn adopt(&mut self, catalog: CatalogId) {
        if self.catalog == CatalogId::NONE {
            self.catalog = catalog;
        } else if self.catalog != catalog {
            self.catalog = CatalogId::MIXED;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [features]
        retries = "Tasks configured with automatic retries"
        caching = "Tasks with result caching"

        [metrics]
        flows_defined = "Flows defined, bucketed"

        [exception_types]
        timeout_error = "A task timed out"

        [integrations]
        aws = "The AWS integration"
    "#;

    fn check_error(text: &str, expected: &str) {
        let error = Catalog::from_toml(text).expect_err(text).to_string();
        assert!(
            error.contains(expected),
            "expected `{expected}` in `{error}`"
        );
    }

    #[test]
    fn parses_sections_and_resolves_names() {
        let catalog = Catalog::from_toml(EXAMPLE).unwrap();
        let retries = catalog.feature("retries").unwrap();
        assert_eq!(catalog.feature_name(retries).unwrap().as_str(), "retries");
        assert_eq!(catalog.len(Section::Features), 2);
        assert_eq!(
            catalog.entries(Section::Features)[0].name.as_str(),
            "caching"
        );
        assert!(catalog.feature("serve").is_err());
        let flows = catalog.metric("flows_defined").unwrap();
        assert_eq!(
            catalog.metric_name(flows).unwrap().as_str(),
            "flows_defined"
        );
        assert_eq!(
            catalog.command("deploy").unwrap_err().section,
            Section::Commands
        );
    }

    #[test]
    fn allowlists_refuse_undeclared_names_and_name_other_explicitly() {
        let catalog = Catalog::from_toml(EXAMPLE).unwrap();
        let known = catalog.exception_type("timeout_error").unwrap();
        assert_eq!(
            catalog.exception_type_name(known).unwrap().as_str(),
            "timeout_error"
        );
        for unknown in ["ValueError", "alice@example.com", "", "other"] {
            assert_eq!(
                catalog.exception_type(unknown).unwrap_err().section,
                Section::ExceptionTypes
            );
        }
        assert_eq!(
            catalog
                .exception_type_name(ExceptionType::OTHER)
                .unwrap()
                .as_str(),
            "other"
        );
        assert!(catalog.integration("gcp").is_err());
        let aws = catalog.integration("aws").unwrap();
        assert_eq!(catalog.integration_name(aws).unwrap().as_str(), "aws");
    }

    const OTHER_CATALOG: &str = r#"
        [features]
        dry_run = "Runs that only print what they would do"
        zzz = "A feature sorted last"

        [exception_types]
        value_error = "A bad value"
    "#;

    #[test]
    fn handles_of_another_catalog_name_nothing() {
        let ours = Catalog::from_toml(EXAMPLE).unwrap();
        let theirs = Catalog::from_toml(OTHER_CATALOG).unwrap();
        assert_ne!(ours.id(), theirs.id());
        let dry_run = theirs.feature("dry_run").unwrap();
        // The same position in `ours` is `caching`; the handle must not be read as it.
        assert_eq!(dry_run.index(), 0);
        assert_eq!(ours.feature_name(dry_run), None);
        let value_error = theirs.exception_type("value_error").unwrap();
        assert_eq!(ours.exception_type_name(value_error), None);
        assert!(!value_error.is_from(ours.id()));
        assert!(ExceptionType::OTHER.is_from(ours.id()));
    }

    #[test]
    fn ids_follow_the_names_not_the_text() {
        let id = |text| Catalog::from_toml(text).unwrap().id();
        let described_differently = EXAMPLE.replace("A task timed out", "Took too long");
        assert_eq!(id(EXAMPLE), id(&described_differently));
        let renamed = EXAMPLE.replace("caching", "cashing");
        assert_ne!(id(EXAMPLE), id(&renamed));
        // The same name in another section is another catalog.
        assert_ne!(id("[features]\nx = \"x\""), id("[metrics]\nx = \"x\""));
        assert_ne!(id(""), id("[features]\nx = \"x\""));
    }

    #[test]
    fn rejects_bad_catalogs_with_clear_errors() {
        let cases = [
            (
                "[features]\nRetries = \"x\"",
                "`Retries` is not a valid name",
            ),
            (
                "[features]\n\"my feature\" = \"x\"",
                "`my feature` is not a valid name",
            ),
            (
                "[features]\nretries = \"\"",
                "`retries` needs a description",
            ),
            (
                "[features]\nretries = \"a\\nb\"",
                "`retries` needs a description",
            ),
            ("[exception_types]\nother = \"x\"", "`other` is reserved"),
            ("[feature]\nretries = \"x\"", "unknown field `feature`"),
            ("[features]\nretries = 1", "invalid type"),
            (
                "[features]\nretries = \"x\"\nretries = \"y\"",
                "duplicate key",
            ),
            ("[features\n", "catalog is not valid"),
        ];
        for (text, expected) in cases {
            check_error(text, expected);
        }
    }

    #[test]
    fn limits_the_number_of_features() {
        let mut text = String::from("[features]\n");
        for index in 0..=MAX_FEATURES {
            text.push_str(&format!("f{index} = \"feature {index}\"\n"));
        }
        check_error(&text, "declares 129 names; at most 128");
    }

    #[test]
    fn feature_sets_hold_what_was_inserted() {
        let catalog = Catalog::from_toml(EXAMPLE).unwrap();
        let retries = catalog.feature("retries").unwrap();
        let caching = catalog.feature("caching").unwrap();
        let set = FeatureSet::new().with(retries);
        assert!(set.contains(retries) && !set.contains(caching));
        assert_eq!(set.union(FeatureSet::new().with(caching)).iter().count(), 2);
        assert_eq!(set.iter().collect::<Vec<_>>(), [retries]);
        assert!(FeatureSet::new().is_empty());
        assert!(set.is_from(catalog.id()) && FeatureSet::new().is_from(catalog.id()));
    }

    #[test]
    fn feature_sets_that_mix_catalogs_belong_to_none() {
        let ours = Catalog::from_toml(EXAMPLE).unwrap();
        let theirs = Catalog::from_toml(OTHER_CATALOG).unwrap();
        let retries = ours.feature("retries").unwrap();
        let dry_run = theirs.feature("dry_run").unwrap();
        let mixed = FeatureSet::new().with(retries).with(dry_run);
        assert!(!mixed.is_from(ours.id()) && !mixed.is_from(theirs.id()));
        let united = FeatureSet::new()
            .with(retries)
            .union(FeatureSet::new().with(dry_run));
        assert!(!united.is_from(ours.id()) && !united.is_from(theirs.id()));
        // A union with an empty set keeps the catalog.
        let kept = FeatureSet::new().union(FeatureSet::new().with(retries));
        assert!(kept.is_from(ours.id()));
    }
}
