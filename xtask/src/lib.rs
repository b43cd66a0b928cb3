//! The project's own tasks, as a library so that tests can check what the tasks generate.
//!
//! `cargo xtask ci` runs every check CI runs; `cargo xtask codegen` rewrites the generated
//! files; `cargo xtask bench` runs the benchmarks. This is the one place that knows how the
//! project is checked.

pub mod codegen;

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
