//! Instances: start (idempotent with `Idempotency-Key`), list with filters, read one with
//! where it stands, cancel, history, and the diagram with its current steps highlighted.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use ciclo_engine::Value;
use ciclo_engine::diagram::Highlight;
use ciclo_engine::machine::{InstanceState, Wait};
use ciclo_engine::model::Definition;
use ciclo_engine::runtime::{Engine, StartOptions};
use ciclo_engine::store::{InstanceFilter, InstanceRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{self, Caller};
use crate::definitions::svg_response;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::page::{Page, PageQuery, paginate};
use crate::state::AppState;
use crate::views::{StateName, vars_from_json, vars_to_json};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start, list))
        .routes(routes!(get_one))
        .routes(routes!(cancel))
        .routes(routes!(history))
        .routes(routes!(diagram))
}

/// The request header whose value makes a start idempotent.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The process id.
    #[schema(example = "quote-approval")]
    pub process: String,
    /// Initial variables, a JSON object (numbers keep every digit).
    #[schema(value_type = Option<Object>)]
    pub variables: Option<serde_json::Value>,
    pub business_key: Option<String>,
    /// A specific version (default: the latest).
    pub version: Option<u32>,
}

/// An instance in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceSummary {
    pub id: Uuid,
    pub definition: String,
    pub version: u32,
    pub business_key: Option<String>,
    pub state: StateName,
    pub started_at: jiff::Timestamp,
    pub ended_at: Option<jiff::Timestamp>,
}

impl From<&InstanceRecord> for InstanceSummary {
    fn from(r: &InstanceRecord) -> InstanceSummary {
        InstanceSummary {
            id: r.id,
            definition: r.process.clone(),
            version: r.version,
            business_key: r.business_key.clone(),
            state: r.status.into(),
            started_at: r.started_at,
            ended_at: r.ended_at,
        }
    }
}

/// An instance with where it stands and its variables.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceDetail {
    pub id: Uuid,
    pub definition: String,
    pub version: u32,
    pub business_key: Option<String>,
    pub state: StateName,
    pub started_at: jiff::Timestamp,
    pub ended_at: Option<jiff::Timestamp>,
    /// Why it failed, when it did.
    pub failure: Option<String>,
    /// The instance that called this one, if any.
    pub parent: Option<Uuid>,
    /// Where its paths are now: one entry per token.
    pub position: Vec<PositionView>,
    /// The process variables.
    #[schema(value_type = Object)]
    pub variables: serde_json::Value,
}

/// One path's position: a step and what it waits for.
#[derive(Debug, Serialize, ToSchema)]
pub struct PositionView {
    pub token: u64,
    pub step: String,
    /// The step's label, if it has one.
    pub label: Option<String>,
    pub waits_for: WaitView,
}

/// What a step waits for. `kind` says which of the other fields are set.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct WaitView {
    /// nothing, task, job, timer, message, race, join, subprocess, items, child, incident.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timer: Option<u64>,
    /// When the timer is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<jiff::Timestamp>,
    /// Name of the message waited for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Its correlation key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A race's alternatives (messages by name, timers by due time).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<String>,
    /// The called instance, for a call activity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<u64>,
    /// Items done and in all, for a multi-instance step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items_done: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items_total: Option<usize>,
}

