//! One instance per SDK per process: [`init`] and the guard that keeps it running.
//!
//! A library SDK does not own `main`, so it cannot start telemetry once and stop it at the end.
//! Instead each of its entry points (a client type, say) calls [`init`] and keeps the guard:
//! the first call starts the worker, later calls in the same process get the same one (one
//! worker, one `sdk_usage` summary), and the worker stops when the last guard is dropped.
//! Code that has no guard at hand finds the running instance with [`current`].

use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::config::TelemetryConfig;
use crate::handle::Telemetry;

/// The instance of each SDK that called [`init`], with how many guards keep it.
///
/// The lock is held only to find, add or remove an entry, never while an instance starts or
/// stops: starting reads the state file under its own lock, which another process may hold
/// for up to a couple of seconds, and [`current`] must not wait for that.
static INSTANCES: Mutex<Vec<Instance>> = Mutex::new(Vec::new());

struct Instance {
    sdk: String,
    /// Set once by the first [`init`]; concurrent first calls for the same SDK wait for it.
    telemetry: Arc<OnceLock<Telemetry>>,
    /// Guards handed out, and first calls still starting it.
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
    let slot = {
        let mut instances = instances();
        match instances.iter_mut().find(|instance| instance.sdk == sdk) {
            Some(instance) => {
                instance.guards += 1;
                Arc::clone(&instance.telemetry)
            }
            None => {
                let slot = Arc::new(OnceLock::new());
                instances.push(Instance {
                    sdk: sdk.clone(),
                    telemetry: Arc::clone(&slot),
                    guards: 1,
                });
                slot
            }
        }
    };
    // Outside the registry's lock: the first call decides and starts, which may wait on the
    // state file; a concurrent first call for the same SDK waits here for the same instance.
    // Should starting panic (a host's warning sink that panics, say), the count just taken is
    // given back, so the entry never outlives its guards.
    let mut pending = PendingGuard {
        slot: Some(Arc::clone(&slot)),
    };
    let telemetry = slot.get_or_init(|| config.start()).clone();
    // Started: the count now belongs to the guard below.
    pending.slot = None;
    TelemetryGuard {
        telemetry,
        slot: Some(slot),
        sdk,
    }
}

/// A guard count taken by [`init`] before the instance has started; releasing it removes an
/// entry that no guard holds.
struct PendingGuard {
    slot: Option<Arc<OnceLock<Telemetry>>>,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            release(&slot);
        }
    }
}

/// Gives back one guard count of `slot`'s entry; returns the entry when it was the last.
fn release(slot: &Arc<OnceLock<Telemetry>>) -> Option<Instance> {
    let mut instances = instances();
    let position = instances
        .iter()
        .position(|instance| Arc::ptr_eq(&instance.telemetry, slot))?;
    let instance = &mut instances[position];
    instance.guards = instance.guards.saturating_sub(1);
    (instance.guards == 0).then(|| instances.remove(position))
}

/// The running instance of `sdk` (started by [`init`] and kept by a guard), or a handle that
/// records nothing when there is none: code deep in a library records through this without
/// passing a handle around.
///
/// While the first [`init`] is still starting the instance, this returns the handle that
/// records nothing rather than wait.
pub fn current(sdk: &str) -> Telemetry {
    instances()
        .iter()
        .find(|instance| instance.sdk == sdk)
        .and_then(|instance| instance.telemetry.get().cloned())
        .unwrap_or_else(Telemetry::disabled)
}

/// Keeps the process's instance of an SDK running; see [`init`]. Dereferences to the
/// [`Telemetry`] handle. Cloning it adds a guard; the instance stops when the last is dropped.
#[must_use = "telemetry stops when the last guard is dropped"]
pub struct TelemetryGuard {
    telemetry: Telemetry,
    /// The registry's entry this guard counts in; none for [`TelemetryGuard::disabled`].
    slot: Option<Arc<OnceLock<Telemetry>>>,
    sdk: String,
}

impl TelemetryGuard {
    /// A guard on a handle that records nothing ([`Telemetry::disabled`]), for an SDK whose
    /// configuration could not be built: the rest of its code stays the same.
    pub fn disabled() -> TelemetryGuard {
        TelemetryGuard {
            telemetry: Telemetry::disabled(),
            slot: None,
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
        if let Some(slot) = &self.slot
            && let Some(instance) = instances()
                .iter_mut()
                .find(|instance| Arc::ptr_eq(&instance.telemetry, slot))
        {
            instance.guards += 1;
        }
        TelemetryGuard {
            telemetry: self.telemetry.clone(),
            slot: self.slot.clone(),
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
        let Some(slot) = &self.slot else {
            return;
        };
        // Shut down outside the registry's lock: it may take the shutdown timeout.
        if release(slot).is_some() {
            self.telemetry.shutdown_in_time();
        }
    }
}
