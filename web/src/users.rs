//! Users (with their groups) and API tokens; admins only.
//!
//! A token's secret is returned once, when it is created; the store keeps only its hash,
//! which is also how a token is named afterwards (to list or revoke it).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ciclo_engine::store::{Role, TokenRecord, UserRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::page::{Page, PageQuery, paginate};
use crate::pages::session;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(get_user, put_user, delete_user))
        .routes(routes!(set_password))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

/// A role, as the API writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    /// Everything.
    Admin,
    /// Deploy; read definitions and instances.
    Analyst,
    /// Instances, messages, incidents, jobs, anyone's tasks; read definitions.
    Operator,
    /// Their own tasks: list, claim, complete.
    User,
    /// An external worker: fetch, extend and answer external jobs, nothing else.
    Worker,
}

impl From<RoleName> for Role {
    fn from(r: RoleName) -> Role {
        match r {
            RoleName::Admin => Role::Admin,
            RoleName::Analyst => Role::Analyst,
            RoleName::Operator => Role::Operator,
            RoleName::User => Role::User,
            RoleName::Worker => Role::Worker,
        }
    }
}

impl From<Role> for RoleName {
    fn from(r: Role) -> RoleName {
        match r {
            Role::Admin => RoleName::Admin,
            Role::Analyst => RoleName::Analyst,
            Role::Operator => RoleName::Operator,
            Role::User => RoleName::User,
            Role::Worker => RoleName::Worker,
        }
    }
}

/// A user. The password hash is never shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub name: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub created_at: jiff::Timestamp,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> UserView {
        UserView {
            name: u.name,
            display_name: u.display_name,
            email: u.email,
            groups: u.groups,
            created_at: u.created_at,
        }
    }
}

/// A user's details, to create or replace them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// Groups the user belongs to (task candidates name groups).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub role: RoleName,
    /// The user the token acts for (must exist).
    pub user: Option<String>,
    /// What the token is for (`ERP webhook`).
    pub label: Option<String>,
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// The token's name: hex SHA-256 of its secret.
    pub hash: String,
    pub role: RoleName,
    pub user: Option<String>,
    pub label: Option<String>,
    pub created_at: jiff::Timestamp,
}

impl From<TokenRecord> for TokenView {
    fn from(t: TokenRecord) -> TokenView {
        TokenView {
            hash: t.hash,
            role: t.role.into(),
            user: t.user,
            label: t.label,
            created_at: t.created_at,
        }
    }
}

/// A token just created, with its secret: shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// Send as `Authorization: Bearer <secret>`. Not shown again.
    pub secret: String,
    pub token: TokenView,
}