fn wait_view(state: &InstanceState, wait: &Wait) -> WaitView {
    let kind = |k: &str| WaitView {
        kind: k.into(),
        ..Default::default()
    };
    let timer_due = |id: u64| state.timers.iter().find(|t| t.id == id).map(|t| t.due);
    let subscription = |id: u64| state.subscriptions.iter().find(|s| s.id == id);
    match wait {
        Wait::Nothing => kind("nothing"),
        Wait::Task { task } => WaitView {
            task: Some(*task),
            ..kind("task")
        },
        Wait::Job { job, attempt, .. } => WaitView {
            job: Some(*job),
            attempt: Some(*attempt),
            ..kind("job")
        },
        Wait::Timer { timer } => WaitView {
            timer: Some(*timer),
            due: timer_due(*timer),
            ..kind("timer")
        },
        Wait::Message { subscription: id } => {
            let s = subscription(*id);
            WaitView {
                message: s.map(|s| s.name.clone()),
                key: s.map(|s| s.key.clone()),
                ..kind("message")
            }
        }
        Wait::Race { handles } => WaitView {
            alternatives: handles
                .iter()
                .filter_map(|h| match (subscription(*h), timer_due(*h)) {
                    (Some(s), _) => Some(format!("message {} ({})", s.name, s.key)),
                    (None, Some(due)) => Some(format!("timer at {due}")),
                    (None, None) => None,
                })
                .collect(),
            ..kind("race")
        },
        Wait::Join => kind("join"),
        Wait::Subprocess { .. } => kind("subprocess"),
        Wait::Items(items) => WaitView {
            items_done: Some(items.done),
            items_total: Some(items.items.len()),
            ..kind("items")
        },
        Wait::Child { instance } => WaitView {
            child: *instance,
            ..kind("child")
        },
        Wait::Incident { incident, .. } => WaitView {
            incident: Some(*incident),
            ..kind("incident")
        },
    }
}

pub(crate) fn step_name(def: &Definition, step: u32) -> (String, Option<String>) {
    def.steps
        .get(step as usize)
        .map(|s| (s.name.clone(), s.label.clone()))
        .unwrap_or_else(|| (format!("#{step}"), None))
}

pub(crate) fn detail(engine: &Engine, id: Uuid) -> Result<InstanceDetail, ApiError> {
    let (record, state) = engine
        .instance(id)?
        .ok_or_else(|| ApiError::not_found(format!("no instance {id}")))?;
    let def = engine.definition_version(&state.process, state.version);
    let position = state
        .tokens
        .iter()
        .map(|t| {
            let (step, label) = match &def {
                Some(def) => step_name(def, t.step),
                None => (format!("#{}", t.step), None),
            };
            PositionView {
                token: t.id,
                step,
                label,
                waits_for: wait_view(&state, &t.wait),
            }
        })
        .collect();
    Ok(InstanceDetail {
        id: record.id,
        definition: record.process,
        version: record.version,
        business_key: record.business_key,
        state: record.status.into(),
        started_at: record.started_at,
        ended_at: record.ended_at,
        failure: state.failure.clone(),
        parent: state.parent.as_ref().map(|p| p.instance),
        position,
        variables: vars_to_json(&state.vars),
    })
}

/// Start an instance.
///
/// With an `Idempotency-Key` header, a start repeated with the same key returns the instance
/// the first one created, so a client may retry after a timeout without starting twice.
#[utoipa::path(
    post,
    path = "/api/instances",
    tag = "instances",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the start idempotent")),
    request_body = StartRequest,
    responses(
        (status = 201, description = "Started (or the instance started earlier with the same key)", body = InstanceDetail),
        (status = 400, description = "Malformed body, or the process cannot be started by a call", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not start instances", body = ErrorBody),
        (status = 404, description = "No such process or version", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for a different start", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn start(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<StartRequest>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(auth::OPERATE)?;
    let request_key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Idempotency-Key must be text"))?
                .to_string(),
        ),
    };
    let options = StartOptions {
        vars: vars_from_json(request.variables, "variables")?,
        business_key: request.business_key,
        // Namespaced so keys of starts cannot collide with other request keys the engine keeps.
        request_key: request_key.map(|k| format!("start:{k}")),
        actor: Some(caller.actor()),
        version: request.version,
    };
    let process = request.process;
    let detail = state
        .blocking(move |engine| {
            let id = engine.start(&process, options)?;
            detail(engine, id)
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(detail)))
}

