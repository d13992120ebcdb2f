//! Ciclo's engine: the process language, its validation, the pure state machine, the stores
//! and the runtime that drives instances. It does no network I/O: connectors come in through
//! the `Connector` trait.

pub mod auth;
pub mod decision;
pub mod diagnostics;
pub mod diagram;
pub mod expr;
pub mod machine;
pub mod model;
pub mod parse;
pub mod runtime;
pub mod schedule;
pub mod store;
pub mod validate;
pub mod value;

pub use value::{Value, Vars};
