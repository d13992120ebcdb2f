//! Tasks: a person's inbox (their own and their groups' tasks; admins and operators see
//! all), claiming, completing with form values, and reassigning.

use axum::extract::State;
use axum::http::StatusCode;
use ciclo_engine::machine::{FieldError, MachineError};
use ciclo_engine::model::{FieldKind, StepKind};
use ciclo_engine::runtime::{Engine, EngineError};
use ciclo_engine::store::TaskRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{self, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::page::{Page, PageQuery, paginate};
use crate::state::AppState;
use crate::views::vars_from_json;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_one))
        .routes(routes!(claim))
        .routes(routes!(complete))
        .routes(routes!(assign))
}

/// An open user task.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    pub instance: Uuid,
    pub task: u64,
    pub definition: String,
    pub step: String,
    pub title: String,
    /// Who holds it; absent: offered to `candidates`.
    pub assignee: Option<String>,
    /// Groups whose members may claim it.
    pub candidates: Vec<String>,
    pub created_at: jiff::Timestamp,
    pub due: Option<jiff::Timestamp>,
    /// The form to fill in (only when one task is read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form: Option<Vec<FormFieldView>>,
}

impl From<TaskRecord> for TaskView {
    fn from(t: TaskRecord) -> TaskView {
        TaskView {
            instance: t.instance,
            task: t.task,
            definition: t.process,
            step: t.step,
            title: t.title,
            assignee: t.assignee,
            candidates: t.candidates,
            created_at: t.created_at,
            due: t.due,
            form: None,
        }
    }
}

/// One field of a task's form.
#[derive(Debug, Serialize, ToSchema)]
pub struct FormFieldView {
    pub name: String,
    /// text, number, boolean, date or choice.
    #[serde(rename = "type")]
    pub kind: String,
    pub required: bool,
    pub label: Option<String>,
    /// Bounds of a number, as decimal text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
    /// The options of a choice.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Form values.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// Field name -> value, a JSON object; checked against the task's form.
    #[schema(value_type = Option<Object>)]
    pub values: Option<serde_json::Value>,
}

/// Whom to give a task to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    /// A user name; `null` or absent: back to the candidate groups.
    pub assignee: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TaskPath {
    instance: Uuid,
    task: u64,
}

/// Whether the caller may act on `task`: admins and operators on every task, others on the
/// tasks assigned to them and the unassigned ones offered to one of their groups.
pub(crate) fn may_act(caller: &Caller, task: &TaskRecord) -> bool {
    if caller.sees_all_tasks() {
        return true;
    }
    match (&task.assignee, &caller.user) {
        (Some(assignee), Some(user)) => assignee == user,
        (Some(_), None) => false,
        (None, _) => task.candidates.iter().any(|c| caller.groups.contains(c)),
    }
}

/// Loads a task the caller may act on: 404 when it is not open, 403 when it is not theirs.
pub(crate) fn task_for(
    engine: &Engine,
    caller: &Caller,
    instance: Uuid,
    task: u64,
) -> Result<TaskRecord, ApiError> {
    let record = engine.store().task(instance, task)?.ok_or_else(|| {
        ApiError::not_found(format!("instance {instance} has no open task {task}"))
    })?;
    if !may_act(caller, &record) {
        return Err(ApiError::forbidden(
            "this task is neither assigned to you nor offered to one of your groups",
        ));
    }
    Ok(record)
}