/// Filters of the instance list. Besides these, `var.NAME=VALUE` keeps instances whose
/// variable NAME equals VALUE (read as JSON when it parses, else as a string).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstanceQuery {
    /// Only instances of this process.
    pub definition: Option<String>,
    /// Only instances in this state.
    pub state: Option<StateName>,
    /// Only instances with this business key.
    pub business_key: Option<String>,
    /// `next_cursor` of the page before.
    pub cursor: Option<String>,
    /// Items per page (default 50, at most 500 or as configured).
    pub limit: Option<usize>,
}

/// Reads the list's query by hand: `var.*` names are not known in advance.
fn instance_query(
    pairs: Vec<(String, String)>,
) -> Result<(InstanceQuery, Vec<(String, Value)>), ApiError> {
    let mut query = InstanceQuery::default();
    let mut vars = Vec::new();
    for (name, value) in pairs {
        match name.as_str() {
            "definition" => query.definition = Some(value),
            "state" => {
                query.state = Some(
                    serde_json::from_value(serde_json::Value::String(value.clone())).map_err(
                        |_| {
                            ApiError::bad_request(format!(
                                "state `{value}` is none of active, completed, failed, terminated, cancelled"
                            ))
                        },
                    )?,
                )
            }
            "business_key" => query.business_key = Some(value),
            "cursor" => query.cursor = Some(value),
            "limit" => {
                query.limit = Some(value.parse().map_err(|_| {
                    ApiError::bad_request(format!("limit `{value}` is not a whole number"))
                })?)
            }
            other => match other.strip_prefix("var.") {
                Some(var) if !var.is_empty() => {
                    let parsed = match serde_json::from_str::<serde_json::Value>(&value) {
                        Ok(json) => Value::from_json(json).unwrap_or(Value::String(value)),
                        Err(_) => Value::String(value),
                    };
                    vars.push((var.to_string(), parsed));
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter `{other}`"
                    )));
                }
            },
        }
    }
    Ok((query, vars))
}

/// List instances, oldest first, filtered.
#[utoipa::path(
    get,
    path = "/api/instances",
    tag = "instances",
    params(InstanceQuery, ("var.NAME" = Option<String>, Query, description = "Variable NAME equals this value (JSON, else a string); repeatable with other names")),
    responses(
        (status = 200, body = Page<InstanceSummary>),
        (status = 400, description = "Bad filter, cursor or limit", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not read instances", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> Result<axum::Json<Page<InstanceSummary>>, ApiError> {
    caller.require(auth::READ_INSTANCES)?;
    let (query, vars) = instance_query(pairs)?;
    let limit = PageQuery {
        cursor: None,
        limit: query.limit,
    }
    .limit(&state.config)?;
    let after = match &query.cursor {
        None => None,
        Some(c) => Some(
            c.parse::<Uuid>()
                .map_err(|_| ApiError::bad_request("the cursor is not one this API gave"))?,
        ),
    };
    let items = state
        .blocking(move |engine| {
            // Variable filters are checked here, not in the store, so the store is read in
            // chunks until the page is full.
            let chunk = if vars.is_empty() { limit + 1 } else { 256 };
            let mut filter = InstanceFilter {
                process: query.definition,
                status: query.state.map(Into::into),
                business_key: query.business_key,
                after,
                limit: chunk,
            };
            let mut items = Vec::new();
            loop {
                let records = engine.store().instances(&filter)?;
                let exhausted = records.len() < chunk;
                filter.after = records.last().map(|r| r.id).or(filter.after);
                for record in &records {
                    if !vars.is_empty() {
                        let Some((_, st)) = engine.instance(record.id)? else {
                            continue;
                        };
                        if !vars.iter().all(|(n, v)| st.vars.get(n) == Some(v)) {
                            continue;
                        }
                    }
                    items.push(InstanceSummary::from(record));
                    if items.len() > limit {
                        return Ok(items);
                    }
                }
                if exhausted {
                    return Ok(items);
                }
            }
        })
        .await?;
    Ok(axum::Json(paginate(items, limit, |i| i.id.to_string())))
}

/// An instance with its current position (step names and what each waits for) and variables.
#[utoipa::path(
    get,
    path = "/api/instances/{id}",
    tag = "instances",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = InstanceDetail),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not read instances", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<axum::Json<InstanceDetail>, ApiError> {
    caller.require(auth::READ_INSTANCES)?;
    state
        .blocking(move |engine| detail(engine, id).map(axum::Json))
        .await
}

