//! Sign-in and sign-out, the inbox (my tasks and my groups' tasks) and the decision page of a
//! task, with its claim and complete forms.
//!
//! The decision page is rendered by `decision_page` from a task and a `Submit` (where the
//! form goes and which hidden fields it carries), so another way in than a session (a link
//! sent by e-mail) can show the same page and take the same form.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::extract::{Form, Path, Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use ciclo_engine::Value;
use ciclo_engine::auth::hash_secret;
use ciclo_engine::expr::Context;
use ciclo_engine::machine::FieldError;
use ciclo_engine::model::{FieldKind, StepKind};
use ciclo_engine::runtime::Engine;
use ciclo_engine::store::{SessionRecord, TaskRecord};
use ciclo_engine::value::Vars;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use uuid::Uuid;

use super::session::{
    self, CSRF_FIELD, LOCK_WINDOW, SESSION_COOKIE, SIGN_IN_CSRF_COOKIE, Viewer, cookie,
    same_origin, same_secret, set_cookie,
};
use super::{PageResult, render, see_other, show, when};
use crate::error::ApiError;
use crate::state::AppState;
use crate::tasks;

/// Where a decision page's forms go.
#[derive(Clone, Debug)]
pub struct Submit {
    /// The URL the form posts to.
    pub action: String,
    /// Hidden fields every form carries (a CSRF token, or a link token).
    pub hidden: Vec<(String, String)>,
    /// Where the claim form posts to, when the task can be claimed this way.
    pub claim: Option<String>,
    /// The submit button's text (`Complete`, `Confirm`).
    pub button: String,
    /// A field whose value is fixed (an e-mail link decides one option): shown as text and
    /// carried in `hidden`, not as radio buttons.
    pub fixed: Option<(String, String)>,
}

/// The data of the decision page (template `task`) of an open task: what is decided (the
/// summary and `show:` of the user task, evaluated on the instance's variables), and the form
/// with the values entered so far and each field's error.
pub fn decision_page(
    engine: &Engine,
    task: &TaskRecord,
    submit: &Submit,
    entered: &BTreeMap<String, String>,
    errors: &[FieldError],
) -> Result<Json, ApiError> {
    let (record, state) = engine
        .instance(task.instance)?
        .ok_or_else(|| ApiError::not_found(format!("no instance {}", task.instance)))?;
    let step = engine.task_step(task)?;
    let user_task = step
        .as_ref()
        .and_then(|(def, id)| match &def.step(*id).kind {
            StepKind::User(user) => Some(user.clone()),
            _ => None,
        });
    let ctx = Context {
        now: engine.clock().now(),
        zone: step
            .as_ref()
            .map(|(def, _)| def.zone.clone())
            .unwrap_or(jiff::tz::TimeZone::UTC),
    };
    let (summary, shown) = match &user_task {
        Some(user) => show::evaluate(user, &state.vars, &ctx),
        None => (None, Vec::new()),
    };
    let form = user_task.map(|u| u.form).unwrap_or_default();
    let fields: Vec<Json> = form
        .iter()
        .map(|field| {
            let view = tasks::field_view(field);
            let fixed = submit
                .fixed
                .as_ref()
                .filter(|(name, _)| *name == field.name)
                .map(|(_, value)| value.clone());
            let value = fixed
                .clone()
                .or_else(|| entered.get(&field.name).cloned())
                .unwrap_or_default();
            let error = errors
                .iter()
                .find(|e| e.field == field.name)
                .map(|e| e.message.clone());
            let options: Vec<Json> = match &field.kind {
                FieldKind::Choice(options) => options
                    .iter()
                    .map(|o| json!({"value": o, "checked": *o == value}))
                    .collect(),
                FieldKind::Boolean => ["true", "false"]
                    .iter()
                    .map(|o| {
                        json!({"value": o, "label": if *o == "true" { "Yes" } else { "No" }, "checked": *o == value})
                    })
                    .collect(),
                _ => Vec::new(),
            };
            json!({
                "name": field.name,
                "id": format!("field-{}", field.name),
                "label": field.label.clone().unwrap_or_else(|| field.name.clone()),
                "required": field.required,
                "value": value,
                "error": error,
                "min": view.min,
                "max": view.max,
                "is_fixed": fixed.is_some(),
                "is_choice": fixed.is_none() && matches!(field.kind, FieldKind::Choice(_)),
                "is_boolean": matches!(field.kind, FieldKind::Boolean),
                "is_number": matches!(field.kind, FieldKind::Number { .. }),
                "is_date": matches!(field.kind, FieldKind::Date),
                "is_text": matches!(field.kind, FieldKind::Text),
                "options": options,
            })
        })
        .collect();
    // Errors about no field of the form (a stale page) are shown above it.
    let other_errors: Vec<String> = errors
        .iter()
        .filter(|e| !form.iter().any(|f| f.name == e.field))
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    let now = engine.clock().now();
    let hidden: Vec<Json> = submit
        .hidden
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    Ok(json!({
        "task": {
            "title": task.title,
            "definition": task.process,
            "step": task.step,
            "instance": task.instance.to_string(),
            "business_key": record.business_key,
            "created": when(task.created_at),
            "due": task.due.map(when),
            "overdue": task.due.is_some_and(|d| d < now),
            "assignee": task.assignee,
            "candidates": task.candidates.join(", "),
        },
        "summary": summary,
        "shown": shown,
        "fields": fields,
        "has_errors": !errors.is_empty(),
        "other_errors": other_errors,
        "submit": { "action": submit.action, "hidden": hidden, "button": submit.button },
        "claim": submit.claim.as_ref().map(|action| json!({ "action": action, "hidden": hidden })),
    }))
}

