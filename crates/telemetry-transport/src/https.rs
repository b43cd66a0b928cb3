//! The HTTPS transport: each batch is one `POST` of JSON over HTTP/1.1 and rustls.

use std::error::Error as StdError;
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT,
};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use telemetry_model::redact::redacted_url;
use telemetry_model::wire::encode_batch;
use telemetry_model::{EncodedEvent, Endpoint, EndpointError};

use crate::{SendError, Transport};

/// At most this much of a response body is read (and discarded), so that a hostile or broken
/// server cannot make the sender buffer unbounded data. The collector's answer is a few dozen
/// bytes; a longer body (a proxy's error page) only costs the pooled connection.
const MAX_DISCARDED_RESPONSE_BYTES: usize = 4 * 1024;

/// How long the body after a response head is read, at most. The status line is the answer, so
/// the body is only read to let the connection be reused: a server that trickles or withholds
/// it must not hold the send until the caller's own deadline abandons it, because an abandoned
/// send counts as undelivered and its (already accepted) events would be sent again.
const RESPONSE_BODY_TIMEOUT: Duration = Duration::from_secs(1);

/// Idle pooled connections are closed after this long; batches are minutes apart by default,
/// so keeping connections longer would only hold sockets open on both sides.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest connect or request timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// An extra certificate authority to trust besides the public web roots, for an endpoint that
/// is served with a private CA (a self-hosted collector in an enterprise network).
#[derive(Clone, PartialEq, Eq)]
pub enum ExtraCa {
    /// One or more PEM `CERTIFICATE` blocks.
    Pem(Vec<u8>),
    /// A file holding one or more PEM `CERTIFICATE` blocks, read when the transport is built.
    File(PathBuf),
}

impl fmt::Debug for ExtraCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtraCa::Pem(pem) => write!(f, "Pem({} bytes)", pem.len()),
            ExtraCa::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl ExtraCa {
    /// How messages name this CA.
    fn origin(&self) -> String {
        match self {
            ExtraCa::Pem(_) => "the extra CA (PEM given in memory)".to_owned(),
            ExtraCa::File(path) => format!("the CA file {}", path.display()),
        }
    }
}

/// The settings of an [`HttpsTransport`].
///
/// Build it with [`HttpsConfig::new`] and change the defaults with the `with_*` methods or by
/// assigning the public fields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpsConfig {
    /// Where batches are posted; must start with `https://`.
    pub endpoint: String,
    /// The `user-agent` header, naming the SDK and this library with their versions, such as
    /// `flowkit/0.1.0 sdk-telemetry/0.1.0`.
    pub user_agent: String,
    /// A CA to trust besides the public web roots.
    pub extra_ca: Option<ExtraCa>,
    /// How long establishing the TCP connection may take. At most one hour.
    pub connect_timeout: Duration,
    /// How long a send may wait for the response head: connecting, the TLS handshake, sending
    /// the batch and receiving the status line and headers. The body after the head is read
    /// for at most 1 s more, within this same bound, and never changes the outcome. At most
    /// one hour.
    pub request_timeout: Duration,
    /// Bodies larger than this many bytes are gzip-compressed.
    pub gzip_threshold: usize,
    /// Batches whose uncompressed body is larger than this many bytes are not sent: `send`
    /// answers [`SendError::TooLarge`] so that the caller splits them.
    pub max_body_size: usize,
}

impl HttpsConfig {
    /// The default [`connect_timeout`](Self::connect_timeout): 5 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default [`request_timeout`](Self::request_timeout): 15 s.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
    /// The default [`gzip_threshold`](Self::gzip_threshold): 1 KiB.
    pub const DEFAULT_GZIP_THRESHOLD: usize = 1024;
    /// The default [`max_body_size`](Self::max_body_size): 1 MiB.
    pub const DEFAULT_MAX_BODY_SIZE: usize = 1024 * 1024;

    /// Settings for posting to `endpoint` as `user_agent`, with the defaults for everything else.
    pub fn new(endpoint: impl Into<String>, user_agent: impl Into<String>) -> HttpsConfig {
        HttpsConfig {
            endpoint: endpoint.into(),
            user_agent: user_agent.into(),
            extra_ca: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            gzip_threshold: Self::DEFAULT_GZIP_THRESHOLD,
            max_body_size: Self::DEFAULT_MAX_BODY_SIZE,
        }
    }

