//! Who decides whether telemetry runs: settings, the user's consent, and the reason.
//!
//! This crate reads the SDK's environment variables strictly ([`Settings`]), keeps the
//! user's decision in the consent state file ([`StateStore`]), detects CI ([`is_ci`]) and
//! combines it all into a [`Decision`] with its [`DecisionReason`]. It touches local files
//! only and never the network.
//!
//! Most SDK authors depend on the `telemetry` facade instead, which uses this crate.
//!
//! Architecture Invariant: every error here leads to "off". A setting that cannot be parsed,
//! a state file that cannot be read: none of them can turn telemetry on.
//!
//! # Feature flags
//!
//! None.
//!
//! # Supported Rust versions
//!
//! The workspace's `rust-version` (1.85) and newer.

mod ci;
mod decision;
mod env;
mod settings;
mod state;

pub use ci::is_ci;
pub use decision::{Decision, DecisionInputs, DecisionReason, decide};
pub use env::{EnvSnapshot, NotUnicode};
pub use settings::{
    BufferKind, DEFAULT_BATCH_INTERVAL, DEFAULT_BATCH_SIZE, Endpoint, EndpointError, EnvPrefix,
    InvalidPrefix, MAX_BATCH_INTERVAL, MAX_BATCH_SIZE, Setting, SettingError, Settings,
    do_not_track, parse_bool,
};
pub use state::{
    ConsentState, STATE_FILE_NAME, StateError, StateStore, create_private_dir, write_atomically,
};
