//! Resolution: reading the environment, the policy and the state file into one decision, and
//! what follows from it (the session id, the scrubber).

use super::*;

impl TelemetryConfig {
    /// Works out the decision and where events would go, reading the environment and the
    /// state file. No network, no writes.
    pub(crate) fn resolve(&self) -> Resolution {
        let env = self.env.clone().unwrap_or_else(EnvSnapshot::from_process);
        let settings = Settings::from_env(&self.prefix, &env);
        let policy = load_policy(&self.prefix, &env, &self.policy_path);
        let state = match self.state_store() {
            Some(store) => store.load(),
            None => Ok(ConsentState::default()),
        };
        let valid_settings = settings.as_ref().ok();
        let policy_endpoint = policy
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .and_then(|policy| policy.endpoint.clone());
        let endpoint = policy_endpoint
            .or_else(|| valid_settings.and_then(|settings| settings.endpoint.clone()))
            .or_else(|| self.default_endpoint.clone());
        let mut decision = decide(DecisionInputs {
            // A policy file that cannot be used keeps telemetry off.
            policy: match &policy {
                Ok(policy) => policy.as_ref().and_then(|policy| policy.enabled),
                Err(_) => Some(false),
            },
            do_not_track: telemetry_policy::do_not_track(&env),
            invalid_setting: settings.is_err(),
            env: valid_settings.and_then(|settings| settings.enabled),
            user: state
                .as_ref()
                .ok()
                .and_then(|state| state.decision_for(self.consent_version)),
        });
        let identity = MachineIdentity::detect(&env);
        let mut delivery_problem = self.delivery_problem(endpoint.as_ref());
        if decision.enabled && delivery_problem.is_none() {
            delivery_problem = self.name_problem(&identity);
        }
        if decision.enabled && delivery_problem.is_some() {
            decision = Decision::off(DecisionReason::InvalidSetting);
        }
        let mut resolution = Resolution {
            ci: is_ci(&env),
            identity,
            policy,
            settings,
            state,
            endpoint,
            decision,
            delivery_problem,
        };
        resolution.check_extra_ca(self);
        resolution
    }

    /// Why this SDK's own names cannot be sent from this machine, if they cannot: a catalog
    /// name, the SDK's name or the runtime's name that is, or contains, this machine's user
    /// name, host name or home directory's name would carry them in every event. The message
    /// does not repeat the name, which is the machine's own.
    fn name_problem(&self, identity: &MachineIdentity) -> Option<String> {
        let scrubber = Scrubber::new(identity.clone(), Vec::<String>::new());
        let catalog_names = telemetry_model::Section::ALL
            .iter()
            .flat_map(|section| self.catalog.entries(*section))
            .map(|entry| entry.name.as_str());
        let own = [self.sdk_name.as_str(), self.runtime.as_str()];
        let reason = own
            .into_iter()
            .chain(catalog_names)
            .find_map(|name| scrubber.refuses_name(name))?;
        let what = match reason {
            telemetry_policy::ScrubReason::Username => "user name",
            telemetry_policy::ScrubReason::MachineHostname => "host name",
            telemetry_policy::ScrubReason::HomeDirectory => "home directory",
            _ => "identity",
        };
        Some(format!(
            "a name that {} declares matches this machine's {what}, so events would carry it",
            self.sdk_name
        ))
    }

    /// Why events could not be delivered anywhere, if they could not.
    fn delivery_problem(&self, endpoint: Option<&Endpoint>) -> Option<String> {
        if self.transport.is_some() {
            return None;
        }
        match endpoint {
            None => Some(format!(
                "no endpoint is configured; set {} to an https:// URL or file:///dir",
                self.prefix.variable(telemetry_policy::Setting::Endpoint)
            )),
            #[cfg(feature = "https")]
            Some(Endpoint::Https(_)) => None,
            #[cfg(not(feature = "https"))]
            Some(Endpoint::Https(_)) => Some(format!(
                "this build has no HTTPS transport (feature `https`); set {}=file:///absolute/dir to export offline",
                self.prefix.variable(telemetry_policy::Setting::Endpoint)
            )),
            Some(Endpoint::File(_)) => None,
        }
    }

    /// The scrubber for this SDK on this machine: it never rejects the catalog's names, nor the
    /// event schema's own words, which every scrubber exempts (generated into the policy crate
    /// by `cargo xtask codegen`).
    pub(crate) fn scrubber(&self, resolution: &Resolution) -> Scrubber {
        let mut allowed: Vec<String> = telemetry_model::Section::ALL
            .iter()
            .flat_map(|section| self.catalog.entries(*section))
            .map(|entry| entry.name.to_string())
            .collect();
        allowed.push(self.sdk_name.to_string());
        allowed.push(self.runtime.to_string());
        Scrubber::new(resolution.identity.clone(), allowed)
    }

