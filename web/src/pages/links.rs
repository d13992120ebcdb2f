//! The pages of e-mail decision links: `GET /links/{token}` shows the decision page with the
//! link's decision fixed and a Confirm button (a GET never decides: mail scanners open
//! links); `POST /links/{token}` takes it.
//!
//! No session: the link is the credential. The form is protected by the sign-in form's
//! double-submit cookie and the Origin check. An unknown or tampered token gets one page that
//! says nothing about why; an expired one says it expired; a used one (or a task decided
//! another way) says who decided what and when. None of them changes anything.

use std::collections::BTreeMap;

use axum::extract::{Form, Path, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use ciclo_engine::Value;
use ciclo_engine::auth::hash_secret;
use ciclo_engine::machine::{FieldError, MachineError};
use ciclo_engine::runtime::{EngineError, LinkOutcome};
use ciclo_engine::store::{LinkRecord, LinkUse};
use ciclo_engine::value::Vars;
use serde_json::{Value as Json, json};

use super::session::{self, CSRF_FIELD, SIGN_IN_CSRF_COOKIE, cookie, same_origin, same_secret};
use super::{PageResult, decision_page, render, see_other, when};
use crate::error::ApiError;
use crate::links::{self, is_token};
use crate::state::AppState;

/// What a link's token leads to, looked up on a blocking thread.
enum Found {
    /// Unknown, tampered, or not the shape of a token.
    Invalid,
    Expired(LinkRecord),
    /// The link, or the task it decides, was used: who decided what, when.
    Decided(LinkRecord, Decided),
    /// Open: the decision page's data and the decision field's name.
    Open(LinkRecord, Box<Json>),
}

/// Who decided a task, for the "already decided" page.
struct Decided {
    decision: Option<String>,
    by: String,
    at: jiff::Timestamp,
}

impl From<&LinkUse> for Decided {
    fn from(used: &LinkUse) -> Decided {
        Decided {
            decision: Some(used.decision.clone()),
            by: used.by.clone(),
            at: used.at,
        }
    }
}

/// A decision as a past participle for "Approved by ...": `approve` -> `approved`.
fn past(decision: &str) -> String {
    let mut word = decision.replace(['-', '_'], " ");
    if word.ends_with('e') {
        word.push('d');
    } else {
        word.push_str("ed");
    }
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => word,
    }
}

/// The actor written to the history for a link's person.
fn actor(link: &LinkRecord) -> String {
    format!("{} (e-mail link)", link.email)
}

/// Who a link's person is, for people: their name and address.
fn person(link: &LinkRecord) -> String {
    match &link.name {
        Some(name) => format!("{name} <{}>", link.email),
        None => link.email.clone(),
    }
}

fn status_page(status: StatusCode, heading: &str, lines: &[String]) -> PageResult {
    let html = render(
        "link_status",
        heading,
        None,
        json!({"heading": heading, "lines": lines}),
    )?;
    Ok((status, html).into_response())
}

fn invalid_page() -> PageResult {
    status_page(
        StatusCode::NOT_FOUND,
        "This link is not valid",
        &["Check that the whole link was copied from the e-mail. Nothing was decided.".into()],
    )
}

fn expired_page(link: &LinkRecord) -> PageResult {
    status_page(
        StatusCode::GONE,
        "This link has expired",
        &[
            format!(
                "It worked until {}. Nothing was decided.",
                when(link.expires_at)
            ),
            "Ask the person who sent the request for a new one, or decide in Ciclo's inbox.".into(),
        ],
    )
}

fn decided_page(link: &LinkRecord, decided: &Decided, status: StatusCode) -> PageResult {
    let by = if decided.by == actor(link) {
        person(link)
    } else {
        decided.by.clone()
    };
    let line = match &decided.decision {
        Some(decision) => format!("{} by {} at {}.", past(decision), by, when(decided.at)),
        None => format!("Decided by {} at {}.", by, when(decided.at)),
    };
    status_page(
        status,
        "This request was already decided",
        &[line, "The link cannot be used again.".into()],
    )
}

/// Looks a token up; for an open one, builds the decision page with `entered` and `errors`.
async fn find(
    state: &AppState,
    token: &str,
    csrf: &str,
    entered: BTreeMap<String, String>,
    errors: Vec<FieldError>,
) -> Result<Found, ApiError> {
    if !is_token(token) {
        return Ok(Found::Invalid);
    }
    let hash = hash_secret(token);
    let action = format!("/links/{token}");
    let csrf = csrf.to_string();
    state
        .blocking(move |engine| {
            let Some(link) = engine.link(&hash)? else {
                return Ok(Found::Invalid);
            };
            if let Some(used) = &link.used {
                let decided = Decided::from(used);
                return Ok(Found::Decided(link, decided));
            }
            let Some(task) = engine.store().task(link.instance, link.task)? else {
                // Decided another way (the inbox, the API): the history says by whom.
                let history = engine.store().history(link.instance)?;
                let done = history
                    .iter()
                    .rev()
                    .find(|h| h.what == "task completed" || h.what == "task-completed");
                let decided = match done {
                    Some(h) => Decided {
                        decision: None,
                        by: h.actor.clone(),
                        at: h.at,
                    },
                    None => Decided {
                        decision: None,
                        by: "someone else".into(),
                        at: link.created_at,
                    },
                };
                return Ok(Found::Decided(link, decided));
            };
            if engine.clock().now() >= link.expires_at {
                return Ok(Found::Expired(link));
            }
            let field = links::user_task(engine, &task)
                .and_then(|u| u.email)
                .map(|e| e.field)
                .ok_or_else(|| ApiError::internal("the link's task has no `email:`"))?;
            let submit = super::Submit {
                action,
                hidden: vec![
                    (CSRF_FIELD.to_string(), csrf),
                    (field.clone(), link.decision.clone()),
                ],
                claim: None,
                button: "Confirm".into(),
                fixed: Some((field, link.decision.clone())),
            };
            let data = decision_page(engine, &task, &submit, &entered, &errors)?;
            Ok(Found::Open(link, Box::new(data)))
        })
        .await
}

