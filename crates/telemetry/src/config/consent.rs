//! Consent writes: recording a decision in the state file and the audit log, and refusing when
//! a policy file decides.

use super::*;

impl TelemetryConfig {
    pub(crate) fn audit(&self, change: AuditChange, source: AuditSource) {
        if let Some(log) = self.audit_log()
            && let Err(error) = log.append(change, source)
        {
            tracing::debug!(%error, "audit log not written");
        }
    }

    /// Records the user's decision in the state file and the audit log, unless a policy file
    /// decides. A damaged state file is replaced: deciding again repairs it.
    pub(crate) fn record_decision(
        &self,
        enabled: bool,
        source: AuditSource,
    ) -> Result<ConsentState, ManageError> {
        let store = self.state_store().ok_or(ManageError::NoStateDir)?;
        self.refuse_if_policy_decides(source)?;
        let version = self.consent_version;
        let (state, ()) = store.update(|state| state.decide(enabled, UtcDate::today(), version))?;
        let change = if enabled {
            AuditChange::Enabled
        } else {
            AuditChange::Disabled
        };
        self.audit(change, source);
        Ok(state)
    }

    /// Fails when a policy file decides (or cannot be read), naming the file.
    pub(crate) fn refuse_if_policy_decides(&self, source: AuditSource) -> Result<(), ManageError> {
        let env = self.env.clone().unwrap_or_else(EnvSnapshot::from_process);
        let refusal = match load_policy(&self.prefix, &env, &self.policy_path) {
            Ok(Some(Policy {
                enabled: Some(enabled),
                path,
                ..
            })) => Some(ManageError::ForbiddenByPolicy { path, enabled }),
            Ok(_) => None,
            Err(error) => Some(ManageError::ForbiddenByPolicy {
                path: error.path().to_path_buf(),
                enabled: false,
            }),
        };
        match refusal {
            Some(refusal) => {
                if source != AuditSource::Prompt {
                    self.audit(AuditChange::RefusedByPolicy, source);
                }
                Err(refusal)
            }
            None => Ok(()),
        }
    }
}
