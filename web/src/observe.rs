//! Request ids, one tracing span per request, HTTP metrics, and panics turned into our 500.
//!
//! The span and the metrics name a request by its route template (`/api/instances/{id}`),
//! never by its raw URL: ids in URLs would make every request a new metric series, and the
//! query string may hold values that do not belong in logs. Headers are not logged, so no
//! `Authorization` secret reaches them.

use std::any::Any;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::error::ApiError;

/// HTTP requests answered, by `method`, `route` and `status`.
pub const HTTP_REQUESTS: &str = "ciclo_http_requests_total";
/// Seconds from request to response head, by `method` and `route`.
pub const HTTP_SECONDS: &str = "ciclo_http_request_duration_seconds";

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps every route (and the fallback) in the layers. Order, outermost first: request id set
/// (or kept when the client sent one), request id copied to the response, the span, metrics,
/// panic catcher.
pub fn layers(router: Router) -> Router {
    router
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(record))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

fn route(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into())
}

fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        route = %route(request),
        request_id = %request_id,
        role = tracing::field::Empty,
    )
}

async fn record(request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = route(&request);
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(HTTP_SECONDS, "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    ApiError::internal(format!("a handler panicked: {what}")).into_response()
}
