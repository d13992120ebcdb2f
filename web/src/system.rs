//! The health check, Prometheus metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// Whether the server answers. Open without a token.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "system",
    responses((status = 200, body = Health)),
    security(())
)]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
    })
}

/// Metrics in Prometheus text format: HTTP requests by route and status, their latency, and
/// the engine's figures. Open without a token unless the configuration closes it.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    responses(
        (status = 200, description = "Prometheus text", body = String, content_type = "text/plain"),
        (status = 401, description = "Metrics are closed and no valid token was given", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
async fn metrics(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
) -> Result<impl IntoResponse, ApiError> {
    if !state.config.public_metrics {
        caller?;
    }
    // The store's gauges are read now, so they are exact at scrape time.
    let observed = state
        .blocking(|engine| {
            let now = engine.clock().now();
            Ok(ciclo_engine::runtime::metrics::observe_store(
                engine.store().as_ref(),
                now,
            )?)
        })
        .await;
    if let Err(error) = observed {
        // Rendering the rest is more useful to a scraper than failing the whole scrape.
        tracing::warn!(code = error.code(), "store gauges could not be read");
    }
    // Histograms are drained into their buckets on upkeep; doing it per scrape keeps memory
    // bounded without a background task of our own.
    state.metrics.run_upkeep();
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    ))
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "system",
    responses(
        (status = 200, description = "The OpenAPI document", body = Object),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn openapi_json(_caller: Caller) -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(crate::openapi())
}
