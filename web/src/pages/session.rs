//! Signing in and out of the pages: passwords (argon2), sessions in a cookie, CSRF checks and
//! the lockout after repeated failures.
//!
//! A session id is 32 random bytes in the `ciclo_session` cookie (HttpOnly, SameSite=Lax,
//! Secure over https); the store keeps only its SHA-256, with the user, a CSRF secret and the
//! times that bound it (8 hours idle, 7 days in all), so sessions survive a restart. Every form
//! carries the session's CSRF secret, checked in constant time on every POST together with the
//! Origin (or Referer) host when the browser sends one. The sign-in form, which has no session
//! yet, uses a double-submit cookie (`ciclo_csrf`) instead.
//!
//! Lockout counters are kept in memory, per server: five failed sign-ins for a name within 15
//! minutes lock that name for 15 minutes. A restart forgets them, which is acceptable for a
//! brake on guessing (argon2 already makes each guess slow) and keeps failed attempts from
//! writing to the store.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, HOST, ORIGIN, REFERER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use ciclo_engine::auth::{hash_secret, random_hex};
use ciclo_engine::store::{Role, SessionRecord};
use jiff::{SignedDuration, Timestamp};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "ciclo_session";
/// The sign-in form's double-submit cookie.
pub const SIGN_IN_CSRF_COOKIE: &str = "ciclo_csrf";
/// The hidden field every form carries.
pub const CSRF_FIELD: &str = "_csrf";

/// A session ends after this long without a request.
pub const IDLE: SignedDuration = SignedDuration::from_hours(8);
/// A session ends this long after sign-in, whatever happens.
pub const ABSOLUTE: SignedDuration = SignedDuration::from_hours(7 * 24);
/// `last_seen` is written again only when older than this, so reading pages does not write
/// the store on every request.
const TOUCH_AFTER: SignedDuration = SignedDuration::from_mins(5);

/// Failed sign-ins for one name within `LOCK_WINDOW` that lock it.
pub const MAX_FAILURES: usize = 5;
/// The window failures are counted in, and how long a lock lasts.
pub const LOCK_WINDOW: SignedDuration = SignedDuration::from_mins(15);

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Groups whose members get a role above `user` on the pages (users have no role of their
/// own; tokens do). The strongest wins.
pub const ROLE_GROUPS: &[(&str, Role)] = &[
    ("ciclo-admins", Role::Admin),
    ("ciclo-operators", Role::Operator),
    ("ciclo-analysts", Role::Analyst),
];

/// The role a user has on the pages, from their groups.
pub fn role_of(groups: &[String]) -> Role {
    ROLE_GROUPS
        .iter()
        .filter(|(group, _)| groups.iter().any(|g| g == group))
        .map(|(_, role)| *role)
        .min()
        .unwrap_or(Role::User)
}

/// Failed sign-ins per name, in memory.
#[derive(Debug, Default)]
pub struct Lockout {
    failures: Mutex<HashMap<String, Vec<Timestamp>>>,
}

impl Lockout {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Timestamp>>> {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `name` is locked at `now`.
    pub fn locked(&self, name: &str, now: Timestamp) -> bool {
        let mut map = self.map();
        let Some(list) = map.get_mut(name) else {
            return false;
        };
        list.retain(|at| now.duration_since(*at) < LOCK_WINDOW);
        list.len() >= MAX_FAILURES
    }

    pub fn failed(&self, name: &str, now: Timestamp) {
        let mut map = self.map();
        // Bounds the memory an attacker trying many names can take.
        if map.len() > 100_000 {
            map.retain(|_, list| list.iter().any(|at| now.duration_since(*at) < LOCK_WINDOW));
        }
        map.entry(name.to_string()).or_default().push(now);
    }

    pub fn succeeded(&self, name: &str) {
        self.map().remove(name);
    }
}

/// An argon2 (default parameters) PHC string of `password`. Slow on purpose: call it on a
/// blocking thread.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| ApiError::internal(format!("cannot hash a password: {e}")))
}

/// Whether `password` matches the PHC string `hash`. Slow on purpose: a blocking thread.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(error) => {
            tracing::warn!(%error, "a stored password hash is not a PHC string");
            false
        }
    }
}

/// Checks a new password's length (in characters).
pub fn check_new_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::bad_request(format!(
            "a password has at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.chars().count() > 1000 {
        return Err(ApiError::bad_request(
            "a password has at most 1000 characters",
        ));
    }
    Ok(())
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie of the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_string())
}

