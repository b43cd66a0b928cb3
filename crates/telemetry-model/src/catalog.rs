//! The catalog: everything an SDK declares it may collect, each item with a description.
//!
//! An SDK embeds its catalog as TOML (usually with `include_str!`), parses it once at start-up
//! and resolves the names it records into typed handles such as [`Feature`]. Recording APIs take
//! those handles, so a name that is not in the catalog can never reach an event.
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
    sections: [Vec<CatalogEntry>; 7],
}

macro_rules! handles {
    ($($(#[$doc:meta])* $handle:ident => $section:ident, $lookup:ident;)*) => {
        $(
            $(#[$doc])*
            ///
            /// A handle is an index into the catalog it came from; use it only with that catalog.
            #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
            pub struct $handle(u16);

            impl $handle {
                /// The position of the name in its catalog section.
                pub fn index(self) -> usize {
                    usize::from(self.0)
                }
            }
        )*

        impl Catalog {
            $(
                #[doc = concat!("Resolves a name declared in the `", stringify!($lookup), "` section.")]
                pub fn $lookup(&self, name: &str) -> Result<$handle, UnknownName> {
                    self.position(Section::$section, name).map($handle)
                }
            )*
        }
    };
}

handles! {
    /// A feature declared in the catalog's `features` section.
    Feature => Features, feature;
    /// A metric declared in the catalog's `metrics` section.
    Metric => Metrics, metric;
    /// A kind of configuration error declared in the `config_errors` section.
    ConfigError => ConfigErrors, config_error;
    /// A block type declared in the `block_types` section.
    BlockType => BlockTypes, block_type;
    /// A command declared in the `commands` section.
    Command => Commands, command;
}

/// An exception type from the `exception_types` allowlist, or [`ExceptionType::OTHER`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExceptionType(u16);

/// An integration from the `integrations` allowlist, or [`Integration::OTHER`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Integration(u16);

macro_rules! allowlist_handles {
    ($($handle:ident => $section:ident, $lookup:ident;)*) => {
        $(
            impl $handle {
                /// Everything not declared in the catalog; reported as `other`.
                pub const OTHER: $handle = $handle(u16::MAX);

                /// The position of the name in its catalog section, or `None` for `other`.
                pub fn index(self) -> Option<usize> {
                    (self != $handle::OTHER).then_some(usize::from(self.0))
                }
            }

            impl Catalog {
                #[doc = concat!("Resolves a name from the `", stringify!($lookup), "s` allowlist; ")]
                #[doc = "anything not declared there becomes `OTHER`."]
                pub fn $lookup(&self, name: &str) -> $handle {
                    self.position(Section::$section, name).map_or($handle::OTHER, $handle)
                }
            }
        )*
    };
}

allowlist_handles! {
    ExceptionType => ExceptionTypes, exception_type;
    Integration => Integrations, integration;
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
        Ok(Catalog { sections })
    }

    /// The declared entries of one section, sorted by name.
    pub fn entries(&self, section: Section) -> &[CatalogEntry] {
        &self.sections[section as usize]
    }

    /// The name behind a feature handle.
    pub fn feature_name(&self, feature: Feature) -> Option<&Name> {
        self.name_at(Section::Features, feature.index())
    }

    /// The name behind a metric handle.
    pub fn metric_name(&self, metric: Metric) -> Option<&Name> {
        self.name_at(Section::Metrics, metric.index())
    }

    /// The name behind a configuration error handle.
    pub fn config_error_name(&self, kind: ConfigError) -> Option<&Name> {
        self.name_at(Section::ConfigErrors, kind.index())
    }

    /// The name behind a block type handle.
    pub fn block_type_name(&self, block_type: BlockType) -> Option<&Name> {
        self.name_at(Section::BlockTypes, block_type.index())
    }

    /// The name behind a command handle.
    pub fn command_name(&self, command: Command) -> Option<&Name> {
        self.name_at(Section::Commands, command.index())
    }

    /// The name behind an exception type handle; `other` when it is not declared.
    pub fn exception_type_name(&self, exception: ExceptionType) -> Name {
        self.allowlisted_name(Section::ExceptionTypes, exception.index())
    }

    /// The name behind an integration handle; `other` when it is not declared.
    pub fn integration_name(&self, integration: Integration) -> Name {
        self.allowlisted_name(Section::Integrations, integration.index())
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

    fn allowlisted_name(&self, section: Section, index: Option<usize>) -> Name {
        index
            .and_then(|index| self.name_at(section, index))
            .cloned()
            .unwrap_or_else(other_name)
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FeatureSet(u128);

impl FeatureSet {
    /// The empty set.
    pub const fn new() -> FeatureSet {
        FeatureSet(0)
    }

    /// Adds a feature.
    pub fn insert(&mut self, feature: Feature) {
        if let Some(bit) = 1u128.checked_shl(u32::from(feature.0)) {
            self.0 |= bit;
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
        1u128
            .checked_shl(u32::from(feature.0))
            .is_some_and(|bit| self.0 & bit != 0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The features in the set, in catalog order.
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        (0..MAX_FEATURES as u16)
            .map(Feature)
            .filter(move |&feature| self.contains(feature))
    }

    /// The union of two sets.
    #[must_use]
    pub fn union(self, other: FeatureSet) -> FeatureSet {
        FeatureSet(self.0 | other.0)
    }

    /// The raw bits, one per feature index.
    pub fn bits(self) -> u128 {
        self.0
    }

    /// A set from raw bits, one per feature index.
    pub fn from_bits(bits: u128) -> FeatureSet {
        FeatureSet(bits)
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
    fn allowlists_fall_back_to_other() {
        let catalog = Catalog::from_toml(EXAMPLE).unwrap();
        let known = catalog.exception_type("timeout_error");
        assert_eq!(catalog.exception_type_name(known).as_str(), "timeout_error");
        for unknown in ["ValueError", "alice@example.com", "", "other"] {
            let handle = catalog.exception_type(unknown);
            assert_eq!(handle, ExceptionType::OTHER);
            assert_eq!(catalog.exception_type_name(handle).as_str(), "other");
        }
        assert_eq!(catalog.integration("gcp"), Integration::OTHER);
        assert_eq!(
            catalog
                .integration_name(catalog.integration("aws"))
                .as_str(),
            "aws"
        );
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
        assert!(FeatureSet::new().is_empty());
    }
}
