//! The receiving end of privacy-first SDK telemetry: an HTTPS collector that checks every event
//! against its SDK's catalog, stores it once, erases a session on request, deletes what is past
//! the retention and reports what the SDK's maintainers may learn.
//!
//! The binary, `telemetry-collector`, is what most people run (`serve`, `report`; see
//! docs/collector.md). The library exposes the same parts for tests and for embedding:
//!
//! - [`validate`]: the body's encoding and limits, the batch, and each event against its
//!   [`Catalogs`](validate::Catalogs) entry and the time window. Refused events are counted by
//!   reason and dropped.
//! - [`store`]: the [`Store`](store::Store) trait, the embedded [`SqliteStore`](store::SqliteStore)
//!   and the shared [`PostgresStore`](store::PostgresStore): once by `event_id`, erasure,
//!   retention with day aggregates that carry no session ids, reports.
//! - [`ingest`]: the bounded write queue in front of the writer that commits in groups; a full
//!   queue answers 503 with `Retry-After`.
//! - [`server`]: TLS (rustls, ring), connection limits, routes and graceful shutdown.
//! - [`report`] and [`html`]: the report's numbers and its page.
//!
//! Architecture Invariant: the only workspace crate this one depends on is `telemetry-model`,
//! whose [`Event`](telemetry_model::Event) is the one definition of the schema. Nothing about a
//! client (address, headers, arrival time) is stored or logged; logs carry counts only.
//!
//! # Feature flags
//!
//! - `bundled-sqlite` (default): builds SQLite from source.
//!
//! # Supported Rust versions
//!
//! The workspace's `rust-version` (1.89) and newer.

pub mod auth;
pub mod cli;
pub mod dev;
pub mod html;
pub mod ingest;
pub mod report;
pub mod server;
pub mod store;
pub mod tls;
pub mod validate;