#[derive(Debug, Deserialize)]
pub struct TaskPath {
    instance: Uuid,
    task: u64,
}

fn task_url(instance: Uuid, task: u64) -> String {
    format!("/tasks/{instance}/{task}")
}

/// Form fields as posted, without the CSRF field.
fn fields_of(form: &[(String, String)]) -> (Option<String>, BTreeMap<String, String>) {
    let mut token = None;
    let mut fields = BTreeMap::new();
    for (name, value) in form {
        if name == CSRF_FIELD {
            token = Some(value.clone());
        } else {
            fields.insert(name.clone(), value.clone());
        }
    }
    (token, fields)
}

/// A session's submit target for a task.
fn session_submit(viewer: &Viewer, task: &TaskRecord) -> Submit {
    Submit {
        action: format!("{}/complete", task_url(task.instance, task.task)),
        hidden: vec![(CSRF_FIELD.to_string(), viewer.session.csrf.clone())],
        claim: (task.assignee.is_none())
            .then(|| format!("{}/claim", task_url(task.instance, task.task))),
        button: "Complete".into(),
        fixed: None,
    }
}

// ----- sign-in -------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "_csrf")]
    csrf: String,
}

fn sign_in_page(
    csrf: &str,
    name: &str,
    error: Option<&str>,
    status: StatusCode,
    secure: bool,
) -> PageResult {
    let html = render(
        "sign_in",
        "Sign in",
        None,
        json!({"csrf": csrf, "name": name, "error": error}),
    )?;
    let mut response = (status, html).into_response();
    response.headers_mut().append(
        SET_COOKIE,
        set_cookie(SIGN_IN_CSRF_COOKIE, csrf, secure, None),
    );
    Ok(response)
}

pub async fn sign_in_form(State(state): State<AppState>, headers: HeaderMap) -> PageResult {
    let csrf = match cookie(&headers, SIGN_IN_CSRF_COOKIE) {
        Some(c) if c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()) => c,
        _ => session::new_secret()?,
    };
    sign_in_page(
        &csrf,
        "",
        None,
        StatusCode::OK,
        session::secure(&state, &headers),
    )
}

/// A hash to check passwords of unknown names against, so an unknown name takes as long to
/// refuse as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| session::hash_password("no one has this password").unwrap_or_default())
}

pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> PageResult {
    let secure = session::secure(&state, &headers);
    let cookie_csrf = cookie(&headers, SIGN_IN_CSRF_COOKIE).unwrap_or_default();
    if cookie_csrf.is_empty() || !same_secret(&cookie_csrf, &form.csrf) || !same_origin(&headers) {
        return Err(ApiError::forbidden(
            "the sign-in form is out of date or did not come from this site: reload the page and try again",
        )
        .into());
    }
    let name = form.name.trim().to_string();
    let now = state.engine.clock().now();
    if state.lockout.locked(&name, now) {
        let message = format!(
            "This account is locked after repeated failed sign-ins; try again in {} minutes.",
            LOCK_WINDOW.as_mins()
        );
        return sign_in_page(
            &cookie_csrf,
            &name,
            Some(&message),
            StatusCode::TOO_MANY_REQUESTS,
            secure,
        );
    }
    let password = form.password;
    let lookup = name.clone();
    let user = state
        .blocking(move |engine| {
            let user = engine.user(&lookup)?;
            let hash = user.as_ref().and_then(|u| u.password_hash.clone());
            let matches = session::verify_password(
                &password,
                hash.as_deref().unwrap_or_else(|| decoy_hash()),
            );
            Ok(user.filter(|_| matches && hash.is_some()))
        })
        .await?;
    let Some(user) = user else {
        state.lockout.failed(&name, now);
        tracing::info!(user = %name.escape_debug(), "failed sign-in");
        return sign_in_page(
            &cookie_csrf,
            &name,
            Some("Wrong name or password."),
            StatusCode::UNAUTHORIZED,
            secure,
        );
    };
    state.lockout.succeeded(&name);
    let id = session::new_secret()?;
    let record = SessionRecord {
        hash: hash_secret(&id),
        user: user.name.clone(),
        csrf: session::new_secret()?,
        created_at: now,
        last_seen: now,
    };
    state
        .blocking(move |engine| Ok(engine.put_session(record)?))
        .await?;
    tracing::info!(user = %user.name, "signed in");
    let mut response = see_other("/");
    let headers = response.headers_mut();
    headers.append(SET_COOKIE, set_cookie(SESSION_COOKIE, &id, secure, None));
    headers.append(
        SET_COOKIE,
        set_cookie(SIGN_IN_CSRF_COOKIE, "", secure, Some(0)),
    );
    Ok(response)
}

pub async fn sign_out(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let (token, _) = fields_of(&form);
    viewer.check_form(&headers, token.as_deref())?;
    let hash = viewer.session.hash.clone();
    state
        .blocking(move |engine| {
            let stale = engine.clock().now() - session::ABSOLUTE;
            Ok(engine.delete_session(&hash, stale)?)
        })
        .await?;
    let mut response = see_other("/sign-in");
    response.headers_mut().append(
        SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            "",
            session::secure(&state, &headers),
            Some(0),
        ),
    );
    Ok(response)
}

// ----- inbox and tasks -------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct InboxQuery {
    done: Option<String>,
}

pub async fn inbox(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<InboxQuery>,
) -> PageResult {
    let caller = viewer.caller.clone();
    let user = viewer.name.clone();
    let rows = state
        .blocking(move |engine| {
            let now = engine.clock().now();
            let tasks = engine.tasks_for(&user, &caller.groups, false, 500)?;
            Ok(tasks
                .into_iter()
                .map(|t| {
                    json!({
                        "url": task_url(t.instance, t.task),
                        "title": t.title,
                        "definition": t.process,
                        "created": when(t.created_at),
                        "due": t.due.map(when),
                        "overdue": t.due.is_some_and(|d| d < now),
                        "mine": t.assignee.as_deref() == Some(user.as_str()),
                        "groups": t.candidates.join(", "),
                    })
                })
                .collect::<Vec<_>>())
        })
        .await?;
    let flash = query.done.is_some().then_some("The task was completed.");
    Ok(render(
        "inbox",
        "Inbox",
        Some(&viewer),
        json!({"tasks": rows, "flash": flash}),
    )?
    .into_response())
}

/// The task page as a session sees it; 404 when the task is not open, 403 when it is not the
/// viewer's.
async fn session_task_page(
    state: &AppState,
    viewer: &Viewer,
    path: TaskPath,
    entered: BTreeMap<String, String>,
    errors: Vec<FieldError>,
) -> PageResult {
    let caller = viewer.caller.clone();
    let v = viewer.clone();
    let data = state
        .blocking(move |engine| {
            let record = tasks::task_for(engine, &caller, path.instance, path.task)?;
            let submit = session_submit(&v, &record);
            decision_page(engine, &record, &submit, &entered, &errors)
        })
        .await?;
    let title = data["task"]["title"].as_str().unwrap_or("Task").to_string();
    let status = if data["has_errors"] == true {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, render("task", &title, Some(viewer), data)?).into_response())
}

