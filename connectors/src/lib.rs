//! Connectors behind the engine's `Connector` trait: the things a service or send task talks
//! to. E-mail (`email`: SMTP, or the outbox folder of `.eml` files); the ERP over HTTP JSON,
//! described by a mapping file; and a fake ERP that stands in for a real one in tests and demos.
//! E-invoices (`einvoice`: FatturaPA and UBL, checked, then written to a folder or posted to
//! an access point). External workers come with the rest of the connectors issue.

pub mod einvoice;
pub mod email;
pub mod erp;
pub mod fake_erp;
pub mod outbox;

pub use einvoice::EinvoiceConnector;
pub use email::EmailConnector;
pub use erp::{ErpConfig, ErpConnector, Secrets};
pub use fake_erp::{FakeErp, FakeErpOptions};
pub use outbox::Outbox;
