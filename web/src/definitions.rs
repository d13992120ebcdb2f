//! Definitions: deploy a process file, list processes, read one with all its versions, draw
//! its diagram.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery, Body, parse_json};
use crate::page::{Page, PageQuery, paginate};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(deploy, list))
        .routes(routes!(get_one))
        .routes(routes!(diagram))
}

/// A file to deploy, as JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The file name, used in problem locations (`order.yaml:3:7`).
    #[schema(example = "order.yaml")]
    pub file: String,
    /// The YAML text.
    pub source: String,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeployQuery {
    /// The file name when the body is YAML (default `definition.yaml`).
    pub file: Option<String>,
}

/// One process deployed by a file.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeployedView {
    pub process: String,
    pub version: u32,
    /// True when the text was already the latest version: nothing new was stored.
    pub unchanged: bool,
}

/// A deployed process.
#[derive(Debug, Serialize, ToSchema)]
pub struct DefinitionSummary {
    pub id: String,
    pub name: Option<String>,
    pub latest_version: u32,
}

/// A deployed process with every version.
#[derive(Debug, Serialize, ToSchema)]
pub struct DefinitionDetail {
    pub id: String,
    pub name: Option<String>,
    pub latest_version: u32,
    /// Oldest first.
    pub versions: Vec<VersionView>,
}

/// One deployed version.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub version: u32,
    pub file: String,
    pub deployed_at: jiff::Timestamp,
    /// The YAML as deployed.
    pub source: String,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// The version to draw (default: the latest).
    pub version: Option<u32>,
}

/// Whether a content type names YAML.
fn is_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| {
            matches!(
                v.as_str(),
                "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
            )
        })
}

/// Deploy a process file (or a file of decision tables).
///
/// The body is either the YAML itself (`Content-Type: application/yaml`, file name in
/// `?file=`) or JSON `{file, source}`. A file with problems is refused with 422 and the
/// problems, each with its `FILE:LINE:COLUMN`. Deploying the latest version's text again
/// changes nothing (200, `unchanged`).
#[utoipa::path(
    post,
    path = "/api/definitions",
    tag = "definitions",
    params(DeployQuery),
    request_body(content(
        (DeployRequest = "application/json"),
        (String = "application/yaml")
    )),
    responses(
        (status = 201, description = "New versions stored", body = Vec<DeployedView>),
        (status = 200, description = "The same text was already deployed", body = Vec<DeployedView>),
        (status = 400, description = "The body is not JSON or not UTF-8", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not deploy", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "The file has problems (`invalid_definition`, details: the problems)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn deploy(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<DeployQuery>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(auth::DEPLOY)?;
    let request = if is_yaml(&headers) {
        DeployRequest {
            file: query.file.unwrap_or_else(|| "definition.yaml".into()),
            source: String::from_utf8(body.to_vec())
                .map_err(|_| ApiError::bad_request("the YAML body is not UTF-8"))?,
        }
    } else {
        parse_json(&body)?
    };
    if request.file.trim().is_empty() {
        return Err(ApiError::bad_request("file must not be empty"));
    }
    let deployed = state
        .blocking(move |engine| Ok(engine.deploy(&request.file, &request.source)?))
        .await?;
    let status = if deployed.iter().all(|d| d.unchanged) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let views: Vec<DeployedView> = deployed
        .into_iter()
        .map(|d| DeployedView {
            process: d.process,
            version: d.version,
            unchanged: d.unchanged,
        })
        .collect();
    Ok((status, axum::Json(views)))
}

/// List deployed processes, by id.
#[utoipa::path(
    get,
    path = "/api/definitions",
    tag = "definitions",
    params(PageQuery),
    responses(
        (status = 200, body = Page<DefinitionSummary>),
        (status = 400, description = "Bad cursor or limit", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not read definitions", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<DefinitionSummary>>, ApiError> {
    caller.require(auth::READ_DEFINITIONS)?;
    let limit = page.limit(&state.config)?;
    let items: Vec<DefinitionSummary> = state
        .engine
        .processes()
        .into_iter()
        .filter(|(id, _)| page.cursor.as_ref().is_none_or(|c| id > c))
        .take(limit + 1)
        .map(|(id, latest_version)| DefinitionSummary {
            name: state
                .engine
                .definition_version(&id, latest_version)
                .and_then(|d| d.name.clone()),
            id,
            latest_version,
        })
        .collect();
    Ok(axum::Json(paginate(items, limit, |d| d.id.clone())))
}

/// A process with all its versions and their YAML.
#[utoipa::path(
    get,
    path = "/api/definitions/{id}",
    tag = "definitions",
    params(("id" = String, Path, description = "The process id")),
    responses(
        (status = 200, body = DefinitionDetail),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not read definitions", body = ErrorBody),
        (status = 404, description = "No such process", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<DefinitionDetail>, ApiError> {
    caller.require(auth::READ_DEFINITIONS)?;
    state
        .blocking(move |engine| {
            let (latest_version, def) = engine
                .definition(&id)
                .ok_or_else(|| ApiError::not_found(format!("no process `{id}` is deployed")))?;
            let mut versions: Vec<VersionView> = engine
                .store()
                .definitions()
                .map_err(|e| ApiError::internal(e.to_string()))?
                .into_iter()
                .filter(|r| r.process == id)
                .map(|r| VersionView {
                    version: r.version,
                    file: r.file,
                    deployed_at: r.deployed_at,
                    source: r.source,
                })
                .collect();
            versions.sort_by_key(|v| v.version);
            Ok(axum::Json(DefinitionDetail {
                name: def.name.clone(),
                id,
                latest_version,
                versions,
            }))
        })
        .await
}

/// The process drawn as a BPMN-style SVG.
#[utoipa::path(
    get,
    path = "/api/definitions/{id}/diagram.svg",
    tag = "definitions",
    params(("id" = String, Path, description = "The process id"), VersionQuery),
    responses(
        (status = 200, description = "The diagram", body = String, content_type = "image/svg+xml"),
        (status = 400, description = "Bad version", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "The role may not read definitions", body = ErrorBody),
        (status = 404, description = "No such process or version", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn diagram(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<VersionQuery>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(auth::READ_DEFINITIONS)?;
    let def = match query.version {
        Some(v) => state.engine.definition_version(&id, v),
        None => state.engine.definition(&id).map(|(_, d)| d),
    }
    .ok_or_else(|| ApiError::not_found(format!("no such version of process `{id}`")))?;
    let svg = state
        .blocking(move |_| Ok(ciclo_engine::diagram::svg(&def, None)))
        .await?;
    Ok(svg_response(svg))
}

pub(crate) fn svg_response(svg: String) -> impl IntoResponse {
    ([(CONTENT_TYPE, "image/svg+xml")], svg)
}
