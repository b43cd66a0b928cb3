//! Who decides whether telemetry runs: settings, the user's consent, and the reason.
//!
//! This crate reads the SDK's environment variables strictly ([`Settings`]) and the
//! enterprise [`Policy`] file, keeps the user's decision in the consent state file
//! ([`StateStore`]) and every change of it in the [`AuditLog`], detects CI ([`is_ci`]), decides
//! when the consent prompt may appear ([`should_prompt`]), combines it all into a
//! [`Decision`] with its [`DecisionReason`], and checks serialized events for anything that
//! looks like personal data ([`Scrubber`]). It touches local files only and never the network.
//!
//! Every message here that echoes what a user supplied (a setting's value, an endpoint, a path)
//! shows it through [`redacted_value`], [`redacted_url`] or [`redacted_path`]: cut to about
//! [`MAX_ECHOED_CHARS`] characters, and a URL without user information, query or fragment.
//! Code that prints such values elsewhere (`status`, tracing) should use the same functions.
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
//! The workspace's `rust-version` (1.89) and newer.

mod audit;
mod ci;
mod decision;
mod env;
mod no_follow;
mod policy;
mod prompt;
mod redact;
mod scrub;
mod settings;
mod state;
mod state_lock;

pub use audit::{AUDIT_FILE_NAME, AuditChange, AuditEntry, AuditLog, AuditSource};
pub use ci::is_ci;
pub use decision::{Decision, DecisionInputs, DecisionReason, decide};
pub use env::{EnvSnapshot, NotUnicode};
pub use policy::{Policy, PolicyError, default_policy_path, load_policy};
pub use prompt::{DEFAULT_PROMPT_TIMEOUT, PromptContext, parse_answer, prompt_text, should_prompt};
pub use redact::{MAX_ECHOED_CHARS, redacted_path, redacted_url, redacted_value};
pub use scrub::{MachineIdentity, ScrubReason, Scrubber};
pub use settings::{
    BufferKind, DEFAULT_BATCH_INTERVAL, DEFAULT_BATCH_SIZE, Endpoint, EndpointError, EnvPrefix,
    InvalidPrefix, MAX_BATCH_INTERVAL, MAX_BATCH_SIZE, MIN_BATCH_INTERVAL, Setting, SettingError,
    Settings, do_not_track, parse_bool,
};
pub use state::{
    ConsentState, LOCK_FILE_NAME, STATE_FILE_NAME, StateError, StateStore, create_private_dir,
    write_atomically,
};
pub use state_lock::StateLock;
