//! Messages: correlate a named, keyed message to the instances waiting for it.

use axum::extract::State;
use ciclo_engine::runtime::{Correlation, Message};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{self, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::views::vars_from_json;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(correlate))
}

/// A message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    #[schema(example = "quote-accepted")]
    pub name: String,
    /// The correlation key (empty when the waiting step gives none).
    #[serde(default)]
    pub key: String,
    /// Variables the message carries, a JSON object.
    #[schema(value_type = Option<Object>)]
    pub variables: Option<serde_json::Value>,
    /// A message id: a repeat of an id seen in the last 7 days is ignored.
    pub id: Option<String>,
    /// How long to keep the message when nobody waits yet, ISO 8601 (`PT1H`, `P2D`); absent:
    /// not kept.
    #[schema(example = "PT1H")]
    pub ttl: Option<String>,
}

/// What happened to a message.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Delivered to the waiting instances in `instances`.
    Delivered,
    /// Started the instance in `instances` (a process with a message start).
    Started,
    /// Nobody waits yet: kept for its time to live.
    Buffered,
    /// Its id was seen before: ignored.
    Duplicate,
    /// Nobody waits and it has no time to live: dropped.
    Dropped,
}

/// The outcome of a correlation.
#[derive(Debug, Serialize, ToSchema)]
pub struct CorrelationView {
    pub outcome: Outcome,
    /// The instances delivered to, or the one started.
    pub instances: Vec<Uuid>,
}

/// Reads an ISO 8601 duration. Days count as 24 hours: a message's time to live is a span
/// of real time, not a calendar one.
fn ttl(text: &str) -> Result<jiff::SignedDuration, ApiError> {
    let bad =
        |e: String| ApiError::bad_request(format!("ttl `{text}` is not an ISO 8601 duration: {e}"));
    let span: jiff::Span = text.parse().map_err(|e: jiff::Error| bad(e.to_string()))?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(ApiError::bad_request(format!(
            "ttl `{text}` uses months or years, whose length varies: give it in days or hours (P30D, PT12H)"
        )));
    }
    let duration = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| bad(e.to_string()))?;
    if duration.is_negative() {
        return Err(ApiError::bad_request(format!(
            "ttl `{text}` is negative: a time to live is zero or more"
        )));
    }
    Ok(duration)
}

/// Correlate a message: delivered to every instance waiting for its name and key; else it
/// starts a process with a message start of that name; else it is kept for its time to live.
#[utoipa::path(
    post,
    path = "/api/messages",
    tag = "messages",
    request_body = MessageRequest,
    responses(
        (status = 200, body = CorrelationView),
        (status = 400, description = "Malformed body or time to live", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not send messages", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn correlate(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<MessageRequest>,
) -> Result<axum::Json<CorrelationView>, ApiError> {
    caller.require(auth::OPERATE)?;
    if request.name.trim().is_empty() {
        return Err(ApiError::bad_request("name must not be empty"));
    }
    let message = Message {
        name: request.name,
        key: request.key,
        vars: vars_from_json(request.variables, "variables")?,
        id: request.id,
        ttl: request.ttl.as_deref().map(ttl).transpose()?,
    };
    let correlation = state
        .blocking(move |engine| Ok(engine.correlate(message)?))
        .await?;
    let (outcome, instances) = match correlation {
        Correlation::Delivered(ids) => (Outcome::Delivered, ids),
        Correlation::Started(id) => (Outcome::Started, vec![id]),
        Correlation::Buffered => (Outcome::Buffered, vec![]),
        Correlation::Duplicate => (Outcome::Duplicate, vec![]),
        Correlation::Dropped => (Outcome::Dropped, vec![]),
    };
    Ok(axum::Json(CorrelationView { outcome, instances }))
}
