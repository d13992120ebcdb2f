//! The cockpit, for admins, operators and analysts: definitions with their diagrams and
//! instance counts, instance search and the instance page (diagram with the current step,
//! variables, timers, history, cancel), incidents with retry, and the next timers to fire.
//!
//! Analysts read only: the cancel and retry buttons are not shown to them and the POSTs
//! refuse them. Every change asks first on a confirmation page (a GET), so nothing needs
//! JavaScript.

use std::collections::BTreeMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use ciclo_engine::expr::display_value;
use ciclo_engine::store::{InstanceFilter, InstanceRecord, InstanceStatus};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use uuid::Uuid;

use super::session::{CSRF_FIELD, Viewer};
use super::{PageResult, render, see_other, when};
use crate::error::ApiError;
use crate::instances;
use crate::state::AppState;

/// Refuses viewers without a cockpit role.
fn require_cockpit(viewer: &Viewer) -> Result<(), ApiError> {
    if viewer.sees_cockpit() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "the cockpit is for admins, operators and analysts",
        ))
    }
}

/// Refuses a change unless the viewer operates and the form is genuine.
fn require_operate(
    viewer: &Viewer,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<(), ApiError> {
    require_cockpit(viewer)?;
    let token = form
        .iter()
        .find(|(name, _)| name == CSRF_FIELD)
        .map(|(_, value)| value.as_str());
    viewer.check_form(headers, token)?;
    if !viewer.operates() {
        return Err(ApiError::forbidden(
            "only admins and operators cancel instances and retry incidents",
        ));
    }
    Ok(())
}

fn state_name(status: InstanceStatus) -> &'static str {
    match status {
        InstanceStatus::Active => "active",
        InstanceStatus::Completed => "completed",
        InstanceStatus::Failed => "failed",
        InstanceStatus::Terminated => "terminated",
        InstanceStatus::Cancelled => "cancelled",
    }
}

fn parse_state(text: &str) -> Option<InstanceStatus> {
    [
        InstanceStatus::Active,
        InstanceStatus::Completed,
        InstanceStatus::Failed,
        InstanceStatus::Terminated,
        InstanceStatus::Cancelled,
    ]
    .into_iter()
    .find(|s| state_name(*s) == text)
}

/// Running, finished (completed, terminated or cancelled) and failed instances.
fn counts<'a>(instances: impl Iterator<Item = &'a InstanceRecord>) -> Json {
    let (mut running, mut finished, mut failed) = (0, 0, 0);
    for i in instances {
        match i.status {
            InstanceStatus::Active => running += 1,
            InstanceStatus::Failed => failed += 1,
            _ => finished += 1,
        }
    }
    json!({"running": running, "finished": finished, "failed": failed})
}

fn instance_row(i: &InstanceRecord) -> Json {
    json!({
        "url": format!("/cockpit/instances/{}", i.id),
        "id": i.id.to_string(),
        "definition": i.process,
        "version": i.version,
        "business_key": i.business_key,
        "state": state_name(i.status),
        "started": when(i.started_at),
    })
}

pub async fn home() -> Redirect {
    Redirect::to("/cockpit/definitions")
}