/// Whether cookies must be marked Secure: configured so, or the request came over https
/// through a proxy that says so.
pub fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    state.config.secure_cookies
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value. `max_age` 0 deletes the cookie; `None` makes it last the browser
/// session.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<i64>) -> HeaderValue {
    let mut text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        text.push_str("; Secure");
    }
    // Names and values here are ours: ASCII letters, digits and `_`.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A new random secret (session id, CSRF secret).
pub fn new_secret() -> Result<String, ApiError> {
    random_hex().map_err(|e| ApiError::internal(format!("no random bytes: {e}")))
}

/// Whether the Origin (or, without one, the Referer) of a POST names this server's host. A
/// request with neither passes: the CSRF token still has to match.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return true;
    };
    let from = headers
        .get(ORIGIN)
        .or_else(|| headers.get(REFERER))
        .and_then(|v| v.to_str().ok());
    match from {
        None => true,
        Some(url) => {
            let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            authority.eq_ignore_ascii_case(host)
        }
    }
}

/// Who is looking at a page: a signed-in user and their session.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub caller: Caller,
    pub name: String,
    pub display_name: String,
    pub session: SessionRecord,
}

impl Viewer {
    /// Whether the viewer may see the cockpit.
    pub fn sees_cockpit(&self) -> bool {
        matches!(
            self.caller.role,
            Role::Admin | Role::Operator | Role::Analyst
        )
    }

    /// Whether the viewer may cancel instances and retry incidents.
    pub fn operates(&self) -> bool {
        matches!(self.caller.role, Role::Admin | Role::Operator)
    }

    /// Refuses a POST whose CSRF token is not the session's or that comes from another site.
    pub fn check_form(&self, headers: &HeaderMap, token: Option<&str>) -> Result<(), ApiError> {
        let ok = token.is_some_and(|t| same_secret(t, &self.session.csrf)) && same_origin(headers);
        if ok {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this form is out of date or did not come from this site: reload the page and try again",
            ))
        }
    }
}

/// Not signed in: to the sign-in page.
pub struct SignInFirst;

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        Redirect::to("/sign-in").into_response()
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(SignInFirst.into_response());
        };
        let hash = hash_secret(&id);
        let viewer = state
            .blocking(move |engine| {
                let Some(mut session) = engine.session(&hash)? else {
                    return Ok(None);
                };
                let now = engine.clock().now();
                let expired = now.duration_since(session.last_seen) > IDLE
                    || now.duration_since(session.created_at) > ABSOLUTE;
                let user = engine.user(&session.user)?;
                let Some(user) = user.filter(|u| !expired && u.password_hash.is_some()) else {
                    engine.delete_session(&hash, now - ABSOLUTE)?;
                    return Ok(None);
                };
                if now.duration_since(session.last_seen) > TOUCH_AFTER {
                    session.last_seen = now;
                    engine.put_session(session.clone())?;
                }
                let role = role_of(&user.groups);
                Ok(Some(Viewer {
                    caller: Caller {
                        role,
                        user: Some(user.name.clone()),
                        groups: user.groups.clone(),
                        label: None,
                    },
                    display_name: user.display_name.clone().unwrap_or(user.name.clone()),
                    name: user.name,
                    session,
                }))
            })
            .await
            .map_err(|e| super::PageError::from(e).into_response())?;
        viewer.ok_or_else(|| SignInFirst.into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }

    #[test]
    fn lockout_after_five_failures_for_fifteen_minutes() {
        let lockout = Lockout::default();
        let t0: Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        for i in 0..4 {
            lockout.failed("anna", t0 + SignedDuration::from_mins(i));
        }
        assert!(!lockout.locked("anna", t0 + SignedDuration::from_mins(4)));
        lockout.failed("anna", t0 + SignedDuration::from_mins(4));
        assert!(lockout.locked("anna", t0 + SignedDuration::from_mins(5)));
        assert!(!lockout.locked("bruno", t0 + SignedDuration::from_mins(5)));
        // The first failures age out of the window.
        assert!(!lockout.locked("anna", t0 + SignedDuration::from_mins(16)));
    }

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn roles_from_groups() {
        let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(role_of(&groups(&["sales"])), Role::User);
        assert_eq!(role_of(&groups(&["ciclo-analysts"])), Role::Analyst);
        assert_eq!(
            role_of(&groups(&["ciclo-operators", "ciclo-admins"])),
            Role::Admin
        );
    }

    #[test]
    fn origin_must_be_this_host() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&headers));
        headers.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&headers));
        headers.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&headers));
    }
}
