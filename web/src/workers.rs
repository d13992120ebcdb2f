//! External workers: any program takes jobs of a named type (`call: external.<type>`) over
//! HTTP. It fetches and locks some with a lease (waiting for them up to `wait_ms`, long
//! polling), may extend the lease, and completes, fails or raises a business error with the
//! lease token the fetch gave it. A refused lease is 409 `lease_expired` or `lease_not_held`.
//!
//! Long polling waits here, in the async layer, holding no engine lock: each look is one
//! short blocking engine call, and between looks the request sleeps until an external job is
//! written (the engine's `external_jobs_written`) or a short re-check interval passes (a lease
//! that runs out or a backoff that ends notifies nothing), until `wait_ms` is over.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use ciclo_engine::runtime::{ExternalAnswer, LockedJob, MAX_FETCH, MAX_LEASE};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{self, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use crate::views::{vars_from_json, vars_to_json};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(fetch_and_lock))
        .routes(routes!(extend))
        .routes(routes!(complete))
        .routes(routes!(fail))
        .routes(routes!(raise_error))
}

/// The shortest lease, in milliseconds.
const MIN_LEASE_MS: u64 = 100;
/// The lease when a fetch names none: a minute.
const DEFAULT_LEASE_MS: u64 = 60_000;
/// The longest a fetch waits for jobs, in milliseconds.
const MAX_WAIT_MS: u64 = 30_000;
/// While waiting, look again at least this often: leases that run out and backoffs that end
/// wake nobody.
const RECHECK: Duration = Duration::from_millis(200);

/// Which jobs a worker takes, and for how long.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// The worker's name (1 to 200 printable characters): the lease is its.
    #[schema(example = "scorer-1")]
    pub worker: String,
    /// Job types to take (the `<type>` of `call: external.<type>`).
    #[schema(example = json!(["score-lead"]))]
    pub types: Vec<String>,
    /// At most this many jobs (1 to 100, default 1).
    pub max_jobs: Option<usize>,
    /// Lease in milliseconds (100 to 86,400,000, default 60,000).
    pub lease_ms: Option<u64>,
    /// Wait up to this many milliseconds for jobs when none is ready (0 to 30,000, default
    /// 0: answer at once).
    pub wait_ms: Option<u64>,
}

/// A job locked for the worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct LockedJobView {
    /// The job's id in these URLs: `<instance>_<job number>`.
    #[schema(example = "01970b6e-8f5c-7d3a-9e4b-2c1d0a9f8e7d_3")]
    pub id: String,
    /// The job type.
    #[serde(rename = "type")]
    pub job_type: String,
    pub instance: Uuid,
    /// The job number within its instance.
    pub job: u64,
    pub process: String,
    pub step: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Retries left after this attempt by the step's policy.
    pub retries_left: u32,
    /// The job's variables (the step's `input`).
    #[schema(value_type = Object)]
    pub variables: serde_json::Value,
    /// The secret to extend, complete, fail or raise an error with.
    pub lease_token: String,
    pub lease_expires_at: jiff::Timestamp,
    pub business_key: Option<String>,
}

impl From<LockedJob> for LockedJobView {
    fn from(locked: LockedJob) -> LockedJobView {
        let job = locked.job;
        LockedJobView {
            id: format!("{}_{}", job.instance, job.job),
            job_type: job.operation,
            instance: job.instance,
            job: job.job,
            process: locked.process,
            step: locked.step,
            attempt: job.attempt,
            retries_left: locked.retries_left,
            variables: vars_to_json(&job.input),
            lease_token: job.lease_token.unwrap_or_default(),
            lease_expires_at: job.locked_until.unwrap_or(jiff::Timestamp::MAX),
            business_key: locked.business_key,
        }
    }
}

/// A longer lease.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    pub worker: String,
    pub lease_token: String,
    /// The new lease, from now, in milliseconds (100 to 86,400,000).
    pub lease_ms: u64,
}

/// When the extended lease runs out.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExtendView {
    pub lease_expires_at: jiff::Timestamp,
}

/// The job's result.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub worker: String,
    pub lease_token: String,
    /// Result variables, a JSON object: the step's `output` reads them as `result.<name>`
    /// (without `output`, they become process variables). Numbers are read exactly.
    #[schema(value_type = Option<Object>)]
    pub variables: Option<serde_json::Value>,
}

