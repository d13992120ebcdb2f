//! Server-rendered pages under `/`: sign-in, the task inbox and decision pages, and the
//! cockpit (definitions, instances, incidents, timers). They work without JavaScript and are
//! readable on a phone.
//!
//! Templates are handlebars (the e-mail templates' engine: one template language), embedded
//! with `include_str!`, registered once in strict mode with HTML escaping on. The only text
//! written unescaped is our own SVG diagram, which `ciclo_engine::diagram` escapes itself.
//! Every page answer carries a Content-Security-Policy without inline scripts.

mod cockpit;
mod inbox;
mod links;
pub(crate) mod session;

/// Password hashing for the CLI and the server's configured users: the same argon2 settings
/// and length rule as the API.
pub mod passwords {
    pub use super::session::{check_new_password, hash_password, verify_password};
}
mod show;

use std::sync::OnceLock;

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use handlebars::Handlebars;
use serde_json::{Value as Json, json};

use crate::error::ApiError;
use crate::state::AppState;
use session::Viewer;

pub use inbox::{Submit, decision_page};

/// Every page template: name and text.
const TEMPLATES: &[(&str, &str)] = &[
    ("layout", include_str!("../../templates/layout.hbs")),
    ("sign_in", include_str!("../../templates/sign_in.hbs")),
    ("inbox", include_str!("../../templates/inbox.hbs")),
    ("task", include_str!("../../templates/task.hbs")),
    (
        "definitions",
        include_str!("../../templates/definitions.hbs"),
    ),
    ("definition", include_str!("../../templates/definition.hbs")),
    ("instances", include_str!("../../templates/instances.hbs")),
    ("instance", include_str!("../../templates/instance.hbs")),
    ("incidents", include_str!("../../templates/incidents.hbs")),
    ("timers", include_str!("../../templates/timers.hbs")),
    ("confirm", include_str!("../../templates/confirm.hbs")),
    ("error", include_str!("../../templates/error.hbs")),
    (
        "link_status",
        include_str!("../../templates/link_status.hbs"),
    ),
];

const STYLESHEET: &str = include_str!("../../templates/ciclo.css");

/// The registry, built on first use (`app` builds it at start, so a broken template stops the
/// server at once rather than on the first request).
pub(crate) fn templates() -> &'static Handlebars<'static> {
    static REGISTRY: OnceLock<Handlebars<'static>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        for (name, text) in TEMPLATES {
            if let Err(error) = registry.register_template_string(name, text) {
                // Our own embedded templates: a test renders each, so this is a build mistake.
                panic!("page template {name} does not parse: {error}");
            }
        }
        registry
    })
}

/// The pages' routes, with their security headers.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/static/ciclo.css", get(stylesheet))
        .route("/sign-in", get(inbox::sign_in_form).post(inbox::sign_in))
        .route("/sign-out", post(inbox::sign_out))
        .route("/", get(inbox::inbox))
        .route("/tasks/{instance}/{task}", get(inbox::task_page))
        .route("/tasks/{instance}/{task}/claim", post(inbox::claim))
        .route("/tasks/{instance}/{task}/complete", post(inbox::complete))
        .route("/links/{token}", get(links::link_page).post(links::decide))
        .route("/cockpit", get(cockpit::home))
        .route("/cockpit/definitions", get(cockpit::definitions))
        .route("/cockpit/definitions/{id}", get(cockpit::definition))
        .route("/cockpit/instances", get(cockpit::instances))
        .route("/cockpit/instances/{id}", get(cockpit::instance))
        .route(
            "/cockpit/instances/{id}/cancel",
            get(cockpit::cancel_confirm).post(cockpit::cancel),
        )
        .route("/cockpit/incidents", get(cockpit::incidents))
        .route(
            "/cockpit/incidents/{instance}/{incident}/retry",
            get(cockpit::retry_confirm).post(cockpit::retry),
        )
        .route("/cockpit/timers", get(cockpit::timers))
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    };
    set(
        headers,
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'",
    );
    set(headers, "x-frame-options", "DENY");
    set(headers, "referrer-policy", "same-origin");
    set(headers, "x-content-type-options", "nosniff");
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn stylesheet() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// Renders a page: `data` plus `title` and `viewer` (who is signed in, for the header and the
/// forms' CSRF field).
pub(crate) fn render(
    template: &str,
    title: &str,
    viewer: Option<&Viewer>,
    mut data: Json,
) -> Result<Html<String>, PageError> {
    if let Json::Object(map) = &mut data {
        map.insert("title".into(), json!(title));
        map.insert("viewer".into(), viewer_json(viewer));
    }
    templates()
        .render(template, &data)
        .map(Html)
        .map_err(|e| PageError(ApiError::internal(format!("page {template}: {e}"))))
}

fn viewer_json(viewer: Option<&Viewer>) -> Json {
    match viewer {
        None => Json::Null,
        Some(v) => json!({
            "name": v.name,
            "display_name": v.display_name,
            "csrf": v.session.csrf,
            "cockpit": v.sees_cockpit(),
            "operates": v.operates(),
        }),
    }
}

/// An error shown as a page (the API's errors are JSON; a person gets HTML).
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> PageError {
        PageError(error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let message = if status.is_server_error() {
            // Logged once here, inside the request's span; the page shows no cause.
            tracing::error!(code = self.0.code(), cause = %self.0.message(), "internal error");
            "Something went wrong on the server; its log has the cause.".to_string()
        } else {
            self.0.message().to_string()
        };
        let data = json!({ "status": status.as_u16(), "message": message });
        match render("error", "Error", None, data) {
            Ok(html) => (status, html).into_response(),
            Err(_) => (status, message).into_response(),
        }
    }
}

/// A page or an error page.
pub(crate) type PageResult = Result<Response, PageError>;

/// `303 See Other` to `to`: after a form, the browser loads the next page with a GET.
pub(crate) fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, value);
    }
    response
}

/// An instant as people read it on a page: `2026-03-01 14:05 UTC`.
pub(crate) fn when(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders every page template with a context of the shape its handler gives, in strict
    /// mode: a variable a template uses and the handler does not give fails here.
    #[test]
    fn every_template_renders_with_its_context() {
        let viewer = json!({"name": "anna", "display_name": "Anna", "csrf": "c", "cockpit": true, "operates": true});
        for (name, data) in inbox::sample_contexts()
            .into_iter()
            .chain(cockpit::sample_contexts())
            .chain(links::sample_contexts())
        {
            let mut data = data;
            data["title"] = json!("T");
            data["viewer"] = viewer.clone();
            let html = templates()
                .render(name, &data)
                .unwrap_or_else(|e| panic!("template {name}: {e}"));
            assert!(html.contains("<title>T · Ciclo</title>"), "{name}: {html}");
        }
        let rendered: std::collections::BTreeSet<&str> = inbox::sample_contexts()
            .into_iter()
            .chain(cockpit::sample_contexts())
            .chain(links::sample_contexts())
            .map(|(n, _)| n)
            .collect();
        for (name, _) in TEMPLATES {
            if *name != "layout" {
                assert!(rendered.contains(name), "no sample context renders {name}");
            }
        }
    }

    #[test]
    fn text_is_escaped() {
        let data = json!({"title": "<script>alert(1)</script> & Co", "viewer": null, "status": 404, "message": "<b>x</b>"});
        let html = templates().render("error", &data).unwrap();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co"));
        assert!(!html.contains("<script>alert(1)"));
        assert!(!html.contains("<b>x</b>"));
    }
}
