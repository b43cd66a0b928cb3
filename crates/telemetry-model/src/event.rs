//! The event: one JSON object on the wire, one line in an offline export.
//!
//! Every field has a closed type: identifiers are [`Name`]s or [`Version`]s, durations and
//! counts are buckets, time is an [`HourTimestamp`], the rest are enums and booleans. There is
//! no field that can hold free text, so user data has nowhere to go.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::bucket::{CountBucket, DurationBucket};
use crate::name::{Name, Version};
use crate::time::HourTimestamp;

macro_rules! random_id {
    ($(#[$doc:meta])* $id:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $id(Uuid);

        impl $id {
            /// The length of the id's text: a hyphenated UUID.
            pub const TEXT_LEN: usize = 36;

            /// A new random (version 4) id.
            pub fn random() -> $id {
                $id(Uuid::new_v4())
            }

            /// Whether the id has the shape of a random (version 4, RFC 9562 variant) UUID and
            /// is not one of the well-known values (all zeros, all ones). An id that does not
            /// is not one this library made, and is never sent.
            pub fn is_random_v4(self) -> bool {
                self.0.get_version_num() == 4
                    && matches!(self.0.get_variant(), uuid::Variant::RFC4122)
                    && !self.0.is_nil()
                    && !self.0.is_max()
            }

            /// Writes the id's text (lowercase, hyphenated) into `buffer` without allocating.
            pub fn encode(self, buffer: &mut [u8; Self::TEXT_LEN]) -> &str {
                self.0.hyphenated().encode_lower(buffer)
            }
        }

        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($id), self.0.hyphenated())
            }
        }

        impl FromStr for $id {
            type Err = InvalidId;

            fn from_str(text: &str) -> Result<$id, InvalidId> {
                // Only the canonical lowercase hyphenated form, the one this crate writes.
                let mut canonical = [0u8; Self::TEXT_LEN];
                match Uuid::try_parse(text) {
                    Ok(uuid) if uuid.hyphenated().encode_lower(&mut canonical) == text => {
                        Ok($id(uuid))
                    }
                    _ => Err(InvalidId),
                }
            }
        }

        impl Serialize for $id {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut buffer = [0u8; Self::TEXT_LEN];
                serializer.serialize_str(self.encode(&mut buffer))
            }
        }

        impl<'de> Deserialize<'de> for $id {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$id, D::Error> {
                let text = Cow::<str>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $id {
            fn schema_name() -> Cow<'static, str> {
                stringify!($id).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "description": "A random UUID in lowercase hyphenated form.",
                    "type": "string",
                    "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
                })
            }
        }
    };
}

random_id! {
    /// A random id per event, so that receivers can drop duplicates.
    EventId
}

random_id! {
    /// The anonymous session id: random, created when telemetry is first enabled,
    /// replaced by `reset` and forgotten by `disable`. The only identifier an event carries.
    SessionId
}

/// The error for a string that is not a lowercase hyphenated UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id: expected a lowercase hyphenated UUID")]
pub struct InvalidId;

/// What an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A summary of one process's use of the SDK, sent when the process ends.
    SdkUsage,
    /// One run of a unit of work (a flow run, say): its features, duration and outcome.
    Run,
    /// The user opted out: the receiver should delete every event with this session id.
    /// Sent once, when an SDK that sent data is disabled; it carries no usage data.
    DeletionRequest,
}

/// The operating system family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OsFamily {
    /// Linux.
    Linux,
    /// macOS.
    Macos,
    /// Windows.
    Windows,
    /// FreeBSD, OpenBSD or NetBSD.
    Bsd,
    /// Anything else.
    Other,
}

impl OsFamily {
    /// The family of the operating system this code was compiled for.
    pub fn current() -> OsFamily {
        match std::env::consts::OS {
            "linux" | "android" => OsFamily::Linux,
            "macos" => OsFamily::Macos,
            "windows" => OsFamily::Windows,
            "freebsd" | "openbsd" | "netbsd" | "dragonfly" => OsFamily::Bsd,
            _ => OsFamily::Other,
        }
    }
}

/// The processor architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// 64-bit x86.
    X86_64,
    /// 64-bit ARM.
    Aarch64,
    /// 32-bit x86.
    X86,
    /// 32-bit ARM.
    Arm,
    /// 64-bit RISC-V.
    Riscv64,
    /// WebAssembly.
    Wasm32,
    /// Anything else.
    Other,
}

impl Arch {
    /// The architecture this code was compiled for.
    pub fn current() -> Arch {
        match std::env::consts::ARCH {
            "x86_64" => Arch::X86_64,
            "aarch64" => Arch::Aarch64,
            "x86" => Arch::X86,
            "arm" => Arch::Arm,
            "riscv64" => Arch::Riscv64,
            "wasm32" => Arch::Wasm32,
            _ => Arch::Other,
        }
    }
}