/// Users, by name.
#[utoipa::path(
    get,
    path = "/api/users",
    tag = "users",
    params(PageQuery),
    responses(
        (status = 200, body = Page<UserView>),
        (status = 400, description = "Bad cursor or limit", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<UserView>>, ApiError> {
    caller.require(auth::ADMIN)?;
    let limit = page.limit(&state.config)?;
    let items = state
        .blocking(move |engine| {
            let mut users = engine.users()?;
            users.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(users
                .into_iter()
                .filter(|u| page.cursor.as_ref().is_none_or(|c| u.name > *c))
                .take(limit + 1)
                .map(UserView::from)
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(axum::Json(paginate(items, limit, |u| u.name.clone())))
}

/// One user.
#[utoipa::path(
    get,
    path = "/api/users/{name}",
    tag = "users",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = UserView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<axum::Json<UserView>, ApiError> {
    caller.require(auth::ADMIN)?;
    state
        .blocking(move |engine| {
            let user = engine
                .user(&name)?
                .ok_or_else(|| ApiError::not_found(format!("no user {name:?}")))?;
            Ok(axum::Json(UserView::from(user)))
        })
        .await
}

/// Create a user, or replace their details and groups (their password stays).
#[utoipa::path(
    put,
    path = "/api/users/{name}",
    tag = "users",
    params(("name" = String, Path)),
    request_body = UserRequest,
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 200, description = "Updated", body = UserView),
        (status = 400, description = "Malformed body, or a bad user or group name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn put_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<UserRequest>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(auth::ADMIN)?;
    state
        .blocking(move |engine| {
            let existing = engine.user(&name)?;
            let created = existing.is_none();
            let user = UserRecord {
                name: name.clone(),
                display_name: request.display_name,
                email: request.email,
                groups: request.groups,
                password_hash: existing.as_ref().and_then(|u| u.password_hash.clone()),
                created_at: existing
                    .as_ref()
                    .map(|u| u.created_at)
                    .unwrap_or_else(|| engine.clock().now()),
            };
            engine.put_user(user.clone())?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, axum::Json(UserView::from(user))))
        })
        .await
}

/// Delete a user and every token acting for them.
#[utoipa::path(
    delete,
    path = "/api/users/{name}",
    tag = "users",
    params(("name" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(auth::ADMIN)?;
    state
        .blocking(move |engine| {
            if engine.delete_user(&name)? {
                Ok(StatusCode::NO_CONTENT)
            } else {
                Err(ApiError::not_found(format!("no user {name:?}")))
            }
        })
        .await
}

/// A new web sign-in password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    /// At least 10 characters. Stored only as an argon2 hash.
    pub password: String,
}

/// Set a user's password for the web pages (argon2-hashed; the password is never stored or
/// logged). The user's open web sessions end. A user without a password cannot sign in.
#[utoipa::path(
    put,
    path = "/api/users/{name}/password",
    tag = "users",
    params(("name" = String, Path)),
    request_body = PasswordRequest,
    responses(
        (status = 204, description = "Set"),
        (status = 400, description = "Malformed body, or a password shorter than 10 characters", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn set_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(request): ApiJson<PasswordRequest>,
) -> Result<StatusCode, ApiError> {
    caller.require(auth::ADMIN)?;
    session::check_new_password(&request.password)?;
    state
        .blocking(move |engine| {
            if engine.user(&name)?.is_none() {
                return Err(ApiError::not_found(format!("no user {name:?}")));
            }
            // argon2 takes tens of milliseconds of CPU on purpose: on this blocking thread.
            let hash = session::hash_password(&request.password)?;
            if engine.set_password_hash(&name, Some(hash))? {
                Ok(StatusCode::NO_CONTENT)
            } else {
                Err(ApiError::not_found(format!("no user {name:?}")))
            }
        })
        .await
}

/// Create an API token. Its secret is in this answer and nowhere else, ever.
#[utoipa::path(
    post,
    path = "/api/tokens",
    tag = "users",
    request_body = TokenRequest,
    responses(
        (status = 201, body = CreatedToken),
        (status = 400, description = "Malformed body, unknown role, or no such user", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(auth::ADMIN)?;
    state
        .blocking(move |engine| {
            let secret = engine.create_token(
                request.role.into(),
                request.user.as_deref(),
                request.label.as_deref(),
            )?;
            let token = engine
                .authenticate(&secret)?
                .ok_or_else(|| ApiError::internal("a token just created cannot be found"))?;
            Ok((
                StatusCode::CREATED,
                axum::Json(CreatedToken {
                    secret,
                    token: token.into(),
                }),
            ))
        })
        .await
}

/// API tokens, oldest first (never their secrets).
#[utoipa::path(
    get,
    path = "/api/tokens",
    tag = "users",
    params(PageQuery),
    responses(
        (status = 200, body = Page<TokenView>),
        (status = 400, description = "Bad cursor or limit", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<axum::Json<Page<TokenView>>, ApiError> {
    caller.require(auth::ADMIN)?;
    let limit = page.limit(&state.config)?;
    let items = state
        .blocking(move |engine| {
            let tokens = engine.store().tokens()?;
            // The store lists oldest first; the cursor is the last hash seen.
            let start = match &page.cursor {
                None => 0,
                Some(c) => tokens
                    .iter()
                    .position(|t| t.hash == *c)
                    .map(|i| i + 1)
                    .ok_or_else(|| ApiError::bad_request("the cursor is not one this API gave"))?,
            };
            Ok(tokens
                .into_iter()
                .skip(start)
                .take(limit + 1)
                .map(TokenView::from)
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(axum::Json(paginate(items, limit, |t| t.hash.clone())))
}

/// Revoke a token by its hash.
#[utoipa::path(
    delete,
    path = "/api/tokens/{hash}",
    tag = "users",
    params(("hash" = String, Path)),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(hash): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(auth::ADMIN)?;
    state
        .blocking(move |engine| {
            if engine.revoke_token(&hash)? {
                Ok(StatusCode::NO_CONTENT)
            } else {
                Err(ApiError::not_found("no such token"))
            }
        })
        .await
}
