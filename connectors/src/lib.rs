//! Connectors behind the engine's `Connector` trait: e-mail, ERP, e-invoicing, external workers (issue 4; not built yet).