    /// Also trusts `extra_ca`.
    pub fn with_extra_ca(mut self, extra_ca: ExtraCa) -> HttpsConfig {
        self.extra_ca = Some(extra_ca);
        self
    }

    /// Sets the [`connect_timeout`](Self::connect_timeout).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> HttpsConfig {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the [`request_timeout`](Self::request_timeout).
    pub fn with_request_timeout(mut self, timeout: Duration) -> HttpsConfig {
        self.request_timeout = timeout;
        self
    }

    /// Sets the [`gzip_threshold`](Self::gzip_threshold).
    pub fn with_gzip_threshold(mut self, bytes: usize) -> HttpsConfig {
        self.gzip_threshold = bytes;
        self
    }

    /// Sets the [`max_body_size`](Self::max_body_size).
    pub fn with_max_body_size(mut self, bytes: usize) -> HttpsConfig {
        self.max_body_size = bytes;
        self
    }
}

/// Why an [`HttpsTransport`] could not be built from its [`HttpsConfig`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsConfigError {
    /// The endpoint is an `http://` URL.
    #[error(
        "the telemetry endpoint {endpoint} uses plain HTTP, which is not allowed: use an https:// URL"
    )]
    PlainHttpNotAllowed {
        /// The endpoint as [`redacted_url`] shows it: without credentials, query or fragment.
        endpoint: String,
    },
    /// The endpoint has another scheme, or none.
    #[error(
        "the telemetry endpoint {endpoint:?} is not an https:// URL: only https:// is accepted"
    )]
    NotHttps {
        /// The endpoint as [`redacted_url`] shows it: without credentials, query or fragment.
        endpoint: String,
    },
    /// The endpoint starts with `https://` but is not a usable URL.
    #[error(
        "the telemetry endpoint {endpoint:?} is not a valid URL ({reason}): expected https://host[:port][/path]"
    )]
    InvalidEndpoint {
        /// The endpoint as [`redacted_url`] shows it: without credentials, query or fragment.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The extra CA file cannot be read.
    #[error("cannot read the CA file {}: {reason}", path.display())]
    UnreadableCaFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The extra CA holds no PEM certificate, or a damaged one.
    #[error(
        "{origin} is not a PEM certificate ({reason}): expected one or more -----BEGIN CERTIFICATE----- blocks"
    )]
    InvalidCaPem {
        /// The file, or that the PEM was given in memory.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate of the extra CA cannot serve as a trust anchor.
    #[error(
        "{origin} holds a certificate that cannot be used as a trust anchor ({reason}): expected a CA certificate"
    )]
    InvalidCaCertificate {
        /// The file, or that the PEM was given in memory.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The user agent cannot be sent as a header.
    #[error(
        "the user agent {user_agent:?} is not a valid header value: expected visible ASCII characters and spaces"
    )]
    InvalidUserAgent {
        /// The user agent as given.
        user_agent: String,
    },
    /// A timeout is zero or longer than an hour.
    #[error("the {setting} of {value:?} is out of range: expected more than zero and at most 1h")]
    TimeoutOutOfRange {
        /// Which timeout: `connect timeout` or `request timeout`.
        setting: &'static str,
        /// The value given.
        value: Duration,
    },
    /// rustls refused the TLS settings.
    #[error("cannot set up TLS: {reason}")]
    Tls {
        /// What rustls said.
        reason: String,
    },
}

