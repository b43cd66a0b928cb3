//! The HTTPS server: TLS, connection limits, routes and graceful shutdown.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/events` | `200 {"accepted":a,"duplicates":d,"rejected":r}`; 400 not a batch; 413 too large; 415 unknown encoding; 503 + `Retry-After` overloaded |
//! | `GET /v1/report?sdk=NAME&days=N` | the report as JSON, with `Authorization: Bearer TOKEN`; 401 otherwise |
//! | `GET /` | the report as a page, behind the same token (HTTP Basic with the token as password works too) |
//! | `GET /healthz` | `ok`, no token |
//!
//! Nothing about a client is kept: its address, headers and arrival time are neither stored
//! nor logged. Logs carry counts only.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::auth::Token;
use crate::ingest::{Ingest, IngestConfig, IngestError};
use crate::report::ReportQuery;
use crate::store::{Store, WriteJob};
use crate::validate::{self, BodyError, Catalogs, Limits, Window};
use telemetry_model::UtcDate;

/// How long a client has for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Everything the server needs besides its store.
#[derive(Clone)]
pub struct ServerConfig {
    /// The TLS configuration (certificate and key).
    pub tls: Arc<rustls::ServerConfig>,
    /// The catalog of each accepted SDK.
    pub catalogs: Arc<Catalogs>,
    /// The token that opens reports.
    pub token: Token,
    /// How long events are kept; older ones are refused.
    pub retention: Duration,
    /// Body and batch limits.
    pub limits: Limits,
    /// The write queue.
    pub ingest: IngestConfig,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("catalogs", &self.catalogs)
            .field("retention", &self.retention)
            .field("limits", &self.limits)
            .field("ingest", &self.ingest)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// A bound, not yet serving, server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    config: ServerConfig,
}

struct App {
    config: ServerConfig,
    store: Arc<dyn Store>,
    ingest: Ingest,
}

impl Server {
    /// Binds to `address` (port 0 picks a free port).
    pub async fn bind(address: SocketAddr, config: ServerConfig) -> std::io::Result<Server> {
        let listener = TcpListener::bind(address).await?;
        Ok(Server { listener, config })
    }

    /// The address it listens on, with the real port.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Records the catalogs in the store, then serves until `shutdown` completes, then stops accepting, lets requests in progress
    /// finish (at most 30 s) and waits for the writer to commit what they sent.
    pub async fn run(self, store: Arc<dyn Store>, shutdown: impl Future<Output = ()>) {
        // Reports list every declared feature, used or not.
        if let Err(error) = store.register_catalogs(&self.config.catalogs).await {
            tracing::error!(%error, "recording the catalogs failed; reports list only features seen");
        }
        let (ingest, writer) = Ingest::start(Arc::clone(&store), self.config.ingest);
        let acceptor = TlsAcceptor::from(Arc::clone(&self.config.tls));
        let permits = Arc::new(Semaphore::new(self.config.max_connections.max(1)));
        let app = Arc::new(App {
            config: self.config,
            store,
            ingest,
        });
        let graceful = GracefulShutdown::new();
        let retention_task = tokio::spawn(retention_loop(Arc::clone(&app)));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let stream = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    // The peer's address is dropped here, unread.
                    Ok((stream, _)) => {
                        // Answers are small: send them at once instead of waiting for more.
                        let _ = stream.set_nodelay(true);
                        stream
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let app = Arc::clone(&app);
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _permit = permit;
                let tls =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        _ => return,
                    };
                let service = hyper::service::service_fn(move |request| {
                    let app = Arc::clone(&app);
                    async move { Ok::<_, std::convert::Infallible>(app.handle(request).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(tls), service);
                let _ = watcher.watch(connection).await;
            });
        }
        drop(self.listener);
        retention_task.abort();
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still in progress after {SHUTDOWN_GRACE:?} were cut off");
        }
        // Every request handler is gone: the last sender drops with the app, and the writer
        // commits what is queued before it stops.
        drop(app);
        let _ = writer.await;
    }
}

