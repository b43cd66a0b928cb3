//! What the workspace's tests and benchmarks would otherwise write several times: a test PKI,
//! sample events, the contract suite every buffer passes, and the benchmarks' criterion
//! configuration.
//!
//! This crate is not for SDK authors and is never published: every workspace crate uses it as a
//! dev-dependency only (a tidy test in `xtask` checks that), so nothing here reaches a build of
//! the libraries. SDK authors depend on the `telemetry` facade.
//!
//! - [`pki`]: a CA made by rcgen for the run, a server certificate for `127.0.0.1` and
//!   `localhost`, and the rustls configurations of a server presenting it and a client trusting
//!   it. The HTTPS servers the tests run are built on it; each keeps its own script of answers
//!   where only one test file needs it.
//! - [`fixtures`]: valid sample events.
//! - [`buffer_contract!`]: the claim/acknowledge contract of `telemetry_buffer::Buffer`.
//! - [`bench`](mod@bench): the criterion configuration of every benchmark.
//! - [`postgres`] (Unix): a private PostgreSQL server in a temporary directory.
//!
//! # Why the buffer contract is a macro
//!
//! The suite is a macro that expands in the buffer's own test crate, not a generic function
//! here over `B: Buffer`. A generic function would make this crate depend on `telemetry-buffer`
//! while `telemetry-buffer` dev-depends on this crate: that compiles for integration tests,
//! but any unit test inside `telemetry-buffer` that called it would see two different copies of
//! `Buffer` (the crate under test and the one this crate was built against), and fail to
//! compile with a mismatch between two types of the same name. It would also make every crate
//! that uses this kit (the collector's tests among them) build the client-side buffer, which
//! the layering keeps the collector away from. The macro names `telemetry_buffer` only where it
//! expands, so it always means the caller's copy, and this crate depends on `telemetry-model`
//! alone among the workspace's crates.
//!
//! # Feature flags
//!
//! None.
//!
//! # Supported Rust versions
//!
//! The workspace's `rust-version` (1.89) and newer.

// Test helpers may panic: a panic is how a test fails, and a benchmark that cannot set itself
// up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bench;
mod contract;
pub mod fixtures;
pub mod pki;
#[cfg(unix)]
pub mod postgres;

// The buffer contract names the model's types through this, so that it needs no import in the
// crate where it expands.
#[doc(hidden)]
pub use telemetry_model;