/// Posts batches to an `https://` endpoint over HTTP/1.1, verifying the server's certificate
/// with rustls against the public web roots (webpki-roots) plus an optional extra CA.
///
/// Each batch is one `POST` with `content-type: application/json`, the configured
/// `user-agent`, a `content-length`, and the body `{"schema_version":1,"events":[…]}`; bodies
/// over [`HttpsConfig::gzip_threshold`] are gzip-compressed and sent with
/// `content-encoding: gzip`. Plain HTTP is refused when the transport is built, and the
/// connector only ever speaks TLS. The crypto provider is rustls' `ring` provider, passed
/// explicitly, so the process-wide default provider is neither needed nor changed.
///
/// How outcomes map to [`SendError`]:
///
/// | outcome | result |
/// |---|---|
/// | 2xx | `Ok(())`: delivered as soon as the status line arrives, whatever the body does next (slow, endless, cut off) |
/// | 429, 503 | `Retryable`, `retry_after` from `Retry-After` (delta-seconds or HTTP-date), at most [`MAX_RETRY_AFTER`](Self::MAX_RETRY_AFTER); `None` when absent or unparseable |
/// | 408, other 5xx | `Retryable`, `retry_after: None` |
/// | connection refused, reset or closed early, TLS failure (an untrusted certificate among them), timeout | `Retryable`, `retry_after: None`, the message names the failure |
/// | 413 | `TooLarge`: split the batch |
/// | other 4xx | `Rejected`: drop the batch |
/// | 1xx, 3xx | `Rejected`: redirects are not followed, so the endpoint must be the final URL |
/// | uncompressed body over [`HttpsConfig::max_body_size`] | `TooLarge`, nothing is sent |
///
/// The status decides: a response body never turns one outcome into another. Messages name the
/// endpoint and the kind of failure and never contain event contents or response bodies.
///
/// `send` must run inside a tokio runtime with its I/O and time drivers enabled (the telemetry
/// worker's own runtime is). Every call is bounded by [`HttpsConfig::request_timeout`], which
/// is how long it waits for the response head; the TCP connect alone by
/// [`HttpsConfig::connect_timeout`]. Once the head is in, at most 4 KiB of the body is read for
/// at most 1 s (and never past the request timeout), then discarded: reading it lets the
/// connection be reused, and a body that is larger, slower or broken only costs that
/// connection. Idle connections are kept for 30 s and reused by the next batch.
pub struct HttpsTransport {
    /// The endpoint as messages and [`destination`](Transport::destination) show it: scheme,
    /// host, port and path, never userinfo, query or fragment, which can hold credentials.
    endpoint: String,
    uri: Uri,
    user_agent: HeaderValue,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    connect_timeout: Duration,
    request_timeout: Duration,
    gzip_threshold: usize,
    max_body_size: usize,
}

impl HttpsTransport {
    /// The longest wait a server can ask for with `Retry-After`: longer requests are shortened
    /// to it, so a broken or hostile server cannot park telemetry for days.
    pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