pub async fn task_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(path): Path<TaskPath>,
) -> PageResult {
    session_task_page(&state, &viewer, path, BTreeMap::new(), Vec::new()).await
}

pub async fn claim(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(path): Path<TaskPath>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let (token, _) = fields_of(&form);
    viewer.check_form(&headers, token.as_deref())?;
    let caller = viewer.caller.clone();
    let user = viewer.name.clone();
    let (instance, task) = (path.instance, path.task);
    state
        .blocking(move |engine| {
            tasks::task_for(engine, &caller, instance, task)?;
            engine.assign_task(instance, task, Some(&user), &caller.actor(), true)?;
            Ok(())
        })
        .await?;
    Ok(see_other(&task_url(instance, task)))
}

pub async fn complete(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(path): Path<TaskPath>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let (token, entered) = fields_of(&form);
    viewer.check_form(&headers, token.as_deref())?;
    let values: Vars = entered
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let caller = viewer.caller.clone();
    let (instance, task) = (path.instance, path.task);
    let outcome = state
        .blocking(move |engine| tasks::complete_as(engine, &caller, instance, task, values))
        .await?;
    match outcome {
        Ok(()) => Ok(see_other("/?done=1")),
        Err(errors) => session_task_page(&state, &viewer, path, entered, errors).await,
    }
}

/// Contexts of the shapes the handlers above give, for the template test.
#[cfg(test)]
pub(super) fn sample_contexts() -> Vec<(&'static str, Json)> {
    let field = json!({"name": "decision", "id": "field-decision", "label": "Decision", "required": true,
        "value": "", "error": "is required", "min": null, "max": null, "is_fixed": false, "is_choice": true,
        "is_boolean": false, "is_number": false, "is_date": false, "is_text": false,
        "options": [{"value": "approve", "checked": false}]});
    let number = json!({"name": "discount", "id": "field-discount", "label": "discount", "required": false,
        "value": "2", "error": null, "min": "0", "max": "0.5", "is_fixed": false, "is_choice": false,
        "is_boolean": false, "is_number": true, "is_date": false, "is_text": false, "options": []});
    let boolean = json!({"name": "ok", "id": "field-ok", "label": "ok", "required": true,
        "value": "", "error": null, "min": null, "max": null, "is_fixed": true, "is_choice": false,
        "is_boolean": true, "is_number": false, "is_date": false, "is_text": false,
        "options": [{"value": "true", "label": "Yes", "checked": false}]});
    let text = json!({"name": "note", "id": "field-note", "label": "note", "required": false,
        "value": "", "error": null, "min": null, "max": null, "is_fixed": false, "is_choice": false,
        "is_boolean": false, "is_number": false, "is_date": true, "is_text": true, "options": []});
    let hidden = json!([{"name": "_csrf", "value": "c"}]);
    vec![
        (
            "sign_in",
            json!({"csrf": "c", "name": "anna", "error": "Wrong name or password."}),
        ),
        (
            "inbox",
            json!({"flash": "done", "tasks": [{"url": "/tasks/x/1", "title": "Approve", "definition": "quote",
                "created": "2026-01-01 10:00 UTC", "due": "2026-01-02 10:00 UTC", "overdue": true,
                "mine": false, "groups": "sales"}]}),
        ),
        (
            "task",
            json!({
                "task": {"title": "Approve", "definition": "quote", "step": "manager", "instance": "x",
                    "business_key": "Q-1", "created": "c", "due": "d", "overdue": true, "assignee": null,
                    "candidates": "sales"},
                "summary": "Quote 1",
                "shown": [{"label": "Total", "value": "1.00", "table": null},
                          {"label": "Lines", "value": null, "table": {"headings": ["A"], "rows": [["1"]]}}],
                "fields": [field, number, boolean, text],
                "has_errors": true,
                "other_errors": ["x: is not a field"],
                "submit": {"action": "/tasks/x/1/complete", "hidden": hidden, "button": "Complete"},
                "claim": {"action": "/tasks/x/1/claim", "hidden": hidden},
            }),
        ),
        ("error", json!({"status": 404, "message": "no such task"})),
    ]
}