impl App {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        match (request.method(), path.as_str()) {
            (&Method::POST, "/v1/events") => self.ingest_events(request).await,
            (_, "/v1/events") => method_not_allowed("POST"),
            (&Method::GET, "/v1/report") => self.report_json(&request).await,
            (_, "/v1/report") => method_not_allowed("GET"),
            (&Method::GET, "/") => self.report_page(&request).await,
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            _ => error(
                StatusCode::NOT_FOUND,
                "no such route: the collector serves POST /v1/events, GET /v1/report, GET / and GET /healthz",
            ),
        }
    }

    async fn ingest_events(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let limits = self.config.limits;
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limits.max_body_bytes as u64) {
            return body_error(&BodyError::TooLarge {
                limit: limits.max_body_bytes,
                inflated: false,
            });
        }
        let encoding = request
            .headers()
            .get(CONTENT_ENCODING)
            .map(|value| value.to_str().unwrap_or("(not text)").to_owned());
        let body = Limited::new(request.into_body(), limits.max_body_bytes);
        let body = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
            Err(_) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the body took too long to arrive",
                );
            }
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                return body_error(&BodyError::TooLarge {
                    limit: limits.max_body_bytes,
                    inflated: false,
                });
            }
            Ok(Err(_)) => return error(StatusCode::BAD_REQUEST, "the body could not be read"),
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        let window = Window::at(SystemTime::now(), self.config.retention);
        let checked = validate::decode_body(encoding.as_deref(), &body, &limits)
            .and_then(|json| validate::check_batch(&json, &self.config.catalogs, window, &limits));
        let checked = match checked {
            Ok(checked) => checked,
            Err(refusal) => return body_error(&refusal),
        };
        let job = WriteJob {
            events: checked.events,
            refused: checked.refused,
        };
        match self.ingest.write(job).await {
            Ok(outcome) => {
                tracing::debug!(
                    accepted = outcome.accepted,
                    duplicates = outcome.duplicates,
                    rejected = outcome.refused.total(),
                    "batch"
                );
                json_response(
                    StatusCode::OK,
                    &json!({
                        "accepted": outcome.accepted,
                        "duplicates": outcome.duplicates,
                        "rejected": outcome.refused.total(),
                    }),
                )
            }
            Err(IngestError::Overloaded) => {
                tracing::warn!("write queue full; answering 503");
                self.busy("the collector is overloaded; send the batch again later")
            }
            Err(IngestError::Closed) => self.busy("the collector is shutting down"),
            Err(IngestError::Store(error)) => {
                tracing::error!(%error, "storing a batch failed");
                self.busy("the collector could not store the batch; send it again later")
            }
        }
    }

    fn busy(&self, message: &str) -> Response<Full<Bytes>> {
        let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
        let seconds = self.ingest.retry_after().as_secs().max(1);
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        response
    }

    async fn report_for(
        &self,
        request: &Request<Incoming>,
    ) -> Result<crate::report::Report, Response<Full<Bytes>>> {
        if !self
            .config
            .token
            .authorizes(request.headers().get(AUTHORIZATION))
        {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "reports need the collector's token: Authorization: Bearer TOKEN",
            );
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"telemetry-collector\", charset=\"UTF-8\""),
            );
            return Err(response);
        }
        let parameters = ReportParameters::parse(request.uri().query().unwrap_or(""))
            .map_err(|message| error(StatusCode::BAD_REQUEST, &message))?;
        let sdk = match parameters.sdk {
            Some(sdk) => sdk,
            None if self.config.catalogs.iter().count() == 1 => self
                .config
                .catalogs
                .iter()
                .map(|(sdk, _)| sdk.to_owned())
                .collect(),
            None => {
                let sdks = self.store.sdks().await.map_err(|error| {
                    tracing::error!(%error, "listing SDKs failed");
                    self.busy("the store could not be read")
                })?;
                match sdks.as_slice() {
                    [only] => only.clone(),
                    _ => {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            &format!("name the SDK with ?sdk=NAME; this collector has {sdks:?}"),
                        ));
                    }
                }
            }
        };
        let query = ReportQuery {
            sdk,
            until: UtcDate::today(),
            days: parameters.days,
        };
        self.store.report(&query).await.map_err(|error| {
            tracing::error!(%error, "making a report failed");
            self.busy("the store could not be read")
        })
    }

    async fn report_json(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        match self.report_for(request).await {
            Ok(report) => match serde_json::to_value(&report) {
                Ok(value) => json_response(StatusCode::OK, &value),
                Err(_) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the report could not be written",
                ),
            },
            Err(response) => response,
        }
    }

    async fn report_page(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        match self.report_for(request).await {
            Ok(report) => {
                let mut response =
                    Response::new(Full::new(Bytes::from(crate::html::render(&report))));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                response
                    .headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            Err(response) => response,
        }
    }
}

/// `?sdk=NAME&days=N`.
#[derive(Debug, PartialEq, Eq)]
struct ReportParameters {
    sdk: Option<String>,
    days: u32,
}

impl ReportParameters {
    fn parse(query: &str) -> Result<ReportParameters, String> {
        let mut parameters = ReportParameters {
            sdk: None,
            days: ReportQuery::DEFAULT_DAYS,
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sdk" if telemetry_model::Name::is_valid(value) => {
                    parameters.sdk = Some(value.to_owned());
                }
                "sdk" => {
                    return Err(
                        "sdk must be an SDK name (lowercase letters, digits and _)".to_owned()
                    );
                }
                "days" => {
                    parameters.days = value
                        .parse()
                        .ok()
                        .filter(|days| (1..=ReportQuery::MAX_DAYS).contains(days))
                        .ok_or_else(|| {
                            format!(
                                "days must be a whole number from 1 to {}",
                                ReportQuery::MAX_DAYS
                            )
                        })?;
                }
                _ => return Err("unknown parameter: the report takes sdk and days".to_owned()),
            }
        }
        Ok(parameters)
    }
}

/// Deletes expired events now and every hour.
async fn retention_loop(app: Arc<App>) {
    let mut hourly = tokio::time::interval(Duration::from_secs(3_600));
    loop {
        hourly.tick().await;
        let window = Window::at(SystemTime::now(), app.config.retention);
        match app.store.expire(window.oldest).await {
            Ok(expired) => tracing::info!(
                events = expired.events,
                days_rolled_up = expired.days_rolled_up,
                "retention"
            ),
            Err(error) => tracing::error!(%error, "deleting expired events failed"),
        }
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn body_error(refusal: &BodyError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
    error(status, &refusal.to_string())
}

fn method_not_allowed(allowed: &'static str) -> Response<Full<Bytes>> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("this route answers {allowed} only"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allowed));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_parameters_are_checked() {
        assert_eq!(
            ReportParameters::parse("sdk=flowkit&days=7"),
            Ok(ReportParameters {
                sdk: Some("flowkit".to_owned()),
                days: 7
            })
        );
        assert_eq!(
            ReportParameters::parse(""),
            Ok(ReportParameters {
                sdk: None,
                days: ReportQuery::DEFAULT_DAYS
            })
        );
        assert!(ReportParameters::parse("days=0").is_err());
        assert!(ReportParameters::parse("days=abc").is_err());
        assert!(ReportParameters::parse("sdk=Bad%20Name").is_err());
        assert!(ReportParameters::parse("user=me").is_err());
    }
}