/// The double-submit secret of this browser: the cookie's when it has a good one.
fn csrf_of(headers: &HeaderMap) -> Result<String, ApiError> {
    match cookie(headers, SIGN_IN_CSRF_COOKIE) {
        Some(c) if c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(c),
        _ => session::new_secret(),
    }
}

async fn show(
    state: &AppState,
    headers: &HeaderMap,
    token: &str,
    entered: BTreeMap<String, String>,
    errors: Vec<FieldError>,
) -> PageResult {
    let csrf = csrf_of(headers)?;
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    match find(state, token, &csrf, entered, errors).await? {
        Found::Invalid => invalid_page(),
        Found::Expired(link) => expired_page(&link),
        Found::Decided(link, decided) => decided_page(&link, &decided, StatusCode::OK),
        Found::Open(link, data) => {
            let mut data = *data;
            data["link"] = json!({"person": person(&link), "decision": link.decision});
            let title = data["task"]["title"]
                .as_str()
                .unwrap_or("Decision")
                .to_string();
            let html = render("task", &title, None, data)?;
            let mut response = (status, html).into_response();
            response.headers_mut().append(
                SET_COOKIE,
                session::set_cookie(
                    SIGN_IN_CSRF_COOKIE,
                    &csrf,
                    session::secure(state, headers),
                    None,
                ),
            );
            Ok(response)
        }
    }
}

pub async fn link_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> PageResult {
    show(&state, &headers, &token, BTreeMap::new(), Vec::new()).await
}

pub async fn decide(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    let mut posted_csrf = None;
    let mut entered = BTreeMap::new();
    for (name, value) in form {
        if name == CSRF_FIELD {
            posted_csrf = Some(value);
        } else {
            entered.insert(name, value);
        }
    }
    let cookie_csrf = cookie(&headers, SIGN_IN_CSRF_COOKIE).unwrap_or_default();
    if cookie_csrf.is_empty()
        || !posted_csrf.is_some_and(|p| same_secret(&cookie_csrf, &p))
        || !same_origin(&headers)
    {
        return Err(ApiError::forbidden(
            "this form is out of date or did not come from this site: open the link from the e-mail again",
        )
        .into());
    }
    if !is_token(&token) {
        return invalid_page();
    }
    let hash = hash_secret(&token);
    // The link and its decision field, to check the posted decision is the link's own.
    let lookup = hash.clone();
    let found = state
        .blocking(move |engine| {
            let Some(link) = engine.link(&lookup)? else {
                return Ok(None);
            };
            let field = match engine.store().task(link.instance, link.task)? {
                Some(task) => links::user_task(engine, &task)
                    .and_then(|u| u.email)
                    .map(|e| e.field),
                None => None,
            };
            Ok(Some((link, field)))
        })
        .await?;
    let Some((link, field)) = found else {
        return invalid_page();
    };
    if let Some(field) = &field
        && link.used.is_none()
        && entered.get(field) != Some(&link.decision)
    {
        return status_page(
            StatusCode::BAD_REQUEST,
            "This link decides one thing only",
            &[format!(
                "This link can only {}. Nothing was decided.",
                link.decision
            )],
        );
    }
    let values: Vars = entered
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let who = actor(&link);
    let outcome = state
        .blocking(
            move |engine| match engine.complete_task_by_link(&hash, values, &who) {
                Ok(outcome) => Ok(Ok(outcome)),
                Err(EngineError::Refused(MachineError::InvalidForm(fields))) => Ok(Err(fields)),
                Err(other) => Err(ApiError::from(other)),
            },
        )
        .await?;
    match outcome {
        Ok(LinkOutcome::Done(_)) => {
            tracing::info!(instance = %link.instance, task = link.task, decision = %link.decision, "decided through an e-mail link");
            Ok(see_other(&format!("/links/{token}")))
        }
        Ok(LinkOutcome::Unknown) => invalid_page(),
        Ok(LinkOutcome::Expired) => expired_page(&link),
        Ok(LinkOutcome::Used(used)) => {
            decided_page(&link, &Decided::from(&used), StatusCode::CONFLICT)
        }
        Ok(LinkOutcome::TaskClosed) => show(&state, &headers, &token, entered, Vec::new())
            .await
            .map(|mut r| {
                *r.status_mut() = StatusCode::CONFLICT;
                r
            }),
        Err(errors) => show(&state, &headers, &token, entered, errors).await,
    }
}

/// Contexts of the shapes the handlers above give, for the template test.
#[cfg(test)]
pub(super) fn sample_contexts() -> Vec<(&'static str, Json)> {
    vec![(
        "link_status",
        json!({"heading": "This link is not valid", "lines": ["Nothing was decided."]}),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_read_as_past() {
        assert_eq!(past("approve"), "Approved");
        assert_eq!(past("reject"), "Rejected");
    }
}