    /// Checks the settings, reads the extra CA and sets up the TLS client. Nothing is sent and
    /// no connection is opened until the first [`send`](Transport::send).
    pub fn new(config: HttpsConfig) -> Result<HttpsTransport, HttpsConfigError> {
        let (uri, shown) = parse_endpoint(&config.endpoint)?;
        for (setting, value) in [
            ("connect timeout", config.connect_timeout),
            ("request timeout", config.request_timeout),
        ] {
            if value.is_zero() || value > MAX_TIMEOUT {
                return Err(HttpsConfigError::TimeoutOutOfRange { setting, value });
            }
        }
        let user_agent = HeaderValue::from_str(&config.user_agent).map_err(|_| {
            HttpsConfigError::InvalidUserAgent {
                user_agent: config.user_agent.clone(),
            }
        })?;

        let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(extra_ca) = &config.extra_ca {
            for certificate in read_extra_ca(extra_ca)? {
                roots
                    .add(certificate)
                    .map_err(|error| HttpsConfigError::InvalidCaCertificate {
                        origin: extra_ca.origin(),
                        reason: error.to_string(),
                    })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| HttpsConfigError::Tls {
                reason: error.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();

        let mut tcp = HttpConnector::new();
        // The https connector wraps this one and refuses anything but https:// itself.
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(config.connect_timeout));
        tcp.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(1)
            .build(connector);

        Ok(HttpsTransport {
            endpoint: shown,
            uri,
            user_agent,
            client,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            gzip_threshold: config.gzip_threshold,
            max_body_size: config.max_body_size,
        })
    }

    fn retryable(&self, what: impl fmt::Display) -> SendError {
        SendError::Retryable {
            message: format!("{what} ({})", self.endpoint),
            retry_after: None,
        }
    }

    fn request(&self, body: Vec<u8>, gzipped: bool) -> Result<Request<Full<Bytes>>, SendError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, self.user_agent.clone())
            .header(CONTENT_LENGTH, body.len());
        if gzipped {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        request
            .body(Full::new(Bytes::from(body)))
            // Every part was checked when the transport was built, so this cannot happen;
            // retrying would not help if it did.
            .map_err(|error| SendError::Rejected {
                message: format!("cannot build the request: {error}"),
            })
    }

    /// Maps a status to the outcome of a send; see the table on [`HttpsTransport`].
    fn outcome(&self, status: StatusCode, retry_after: Option<Duration>) -> Result<(), SendError> {
        let endpoint = &self.endpoint;
        match status.as_u16() {
            200..=299 => Ok(()),
            429 | 503 => Err(SendError::Retryable {
                message: format!("the server is busy: {endpoint} answered {status}"),
                retry_after,
            }),
            408 => Err(SendError::Retryable {
                message: format!(
                    "the server timed out reading the batch: {endpoint} answered {status}"
                ),
                retry_after: None,
            }),
            413 => Err(SendError::TooLarge),
            500..=599 => Err(SendError::Retryable {
                message: format!("the server failed: {endpoint} answered {status}"),
                retry_after: None,
            }),
            400..=499 => Err(SendError::Rejected {
                message: format!("{endpoint} answered {status}"),
            }),
            _ => Err(SendError::Rejected {
                message: format!(
                    "{endpoint} answered {status}, which is not a delivery: redirects are not followed, so configure the final URL"
                ),
            }),
        }
    }

    /// Names what went wrong before a response arrived.
    fn describe_failure(&self, error: &hyper_util::client::legacy::Error) -> SendError {
        let detail = failure_detail(error, self.connect_timeout);
        if error.is_connect() {
            self.retryable(format_args!("cannot connect: {detail}"))
        } else {
            self.retryable(format_args!("the HTTP exchange failed: {detail}"))
        }
    }
}

impl fmt::Debug for HttpsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsTransport")
            .field("endpoint", &self.endpoint)
            .field("user_agent", &self.user_agent)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("gzip_threshold", &self.gzip_threshold)
            .field("max_body_size", &self.max_body_size)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Transport for HttpsTransport {
    fn kind(&self) -> &'static str {
        "https"
    }

    fn destination(&self) -> String {
        self.endpoint.clone()
    }

    async fn send(&self, events: &[EncodedEvent]) -> Result<(), SendError> {
        if events.is_empty() {
            return Ok(());
        }
        let body = encode_batch(events);
        if body.len() > self.max_body_size {
            return Err(SendError::TooLarge);
        }
        let gzipped = body.len() > self.gzip_threshold;
        let body = if gzipped {
            gzip(&body).map_err(|error| {
                self.retryable(format_args!("cannot compress the batch: {error}"))
            })?
        } else {
            body
        };
        let request = self.request(body, gzipped)?;

        let head_deadline = tokio::time::Instant::now() + self.request_timeout;
        let response =
            match tokio::time::timeout_at(head_deadline, self.client.request(request)).await {
                Err(_elapsed) => {
                    return Err(self.retryable(format_args!(
                        "no response within the request timeout of {:?}",
                        self.request_timeout
                    )));
                }
                Ok(Err(error)) => return Err(self.describe_failure(&error)),
                Ok(Ok(response)) => response,
            };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        // The status is the answer, decided here, before the body. Reading the rest lets the
        // connection be reused; a body that is too large, too slow or cut off only costs the
        // connection, never the outcome, and holds the send for at most the body timeout.
        let outcome = self.outcome(status, retry_after);
        let body_deadline =
            (tokio::time::Instant::now() + RESPONSE_BODY_TIMEOUT).min(head_deadline);
        let _ = tokio::time::timeout_at(body_deadline, discard_body(response.into_body())).await;
        outcome
    }
}

