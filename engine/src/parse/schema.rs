//! The JSON Schema (draft 2020-12) of process files, for editors' completion and checks.
//!
//! It is generated from the same key tables the parser checks keys against (`keys.rs`), so a
//! key the loader accepts is always one the editor suggests.

use serde_json::{Map, Value, json};

use super::keys::{self, Key, Shape};

/// The schema of a process file or a table library file.
pub fn json_schema() -> Value {
    let mut step_properties = Map::new();
    for key in keys::all_step_keys() {
        step_properties
            .entry(key.name)
            .or_insert_with(|| property(key));
    }
    let one_kind: Vec<Value> = keys::KINDS
        .iter()
        .map(|k| json!({ "required": [k.key.name] }))
        .collect();
    let mut dependent = Map::new();
    for kind in keys::KINDS {
        let needed: Vec<&str> = kind
            .extras
            .iter()
            .filter(|e| e.required)
            .map(|e| e.name)
            .collect();
        if !needed.is_empty() {
            dependent.insert(kind.key.name.to_string(), json!(needed));
        }
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://ciclo.invalid/schema/process.json",
        "title": "Ciclo process file",
        "description": "A process (`process:` and `steps:`) or a library of decision tables (`tables:` only).",
        "anyOf": [object(keys::PROCESS), object(keys::TABLE_FILE)],
        "$defs": {
            "expression": {
                "description": "An expression: a string (`amount * 2`, `\"approved\"`), or a number or boolean literal.",
                "type": ["string", "number", "boolean", "null"]
            },
            "steps": {
                "type": "object",
                "propertyNames": { "pattern": "^[A-Za-z0-9_-]+$" },
                "additionalProperties": { "$ref": "#/$defs/step" }
            },
            "step": {
                "type": "object",
                "description": "A step: exactly one kind key (set, call, send, task, ...) plus label, goto, then, on, each.",
                "properties": step_properties,
                "additionalProperties": false,
                "oneOf": one_kind,
                "dependentRequired": dependent
            },
            "tables": {
                "type": "object",
                "additionalProperties": object(keys::TABLE)
            }
        }
    })
}

fn property(key: &Key) -> Value {
    let mut schema = self::shape(&key.shape);
    if let Value::Object(map) = &mut schema {
        map.insert("description".into(), Value::String(key.doc.to_string()));
    }
    schema
}

fn object(keys: &[Key]) -> Value {
    let properties: Map<String, Value> = keys
        .iter()
        .map(|k| (k.name.to_string(), property(k)))
        .collect();
    let required: Vec<&str> = keys.iter().filter(|k| k.required).map(|k| k.name).collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

fn shape(of: &Shape) -> Value {
    match of {
        Shape::Id => json!({ "type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$" }),
        Shape::Text | Shape::Template | Shape::Zone => json!({ "type": "string" }),
        Shape::Expr => json!({ "$ref": "#/$defs/expression" }),
        Shape::Timer => {
            json!({ "type": "string", "examples": ["P3D", "PT1H", "R/P1D", "2027-01-01T09:00", "0 9 * * MON"] })
        }
        Shape::Bool => json!({ "type": "boolean" }),
        Shape::Integer => json!({ "type": "integer", "minimum": 1 }),
        Shape::Number => json!({ "type": "number" }),
        Shape::StepName => json!({ "type": "string" }),
        Shape::StepNames => json!({ "type": "array", "items": { "type": "string" } }),
        Shape::Words => {
            json!({ "anyOf": [{ "type": "array", "items": { "type": "string" } }, { "type": "string" }] })
        }
        Shape::Mapping => {
            json!({ "type": "object", "additionalProperties": { "$ref": "#/$defs/expression" } })
        }
        Shape::TypeWords => {
            json!({ "type": "object", "additionalProperties": { "type": "string" } })
        }
        Shape::Enum(words) => json!({ "enum": words }),
        Shape::True => json!({ "const": true }),
        Shape::Object(keys) => object(keys),
        Shape::ListOf(keys) => json!({ "type": "array", "items": object(keys) }),
        Shape::OneOf(shapes) => {
            json!({ "anyOf": shapes.iter().map(self::shape).collect::<Vec<_>>() })
        }
        Shape::Steps => json!({ "$ref": "#/$defs/steps" }),
        Shape::Tables => json!({ "$ref": "#/$defs/tables" }),
        Shape::Form => json!({
            "type": "object",
            "additionalProperties": {
                "anyOf": [
                    { "enum": keys::FIELD_TYPES },
                    { "type": "array", "items": { "type": "string" } },
                    object(keys::FIELD)
                ]
            }
        }),
        Shape::Cells => json!({
            "type": "array",
            "items": { "anyOf": [
                { "type": "array", "items": { "type": ["string", "number", "boolean"] } },
                { "type": ["string", "number", "boolean", "null"] }
            ] }
        }),
        Shape::Exprs => json!({ "type": "array", "items": { "$ref": "#/$defs/expression" } }),
    }
}
