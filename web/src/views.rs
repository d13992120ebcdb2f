//! JSON shapes shared by several resources, and conversions from the engine's types.

use ciclo_engine::diagnostics::Problem;
use ciclo_engine::store::InstanceStatus;
use ciclo_engine::{Value, Vars};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

/// One problem of a definition, as `ciclo validate` prints it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemView {
    /// `FILE:LINE:COLUMN`.
    #[schema(example = "order.yaml:12:5")]
    pub location: String,
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// Stable problem code (`CICLO-E0101`), listed in docs/errors.md.
    pub code: String,
    pub message: String,
    pub hint: Option<String>,
}

impl From<&Problem> for ProblemView {
    fn from(p: &Problem) -> ProblemView {
        ProblemView {
            location: format!("{}:{}:{}", p.file, p.line, p.col),
            file: p.file.clone(),
            line: p.line,
            column: p.col,
            code: p.code.to_string(),
            message: p.message.clone(),
            hint: p.hint.clone(),
        }
    }
}

/// Where an instance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Active,
    Completed,
    Failed,
    Terminated,
    Cancelled,
}

impl From<InstanceStatus> for StateName {
    fn from(s: InstanceStatus) -> StateName {
        match s {
            InstanceStatus::Active => StateName::Active,
            InstanceStatus::Completed => StateName::Completed,
            InstanceStatus::Failed => StateName::Failed,
            InstanceStatus::Terminated => StateName::Terminated,
            InstanceStatus::Cancelled => StateName::Cancelled,
        }
    }
}

impl From<StateName> for InstanceStatus {
    fn from(s: StateName) -> InstanceStatus {
        match s {
            StateName::Active => InstanceStatus::Active,
            StateName::Completed => InstanceStatus::Completed,
            StateName::Failed => InstanceStatus::Failed,
            StateName::Terminated => InstanceStatus::Terminated,
            StateName::Cancelled => InstanceStatus::Cancelled,
        }
    }
}

/// Variables as a JSON object.
pub fn vars_to_json(vars: &Vars) -> serde_json::Value {
    serde_json::Value::Object(vars.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

/// Variables from a JSON object (absent or `null`: none). Numbers keep every digit.
pub fn vars_from_json(json: Option<serde_json::Value>, what: &str) -> Result<Vars, ApiError> {
    match json {
        None | Some(serde_json::Value::Null) => Ok(Vars::new()),
        Some(json @ serde_json::Value::Object(_)) => match Value::from_json(json) {
            Ok(Value::Map(map)) => Ok(map),
            Ok(_) => Err(ApiError::bad_request(format!(
                "{what} must be a JSON object"
            ))),
            Err(e) => Err(ApiError::bad_request(format!("{what}: {e}"))),
        },
        Some(_) => Err(ApiError::bad_request(format!(
            "{what} must be a JSON object"
        ))),
    }
}
