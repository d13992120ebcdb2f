//! What every handler shares, and the one way handlers call the blocking engine.

use std::sync::Arc;

use ciclo_engine::runtime::Engine;
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::Instrument as _;

use crate::WebConfig;
use crate::error::ApiError;

/// The router's state: three reference-counted handles, cheap to clone per request.
#[derive(Clone)]
pub struct AppState {
    pub(crate) engine: Arc<Engine>,
    pub(crate) config: Arc<WebConfig>,
    pub(crate) metrics: PrometheusHandle,
    /// Failed sign-ins per name (in memory, per server).
    pub(crate) lockout: Arc<crate::pages::session::Lockout>,
}

impl AppState {
    pub fn new(engine: Arc<Engine>, config: WebConfig, metrics: PrometheusHandle) -> AppState {
        AppState {
            engine,
            config: Arc::new(config),
            metrics,
            lockout: Arc::default(),
        }
    }

    /// Runs `work` on a blocking thread: engine calls wait for the store's durable commit and
    /// must not hold up the async workers. The request's span goes with it, so whatever the
    /// engine logs is tied to the request.
    pub(crate) async fn blocking<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
    {
        let engine = self.engine.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| work(&engine)))
            .in_current_span()
            .await
            .map_err(|e| ApiError::internal(format!("engine call did not finish: {e}")))?
    }
}
