//! The TCP listener: WebSocket sessions and the operational HTTP endpoints.
//!
//! One TCP port serves `GET /chorus` (the WebSocket upgrade into a session, see
//! [`transport::websocket`](crate::transport::websocket)) and the JSON and text
//! endpoints operators and browsers use: `/health/live`, `/health/ready`,
//! `/health`, `/stats`, `/metrics`, `/cert-hash`. HTTP itself is hyper's and
//! axum's; TLS is rustls. By default a connection may be TLS or plain: the first
//! byte tells (`0x16` opens a TLS handshake), so `ws://` and `http://` work on
//! loopback for browsers and development while `wss://` works for everyone.

use crate::metrics::Metrics;
use crate::origin::OriginPolicy;
use crate::session::SessionContext;
use crate::stats::TRANSPORTS;
use crate::transport::websocket::{SUBPROTOCOL, WsSettings, max_message_bytes, run_websocket};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chorus_protocol::ServerTime;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Whether the TCP listener speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcpTls {
    /// TLS and plain on one port, told apart by the first byte.
    #[default]
    Auto,
    /// TLS only.
    Required,
    /// Plain only (behind a TLS-terminating proxy).
    Off,
}

impl std::str::FromStr for TcpTls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(TcpTls::Auto),
            "on" | "required" => Ok(TcpTls::Required),
            "off" | "plain" => Ok(TcpTls::Off),
            other => Err(format!("{other:?} is not one of auto, on, off")),
        }
    }
}

/// What the HTTP handlers need.
#[derive(Debug)]
pub struct HttpState {
    pub ctx: Arc<SessionContext>,
    pub origins: OriginPolicy,
    pub ws: WsSettings,
    /// The certificate, current and (during an overlap) previous.
    pub certs: Arc<crate::cert::CertManager>,
    /// Set once every listener is up; cleared when shutting down.
    pub ready: Arc<AtomicBool>,
    /// False while the store's commits fail (changes then wait, unacknowledged).
    pub store_healthy: Arc<AtomicBool>,
    pub started_at: ServerTime,
    pub metrics: Metrics,
    /// Serve the demo page and the browser SDK at `/`.
    pub serve_demo: bool,
}

/// The demo page and the browser SDK, built into the binary.
const DEMO_HTML: &str = include_str!("../static/index.html");
const DEMO_JS: &str = include_str!("../static/demo.js");
const SDK_JS: &str = include_str!("../../client-sdk/js/chorus.js");

/// A static asset, cross-origin isolated so the page's `performance.now()` has
/// fine resolution for RTT figures.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
            (
                header::HeaderName::from_static("cross-origin-embedder-policy"),
                HeaderValue::from_static("require-corp"),
            ),
            (
                header::HeaderName::from_static("cross-origin-resource-policy"),
                HeaderValue::from_static("same-origin"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn demo_page() -> Response {
    asset("text/html; charset=utf-8", DEMO_HTML)
}

async fn demo_script() -> Response {
    asset("text/javascript; charset=utf-8", DEMO_JS)
}

async fn sdk_script() -> Response {
    asset("text/javascript; charset=utf-8", SDK_JS)
}

/// The routes of the TCP listener.
pub fn router(state: Arc<HttpState>) -> Router {
    let mut router = Router::new();
    if state.serve_demo {
        router = router
            .route("/", get(demo_page))
            .route("/demo.js", get(demo_script))
            .route("/chorus.js", get(sdk_script));
    }
    router
        .route("/chorus", get(websocket))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health", get(health))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/cert-hash", get(cert_hash))
        .with_state(state)
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn websocket(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !state.origins.allows(origin, host) {
        tracing::info!(%remote, origin = origin.unwrap_or(""), "WebSocket upgrade from a disallowed origin refused");
        return json_error(StatusCode::FORBIDDEN, "origin not allowed");
    }
    // One lane byte on top of the largest frame or pack message.
    let max_message = max_message_bytes(
        state.ctx.config.limits.max_frame_bytes,
        state.ws.chunk_bytes,
    );
    let ctx = state.ctx.clone();
    let settings = state.ws.clone();
    upgrade
        .protocols([SUBPROTOCOL])
        .max_message_size(max_message)
        .max_frame_size(max_message)
        // tungstenite zero-fills up to this much of its buffer before every
        // read; its 128 KiB default made that a tenth of the server's time
        // with many small messages. Big messages still grow the buffer.
        // The buffer is kept for the connection's life, so its size is paid
        // per connection: 2 KiB holds dozens of the small frames clients send
        // (8 KiB cost 6 kB more per idle connection, measured).
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| run_websocket(socket, ctx, remote, settings))
}

/// Bytes tungstenite reads from a WebSocket connection at once.
pub const WS_READ_BUFFER: usize = 2 * 1024;

/// Lets pages on other origins read the public endpoints.
fn public(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

async fn live() -> Response {
    public(Json(json!({ "status": "live" })).into_response())
}

async fn ready(State(state): State<Arc<HttpState>>) -> Response {
    let response =
        if state.ready.load(Ordering::Relaxed) && state.store_healthy.load(Ordering::Relaxed) {
            (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response()
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "not ready" })),
            )
                .into_response()
        };
    public(response)
}

