//! The `catalog!` macro: an SDK's catalog as typed handles, checked when the SDK compiles.

/// Generates one typed handle constant per name in an SDK's catalog, read at compile time.
///
/// `catalog!("catalog.toml")` reads the file (relative to the SDK's `Cargo.toml`), validates it
/// and expands, where it is written, to:
///
/// - `CATALOG_TOML`, the catalog's text compiled in, for [`TelemetryConfig::new`](crate::TelemetryConfig::new);
/// - `CATALOG_ID`, the catalog's [`CatalogId`](crate::CatalogId);
/// - one module per section (`features`, `metrics`, `exception_types`, `config_errors`,
///   `integrations`, `block_types`, `commands`) holding a constant per name, in upper case and
///   documented with the name's description: `retries` becomes `features::RETRIES`, a
///   [`Feature`](crate::Feature).
///
/// Put it in a module of its own, so that the section modules do not meet your own names.
/// The SDK then never parses the catalog or looks a name up: a name it uses is a constant, and
/// a misspelt one does not compile. Changing `catalog.toml` rebuilds the SDK. A catalog that
/// does not validate is a compile error with the same message `Catalog::from_toml` gives.
///
/// ```
/// mod catalog {
///     telemetry::catalog!(inline: r#"
///         [features]
///         retries = "Tasks configured with automatic retries"
///
///         [exception_types]
///         timeout_error = "A task exceeded its timeout"
///     "#);
/// }
///
/// let config = telemetry::TelemetryConfig::new("mysdk", "1.2.0", catalog::CATALOG_TOML, "MYSDK")?;
/// assert_eq!(config.catalog().id(), catalog::CATALOG_ID);
/// let retries: telemetry::Feature = catalog::features::RETRIES;
/// assert_eq!(config.catalog().feature_name(retries).unwrap().as_str(), "retries");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A name the catalog does not declare is a compile error (here `RETRYS` for `RETRIES`):
///
/// ```compile_fail
/// mod catalog {
///     telemetry::catalog!(inline: r#"
///         [features]
///         retries = "Tasks configured with automatic retries"
///     "#);
/// }
///
/// let retries: telemetry::Feature = catalog::features::RETRYS;
/// ```
///
/// An exception type the catalog does not declare has no constant either: an SDK reports it
/// only by writing [`ExceptionType::OTHER`](crate::ExceptionType::OTHER) itself.
///
/// Each handle carries its catalog's identity. The macro checks names at compile time; which
/// catalog a handle is recorded with is checked when it is recorded: a [`Telemetry`](crate::Telemetry)
/// refuses a handle of another catalog and counts it
/// ([`refused_records`](crate::Telemetry::refused_records)) rather than report the name at the
/// same position in its own.
///
/// `catalog!(inline: "...")` takes the catalog's text instead of a file, for tests and examples.
#[macro_export]
macro_rules! catalog {
    (inline: $text:literal $(,)?) => {
        $crate::__private::generate_catalog!($crate inline $text);
    };
    ($path:literal $(,)?) => {
        $crate::__private::generate_catalog!($crate path $path);
    };
}

/// What the `catalog!` macro expands to refers to; not an API.
#[doc(hidden)]
pub mod __private {
    pub use telemetry_macros::generate_catalog;
}