    /// The session id to send with: the one in the state file while it is a random (version 4)
    /// id younger than the maximum age, else a new one, remembered. An id that is not random
    /// (hand-written, all zeros) is replaced with one message and never sent.
    pub(crate) fn session_id(&self, resolution: &Resolution) -> SessionId {
        let Ok(state) = &resolution.state else {
            // A damaged state file is left alone until the user decides again.
            return SessionId::random();
        };
        let today = UtcDate::today();
        let max_age_days = self.session_max_age.as_secs() / 86_400;
        // Most runs find a good id and write nothing.
        let (id, made, _) = state.clone().ensure_session_id(today, max_age_days);
        if !made {
            return id;
        }
        let Some(store) = self.state_store() else {
            return SessionId::random();
        };
        match store.update(|state| state.ensure_session_id(today, max_age_days)) {
            Ok((_, (id, made, replaced))) => {
                if replaced == Some(SessionReplaced::NotRandom) {
                    self.warn(&format!(
                        "the session id in {} was not a random id made by this library; it was replaced and is never sent",
                        store.path().display()
                    ));
                }
                if made {
                    let source = match resolution.decision.reason {
                        DecisionReason::Policy => AuditSource::Policy,
                        DecisionReason::Env => AuditSource::Env,
                        _ => AuditSource::Api,
                    };
                    let change = match replaced {
                        Some(_) => AuditChange::SessionReset,
                        None => AuditChange::SessionCreated,
                    };
                    self.audit(change, source);
                }
                id
            }
            Err(error) => {
                // The id of this run stays its own: it is random and linked to nothing.
                self.warn(&format!(
                    "{error}; this run uses a session id of its own that is not remembered"
                ));
                SessionId::random()
            }
        }
    }

    /// Forgets the session id when something other than the user's own decision keeps
    /// telemetry off in this run (`DO_NOT_TRACK`, the enabled variable, a policy, an invalid
    /// setting): an id that outlived such runs would be a lasting per-install identifier.
    pub(crate) fn forget_session_when_kept_off(&self, resolution: &Resolution) {
        let kept_off = !resolution.decision.enabled
            && matches!(
                resolution.decision.reason,
                DecisionReason::DoNotTrack
                    | DecisionReason::Env
                    | DecisionReason::Policy
                    | DecisionReason::InvalidSetting
            );
        let holds_id = resolution
            .state
            .as_ref()
            .is_ok_and(|state| state.session_id.is_some());
        if !(kept_off && holds_id) {
            return;
        }
        if let Some(store) = self.state_store()
            && let Err(error) = store.update(|state| state.forget_session())
        {
            tracing::debug!(%error, "session id not forgotten");
        }
    }
}

/// The outcome of reading the environment and the state file.
pub(crate) struct Resolution {
    pub(crate) ci: bool,
    pub(crate) identity: MachineIdentity,
    pub(crate) policy: Result<Option<Policy>, PolicyError>,
    pub(crate) settings: Result<Settings, SettingError>,
    pub(crate) state: Result<ConsentState, StateError>,
    pub(crate) endpoint: Option<Endpoint>,
    pub(crate) decision: Decision,
    pub(crate) delivery_problem: Option<String>,
}

impl Resolution {
    pub(crate) fn batch_size(&self) -> usize {
        self.settings
            .as_ref()
            .ok()
            .and_then(|settings| settings.batch_size)
            .unwrap_or(DEFAULT_BATCH_SIZE)
    }

    pub(crate) fn batch_interval(&self) -> Duration {
        self.settings
            .as_ref()
            .ok()
            .and_then(|settings| settings.batch_interval)
            .unwrap_or(DEFAULT_BATCH_INTERVAL)
    }

    pub(crate) fn debug(&self) -> bool {
        self.settings.as_ref().is_ok_and(|settings| settings.debug)
    }

    /// Problems the person running the program should hear about, one message each.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = &self.policy {
            problems.push(format!("{error}; telemetry is off"));
        }
        if let Err(error) = &self.settings {
            problems.push(format!("{error}; telemetry is off for this run"));
        }
        if let Err(error) = &self.state {
            problems.push(error.to_string());
        }
        if let (Some(problem), true) = (&self.delivery_problem, self.wanted_on()) {
            problems.push(format!("{problem}; telemetry is off for this run"));
        }
        problems
    }

    /// Whether telemetry would be on if events could be delivered.
    fn wanted_on(&self) -> bool {
        self.decision.enabled
            || (self.decision.reason == DecisionReason::InvalidSetting && self.settings.is_ok())
    }

    /// The policy file in force (or the one that could not be used).
    pub(crate) fn policy_file(&self) -> Option<&Path> {
        match &self.policy {
            Ok(policy) => policy.as_ref().map(|policy| policy.path.as_path()),
            Err(error) => Some(error.path()),
        }
    }

    /// Whether a policy file allows the consent prompt.
    pub(crate) fn policy_allows_prompt(&self) -> bool {
        match &self.policy {
            Ok(policy) => policy.as_ref().is_none_or(|policy| policy.allow_prompt),
            Err(_) => false,
        }
    }

    /// A CA file that cannot be used stops the HTTPS transport from being built: found here,
    /// where the decision is made, so that `status` says off when a process would run off. It
    /// builds the transport only when telemetry would be on and an extra CA is configured.
    fn check_extra_ca(&mut self, config: &TelemetryConfig) {
        #[cfg(feature = "https")]
        if self.decision.enabled
            && config.transport.is_none()
            && self.ca_file().is_some()
            && matches!(self.endpoint, Some(Endpoint::Https(_)))
            && let Err(problem) = config.transport_for(self)
        {
            self.delivery_problem = Some(problem.to_string());
            self.decision = Decision::off(DecisionReason::InvalidSetting);
        }
        #[cfg(not(feature = "https"))]
        let _ = config;
    }

    #[cfg(feature = "https")]
    /// The extra CA for a self-hosted HTTPS endpoint: the policy's, else the setting's.
    pub(crate) fn ca_file(&self) -> Option<&Path> {
        let from_policy = match &self.policy {
            Ok(Some(policy)) => policy.ca_file.as_deref(),
            _ => None,
        };
        from_policy.or_else(|| {
            self.settings
                .as_ref()
                .ok()
                .and_then(|settings| settings.ca_file.as_deref())
        })
    }
}
