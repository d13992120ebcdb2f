//! Leads: `POST /api/leads`, a lead arriving from anywhere (API, web form, CSV import). The
//! lead's identity is its business key, `lead:<external id>` when it has one, else
//! `email:<trimmed, lower-cased e-mail>`; the engine's start-or-correlate starts `lead-intake`
//! for a new identity and sends `lead-activity` to the existing instance otherwise. What
//! happens to the lead after that (scoring, routing) is the process's business, not this
//! module's. `arrive` is public so that `ciclo import leads --data` runs the same code
//! in-process.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use ciclo_engine::Value;
use ciclo_engine::expr::{email_base, email_key};
use ciclo_engine::runtime::{Arrival, Engine, Message, StartOptions};
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{self, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::views::{StateName, vars_from_json};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_lead))
}

/// The process a lead starts, and the message a known lead's instance receives.
pub const INTAKE_PROCESS: &str = "lead-intake";
pub const ACTIVITY_MESSAGE: &str = "lead-activity";

/// How long an activity waits for the lead's instance to listen (it may be busy handing the
/// lead to assignment or nurture when the activity arrives).
const ACTIVITY_TTL: SignedDuration = SignedDuration::from_hours(24);

/// A lead that arrives.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadRequest {
    /// The lead's fields: `external_id` and/or `email` identify it; the rest is for the
    /// process (`docs/leads.md`).
    #[schema(value_type = Object)]
    pub lead: serde_json::Value,
    /// Where it came from (`api`, `web-form`, `import`), recorded with an activity.
    pub source: Option<String>,
}

/// What became of an arriving lead.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeadArrival {
    /// The lead's instance of `lead-intake`.
    pub instance: Uuid,
    /// `created` (a new lead), `matched` (an activity of an existing lead) or `repeated`
    /// (the Idempotency-Key was seen before: nothing changed).
    pub outcome: String,
    /// `lead:<external id>` or `email:<address>`.
    pub business_key: String,
    /// For a `+tag` address: the business key of the lead with the address without the tag,
    /// when that lead exists.
    pub possible_duplicate_of: Option<String>,
    /// The instance's state after the arrival.
    pub state: StateName,
    /// Its variables `score`, `grade`, `assigned_to`, `archive_reason` when already set.
    pub score: Option<serde_json::Value>,
    pub grade: Option<String>,
    pub assigned_to: Option<String>,
    pub archive_reason: Option<String>,
}

/// The business key of a lead: `lead:<external id>` (trimmed) when it has a non-empty one,
/// else `email:<trimmed, lower-cased address>`; `None` when it has neither.
pub fn lead_identity(lead: &serde_json::Value) -> Option<String> {
    let text = |name: &str| {
        lead.get(name)
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.trim().to_string()),
                // An export's numeric id (`"external_id": 42`) is the text `42`.
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|t| !t.is_empty())
    };
    if let Some(id) = text("external_id") {
        return Some(format!("lead:{id}"));
    }
    text("email").map(|e| format!("email:{}", email_key(&e)))
}

/// The longest external id taken (the business key must stay short enough to index).
const MAX_EXTERNAL_ID: usize = 150;

/// Refuses a lead whose `email` or `external_id` cannot be what it says, naming the field, the
/// value and what is expected. A missing or empty `email` is fine (a lead may have none).
fn check_lead(lead: &serde_json::Value) -> Result<(), ApiError> {
    match lead.get("email") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(email)) => {
            let trimmed = email.trim();
            if !trimmed.is_empty() && trimmed.parse::<lettre::Address>().is_err() {
                let shown: String = trimmed.chars().take(80).filter(|c| *c != '`').collect();
                return Err(ApiError::bad_request(format!(
                    "`email`: `{shown}` is not an e-mail address (write one address such as \
                     mario.rossi@example.it, or leave it out)"
                )));
            }
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`email` must be a text such as \"mario.rossi@example.it\", not {other}"
            )));
        }
    }
    match lead.get("external_id") {
        None | Some(serde_json::Value::Null | serde_json::Value::Number(_)) => {}
        Some(serde_json::Value::String(id)) if id.trim().chars().count() > MAX_EXTERNAL_ID => {
            return Err(ApiError::bad_request(format!(
                "`external_id` is {} characters long; at most {MAX_EXTERNAL_ID} are taken",
                id.trim().chars().count()
            )));
        }
        Some(serde_json::Value::String(_)) => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`external_id` must be a text or a number, not {other}"
            )));
        }
    }
    Ok(())
}

