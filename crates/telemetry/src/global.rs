//! One instance per SDK per process: [`init`] and the guard that keeps it running.
//!
//! A library SDK does not own `main`, so it cannot start telemetry once and stop it at the end.
//! Instead each of its entry points (a client type, say) calls [`init`] and keeps the guard:
//! the first call starts the worker, later calls in the same process get the same one (one
//! worker, one `sdk_usage` summary), and the worker stops when the last guard is dropped.
//! Code that has no guard at hand finds the running instance with [`current`].

use std::ops::Deref;
use std::sync::{Mutex, PoisonError};

use crate::config::TelemetryConfig;
use crate::handle::Telemetry;

/// The running instance of each SDK that called [`init`], with how many guards keep it.
static INSTANCES: Mutex<Vec<Instance>> = Mutex::new(Vec::new());

struct Instance {
    sdk: String,
    telemetry: Telemetry,
    guards: usize,
}

fn instances() -> std::sync::MutexGuard<'static, Vec<Instance>> {
    INSTANCES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts telemetry for this SDK in this process, or joins the instance already running, and
/// returns a guard that keeps it running.
///
/// The first call decides (settings, consent, policy) and starts the worker, as
/// [`TelemetryConfig::start`] does; later calls for the same SDK name return a guard on the
/// same instance, whatever configuration they pass, so a process never runs two workers or
/// sends two summaries for one SDK. When the last guard is dropped, the instance stores what
/// was recorded, delivers what it can within the shutdown timeout and stops; a later `init`
/// starts a new one.
///
/// Never fails: when telemetry is off, the guard holds a handle that records nothing.
///
/// ```
/// # fn main() -> Result<(), telemetry::SetupError> {
/// let config = telemetry::TelemetryConfig::new("mysdk", "1.2.0", "[features]\nretries = \"Tasks with retries\"\n", "MYSDK")?
///     .env(telemetry::EnvSnapshot::from_pairs([("MYSDK_SDK_TELEMETRY_ENABLED", "false")]));
/// let guard = telemetry::init(&config);
/// let again = telemetry::init(&config);
/// assert!(guard.same_instance(&again));
/// if let Ok(retries) = guard.catalog().feature("retries") {
///     guard.feature_used(retries);
/// }
/// # Ok(())
/// # }
/// ```
pub fn init(config: &TelemetryConfig) -> TelemetryGuard {
    let sdk = config.sdk_name().as_str().to_owned();
    let mut instances = instances();
    if let Some(instance) = instances.iter_mut().find(|instance| instance.sdk == sdk) {
        instance.guards += 1;
        return TelemetryGuard {
            telemetry: instance.telemetry.clone(),
            sdk,
        };
    }
    let telemetry = config.start();
    instances.push(Instance {
        sdk: sdk.clone(),
        telemetry: telemetry.clone(),
        guards: 1,
    });
    TelemetryGuard { telemetry, sdk }
}

/// The running instance of `sdk` (started by [`init`] and kept by a guard), or a handle that
/// records nothing when there is none: code deep in a library records through this without
/// passing a handle around.
pub fn current(sdk: &str) -> Telemetry {
    instances()
        .iter()
        .find(|instance| instance.sdk == sdk)
        .map_or_else(Telemetry::disabled, |instance| instance.telemetry.clone())
}

/// Keeps the process's instance of an SDK running; see [`init`]. Dereferences to the
/// [`Telemetry`] handle. Cloning it adds a guard; the instance stops when the last is dropped.
#[must_use = "telemetry stops when the last guard is dropped"]
pub struct TelemetryGuard {
    telemetry: Telemetry,
    sdk: String,
}

impl TelemetryGuard {
    /// A guard on a handle that records nothing ([`Telemetry::disabled`]), for an SDK whose
    /// configuration could not be built: the rest of its code stays the same.
    pub fn disabled() -> TelemetryGuard {
        TelemetryGuard {
            telemetry: Telemetry::disabled(),
            sdk: String::new(),
        }
    }

    /// The handle this guard keeps running.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Whether two guards keep the same instance.
    pub fn same_instance(&self, other: &TelemetryGuard) -> bool {
        self.telemetry.same_instance(&other.telemetry)
    }
}

impl Deref for TelemetryGuard {
    type Target = Telemetry;

    fn deref(&self) -> &Telemetry {
        &self.telemetry
    }
}

impl Clone for TelemetryGuard {
    fn clone(&self) -> TelemetryGuard {
        let mut instances = instances();
        if let Some(instance) = instances
            .iter_mut()
            .find(|instance| instance.telemetry.same_instance(&self.telemetry))
        {
            instance.guards += 1;
        }
        TelemetryGuard {
            telemetry: self.telemetry.clone(),
            sdk: self.sdk.clone(),
        }
    }
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("sdk", &self.sdk)
            .field("telemetry", &self.telemetry)
            .finish()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let last = {
            let mut instances = instances();
            let position = instances
                .iter()
                .position(|instance| instance.telemetry.same_instance(&self.telemetry));
            match position {
                Some(position) => {
                    let instance = &mut instances[position];
                    instance.guards = instance.guards.saturating_sub(1);
                    (instance.guards == 0).then(|| instances.remove(position))
                }
                None => None,
            }
        };
        // Shut down outside the registry's lock: it may take the shutdown timeout.
        if let Some(instance) = last {
            instance.telemetry.shutdown_in_time();
        }
    }
}
