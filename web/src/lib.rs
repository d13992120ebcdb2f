//! Ciclo's HTTP API: JSON under `/api` for definitions, instances, messages, tasks,
//! incidents, jobs, external workers' jobs, users and tokens; an OpenAPI 3.1 document generated
//! from the handlers (`/api/openapi.json`); Prometheus metrics (`/metrics`) and a health check
//! (`/healthz`); and the server-rendered pages (`pages`: sign-in, inbox, task decisions, cockpit).
//!
//! The crate owns no state of its own: every change goes through `ciclo_engine::Engine`, whose
//! calls are blocking and so run on tokio's blocking threads (`state::blocking`). The web
//! crate never writes the store directly. `ciclo serve` mounts `app` on its listener.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use ciclo_engine::runtime::Engine;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

mod auth;
mod definitions;
mod error;
mod extract;
mod incidents;
mod instances;
pub mod leads;
pub mod links;
mod messages;
mod observe;
mod page;
pub mod pages;
mod state;
mod system;
mod tasks;
mod users;
mod views;
mod workers;

pub use error::{ApiError, ErrorBody};
pub use state::AppState;

/// Options of the HTTP API.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Largest request body accepted, in bytes; a larger one is answered 413.
    pub max_body_bytes: usize,
    /// Items per page of a list when the request gives no `limit`.
    pub default_page: usize,
    /// Largest `limit` a list accepts; a larger one is lowered to it.
    pub max_page: usize,
    /// Whether `/metrics` answers without a token (Prometheus scrapers usually have none).
    pub public_metrics: bool,
    /// Whether the pages' cookies are marked `Secure` even on plain HTTP requests (set it
    /// behind a TLS proxy that does not send `X-Forwarded-Proto`).
    pub secure_cookies: bool,
    /// Set when the server stops: long polls answer at once instead of holding the shutdown
    /// up to their `wait_ms`.
    pub stopping: Stopping,
}

/// A signal that the server is stopping, cheap to clone; `stop` wakes every waiter.
#[derive(Clone, Debug, Default)]
pub struct Stopping(Arc<StoppingInner>);

#[derive(Debug, Default)]
struct StoppingInner {
    stopped: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Stopping {
    pub fn stop(&self) {
        self.0
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Resolves once `stop` was called (at once if it already was).
    pub async fn stopped(&self) {
        let notified = self.0.notify.notified();
        if self.0.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        notified.await;
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            max_body_bytes: 1024 * 1024,
            default_page: 50,
            max_page: 500,
            public_metrics: true,
            secure_cookies: false,
            stopping: Stopping::default(),
        }
    }
}

/// Latency buckets, in seconds, for every histogram: from a millisecond (a request served from
/// memory) to an hour (a timer that fired late after downtime).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 3600.0,
];

/// Installs the process-wide Prometheus recorder the first time it is called and returns a
/// handle to render it; later calls return the same handle. If another recorder was installed
/// before (by something else in the process), the handle renders a recorder of its own that
/// nothing records into, and a warning says so.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = || {
                PrometheusBuilder::new()
                    .set_buckets(BUCKETS)
                    .unwrap_or_else(|_| PrometheusBuilder::new())
            };
            match builder().install_recorder() {
                Ok(handle) => handle,
                Err(error) => {
                    tracing::warn!(%error, "a metrics recorder was already installed; /metrics will be empty");
                    builder().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// The whole HTTP application: every route, with its layers (request ids, tracing, metrics,
/// body limit, panics turned into 500s).
pub fn app(engine: Arc<Engine>, config: WebConfig, metrics: PrometheusHandle) -> Router {
    let max_body = config.max_body_bytes;
    let state = AppState::new(engine, config, metrics);
    // Parse the page templates now: a broken one stops the start, not a later request.
    pages::templates();
    let (router, _) = api_router().split_for_parts();
    let router = router
        .merge(pages::router())
        .fallback(error::not_found_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state);
    observe::layers(router).layer(DefaultBodyLimit::max(max_body))
}

/// The OpenAPI 3.1 document of the API, built from the same routers `app` serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| api_router().into_openapi()).clone()
}

fn api_router() -> OpenApiRouter<AppState> {
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("Ciclo")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Durable workflow server. Every call under /api needs \
                     `Authorization: Bearer <token>`. Errors have one shape: \
                     `{code, message, details}`.",
                ))
                .build(),
        )
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        auth::SCHEME,
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    OpenApiRouter::with_openapi(doc)
        .merge(system::router())
        .merge(definitions::router())
        .merge(instances::router())
        .merge(leads::router())
        .merge(messages::router())
        .merge(tasks::router())
        .merge(incidents::router())
        .merge(users::router())
        .merge(workers::router())
}