/// The tasks the caller may work on, oldest first: their own and their groups' (admins and
/// operators: all).
#[utoipa::path(
    get,
    path = "/api/tasks",
    tag = "tasks",
    params(PageQuery),
    responses(
        (status = 200, body = Page<TaskView>),
        (status = 400, description = "Bad cursor or limit", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role has no tasks", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<TaskView>>, ApiError> {
    caller.require(auth::TASKS)?;
    let limit = page.limit(&state.config)?;
    // The cursor is the last task's creation time and id; tasks are listed in that order.
    let after = match &page.cursor {
        None => None,
        Some(c) => Some(
            parse_task_cursor(c)
                .ok_or_else(|| ApiError::bad_request("the cursor is not one this API gave"))?,
        ),
    };
    let items = state
        .blocking(move |engine| {
            let user = caller.user.clone().unwrap_or_default();
            let mut tasks =
                engine.tasks_for(&user, &caller.groups, caller.sees_all_tasks(), usize::MAX)?;
            tasks.sort_by_key(task_key);
            Ok(tasks
                .into_iter()
                .filter(|t| after.as_ref().is_none_or(|a| task_key(t) > *a))
                .take(limit + 1)
                .map(TaskView::from)
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(axum::Json(paginate(items, limit, |t| {
        format!("{}_{}_{}", t.created_at.as_nanosecond(), t.instance, t.task)
    })))
}

fn task_key(t: &TaskRecord) -> (i128, Uuid, u64) {
    (t.created_at.as_nanosecond(), t.instance, t.task)
}

fn parse_task_cursor(text: &str) -> Option<(i128, Uuid, u64)> {
    let mut parts = text.splitn(3, '_');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// One task with its form.
#[utoipa::path(
    get,
    path = "/api/tasks/{instance}/{task}",
    tag = "tasks",
    params(("instance" = Uuid, Path), ("task" = u64, Path)),
    responses(
        (status = 200, body = TaskView),
        (status = 400, description = "Bad instance or task id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not the caller's task, or the role has no tasks", body = ErrorBody),
        (status = 404, description = "No such open task", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<TaskPath>,
) -> Result<axum::Json<TaskView>, ApiError> {
    caller.require(auth::TASKS)?;
    state
        .blocking(move |engine| {
            let record = task_for(engine, &caller, path.instance, path.task)?;
            let form = engine
                .task_step(&record)?
                .map(|(def, step)| match &def.step(step).kind {
                    StepKind::User(user) => user.form.iter().map(field_view).collect(),
                    _ => Vec::new(),
                });
            let mut view = TaskView::from(record);
            view.form = Some(form.unwrap_or_default());
            Ok(axum::Json(view))
        })
        .await
}

pub(crate) fn field_view(field: &ciclo_engine::model::FormField) -> FormFieldView {
    let (kind, min, max, options) = match &field.kind {
        FieldKind::Text => ("text", None, None, vec![]),
        FieldKind::Number { min, max } => (
            "number",
            min.map(|m| m.to_string()),
            max.map(|m| m.to_string()),
            vec![],
        ),
        FieldKind::Boolean => ("boolean", None, None, vec![]),
        FieldKind::Date => ("date", None, None, vec![]),
        FieldKind::Choice(options) => ("choice", None, None, options.clone()),
    };
    FormFieldView {
        name: field.name.clone(),
        kind: kind.into(),
        required: field.required,
        label: field.label.clone(),
        min,
        max,
        options,
    }
}

/// Claim a task for the caller's user. Refused with 409 when someone else holds it.
#[utoipa::path(
    post,
    path = "/api/tasks/{instance}/{task}/claim",
    tag = "tasks",
    params(("instance" = Uuid, Path), ("task" = u64, Path)),
    responses(
        (status = 200, description = "Claimed", body = TaskView),
        (status = 400, description = "Bad ids, or the token acts for no user", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not the caller's task, or the role has no tasks", body = ErrorBody),
        (status = 404, description = "No such open task", body = ErrorBody),
        (status = 409, description = "Someone else holds the task", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<TaskPath>,
) -> Result<axum::Json<TaskView>, ApiError> {
    caller.require(auth::TASKS)?;
    let Some(user) = caller.user.clone() else {
        return Err(ApiError::bad_request(
            "this token acts for no user, so it cannot claim; use assign",
        ));
    };
    state
        .blocking(move |engine| {
            // Held by someone else but offered to one of the caller's groups: a conflict (someone
            // was quicker), not a matter of rights.
            if let Some(record) = engine.store().task(path.instance, path.task)?
                && let Some(holder) = &record.assignee
                && holder != &user
                && record.candidates.iter().any(|c| caller.groups.contains(c))
            {
                return Err(ApiError::conflict(format!(
                    "task {} of instance {} is already claimed by {holder}",
                    path.task, path.instance
                )));
            }
            task_for(engine, &caller, path.instance, path.task)?;
            let record =
                engine.assign_task(path.instance, path.task, Some(&user), &caller.actor(), true)?;
            Ok(axum::Json(TaskView::from(record)))
        })
        .await
}

/// Complete a task with form values. Values that do not fit the form are refused with 422
/// (`invalid_form`, details: `[{field, message}]`).
#[utoipa::path(
    post,
    path = "/api/tasks/{instance}/{task}/complete",
    tag = "tasks",
    params(("instance" = Uuid, Path), ("task" = u64, Path)),
    request_body = CompleteRequest,
    responses(
        (status = 204, description = "Completed"),
        (status = 400, description = "Malformed body or ids", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not the caller's task, or the role has no tasks", body = ErrorBody),
        (status = 404, description = "No such open task", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "The values do not fit the form", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<TaskPath>,
    ApiJson(request): ApiJson<CompleteRequest>,
) -> Result<StatusCode, ApiError> {
    caller.require(auth::TASKS)?;
    let values = vars_from_json(request.values, "values")?;
    state
        .blocking(move |engine| {
            complete_as(engine, &caller, path.instance, path.task, values)?
                .map_err(|fields| EngineError::Refused(MachineError::InvalidForm(fields)).into())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Completes a task the caller may act on with form values, as the API and the pages both do:
/// the outer error is a refusal (no such task, not the caller's), the inner one the fields
/// whose values do not fit the form, for the caller to show next to each field.
pub(crate) fn complete_as(
    engine: &Engine,
    caller: &Caller,
    instance: Uuid,
    task: u64,
    values: ciclo_engine::Vars,
) -> Result<Result<(), Vec<FieldError>>, ApiError> {
    task_for(engine, caller, instance, task)?;
    match engine.complete_task(instance, task, values, &caller.actor()) {
        Ok(()) => Ok(Ok(())),
        Err(EngineError::Refused(MachineError::InvalidForm(fields))) => Ok(Err(fields)),
        Err(other) => Err(other.into()),
    }
}

/// Give a task to a user, or back to its groups.
#[utoipa::path(
    post,
    path = "/api/tasks/{instance}/{task}/assign",
    tag = "tasks",
    params(("instance" = Uuid, Path), ("task" = u64, Path)),
    request_body = AssignRequest,
    responses(
        (status = 200, description = "Reassigned", body = TaskView),
        (status = 400, description = "Malformed body or ids", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not reassign", body = ErrorBody),
        (status = 404, description = "No such open task", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn assign(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<TaskPath>,
    ApiJson(request): ApiJson<AssignRequest>,
) -> Result<axum::Json<TaskView>, ApiError> {
    caller.require(auth::OPERATE)?;
    state
        .blocking(move |engine| {
            if let Some(name) = request.assignee.as_deref()
                && engine.user(name)?.is_none()
            {
                return Err(ApiError::not_found(format!(
                    "no user `{name}`: create the user first (PUT /api/users/{{name}})"
                )));
            }
            let record = engine.assign_task(
                path.instance,
                path.task,
                request.assignee.as_deref(),
                &caller.actor(),
                false,
            )?;
            Ok(axum::Json(TaskView::from(record)))
        })
        .await
}
