//! Connectors behind the engine's `Connector` trait: the things a service or send task talks
//! to. For now e-mail (`email`: SMTP, or the outbox folder of `.eml` files); the ERP,
//! e-invoicing and external workers come with the connectors issue.

pub mod email;
pub mod outbox;

pub use email::EmailConnector;
pub use outbox::Outbox;