/// A technical failure.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub worker: String,
    pub lease_token: String,
    /// What went wrong (at most 10,000 characters); shown in the history and an incident.
    pub message: String,
    /// Retries left: 0 raises an incident now; absent: the step's `retry` policy decides.
    pub retries_left: Option<u32>,
    /// Run the retry after this many milliseconds; absent: the step's backoff.
    pub retry_in_ms: Option<u64>,
}

/// A business error, caught by the step's `on: - error: CODE`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorRequest {
    pub worker: String,
    pub lease_token: String,
    /// The error code (1 to 100 printable characters).
    #[schema(example = "BAD_LEAD")]
    pub code: String,
    pub message: Option<String>,
    /// Variables set on the step's scope before the error is thrown, a JSON object.
    #[schema(value_type = Option<Object>)]
    pub variables: Option<serde_json::Value>,
}

fn lease(ms: u64) -> Result<Duration, ApiError> {
    let max = MAX_LEASE.as_millis() as u64;
    if !(MIN_LEASE_MS..=max).contains(&ms) {
        return Err(ApiError::bad_request(format!(
            "lease_ms must be from {MIN_LEASE_MS} to {max}"
        )));
    }
    Ok(Duration::from_millis(ms))
}

/// `<instance>_<job>` as in `LockedJobView::id`.
fn job_id(text: &str) -> Result<(Uuid, u64), ApiError> {
    let bad = || ApiError::bad_request("the job id is not `<instance>_<job>` as fetch gave it");
    let (instance, job) = text.rsplit_once('_').ok_or_else(bad)?;
    Ok((
        instance.parse().map_err(|_| bad())?,
        job.parse().map_err(|_| bad())?,
    ))
}

/// Fetch and lock jobs of the given types: up to `max_jobs`, each with its own lease token.
/// With `wait_ms`, waits until jobs appear or the time is over, then answers `[]`.
#[utoipa::path(
    post,
    path = "/api/external-jobs/fetch-and-lock",
    tag = "external workers",
    request_body = FetchRequest,
    responses(
        (status = 200, body = Vec<LockedJobView>),
        (status = 400, description = "Malformed body, bad type, worker, lease or wait", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 403, description = "The role may not take jobs", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn fetch_and_lock(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<FetchRequest>,
) -> Result<axum::Json<Vec<LockedJobView>>, ApiError> {
    caller.require(auth::WORKERS)?;
    let max = request.max_jobs.unwrap_or(1);
    if !(1..=MAX_FETCH).contains(&max) {
        return Err(ApiError::bad_request(format!(
            "max_jobs must be from 1 to {MAX_FETCH}"
        )));
    }
    let lease = lease(request.lease_ms.unwrap_or(DEFAULT_LEASE_MS))?;
    let wait_ms = request.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::bad_request(format!(
            "wait_ms must be from 0 to {MAX_WAIT_MS}"
        )));
    }
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let worker = request.worker;
    let types = request.types;
    loop {
        // Registered before the look, so a job written during it still wakes this request.
        let written = state.engine.external_jobs_written().notified();
        let (w, t) = (worker.clone(), types.clone());
        let jobs = state
            .blocking(move |engine| {
                let now = engine.clock().now();
                Ok(engine.fetch_and_lock(&w, &t, max, lease, now)?)
            })
            .await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if !jobs.is_empty() || left.is_zero() {
            return Ok(axum::Json(
                jobs.into_iter().map(LockedJobView::from).collect(),
            ));
        }
        tokio::select! {
            _ = written => {}
            _ = tokio::time::sleep(left.min(RECHECK)) => {}
            // The server is stopping: answer `[]` now, so that the shutdown does not wait.
            _ = state.config.stopping.stopped() => return Ok(axum::Json(Vec::new())),
        }
    }
}