/// How the SDK was driven.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Interface {
    /// From the SDK's command-line tool.
    Cli,
    /// From a program that uses the SDK as a library.
    #[default]
    Programmatic,
}

/// Development or production, as the SDK declares it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStage {
    /// Local development or experiments.
    Development,
    /// A deployed or served workload.
    Production,
    /// The SDK cannot tell.
    #[default]
    Unknown,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// The run finished successfully.
    Completed,
    /// The run's code raised an error.
    Failed,
    /// The run was cancelled.
    Cancelled,
    /// The run stopped for reasons outside its code (the process died, say).
    Crashed,
}

/// Errors, reported only as names from the catalog (or `other`) and bucketed counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorSummary {
    /// Integrations that are installed but failed to import.
    pub integration_import_failures: BTreeSet<Name>,
    /// Kinds of configuration errors seen.
    pub config_errors: BTreeSet<Name>,
    /// Exception types seen, with how often, bucketed.
    pub exception_types: BTreeMap<Name, CountBucket>,
}

impl ErrorSummary {
    /// Whether nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.integration_import_failures.is_empty()
            && self.config_errors.is_empty()
            && self.exception_types.is_empty()
    }
}

/// One telemetry event, as sent and exported.
///
/// `sdk_usage` events summarise a process; `run` events describe one unit of work.
/// `duration` is the process's approximate runtime for the first and the run's duration for
/// the second; `concurrency_peak` appears only in `sdk_usage` events and `outcome` only in `run`
/// events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Telemetry event")]
pub struct Event {
    /// A random id for this event.
    pub event_id: EventId,
    /// The anonymous session id.
    pub session_id: SessionId,
    /// When the event was recorded, truncated to the hour (UTC).
    pub timestamp: HourTimestamp,
    /// What the event reports.
    pub event_type: EventType,
    /// The SDK that collected the event.
    pub sdk_name: Name,
    /// The SDK's version.
    pub sdk_version: Version,
    /// The version of this telemetry library.
    pub library_version: Version,
    /// The language runtime, such as `rust` or `python`.
    pub runtime: Name,
    /// The runtime's version, major and minor.
    pub runtime_version: Version,
    /// The operating system family.
    pub os: OsFamily,
    /// The processor architecture.
    pub arch: Arch,
    /// Whether the SDK was driven from its CLI or from a program.
    pub interface: Interface,
    /// Whether a CI system was detected.
    pub ci: bool,
    /// Development or production, as the SDK declares it.
    pub deployment: DeploymentStage,
    /// Integrations installed, from the catalog.
    pub integrations: BTreeSet<Name>,
    /// Features used, from the catalog.
    pub features: BTreeSet<Name>,
    /// Block types used, from the catalog.
    pub block_types: BTreeSet<Name>,
    /// CLI commands used, from the catalog.
    pub commands: BTreeSet<Name>,
    /// Metrics from the catalog, bucketed.
    pub metrics: BTreeMap<Name, CountBucket>,
    /// Errors seen.
    pub errors: ErrorSummary,
    /// How long the process (`sdk_usage`) or the run (`run`) took, bucketed.
    pub duration: DurationBucket,
    /// The most units of work running at once, bucketed (`sdk_usage` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_peak: Option<CountBucket>,
    /// How the run ended (`run` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_canonical_uuids() {
        let id = EventId::random();
        let text = id.to_string();
        assert_eq!(text.parse::<EventId>(), Ok(id));
        assert_eq!(text.to_uppercase().parse::<EventId>(), Err(InvalidId));
        assert_eq!(text.replace('-', "").parse::<EventId>(), Err(InvalidId));
        assert_ne!(SessionId::random(), SessionId::random());
        assert!(format!("{id:?}").starts_with("EventId("));
    }

    #[test]
    fn enums_use_snake_case_on_the_wire() {
        let cases = [
            (
                serde_json::to_value(EventType::SdkUsage).unwrap(),
                "sdk_usage",
            ),
            (serde_json::to_value(OsFamily::Macos).unwrap(), "macos"),
            (serde_json::to_value(Arch::X86_64).unwrap(), "x86_64"),
            (serde_json::to_value(Interface::Cli).unwrap(), "cli"),
            (
                serde_json::to_value(DeploymentStage::Production).unwrap(),
                "production",
            ),
            (
                serde_json::to_value(RunOutcome::Cancelled).unwrap(),
                "cancelled",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(value, expected);
        }
    }
}
