//! Records the compiler's version, reported as the runtime version of Rust SDKs.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RUSTC");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| major_minor(&text))
        .unwrap_or_else(|| "0".to_owned());
    println!("cargo:rustc-env=TELEMETRY_RUSTC_VERSION={version}");
}

/// `rustc 1.95.0 (59807616e 2026-04-14)` becomes `1.95`.
fn major_minor(text: &str) -> Option<String> {
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split(['.', '-']);
    let major = parts.next()?;
    let minor = parts.next()?;
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    (digits(major) && digits(minor)).then(|| format!("{major}.{minor}"))
}