/// Extend the lease of a job the worker holds.
#[utoipa::path(
    post,
    path = "/api/external-jobs/{id}/extend",
    tag = "external workers",
    params(("id" = String, Path, description = "`<instance>_<job>`, as fetch gave it")),
    request_body = ExtendRequest,
    responses(
        (status = 200, body = ExtendView),
        (status = 400, description = "Malformed body, id or lease", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 403, description = "The role may not take jobs", body = ErrorBody),
        (status = 404, description = "No such external job (job_not_found)", body = ErrorBody),
        (status = 409, description = "lease_expired or lease_not_held", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn extend(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<ExtendRequest>,
) -> Result<axum::Json<ExtendView>, ApiError> {
    caller.require(auth::WORKERS)?;
    let (instance, job) = job_id(&id)?;
    let lease = lease(request.lease_ms)?;
    let lease_expires_at = state
        .blocking(move |engine| {
            Ok(engine.extend_lease(instance, job, &request.worker, &request.lease_token, lease)?)
        })
        .await?;
    Ok(axum::Json(ExtendView { lease_expires_at }))
}

async fn answer(
    state: &AppState,
    id: &str,
    worker: String,
    lease_token: String,
    answer: ExternalAnswer,
) -> Result<StatusCode, ApiError> {
    let (instance, job) = job_id(id)?;
    state
        .blocking(move |engine| {
            Ok(engine.answer_external(instance, job, &worker, &lease_token, answer)?)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Complete a job the worker holds: the instance moves on.
#[utoipa::path(
    post,
    path = "/api/external-jobs/{id}/complete",
    tag = "external workers",
    params(("id" = String, Path, description = "`<instance>_<job>`, as fetch gave it")),
    request_body = CompleteRequest,
    responses(
        (status = 204, description = "Completed"),
        (status = 400, description = "Malformed body or id, inexact numbers", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 403, description = "The role may not take jobs", body = ErrorBody),
        (status = 404, description = "No such external job (job_not_found)", body = ErrorBody),
        (status = 409, description = "lease_expired or lease_not_held", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<CompleteRequest>,
) -> Result<StatusCode, ApiError> {
    caller.require(auth::WORKERS)?;
    let vars = vars_from_json(request.variables, "variables")?;
    let done = ExternalAnswer::Complete(vars);
    answer(&state, &id, request.worker, request.lease_token, done).await
}

/// Fail a job the worker holds: retried while retries are left, else an incident.
#[utoipa::path(
    post,
    path = "/api/external-jobs/{id}/fail",
    tag = "external workers",
    params(("id" = String, Path, description = "`<instance>_<job>`, as fetch gave it")),
    request_body = FailRequest,
    responses(
        (status = 204, description = "Recorded"),
        (status = 400, description = "Malformed body or id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 403, description = "The role may not take jobs", body = ErrorBody),
        (status = 404, description = "No such external job (job_not_found)", body = ErrorBody),
        (status = 409, description = "lease_expired or lease_not_held", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn fail(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<FailRequest>,
) -> Result<StatusCode, ApiError> {
    caller.require(auth::WORKERS)?;
    if request.message.chars().count() > 10_000 {
        return Err(ApiError::bad_request(
            "message is longer than 10,000 characters",
        ));
    }
    let failed = ExternalAnswer::Fail {
        message: request.message,
        retries_left: request.retries_left,
        retry_in: request.retry_in_ms.map(Duration::from_millis),
    };
    answer(&state, &id, request.worker, request.lease_token, failed).await
}

/// Raise a business error for a job the worker holds: the step's `on: - error:` catches it.
#[utoipa::path(
    post,
    path = "/api/external-jobs/{id}/error",
    tag = "external workers",
    params(("id" = String, Path, description = "`<instance>_<job>`, as fetch gave it")),
    request_body = ErrorRequest,
    responses(
        (status = 204, description = "Recorded"),
        (status = 400, description = "Malformed body, id or code", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 403, description = "The role may not take jobs", body = ErrorBody),
        (status = 404, description = "No such external job (job_not_found)", body = ErrorBody),
        (status = 409, description = "lease_expired or lease_not_held", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn raise_error(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<ErrorRequest>,
) -> Result<StatusCode, ApiError> {
    caller.require(auth::WORKERS)?;
    let code = request.code;
    if code.trim().is_empty() || code.chars().count() > 100 || code.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "code must have 1 to 100 printable characters",
        ));
    }
    let message = request.message.unwrap_or_default();
    if message.chars().count() > 10_000 {
        return Err(ApiError::bad_request(
            "message is longer than 10,000 characters",
        ));
    }
    let vars = vars_from_json(request.variables, "variables")?;
    let raised = ExternalAnswer::Error {
        code,
        message,
        vars,
    };
    answer(&state, &id, request.worker, request.lease_token, raised).await
}
