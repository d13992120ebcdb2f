//! Incidents and jobs: what needs a person's look (retries ran out, an expression failed),
//! retrying it, and the jobs waiting to run with their last error.

use axum::extract::State;
use axum::http::StatusCode;
use ciclo_engine::store::{IncidentRecord, JobRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{self, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::page::{Page, PageQuery, paginate};
use crate::state::AppState;
use crate::views::vars_to_json;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_incidents))
        .routes(routes!(retry))
        .routes(routes!(list_jobs))
}

/// An open incident.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentView {
    pub instance: Uuid,
    pub incident: u64,
    pub step: String,
    /// The job whose retries ran out, if a job's.
    pub job: Option<u64>,
    /// The last error.
    pub error: String,
    pub created_at: jiff::Timestamp,
}

impl From<IncidentRecord> for IncidentView {
    fn from(r: IncidentRecord) -> IncidentView {
        IncidentView {
            instance: r.instance,
            incident: r.incident,
            step: r.step,
            job: r.job,
            error: r.error,
            created_at: r.created_at,
        }
    }
}

/// A job waiting to run (or to be retried).
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub instance: Uuid,
    pub job: u64,
    /// Attempt number, from 1.
    pub attempt: u32,
    pub connector: String,
    pub operation: String,
    /// Not run before this instant (backoff).
    pub due: jiff::Timestamp,
    /// Taken by a worker until this instant.
    pub locked_until: Option<jiff::Timestamp>,
    /// The external worker holding it (connector `external`).
    pub locked_by: Option<String>,
    /// The error of the attempt before, if it failed.
    pub last_error: Option<String>,
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
}

impl From<JobRecord> for JobView {
    fn from(j: JobRecord) -> JobView {
        JobView {
            instance: j.instance,
            job: j.job,
            attempt: j.attempt,
            connector: j.connector,
            operation: j.operation,
            due: j.due,
            locked_until: j.locked_until,
            locked_by: j.locked_by,
            last_error: j.last_error,
            input: vars_to_json(&j.input),
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncidentQuery {
    /// Only this instance's.
    pub instance: Option<Uuid>,
    /// `next_cursor` of the page before.
    pub cursor: Option<String>,
    /// Items per page (default 50, at most 500 or as configured).
    pub limit: Option<usize>,
}

fn id_cursor(text: &str) -> Result<(Uuid, u64), ApiError> {
    let bad = || ApiError::bad_request("the cursor is not one this API gave");
    let (instance, n) = text.split_once('_').ok_or_else(bad)?;
    Ok((
        instance.parse().map_err(|_| bad())?,
        n.parse().map_err(|_| bad())?,
    ))
}

/// Open incidents, by instance and number.
#[utoipa::path(
    get,
    path = "/api/incidents",
    tag = "incidents",
    params(IncidentQuery),
    responses(
        (status = 200, body = Page<IncidentView>),
        (status = 400, description = "Bad filter, cursor or limit", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not see incidents", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_incidents(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<IncidentQuery>,
) -> Result<axum::Json<Page<IncidentView>>, ApiError> {
    caller.require(auth::OPERATE)?;
    let limit = PageQuery {
        cursor: None,
        limit: query.limit,
    }
    .limit(&state.config)?;
    let after = query.cursor.as_deref().map(id_cursor).transpose()?;
    let items = state
        .blocking(move |engine| {
            let mut incidents = match query.instance {
                Some(id) => engine.store().incidents_of(id)?,
                None => engine.store().incidents()?,
            };
            incidents.sort_by_key(|i| (i.instance, i.incident));
            Ok(incidents
                .into_iter()
                .filter(|i| after.is_none_or(|a| (i.instance, i.incident) > a))
                .take(limit + 1)
                .map(IncidentView::from)
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(axum::Json(paginate(items, limit, |i| {
        format!("{}_{}", i.instance, i.incident)
    })))
}

/// Retry an incident: the step (or its choice, or its job with fresh retries) runs again.
#[utoipa::path(
    post,
    path = "/api/incidents/{instance}/{incident}/retry",
    tag = "incidents",
    params(("instance" = Uuid, Path), ("incident" = u64, Path)),
    responses(
        (status = 204, description = "Retried"),
        (status = 400, description = "Bad ids", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not retry incidents", body = ErrorBody),
        (status = 404, description = "No such open incident", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((instance, incident)): ApiPath<(Uuid, u64)>,
) -> Result<StatusCode, ApiError> {
    caller.require(auth::OPERATE)?;
    let actor = caller.actor();
    state
        .blocking(move |engine| Ok(engine.retry_incident(instance, incident, &actor)?))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Jobs: of one instance (all of them, running ones included), or else every job waiting to
/// run or to be retried (jobs the runtime is running right now are not listed) and every
/// external job, with the worker holding it and until when.
#[utoipa::path(
    get,
    path = "/api/jobs",
    tag = "incidents",
    params(IncidentQuery),
    responses(
        (status = 200, body = Page<JobView>),
        (status = 400, description = "Bad filter, cursor or limit", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not see jobs", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<IncidentQuery>,
) -> Result<axum::Json<Page<JobView>>, ApiError> {
    caller.require(auth::OPERATE)?;
    let limit = PageQuery {
        cursor: None,
        limit: query.limit,
    }
    .limit(&state.config)?;
    let after = query.cursor.as_deref().map(id_cursor).transpose()?;
    let items = state
        .blocking(move |engine| {
            let mut jobs = match query.instance {
                Some(id) => engine.store().jobs_of(id)?,
                None => {
                    let mut jobs = engine.store().due_jobs(jiff::Timestamp::MAX, usize::MAX)?;
                    jobs.extend(engine.store().external_jobs(usize::MAX)?);
                    jobs
                }
            };
            jobs.sort_by_key(|j| (j.instance, j.job));
            Ok(jobs
                .into_iter()
                .filter(|j| after.is_none_or(|a| (j.instance, j.job) > a))
                .take(limit + 1)
                .map(JobView::from)
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(axum::Json(paginate(items, limit, |j| {
        format!("{}_{}", j.instance, j.job)
    })))
}
