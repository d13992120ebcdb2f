//! Connectors behind the engine's `Connector` trait: the things a service or send task talks
//! to. For now the outbox, where `send:` steps write their e-mails as `.eml` files; SMTP, the
//! ERP, e-invoicing and external workers come with the connectors issue.

pub mod outbox;

pub use outbox::Outbox;
