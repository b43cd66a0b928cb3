//! Wiring: the buffer and the transport a configuration calls for, and the description of the
//! process's events.

use super::*;

/// Why the buffer or the transport a configuration calls for cannot be set up. Shown to the
/// person running the program (in `status`, a warning, or the answer of a management command),
/// so every variant says what failed and where.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WiringError {
    /// The state directory, where the spool lives, cannot be created.
    #[cfg(feature = "sqlite")]
    #[error(
        "cannot create the state directory {}: {source}",
        telemetry_policy::redacted_path(dir)
    )]
    StateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The spool exists (or should) and cannot be opened.
    #[cfg(feature = "sqlite")]
    #[error(transparent)]
    Spool(#[from] telemetry_buffer::SpoolError),
    /// A spool is called for and this build has none.
    #[cfg(not(feature = "sqlite"))]
    #[error("this build has no SQLite spool (feature `sqlite`)")]
    NoSpool,
    /// The HTTPS transport refused its settings (an unusable CA file, say).
    #[cfg(feature = "https")]
    #[error(transparent)]
    Https(#[from] telemetry_transport::HttpsConfigError),
    /// No transport fits the endpoint; `resolve` turns telemetry off before this is reached.
    #[error("there is no transport for the endpoint")]
    NoTransport,
}

impl TelemetryConfig {
    /// The buffer the settings call for: the SDK's own, else `PREFIX_SDK_TELEMETRY_BUFFER`,
    /// else the SQLite spool when this build has it and the SDK has a state directory.
    pub(crate) fn buffer_kind(&self, resolution: &Resolution) -> &'static str {
        if let Some(buffer) = &self.buffer {
            return buffer.kind();
        }
        let setting = resolution
            .settings
            .as_ref()
            .ok()
            .and_then(|settings| settings.buffer);
        match (
            setting,
            cfg!(feature = "sqlite") && self.state_dir.is_some(),
        ) {
            (Some(BufferKind::Memory), _) | (None, false) => "memory",
            (Some(BufferKind::Sqlite), _) | (None, true) => "sqlite",
        }
    }

    /// Opens a buffer of `kind` (`memory` or `sqlite`) for a running process. A spool that
    /// cannot be opened (a read-only or full disk, a build without SQLite) is reported once and
    /// replaced by memory. Runs on the worker's thread: opening a spool may wait for another
    /// process.
    pub(crate) fn open_buffer_of_kind(&self, kind: &str) -> Arc<dyn Buffer> {
        let memory = || {
            Arc::new(telemetry_buffer::MemoryBuffer::new(self.buffer_capacity)) as Arc<dyn Buffer>
        };
        if kind == "memory" {
            return memory();
        }
        match self.open_spool(SpoolOpening::CreateIfMissing) {
            Ok(Some(spool)) => spool,
            Ok(None) => memory(),
            Err(problem) => {
                self.warn(&format!(
                    "{problem}; events are kept in memory for this run"
                ));
                memory()
            }
        }
    }

    /// The transport the configuration and the endpoint call for.
    pub(crate) fn transport_for(
        &self,
        resolution: &Resolution,
    ) -> Result<Arc<dyn Transport>, WiringError> {
        if let Some(transport) = &self.transport {
            return Ok(Arc::clone(transport));
        }
        match &resolution.endpoint {
            Some(Endpoint::File(dir)) => Ok(Arc::new(telemetry_transport::FileTransport::new(
                dir,
                self.sdk_name.clone(),
            ))),
            #[cfg(feature = "https")]
            Some(Endpoint::Https(url)) => {
                use telemetry_transport::{ExtraCa, HttpsConfig, HttpsTransport};
                let mut https = HttpsConfig::new(url.clone(), self.user_agent());
                if let Some(ca_file) = resolution.ca_file() {
                    https = https.with_extra_ca(ExtraCa::File(ca_file.to_path_buf()));
                }
                Ok(Arc::new(HttpsTransport::new(https)?))
            }
            // `resolve` turns telemetry off when there is nowhere to deliver.
            _ => Err(WiringError::NoTransport),
        }
    }

    /// The description of this process that every event shares.
    pub(crate) fn event_template(&self, ci: bool, session_id: SessionId) -> EventTemplate {
        EventTemplate {
            session_id,
            sdk_name: self.sdk_name.clone(),
            sdk_version: self.sdk_version.clone(),
            library_version: crate::library_version(),
            runtime: self.runtime.clone(),
            runtime_version: self.runtime_version.clone(),
            os: OsFamily::current(),
            arch: Arch::current(),
            interface: self.interface,
            ci,
            deployment: self.deployment,
        }
    }

    /// The spool in the state directory, created or only opened if it exists. A damaged file
    /// is moved aside, and that is reported once.
    ///
    /// A claim's lease is [`CLAIM_LEASE`]: a process killed while delivering holds its batch
    /// back that long, and no longer.
    #[cfg(feature = "sqlite")]
    pub(crate) fn open_spool(
        &self,
        opening: SpoolOpening,
    ) -> Result<Option<Arc<dyn Buffer>>, WiringError> {
        let Some(dir) = &self.state_dir else {
            return Ok(None);
        };
        let path = dir.join(telemetry_buffer::SPOOL_FILE_NAME);
        if opening == SpoolOpening::ExistingOnly && !path.exists() {
            return Ok(None);
        }
        telemetry_policy::create_private_dir(dir).map_err(|source| WiringError::StateDir {
            dir: dir.clone(),
            source,
        })?;
        let mut spool = telemetry_buffer::SqliteSpool::open(&path, self.spool_limits)?
            .with_claim_lease(CLAIM_LEASE);
        if opening == SpoolOpening::ExistingOnly {
            // `status`, `disable` and `flush` answer a person waiting at a terminal: a spool
            // another process keeps busy is reported as busy rather than waited on. Reads need
            // no lock, so `status` still counts.
            spool = spool.with_busy_timeout(MANAGEMENT_BUSY_TIMEOUT);
        }
        // The spool holds the same data as the state directory: private to the user.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        if let Some(recovery) = spool.recovery() {
            self.warn(&recovery.to_string());
        }
        Ok(Some(Arc::new(spool)))
    }

    #[cfg(not(feature = "sqlite"))]
    pub(crate) fn open_spool(
        &self,
        opening: SpoolOpening,
    ) -> Result<Option<Arc<dyn Buffer>>, WiringError> {
        match opening {
            // Without SQLite no earlier process can have left a spool.
            SpoolOpening::ExistingOnly => Ok(None),
            SpoolOpening::CreateIfMissing => Err(WiringError::NoSpool),
        }
    }

    /// The buffer that holds events of earlier processes, for `status`, `disable` and `flush`:
    /// `None` when there is none; an error when there is one that cannot be opened now.
    pub(crate) fn existing_buffer(&self) -> Result<Option<Arc<dyn Buffer>>, WiringError> {
        match &self.buffer {
            Some(buffer) => Ok(Some(Arc::clone(buffer))),
            None => self.open_spool(SpoolOpening::ExistingOnly),
        }
    }

    #[cfg(feature = "https")]
    /// The user agent of HTTPS requests: the SDK and this library, with their versions.
    pub(crate) fn user_agent(&self) -> String {
        format!(
            "{}/{} sdk-telemetry/{}",
            self.sdk_name,
            self.sdk_version,
            env!("CARGO_PKG_VERSION")
        )
    }

    /// The name of the transport that `endpoint` calls for.
    pub(crate) fn transport_kind(&self, endpoint: Option<&Endpoint>) -> Option<&'static str> {
        match (&self.transport, endpoint) {
            (Some(transport), _) => Some(transport.kind()),
            (None, Some(endpoint)) => Some(endpoint.transport_name()),
            (None, None) => None,
        }
    }
}