pub async fn definitions(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    require_cockpit(&viewer)?;
    let rows = state
        .blocking(|engine| {
            let all = engine.store().instances(&InstanceFilter::default())?;
            Ok(engine
                .processes()
                .into_iter()
                .map(|(id, latest)| {
                    let name = engine.definition(&id).and_then(|(_, def)| def.name.clone());
                    json!({
                        "url": format!("/cockpit/definitions/{id}"),
                        "id": id,
                        "name": name,
                        "latest": latest,
                        "counts": counts(all.iter().filter(|i| i.process == id)),
                    })
                })
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(render(
        "definitions",
        "Definitions",
        Some(&viewer),
        json!({ "definitions": rows }),
    )?
    .into_response())
}

pub async fn definition(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> PageResult {
    require_cockpit(&viewer)?;
    let data = state
        .blocking(move |engine| {
            let mut versions: Vec<_> = engine
                .store()
                .definitions()?
                .into_iter()
                .filter(|d| d.process == id)
                .collect();
            if versions.is_empty() {
                return Err(ApiError::not_found(format!("no process {id:?}")));
            }
            versions.sort_by_key(|d| std::cmp::Reverse(d.version));
            let instances = engine.store().instances(&InstanceFilter {
                process: Some(id.clone()),
                ..Default::default()
            })?;
            let name = engine.definition(&id).and_then(|(_, def)| def.name.clone());
            let versions: Vec<Json> = versions
                .iter()
                .map(|d| {
                    let svg = engine
                        .definition_version(&id, d.version)
                        .map(|def| ciclo_engine::diagram::svg(&def, None))
                        .unwrap_or_default();
                    json!({
                        "version": d.version,
                        "file": d.file,
                        "deployed": when(d.deployed_at),
                        "svg": svg,
                        "counts": counts(instances.iter().filter(|i| i.version == d.version)),
                        "instances_url": format!("/cockpit/instances?definition={id}"),
                    })
                })
                .collect();
            Ok(json!({"id": id, "name": name, "versions": versions}))
        })
        .await?;
    let title = format!("Definition {}", data["id"].as_str().unwrap_or(""));
    Ok(render("definition", &title, Some(&viewer), data)?.into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    definition: Option<String>,
    business_key: Option<String>,
    state: Option<String>,
}

pub async fn instances(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<SearchQuery>,
) -> PageResult {
    require_cockpit(&viewer)?;
    let nonempty = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let definition = nonempty(query.definition);
    let business_key = nonempty(query.business_key);
    let wanted_state = nonempty(query.state);
    let status = wanted_state.as_deref().and_then(parse_state);
    let filter = InstanceFilter {
        process: definition.clone(),
        status,
        business_key: business_key.clone(),
        after: None,
        limit: 0,
    };
    let (rows, processes) = state
        .blocking(move |engine| {
            let mut found = engine.store().instances(&filter)?;
            // Newest first; ids are time-ordered.
            found.reverse();
            found.truncate(200);
            let rows: Vec<Json> = found.iter().map(instance_row).collect();
            let processes: Vec<String> = engine.processes().into_iter().map(|(id, _)| id).collect();
            Ok((rows, processes))
        })
        .await?;
    let selected = definition.clone().unwrap_or_default();
    let options: Vec<Json> = processes
        .iter()
        .map(|p| json!({"value": p, "selected": *p == selected}))
        .collect();
    let chosen_state = wanted_state.unwrap_or_default();
    let states: Vec<Json> = ["active", "completed", "failed", "terminated", "cancelled"]
        .iter()
        .map(|s| json!({"value": s, "selected": *s == chosen_state}))
        .collect();
    Ok(render(
        "instances",
        "Instances",
        Some(&viewer),
        json!({
            "instances": rows,
            "definitions": options,
            "states": states,
            "business_key": business_key.unwrap_or_default(),
        }),
    )?
    .into_response())
}

pub async fn instance(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<Uuid>,
) -> PageResult {
    require_cockpit(&viewer)?;
    let data = state
        .blocking(move |engine| {
            let detail = instances::detail(engine, id)?;
            let svg = instances::highlighted_svg(engine, id)?;
            let store = engine.store();
            let history = store.history(id)?;
            let done: Vec<String> = {
                let mut seen = Vec::new();
                for h in &history {
                    if let Some(step) = &h.step
                        && !seen.contains(step)
                        && !detail.position.iter().any(|p| &p.step == step)
                    {
                        seen.push(step.clone());
                    }
                }
                seen
            };
            let history: Vec<Json> = history
                .iter()
                .map(|h| {
                    json!({"at": when(h.at), "actor": h.actor, "what": h.what,
                           "step": h.step, "detail": h.detail})
                })
                .collect();
            let timers: Vec<Json> = store
                .timers_of(id)?
                .iter()
                .map(|t| json!({"due": when(t.due), "label": t.label}))
                .collect();
            let incidents: Vec<Json> = store
                .incidents_of(id)?
                .iter()
                .map(|i| {
                    json!({"step": i.step, "error": i.error, "created": when(i.created_at),
                           "retry_url": format!("/cockpit/incidents/{}/{}/retry", i.instance, i.incident)})
                })
                .collect();
            let variables: Vec<Json> = match engine.instance(id)? {
                Some((_, st)) => st
                    .vars
                    .iter()
                    .map(|(name, value)| json!({"name": name, "value": display_value(value)}))
                    .collect(),
                None => Vec::new(),
            };
            let position: Vec<Json> = detail
                .position
                .iter()
                .map(|p| json!({"step": p.step, "label": p.label, "waits_for": p.waits_for.kind}))
                .collect();
            let active = matches!(detail.state, crate::views::StateName::Active);
            Ok(json!({
                "id": id.to_string(),
                "definition": detail.definition,
                "definition_url": format!("/cockpit/definitions/{}", detail.definition),
                "version": detail.version,
                "business_key": detail.business_key,
                "state": serde_json::to_value(detail.state).unwrap_or_default(),
                "started": when(detail.started_at),
                "ended": detail.ended_at.map(when),
                "failure": detail.failure,
                "svg": svg,
                "position": position,
                "done": done,
                "variables": variables,
                "timers": timers,
                "incidents": incidents,
                "history": history,
                "cancel_url": active.then(|| format!("/cockpit/instances/{id}/cancel")),
            }))
        })
        .await?;
    Ok(render(
        "instance",
        &format!("Instance {}", data["business_key"].as_str().unwrap_or("")),
        Some(&viewer),
        data,
    )?
    .into_response())
}

fn confirm_page(
    viewer: &Viewer,
    title: &str,
    question: String,
    action: String,
    button: &str,
    back: String,
) -> PageResult {
    Ok(render(
        "confirm",
        title,
        Some(viewer),
        json!({"question": question, "action": action, "button": button, "back": back}),
    )?
    .into_response())
}

pub async fn cancel_confirm(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<Uuid>,
) -> PageResult {
    require_cockpit(&viewer)?;
    if !viewer.operates() {
        return Err(ApiError::forbidden("only admins and operators cancel instances").into());
    }
    let record = state
        .blocking(move |engine| {
            engine
                .store()
                .instance(id)?
                .ok_or_else(|| ApiError::not_found(format!("no instance {id}")))
        })
        .await?;
    confirm_page(
        &viewer,
        "Cancel instance",
        format!(
            "Cancel instance {} of {} (business key {})? Its open tasks, timers and jobs end.",
            id,
            record.process,
            record.business_key.as_deref().unwrap_or("none")
        ),
        format!("/cockpit/instances/{id}/cancel"),
        "Cancel the instance",
        format!("/cockpit/instances/{id}"),
    )
}

pub async fn cancel(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    require_operate(&viewer, &headers, &form)?;
    let actor = viewer.caller.actor();
    state
        .blocking(move |engine| Ok(engine.cancel(id, &actor)?))
        .await?;
    Ok(see_other(&format!("/cockpit/instances/{id}")))
}

pub async fn incidents(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    require_cockpit(&viewer)?;
    let rows = state
        .blocking(|engine| {
            let store = engine.store();
            let mut rows = Vec::new();
            for i in store.incidents()? {
                let business_key = store.instance(i.instance)?.and_then(|r| r.business_key);
                rows.push(json!({
                    "instance": i.instance.to_string(),
                    "instance_url": format!("/cockpit/instances/{}", i.instance),
                    "business_key": business_key,
                    "step": i.step,
                    "error": i.error,
                    "created": when(i.created_at),
                    "retry_url": format!("/cockpit/incidents/{}/{}/retry", i.instance, i.incident),
                }));
            }
            Ok(rows)
        })
        .await?;
    Ok(render(
        "incidents",
        "Incidents",
        Some(&viewer),
        json!({ "incidents": rows }),
    )?
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct IncidentPath {
    instance: Uuid,
    incident: u64,
}

pub async fn retry_confirm(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(path): Path<IncidentPath>,
) -> PageResult {
    require_cockpit(&viewer)?;
    if !viewer.operates() {
        return Err(ApiError::forbidden("only admins and operators retry incidents").into());
    }
    let (instance, number) = (path.instance, path.incident);
    let incident = state
        .blocking(move |engine| {
            engine
                .store()
                .incidents_of(instance)?
                .into_iter()
                .find(|i| i.incident == number)
                .ok_or_else(|| {
                    ApiError::not_found(format!("instance {instance} has no incident {number}"))
                })
        })
        .await?;
    confirm_page(
        &viewer,
        "Retry incident",
        format!(
            "Retry incident {} of instance {} at step {}? Error: {}",
            number, instance, incident.step, incident.error
        ),
        format!("/cockpit/incidents/{instance}/{number}/retry"),
        "Retry",
        "/cockpit/incidents".into(),
    )
}

pub async fn retry(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(path): Path<IncidentPath>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    require_operate(&viewer, &headers, &form)?;
    let actor = viewer.caller.actor();
    state
        .blocking(move |engine| Ok(engine.retry_incident(path.instance, path.incident, &actor)?))
        .await?;
    Ok(see_other("/cockpit/incidents"))
}

pub async fn timers(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    require_cockpit(&viewer)?;
    let rows = state
        .blocking(|engine| {
            let store = engine.store();
            let mut keys: BTreeMap<Uuid, Option<String>> = BTreeMap::new();
            let mut rows = Vec::new();
            for t in store.due_timers(jiff::Timestamp::MAX, 100)? {
                let start_timer = t.instance == Uuid::nil();
                let key = match keys.get(&t.instance) {
                    Some(k) => k.clone(),
                    None => {
                        let k = store.instance(t.instance)?.and_then(|r| r.business_key);
                        keys.insert(t.instance, k.clone());
                        k
                    }
                };
                rows.push(json!({
                    "due": when(t.due),
                    "label": t.label,
                    "instance": if start_timer { None } else { Some(t.instance.to_string()) },
                    "instance_url": format!("/cockpit/instances/{}", t.instance),
                    "business_key": key,
                }));
            }
            Ok(rows)
        })
        .await?;
    Ok(render("timers", "Timers", Some(&viewer), json!({ "timers": rows }))?.into_response())
}

/// Contexts of the shapes the handlers above give, for the template test.
#[cfg(test)]
pub(super) fn sample_contexts() -> Vec<(&'static str, Json)> {
    let counts = json!({"running": 1, "finished": 2, "failed": 0});
    let row = json!({"url": "/cockpit/instances/x", "id": "x", "definition": "quote", "version": 1,
        "business_key": "Q-1", "state": "active", "started": "s"});
    vec![
        (
            "definitions",
            json!({"definitions": [{"url": "/cockpit/definitions/quote", "id": "quote", "name": "Quote",
                "latest": 2, "counts": counts}]}),
        ),
        (
            "definition",
            json!({"id": "quote", "name": null, "versions": [{"version": 1, "file": "q.yaml",
                "deployed": "d", "svg": "<svg></svg>", "counts": counts, "instances_url": "/cockpit/instances"}]}),
        ),
        (
            "instances",
            json!({"instances": [row], "definitions": [{"value": "quote", "selected": true}],
                "states": [{"value": "active", "selected": false}], "business_key": ""}),
        ),
        (
            "instance",
            json!({"id": "x", "definition": "quote", "definition_url": "/cockpit/definitions/quote",
                "version": 1, "business_key": "Q-1", "state": "active", "started": "s", "ended": null,
                "failure": null, "svg": "<svg></svg>",
                "position": [{"step": "a", "label": null, "waits_for": "task"}],
                "done": ["start"], "variables": [{"name": "v", "value": "1"}],
                "timers": [{"due": "d", "label": "reminder"}],
                "incidents": [{"step": "a", "error": "e", "created": "c", "retry_url": "/r"}],
                "history": [{"at": "a", "actor": "anna", "what": "started", "step": null, "detail": ""}],
                "cancel_url": "/cockpit/instances/x/cancel"}),
        ),
        (
            "incidents",
            json!({"incidents": [{"instance": "x", "instance_url": "/i", "business_key": null, "step": "a",
                "error": "e", "created": "c", "retry_url": "/r"}]}),
        ),
        (
            "timers",
            json!({"timers": [{"due": "d", "label": "l", "instance": "x", "instance_url": "/i", "business_key": "k"}]}),
        ),
        (
            "confirm",
            json!({"question": "Retry?", "action": "/r", "button": "Retry", "back": "/cockpit/incidents"}),
        ),
    ]
}
