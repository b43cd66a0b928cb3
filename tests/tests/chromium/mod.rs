//! Headless Chromium (Debian's `chromium` package) for tests that check what a browser renders.
//!
//! Each run gets a fresh profile and home directory, no network of its own (no background
//! requests, updates or sync), and a deadline. `cargo xtask ci` installs Chromium when it is
//! missing; under CI a missing Chromium fails the test, elsewhere the test says it skipped.

// Each test file uses a different part of this module; saying that a browser check was skipped
// is part of its job.
#![allow(dead_code, clippy::print_stderr)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Where Debian's package puts the browser.
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one run may take: a cold start on a busy two-core machine takes a few seconds.
const DEADLINE: Duration = Duration::from_secs(120);

/// The flags of every run: headless, as root in a container, and quiet on the network.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
];

/// A Chromium that is there to run.
#[derive(Debug)]
pub(crate) struct Chromium {
    binary: PathBuf,
}

/// What one run printed.
#[derive(Debug)]
pub(crate) struct Run {
    /// Standard output: the DOM for `--dump-dom`.
    pub(crate) stdout: String,
    /// Standard error, without the lines every run prints in a container (no D-Bus).
    pub(crate) stderr: String,
}

impl Chromium {
    /// The browser, or `None` (with a line saying the test skipped) outside CI when it is not
    /// installed. Under CI (`CI` set to anything but `false` or `0`) a missing browser fails
    /// the test: the check it makes must not vanish silently.
    pub(crate) fn find(test: &str) -> Option<Chromium> {
        let binary = PathBuf::from(CHROMIUM);
        if binary.is_file() {
            return Some(Chromium { binary });
        }
        let ci =
            std::env::var("CI").is_ok_and(|value| !matches!(value.as_str(), "" | "false" | "0"));
        assert!(
            !ci,
            "{test}: {CHROMIUM} is missing, and CI must run this test; `cargo xtask ci` installs it with `apt-get install -y chromium`"
        );
        eprintln!(
            "{test}: skipped the browser check: {CHROMIUM} is absent (install it with `apt-get install -y chromium`)"
        );
        None
    }

    /// The DOM of `target` (a URL or a file) after Chromium has loaded it.
    pub(crate) fn dump_dom(&self, target: &str, extra_flags: &[&str]) -> Run {
        self.run(extra_flags, &["--dump-dom", target])
    }

    /// A PNG of `target` in a window of `width` × `height` pixels.
    pub(crate) fn screenshot(
        &self,
        target: &str,
        png: &Path,
        (width, height): (u32, u32),
        extra_flags: &[&str],
    ) -> Run {
        let screenshot = format!("--screenshot={}", png.display());
        let window = format!("--window-size={width},{height}");
        self.run(
            extra_flags,
            &[
                screenshot.as_str(),
                window.as_str(),
                "--hide-scrollbars",
                target,
            ],
        )
    }

    fn run(&self, extra_flags: &[&str], arguments: &[&str]) -> Run {
        // One browser at a time across the test processes: each takes a core for a second or
        // two, and a two-core CI machine also runs tests that wait on timers.
        let lock =
            std::fs::File::create(Path::new(env!("CARGO_TARGET_TMPDIR")).join("chromium.lock"))
                .unwrap();
        lock.lock().unwrap();
        let profile = tempfile::tempdir().unwrap();
        let user_data_dir = format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        );
        let mut child = Command::new(&self.binary)
            .args(FLAGS)
            .arg(&user_data_dir)
            .args(extra_flags)
            .args(arguments)
            // Nothing of the machine's user reaches the browser, nor the other way round.
            .env("HOME", profile.path())
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.binary.display()));
        let stdout = read_in_background(child.stdout.take());
        let stderr = read_in_background(child.stderr.take());
        // Standard output closes when the browser and its helper processes have exited.
        let stdout = match stdout.recv_timeout(DEADLINE) {
            Ok(text) => text,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within {DEADLINE:?}: {arguments:?}");
            }
        };
        let status = child.wait().unwrap();
        let stderr: String = stderr
            .recv_timeout(DEADLINE)
            .unwrap_or_default()
            .lines()
            .filter(|line| !line.contains("dbus") && !line.contains("unexpected operator"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(
            status.success(),
            "chromium {arguments:?} failed ({status}):\n{stderr}"
        );
        Run { stdout, stderr }
    }
}

fn read_in_background(stream: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut stream) = stream {
            let _ = stream.read_to_end(&mut bytes);
        }
        let _ = sender.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    receiver
}

/// The flag that makes Chromium accept exactly one server key, whatever CA signed it:
/// `--ignore-certificate-errors-spki-list` with the base64 SHA-256 of the key's
/// SubjectPublicKeyInfo. Unlike `--ignore-certificate-errors`, any other certificate is still
/// refused.
pub(crate) fn trust_only_key(subject_public_key_info: &[u8]) -> String {
    let sha256 = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .map(|suite| suite.common.hash_provider.hash(subject_public_key_info))
        .unwrap();
    format!(
        "--ignore-certificate-errors-spki-list={}",
        base64(sha256.as_ref())
    )
}

/// Standard base64 with padding (RFC 4648), which is what Chromium's flag expects.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = chunk.iter().enumerate().fold(0u32, |word, (index, byte)| {
            word | (u32::from(*byte) << (16 - 8 * index))
        });
        for index in 0..4 {
            if index <= chunk.len() {
                text.push(char::from(
                    ALPHABET[((word >> (18 - 6 * index)) & 63) as usize],
                ));
            } else {
                text.push('=');
            }
        }
    }
    text
}

#[test]
fn base64_is_rfc_4648() {
    for (bytes, expected) in [
        (&b""[..], ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg=="),
        (b"fooba", "Zm9vYmE="),
        (b"foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(bytes), expected);
    }
}
