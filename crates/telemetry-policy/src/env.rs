//! A snapshot of environment variables, so that settings are read once and tests never
//! have to mutate the process environment.

use std::collections::BTreeMap;
use std::ffi::OsString;

/// Environment variables captured at one moment.
///
/// Values that are not valid Unicode are kept as `None` so that a setting given one is
/// reported as invalid rather than silently ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvSnapshot {
    vars: BTreeMap<String, Option<String>>,
}

impl EnvSnapshot {
    /// The current process environment.
    pub fn from_process() -> EnvSnapshot {
        EnvSnapshot::from_os_pairs(std::env::vars_os())
    }

    /// A snapshot made of the given pairs, for tests and for hosts that filter their environment.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> EnvSnapshot
    where
        K: Into<String>,
        V: Into<String>,
    {
        EnvSnapshot {
            vars: pairs
                .into_iter()
                .map(|(key, value)| (key.into(), Some(value.into())))
                .collect(),
        }
    }

    fn from_os_pairs(pairs: impl IntoIterator<Item = (OsString, OsString)>) -> EnvSnapshot {
        EnvSnapshot {
            vars: pairs
                .into_iter()
                .filter_map(|(key, value)| {
                    Some((key.into_string().ok()?, value.into_string().ok()))
                })
                .collect(),
        }
    }

    /// A snapshot that keeps only the variables whose names satisfy `keep`.
    pub fn filtered(&self, keep: impl Fn(&str) -> bool) -> EnvSnapshot {
        EnvSnapshot {
            vars: self
                .vars
                .iter()
                .filter(|(key, _)| keep(key))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        }
    }

    /// The value of a variable: `None` when unset, `Some(Err(NotUnicode))` when not valid Unicode.
    pub fn get(&self, name: &str) -> Option<Result<&str, NotUnicode>> {
        self.vars
            .get(name)
            .map(|value| value.as_deref().ok_or(NotUnicode))
    }

    /// Whether a variable is set at all.
    pub fn contains(&self, name: &str) -> bool {
        self.vars.contains_key(name)
    }
}

/// A variable whose value is not valid Unicode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotUnicode;