/// Checks that `endpoint` is a usable `https://` URL, with the same rules as every other
/// crate ([`Endpoint::parse`]), and returns it with the form messages show.
fn parse_endpoint(endpoint: &str) -> Result<(Uri, String), HttpsConfigError> {
    let shown = redacted_url(endpoint);
    let invalid = |reason: String| HttpsConfigError::InvalidEndpoint {
        endpoint: shown.clone(),
        reason,
    };
    let parsed = match Endpoint::parse(endpoint) {
        Ok(parsed @ Endpoint::Https(_)) => parsed,
        Ok(Endpoint::File(_)) | Err(EndpointError::Scheme) => {
            return Err(HttpsConfigError::NotHttps { endpoint: shown });
        }
        Err(EndpointError::PlainHttp) => {
            return Err(HttpsConfigError::PlainHttpNotAllowed { endpoint: shown });
        }
        Err(error) => return Err(invalid(error.to_string())),
    };
    let Endpoint::Https(url) = &parsed else {
        unreachable!("matched as https above");
    };
    let uri: Uri = url
        .parse()
        .map_err(|error: hyper::http::uri::InvalidUri| invalid(error.to_string()))?;
    Ok((uri, parsed.to_string()))
}

/// Reads the certificates of the extra CA.
fn read_extra_ca(extra_ca: &ExtraCa) -> Result<Vec<CertificateDer<'static>>, HttpsConfigError> {
    let file_contents;
    let pem: &[u8] = match extra_ca {
        ExtraCa::Pem(pem) => pem,
        ExtraCa::File(path) => {
            file_contents =
                std::fs::read(path).map_err(|error| HttpsConfigError::UnreadableCaFile {
                    path: path.clone(),
                    reason: error.to_string(),
                })?;
            &file_contents
        }
    };
    let invalid = |reason: String| HttpsConfigError::InvalidCaPem {
        origin: extra_ca.origin(),
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(error.to_string()))?;
    if certificates.is_empty() {
        return Err(invalid("no certificate found".to_owned()));
    }
    Ok(certificates)
}

fn gzip(body: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::default());
    encoder.write_all(body)?;
    encoder.finish()
}

/// Reads a response body and drops it, until it ends, fails, or
/// [`MAX_DISCARDED_RESPONSE_BYTES`] have been read (the frame that crosses the cap is already
/// in hyper's bounded read buffer, so no more is asked of the server).
async fn discard_body(mut body: Incoming) {
    let mut read = 0usize;
    while read < MAX_DISCARDED_RESPONSE_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                read = read.saturating_add(frame.data_ref().map_or(0, Bytes::len));
            }
            Some(Err(_)) | None => break,
        }
    }
}

/// The delay a `Retry-After` value asks for, measured from `now`: delta-seconds or an
/// HTTP-date, at most [`HttpsTransport::MAX_RETRY_AFTER`]; `None` when it is neither.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        // Digits too many for a u64 still ask for a very long wait.
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let date = httpdate::parse_http_date(value).ok()?;
        // A date in the past means "now".
        date.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(HttpsTransport::MAX_RETRY_AFTER))
}

/// The error and its causes, looking inside `io::Error`s, whose `source` skips the error they
/// wrap.
fn causes<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(
        Some(error),
        |&error: &&'a (dyn StdError + 'static)| match error.downcast_ref::<io::Error>() {
            Some(io_error) => io_error
                .get_ref()
                .map(|inner| inner as &(dyn StdError + 'static)),
            None => error.source(),
        },
    )
    // Chains are a few links long; the bound only guards against a cycle.
    .take(32)
}

