//! HTTP API, task inbox, cockpit, auth and metrics. (Interim: only `/healthz`; the REST API is
//! being built on the `web` branch and replaces this file.)

use std::sync::Arc;

use ciclo_engine::runtime::Engine;

/// Options of the web layer.
#[derive(Clone, Debug)]
pub struct WebConfig {
    pub max_body_bytes: usize,
    pub default_page: usize,
    pub max_page: usize,
    pub public_metrics: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            max_body_bytes: 1 << 20,
            default_page: 50,
            max_page: 500,
            public_metrics: true,
        }
    }
}

/// The metrics handle (interim: nothing recorded yet).
#[derive(Clone, Debug, Default)]
pub struct PrometheusHandle;

pub fn install_metrics() -> PrometheusHandle {
    PrometheusHandle
}

pub fn app(engine: Arc<Engine>, config: WebConfig, metrics: PrometheusHandle) -> axum::Router {
    let _ = (engine, config, metrics);
    axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }))
}