/// Cancel an instance (and the instances it called). Cancelling a finished one changes
/// nothing.
#[utoipa::path(
    post,
    path = "/api/instances/{id}/cancel",
    tag = "instances",
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not cancel instances", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require(auth::OPERATE)?;
    let actor = caller.actor();
    state
        .blocking(move |engine| Ok(engine.cancel(id, &actor)?))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One line of an instance's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    pub seq: u64,
    pub at: jiff::Timestamp,
    /// Who did it: a user, `api:<token label>`, `timer`, `system`, a connector...
    pub actor: String,
    pub what: String,
    pub step: Option<String>,
    pub detail: String,
}

/// An instance's history, oldest first.
#[utoipa::path(
    get,
    path = "/api/instances/{id}/history",
    tag = "instances",
    params(("id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = Page<HistoryView>),
        (status = 400, description = "Bad id, cursor or limit", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not read instances", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn history(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<HistoryView>>, ApiError> {
    caller.require(auth::READ_INSTANCES)?;
    let limit = page.limit(&state.config)?;
    let after: u64 = match &page.cursor {
        None => 0,
        Some(c) => c
            .parse()
            .map_err(|_| ApiError::bad_request("the cursor is not one this API gave"))?,
    };
    let items = state
        .blocking(move |engine| {
            if engine.store().instance(id)?.is_none() {
                return Err(ApiError::not_found(format!("no instance {id}")));
            }
            Ok(engine
                .store()
                .history(id)?
                .into_iter()
                .filter(|h| h.seq > after)
                .take(limit + 1)
                .map(|h| HistoryView {
                    seq: h.seq,
                    at: h.at,
                    actor: h.actor,
                    what: h.what,
                    step: h.step,
                    detail: h.detail,
                })
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(axum::Json(paginate(items, limit, |h| h.seq.to_string())))
}

/// The instance's process drawn as SVG, with the steps where it is now marked `current` and
/// the steps in its history marked `done`.
#[utoipa::path(
    get,
    path = "/api/instances/{id}/diagram.svg",
    tag = "instances",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The diagram", body = String, content_type = "image/svg+xml"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not read instances", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn diagram(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(auth::READ_INSTANCES)?;
    let svg = state
        .blocking(move |engine| highlighted_svg(engine, id))
        .await?;
    Ok(svg_response(svg))
}

/// The instance's diagram with its current steps (`current`) and the steps of its history
/// (`done`) marked, for the API and the instance page.
pub(crate) fn highlighted_svg(engine: &Engine, id: Uuid) -> Result<String, ApiError> {
    let (_, st) = engine
        .instance(id)?
        .ok_or_else(|| ApiError::not_found(format!("no instance {id}")))?;
    let def = engine
        .definition_version(&st.process, st.version)
        .ok_or_else(|| ApiError::internal(format!("instance {id} has no loaded definition")))?;
    let current: BTreeSet<String> = st
        .tokens
        .iter()
        .map(|t| step_name(&def, t.step).0)
        .collect();
    let done: BTreeSet<String> = engine
        .store()
        .history(id)?
        .into_iter()
        .filter_map(|h| h.step)
        .filter(|s| !current.contains(s))
        .collect();
    let highlight = Highlight {
        current: current.into_iter().collect(),
        done: done.into_iter().collect(),
    };
    Ok(ciclo_engine::diagram::svg(&def, Some(&highlight)))
}
