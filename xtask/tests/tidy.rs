//! Tidy checks: the layering of the workspace and the conventions every crate follows.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use xtask::codegen::generated_files;
use xtask::workspace_root;

/// Which workspace crates each workspace crate may depend on (normal, dev and build).
const ALLOWED: &[(&str, &[&str])] = &[
    ("telemetry-model", &["telemetry-testkit"]),
    // The proc macro runs inside the SDK's build: it parses with the model, never the facade.
    ("telemetry-macros", &["telemetry-model"]),
    (
        "telemetry-policy",
        &["telemetry-model", "telemetry-testkit"],
    ),
    (
        "telemetry-buffer",
        &["telemetry-model", "telemetry-testkit"],
    ),
    (
        "telemetry-transport",
        &["telemetry-model", "telemetry-testkit"],
    ),
    (
        "telemetry",
        &[
            "telemetry-model",
            "telemetry-macros",
            "telemetry-policy",
            "telemetry-buffer",
            "telemetry-transport",
            "telemetry-testkit",
        ],
    ),
    ("flowkit", &["telemetry", "telemetry-testkit"]),
    (
        "telemetry-collector",
        &["telemetry-model", "telemetry-testkit"],
    ),
    ("telemetry-testkit", &["telemetry-model"]),
    (
        "telemetry-e2e",
        &[
            "telemetry",
            "flowkit",
            "telemetry-collector",
            "telemetry-testkit",
        ],
    ),
    ("xtask", &["telemetry-model"]),
];

/// The crate that only tests and benchmarks may use: a dev-dependency, never a normal or build
/// one, so that nothing in it reaches a build of the libraries.
const DEV_ONLY: &str = "telemetry-testkit";

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn crates_depend_only_on_what_the_layering_allows() {
    let metadata = metadata();
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(name, deps)| (*name, deps.iter().copied().collect()))
        .collect();
    let packages = metadata["packages"].as_array().unwrap();
    let members: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        members,
        allowed.keys().copied().collect(),
        "a workspace member was added or removed: update ALLOWED in xtask/tests/tidy.rs and docs/architecture.md"
    );
    let mut violations = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap();
        for dependency in package["dependencies"].as_array().unwrap() {
            let kind = dependency["kind"].as_str().unwrap_or("normal");
            let dependency = dependency["name"].as_str().unwrap();
            if members.contains(dependency) && !allowed[name].contains(dependency) {
                violations.push(format!("{name} -> {dependency}"));
            }
            if dependency == DEV_ONLY && kind != "dev" {
                violations.push(format!("{name} -> {dependency} ({kind}, not dev)"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "forbidden dependency edges: {violations:?}"
    );
}

#[test]
fn every_member_uses_the_workspace_lints_and_package_settings() {
    for package in metadata()["packages"].as_array().unwrap() {
        let manifest = std::fs::read_to_string(package["manifest_path"].as_str().unwrap()).unwrap();
        let name = package["name"].as_str().unwrap();
        for required in [
            "[lints]\nworkspace = true",
            "edition.workspace = true",
            "license.workspace = true",
        ] {
            assert!(
                manifest.contains(required),
                "{name}: Cargo.toml lacks `{required}`"
            );
        }
    }
}

#[test]
fn every_library_opens_with_a_crate_doc() {
    for package in metadata()["packages"].as_array().unwrap() {
        for target in package["targets"].as_array().unwrap() {
            let is_lib = target["kind"]
                .as_array()
                .unwrap()
                .iter()
                .any(|kind| kind == "lib");
            if is_lib {
                let source = std::fs::read_to_string(target["src_path"].as_str().unwrap()).unwrap();
                assert!(
                    source.starts_with("//! "),
                    "{} does not open with a `//!` crate doc",
                    target["src_path"]
                );
            }
        }
    }
}

#[test]
fn generated_files_are_up_to_date() {
    for file in generated_files().unwrap() {
        assert!(
            file.is_up_to_date(),
            "{} is stale or missing: run `cargo xtask codegen` and commit the result",
            file.path
        );
    }
}