/// A short description of why a request failed before a response arrived.
fn failure_detail(error: &(dyn StdError + 'static), connect_timeout: Duration) -> String {
    let chain: Vec<&(dyn StdError + 'static)> = causes(error).collect();
    if let Some(tls) = chain
        .iter()
        .find_map(|error| error.downcast_ref::<rustls::Error>())
    {
        return tls_detail(tls);
    }
    for error in &chain {
        if let Some(io_error) = error.downcast_ref::<io::Error>() {
            let detail = match io_error.kind() {
                io::ErrorKind::ConnectionRefused => "the connection was refused".to_owned(),
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => "the connection was reset".to_owned(),
                io::ErrorKind::TimedOut => {
                    format!("no connection within the connect timeout of {connect_timeout:?}")
                }
                io::ErrorKind::UnexpectedEof => "the server closed the connection early".to_owned(),
                _ => continue,
            };
            return detail;
        }
    }
    if let Some(hyper_error) = chain
        .iter()
        .find_map(|error| error.downcast_ref::<hyper::Error>())
    {
        if hyper_error.is_incomplete_message() {
            return "the server closed the connection before a complete response".to_owned();
        }
        if hyper_error.is_parse() {
            return "the server sent a malformed HTTP response".to_owned();
        }
    }
    chain
        .last()
        .map_or_else(|| error.to_string(), ToString::to_string)
}

fn tls_detail(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the server's certificate is not trusted ({error}); if the endpoint uses a private CA, configure that CA as the extra CA"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("the server's certificate is not valid for this host ({error})"),
        rustls::Error::InvalidCertificate(_) => {
            format!("the server's certificate was refused ({error})")
        }
        rustls::Error::NoCertificatesPresented => "the server presented no certificate".to_owned(),
        _ => format!("the TLS handshake failed ({error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_values() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = |offset: i64| {
            let at = if offset >= 0 {
                now + Duration::from_secs(offset.unsigned_abs())
            } else {
                now - Duration::from_secs(offset.unsigned_abs())
            };
            httpdate::fmt_http_date(at)
        };
        let cases: Vec<(String, Option<u64>)> = vec![
            ("0".to_owned(), Some(0)),
            ("7".to_owned(), Some(7)),
            (" 120 ".to_owned(), Some(120)),
            ("3600".to_owned(), Some(3600)),
            ("3601".to_owned(), Some(3600)),
            ("999999".to_owned(), Some(3600)),
            ("99999999999999999999999999".to_owned(), Some(3600)),
            (date(30), Some(30)),
            (date(0), Some(0)),
            (date(-30), Some(0)),
            (date(86_400), Some(3600)),
            (String::new(), None),
            ("-5".to_owned(), None),
            ("1.5".to_owned(), None),
            ("soon".to_owned(), None),
            ("Mon, 32 Foo 2020 00:00:00 GMT".to_owned(), None),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse_retry_after(&value, now),
                expected.map(Duration::from_secs),
                "Retry-After: {value:?}"
            );
        }
    }

    #[test]
    fn endpoints() {
        let cases: Vec<(&str, Result<&str, &str>)> = vec![
            ("https://telemetry.example.com/v1/events", Ok("/v1/events")),
            ("HTTPS://telemetry.example.com", Ok("/")),
            ("https://127.0.0.1:8443/ingest?v=1", Ok("/ingest")),
            (
                "http://telemetry.example.com",
                Err("plain HTTP, which is not allowed"),
            ),
            (
                "HTTP://telemetry.example.com",
                Err("plain HTTP, which is not allowed"),
            ),
            ("ftp://telemetry.example.com", Err("not an https:// URL")),
            ("telemetry.example.com", Err("not an https:// URL")),
            ("", Err("not an https:// URL")),
            ("https://", Err("not a valid URL")),
            ("https://exa mple.com/", Err("not a valid URL")),
            ("https://user:secret@example.com/", Err("credentials")),
            // The same rules as the settings and policy files, from the model's Endpoint.
            ("https://localhost:99999/v1", Err("port must be a number")),
            ("https://ex%41mple.com/", Err("%-escapes")),
            ("file:///var/lib/export", Err("not an https:// URL")),
        ];
        for (endpoint, expected) in cases {
            match (parse_endpoint(endpoint), expected) {
                (Ok((uri, _)), Ok(path)) => assert_eq!(uri.path(), path, "{endpoint}"),
                (Err(error), Err(needle)) => {
                    let message = error.to_string();
                    assert!(message.contains(needle), "{endpoint}: {message}");
                }
                (outcome, expected) => panic!("{endpoint}: {outcome:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn endpoint_errors_never_echo_credentials_queries_or_long_values() {
        let long = "x".repeat(10_000);
        for endpoint in [
            "https://alice:S3cret@example.com/v1?token=S3cret".to_owned(),
            "http://alice:S3cret@example.com/v1?token=S3cret".to_owned(),
            "ftp://alice:S3cret@example.com/v1?token=S3cret".to_owned(),
            "https://example.com:99999/v1?token=S3cret".to_owned(),
            format!("https://{long}.example.com/"),
        ] {
            let message = parse_endpoint(&endpoint).unwrap_err().to_string();
            assert!(!message.contains("S3cret"), "{message}");
            assert!(message.len() < 400, "{} bytes: {message}", message.len());
        }
    }
}