fn rfc3339(time: ServerTime) -> String {
    let nanos = i128::from(time.as_micros()) * 1000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

async fn health(State(state): State<Arc<HttpState>>) -> Response {
    public(
        Json(json!({
            "ok": state.ready.load(Ordering::Relaxed),
            "service": "chorus",
            "version": env!("CARGO_PKG_VERSION"),
            "rooms": state.ctx.registry.len(),
            "timestamp": rfc3339(state.ctx.clock.now()),
        }))
        .into_response(),
    )
}

async fn stats(State(state): State<Arc<HttpState>>) -> Response {
    let stats = &state.ctx.stats;
    let packs = state.ctx.packs.stats();
    let now = state.ctx.clock.now();
    let rooms = state.ctx.registry.summaries();
    let members: usize = rooms.iter().map(|r| r.members).sum();
    let mut sessions = serde_json::Map::new();
    for transport in TRANSPORTS {
        let (opened, closed) = stats.transport_counters(transport);
        sessions.insert(
            transport.to_owned(),
            json!({
                "open": opened.get().saturating_sub(closed.get()),
                "opened": opened.get(),
            }),
        );
    }
    sessions.insert("total_open".to_owned(), json!(stats.sessions_open()));
    Json(json!({
        "server_time": rfc3339(now),
        "uptime_seconds": now.saturating_since(state.started_at) / 1_000_000,
        "rooms": rooms.iter().map(|r| json!({
            "id": r.id,
            "slot": r.slot.0,
            "members": r.members,
            "created_at": rfc3339(r.created_at),
            "last_activity": rfc3339(r.last_activity),
        })).collect::<Vec<_>>(),
        "totals": {
            "rooms": rooms.len(),
            "members": members,
            "sessions": sessions,
            "ticks_in": stats.ticks_in.get(),
            "ticks_out": stats.ticks_out.get(),
            "ticks_dropped": stats.ticks_dropped.get(),
            "ticks_rejected": stats.ticks_rejected.get(),
            "reliable_in": stats.reliable_in.get(),
            "reliable_out": stats.reliable_out.get(),
            "errors_sent": stats.errors_sent.get(),
            "slow_consumer_disconnects": stats.slow_consumer_disconnects.get(),
            "rate_limited": stats.rate_limited.get(),
            "rate_limit_disconnects": stats.rate_limit_disconnects.get(),
            "sessions_resumed": stats.sessions_resumed.get(),
            "resumable_sessions": state.ctx.resumes.len(),
            "pack_bytes_in": stats.pack_bytes_in.get(),
            "pack_bytes_out": stats.pack_bytes_out.get(),
            "sessions_closed": stats.session_ends().into_iter().collect::<BTreeMap<_, _>>(),
            "ticks_dropped_by_reason": stats.tick_drops.all().collect::<BTreeMap<_, _>>(),
            "errors": stats.errors.nonzero().collect::<BTreeMap<_, _>>(),
            "rate_limited_by_budget": stats.rate_limited_by.all().collect::<BTreeMap<_, _>>(),
            "state_updates": stats.state_updates.nonzero().collect::<BTreeMap<_, _>>(),
            "commands": stats.commands.total(),
            "resumes_failed": stats.resumes_failed.get(),
            "failovers": stats.failovers.all().collect::<BTreeMap<_, _>>(),
        },
        "packs": {
            "contents": packs.contents,
            "content_bytes": packs.content_bytes,
            "pending_uploads": packs.pending_uploads,
        },
    }))
    .into_response()
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let uptime = state.ctx.clock.now().saturating_since(state.started_at) as f64 / 1e6;
    let body = state.metrics.render(&state.ctx, uptime);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// The hashes to pin, newest first: the certificate new connections get, and
/// for a while after a rotation the previous one. Never cached: it changes.
async fn cert_hash(State(state): State<Arc<HttpState>>) -> Response {
    let hashes: Vec<String> = state
        .certs
        .hashes(std::time::SystemTime::now())
        .iter()
        .map(|h| crate::cert::hex(h))
        .collect();
    let mut response = public(
        Json(json!({
            "algorithm": "sha-256",
            "hashes": hashes,
        }))
        .into_response(),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Accepts TCP connections and serves them until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mode: TcpTls,
    router: Router,
    handshake_timeout: Duration,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let tls = tls.clone();
        let app = router.clone().layer(Extension(ConnectInfo(remote)));
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let use_tls = match mode {
                TcpTls::Off => false,
                TcpTls::Required => true,
                TcpTls::Auto => {
                    match tokio::time::timeout(handshake_timeout, starts_with_tls(&stream)).await {
                        Ok(Some(is_tls)) => is_tls,
                        _ => return,
                    }
                }
            };
            if !use_tls {
                return serve_connection(stream, app, handshake_timeout).await;
            }
            let Some(acceptor) = tls else {
                return;
            };
            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(stream, app, handshake_timeout).await,
                Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
            }
        });
    }
}

/// Whether the connection opens with a TLS record (`None`: it closed first).
async fn starts_with_tls(stream: &TcpStream) -> Option<bool> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => Some(first[0] == 0x16),
        _ => None,
    }
}

async fn serve_connection<S>(stream: S, app: Router, header_timeout: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let service = TowerToHyperService::new(app);
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}
