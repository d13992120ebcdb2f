//! The API's one error type and its one JSON shape: `{ "code", "message", "details" }`.
//!
//! Codes are stable snake_case words clients can match on; messages are for people and may
//! change. Internal errors (the store failed, stored data is corrupt, a handler panicked) are
//! logged once, here, inside the request's span, and the client sees a generic message: the
//! cause may name files or data that are not the caller's business.

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ciclo_engine::machine::MachineError;
use ciclo_engine::runtime::EngineError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::views::ProblemView;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable code: unauthorized, forbidden, not_found, bad_request, payload_too_large,
    /// invalid_definition, invalid_form, conflict, method_not_allowed, internal; and for
    /// external workers lease_expired, lease_not_held (409) and job_not_found (404).
    #[schema(example = "not_found")]
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// More, depending on the code: the definition's problems (`invalid_definition`), the
    /// form's field errors (`invalid_form`); `null` otherwise.
    pub details: Option<serde_json::Value>,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<serde_json::Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// An internal failure. `cause` is logged when the answer is written, never sent.
    pub fn internal(cause: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", cause)
    }

    fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.status.is_server_error() {
            // Logged here and only here, so each internal error appears once, with the
            // request's span (method, route, request id) around it.
            tracing::error!(code = self.code, cause = %self.message, "internal error");
            "internal error; the server log has the cause under this request's id".to_string()
        } else {
            self.message
        };
        let body = ErrorBody {
            code: self.code.to_string(),
            message,
            details: self.details,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        let message = error.to_string();
        match error {
            EngineError::Invalid(problems) => {
                let views: Vec<ProblemView> = problems.iter().map(ProblemView::from).collect();
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_definition",
                    message,
                )
                .with_details(serde_json::to_value(views).unwrap_or_default())
            }
            EngineError::Refused(MachineError::InvalidForm(fields)) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_form", message)
                    .with_details(serde_json::to_value(fields).unwrap_or_default())
            }
            EngineError::Refused(MachineError::NoSuchStart { .. })
            | EngineError::NoPlainStart(_)
            | EngineError::BadMessage(_)
            | EngineError::BadInput(_)
            | EngineError::BadUser(_) => ApiError::bad_request(message),
            EngineError::LeaseExpired { .. } => {
                ApiError::new(StatusCode::CONFLICT, "lease_expired", message)
            }
            EngineError::LeaseNotHeld { .. } => {
                ApiError::new(StatusCode::CONFLICT, "lease_not_held", message)
            }
            EngineError::JobNotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "job_not_found", message)
            }
            EngineError::UnknownProcess(_)
            | EngineError::UnknownVersion { .. }
            | EngineError::UnknownInstance(_)
            | EngineError::UnknownTask { .. }
            | EngineError::UnknownIncident { .. } => ApiError::not_found(message),
            EngineError::TaskTaken { .. } | EngineError::RequestKeyReused { .. } => {
                ApiError::conflict(message)
            }
            EngineError::Store(_) | EngineError::Corrupt(..) | EngineError::Random(_) => {
                ApiError::internal(message)
            }
        }
    }
}

/// The answer for a path no route matches.
pub(crate) async fn not_found_route(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// The answer for a known path with a method it does not have.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not answer this method",
    )
}

impl From<ciclo_engine::store::StoreError> for ApiError {
    fn from(error: ciclo_engine::store::StoreError) -> ApiError {
        ApiError::internal(error.to_string())
    }
}