/// Takes an arriving lead: starts its instance or records an activity on the existing one.
pub fn arrive(
    engine: &Engine,
    lead: serde_json::Value,
    source: &str,
    request_key: Option<String>,
    actor: &str,
) -> Result<LeadArrival, ApiError> {
    if !lead.is_object() {
        return Err(ApiError::bad_request("`lead` must be a JSON object"));
    }
    check_lead(&lead)?;
    let business_key = lead_identity(&lead).ok_or_else(|| {
        ApiError::bad_request("a lead needs a non-empty `external_id` or `email`")
    })?;
    // A tagged address (`mario+news@x.it`) is its own lead, flagged when the base exists.
    let possible_duplicate_of = match lead.get("email").and_then(|v| v.as_str()) {
        Some(email)
            if business_key.starts_with("email:") && email_base(email) != email_key(email) =>
        {
            let base = format!("email:{}", email_base(email));
            engine
                .instance_by_business_key(INTAKE_PROCESS, &base)?
                .map(|_| base)
        }
        _ => None,
    };
    let mut vars = serde_json::Map::new();
    vars.insert("lead".into(), lead.clone());
    vars.insert("lead_key".into(), business_key.clone().into());
    if let Some(dup) = &possible_duplicate_of {
        vars.insert("possible_duplicate_of".into(), dup.clone().into());
    }
    let activity = serde_json::json!({
        "source": source,
        "at": engine.clock().now().to_string(),
        "lead": lead,
    });
    let arrival = engine.start_or_correlate(
        INTAKE_PROCESS,
        StartOptions {
            vars: vars_from_json(Some(vars.into()), "lead")?,
            business_key: Some(business_key.clone()),
            request_key: request_key.map(|k| format!("lead:{k}")),
            actor: Some(actor.to_string()),
            version: None,
        },
        Message {
            name: ACTIVITY_MESSAGE.into(),
            vars: vars_from_json(Some(serde_json::json!({ "activity": activity })), "lead")?,
            ttl: Some(ACTIVITY_TTL),
            ..Default::default()
        },
    )?;
    let outcome = match arrival {
        Arrival::Started(_) => "created",
        Arrival::Matched { .. } => "matched",
        Arrival::Repeated(_) => "repeated",
    };
    let id = arrival.instance();
    let (record, state) = engine
        .instance(id)?
        .ok_or_else(|| ApiError::not_found(format!("instance {id} is gone")))?;
    let var = |name: &str| state.vars.get(name).filter(|v| !matches!(v, Value::Null));
    let text = |name: &str| match var(name) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let grade = match var("rating") {
        Some(Value::Map(m)) => match m.get("grade") {
            Some(Value::String(g)) => Some(g.clone()),
            _ => None,
        },
        _ => None,
    };
    Ok(LeadArrival {
        instance: id,
        outcome: outcome.into(),
        business_key: record.business_key.unwrap_or(business_key),
        possible_duplicate_of: possible_duplicate_of.or_else(|| text("possible_duplicate_of")),
        state: record.status.into(),
        score: var("score").map(Value::to_json),
        grade,
        assigned_to: text("assigned_to"),
        archive_reason: text("archive_reason"),
    })
}

/// Take a lead
///
/// A new identity starts `lead-intake`; a known one (same external id, or same e-mail once
/// trimmed and lower-cased) becomes a `lead-activity` of its instance. With an
/// `Idempotency-Key`, a repeated request changes nothing.
#[utoipa::path(
    post,
    path = "/api/leads",
    tag = "leads",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the arrival idempotent (the import uses the external id)")),
    request_body = LeadRequest,
    responses(
        (status = 201, description = "A new lead: its instance started", body = LeadArrival),
        (status = 200, description = "A known lead (matched) or a repeated request", body = LeadArrival),
        (status = 400, description = "Malformed body, or a lead without external_id and email", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not start instances", body = ErrorBody),
        (status = 404, description = "The lead-intake process is not deployed", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn post_lead(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<LeadRequest>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(auth::OPERATE)?;
    let request_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Idempotency-Key must be text"))?
                .to_string(),
        ),
    };
    let actor = caller.actor();
    let source = request.source.unwrap_or_else(|| "api".into());
    let arrival = state
        .blocking(move |engine| arrive(engine, request.lead, &source, request_key, &actor))
        .await?;
    let status = if arrival.outcome == "created" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(arrival)))
}

#[cfg(test)]
mod tests {
    use super::lead_identity;
    use serde_json::json;

    #[test]
    fn identity_is_the_external_id_else_the_normalised_email() {
        assert_eq!(
            lead_identity(&json!({"external_id": " P-1 ", "email": "a@x.it"})).as_deref(),
            Some("lead:P-1")
        );
        assert_eq!(
            lead_identity(&json!({"external_id": "", "email": "  Mario.Rossi@Example.IT "}))
                .as_deref(),
            Some("email:mario.rossi@example.it")
        );
        assert_eq!(
            lead_identity(&json!({"email": "mario.rossi+news@example.it"})).as_deref(),
            Some("email:mario.rossi+news@example.it")
        );
        assert_eq!(lead_identity(&json!({"email": "  "})), None);
        assert_eq!(
            lead_identity(&json!({"external_id": 12})).as_deref(),
            Some("lead:12")
        );
        assert_eq!(lead_identity(&json!({"external_id": true})), None);
    }
}
