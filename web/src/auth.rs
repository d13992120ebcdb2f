//! Who is calling: `Authorization: Bearer <secret>` resolved to a token's role and, when the
//! token acts for a user, that user and their groups.
//!
//! Roles: admin may do everything; analyst deploys and reads definitions and instances;
//! operator works with instances, messages, incidents, jobs and anyone's tasks, and reads
//! definitions; user lists, claims and completes their own tasks (assigned to them, or offered
//! to one of their groups); worker fetches and answers external jobs and nothing else (admin
//! and operator may too). Each handler names the roles it admits with `Caller::require`.
//!
//! The secret is never logged: it is read here, hashed by the engine, and dropped.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use ciclo_engine::store::Role;

use crate::error::ApiError;
use crate::state::AppState;

/// Name of the bearer security scheme in the OpenAPI document.
pub const SCHEME: &str = "bearer";

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub role: Role,
    /// The user the token acts for.
    pub user: Option<String>,
    /// That user's groups (empty without a user).
    pub groups: Vec<String>,
    /// The token's label, to name the caller in history when it acts for nobody.
    pub label: Option<String>,
}

/// Roles that may read definitions.
pub const READ_DEFINITIONS: &[Role] = &[Role::Admin, Role::Analyst, Role::Operator];
/// Roles that may deploy.
pub const DEPLOY: &[Role] = &[Role::Admin, Role::Analyst];
/// Roles that may read instances, their history and diagrams.
pub const READ_INSTANCES: &[Role] = &[Role::Admin, Role::Analyst, Role::Operator];
/// Roles that run things: start and cancel instances, correlate messages, retry incidents,
/// see jobs, reassign anyone's tasks.
pub const OPERATE: &[Role] = &[Role::Admin, Role::Operator];
/// Roles that work on tasks (users only on their own).
pub const TASKS: &[Role] = &[Role::Admin, Role::Operator, Role::User];
/// Roles that take and answer external jobs (workers only these; admins and operators too).
pub const WORKERS: &[Role] = &[Role::Admin, Role::Operator, Role::Worker];
/// Roles that manage users and tokens.
pub const ADMIN: &[Role] = &[Role::Admin];

impl Caller {
    /// Refuses with 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "a token with role {} may not do this; it needs one of: {}",
                self.role,
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    /// Whether the caller sees every task (admins and operators) rather than only their own.
    pub fn sees_all_tasks(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Operator)
    }

    /// How the caller is named in an instance's history: the user, else the token's label,
    /// else its role.
    pub fn actor(&self) -> String {
        match (&self.user, &self.label) {
            (Some(user), _) => user.clone(),
            (None, Some(label)) => format!("api:{label}"),
            (None, None) => format!("api:{}", self.role),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = bearer(parts)?;
        let caller = state
            .blocking(move |engine| {
                let Some(token) = engine.authenticate(&secret)? else {
                    return Ok(None);
                };
                let groups = match &token.user {
                    Some(name) => engine.user(name)?.map(|u| u.groups).unwrap_or_default(),
                    None => Vec::new(),
                };
                Ok(Some(Caller {
                    role: token.role,
                    user: token.user,
                    groups,
                    label: token.label,
                }))
            })
            .await?;
        let caller = caller.ok_or_else(|| ApiError::unauthorized("this token is not valid"))?;
        tracing::Span::current().record("role", caller.role.as_str());
        Ok(caller)
    }
}

/// The secret of an `Authorization: Bearer` header.
fn bearer(parts: &Parts) -> Result<String, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("this call needs `Authorization: Bearer <token>`"))?;
    let text = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
    let (scheme, secret) = text.split_once(' ').ok_or_else(|| {
        ApiError::unauthorized("the Authorization header is not `Bearer <token>`")
    })?;
    let secret = secret.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
        return Err(ApiError::unauthorized(
            "the Authorization header is not `Bearer <token>`",
        ));
    }
    Ok(secret.to_string())
}
