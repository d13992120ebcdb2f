//! E-invoicing: an invoice (`model`) is checked (`check`: the arithmetic and the rules schemas
//! cannot see), then written as FatturaPA (`fatturapa`) or UBL 2.1 / Peppol BIS 3.0 (`ubl`),
//! then delivered to a folder or an access point (`deliver`).
//!
//! Invariant: no XML is written for an invoice with a broken rule; `render` returns every
//! problem instead. The writers print only amounts `check` computed.
//!
//! As a connector (`call: einvoice.<operation>`):
//! - `issue` (and `deliver`, its other name): input `{invoice, format}` -> check, render,
//!   deliver; result `{file, progressive, format}`.
//! - `render`: input `{invoice, format}` -> result `{xml, format}`, nothing delivered.
//!
//! A broken invoice is the business error `INVOICE_INVALID`, its message the list of rules;
//! a 4xx from the access point is `EINVOICE_REJECTED`; I/O trouble and 5xx are failures
//! (retried).

pub mod check;
mod codes;
pub mod deliver;
pub mod fatturapa;
pub mod model;
pub mod ubl;
mod xml;

use std::sync::Arc;

use ciclo_engine::Value;
use ciclo_engine::runtime::{Connector, JobFuture, JobOutcome, JobRequest};

pub use check::{Checked, Problem, check};
pub use deliver::{Delivered, Delivery, DeliveryError, Target};
pub use model::{Invoice, ParseError};

/// The operations of `call: einvoice.<operation>`.
pub const OPERATIONS: &[&str] = &["issue", "render", "deliver"];

/// The progressive written into a FatturaPA file rendered without delivery.
pub const PREVIEW_PROGRESSIVE: &str = "00000";

/// The output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    FatturaPa,
    Ubl,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::FatturaPa => "fatturapa",
            Format::Ubl => "ubl",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Format, String> {
        match text {
            "fatturapa" => Ok(Format::FatturaPa),
            "ubl" => Ok(Format::Ubl),
            other => Err(format!(
                "unknown format `{other}`: use `fatturapa` or `ubl`"
            )),
        }
    }
}

/// Checks an invoice and, when every rule holds, writes it. `progressive` is FatturaPA's
/// ProgressivoInvio (UBL has none).
pub fn render(
    invoice: &Invoice,
    format: Format,
    progressive: &str,
) -> Result<String, Vec<Problem>> {
    let checked = check(invoice)?;
    let mut problems = match format {
        Format::FatturaPa => fatturapa::problems(invoice),
        Format::Ubl => ubl::problems(invoice, &checked),
    };
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.line.unwrap_or(0));
        return Err(problems);
    }
    let written = match format {
        Format::FatturaPa => fatturapa::write(invoice, &checked, progressive),
        Format::Ubl => ubl::write(invoice, &checked),
    };
    written.map_err(|e| {
        vec![Problem {
            code: "EINV-WRITE",
            line: None,
            field: String::new(),
            message: format!("the XML could not be written: {e}"),
            hint: "this is a bug in Ciclo: please report it with the invoice".into(),
        }]
    })
}

/// The problems as one message: one rule per line.
pub fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{p} (hint: {})", p.hint))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `einvoice` connector.
#[derive(Clone)]
pub struct EinvoiceConnector {
    delivery: Arc<Delivery>,
}

impl EinvoiceConnector {
    pub fn new(delivery: Delivery) -> EinvoiceConnector {
        EinvoiceConnector {
            delivery: Arc::new(delivery),
        }
    }

    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    async fn run(&self, request: JobRequest) -> JobOutcome {
        let invalid = |message: String| JobOutcome::BusinessError {
            code: "INVOICE_INVALID".into(),
            message,
        };
        let format = match request.input.get("format") {
            None | Some(Value::Null) => Format::FatturaPa,
            Some(Value::String(text)) => match text.parse::<Format>() {
                Ok(format) => format,
                Err(e) => return invalid(e),
            },
            Some(other) => {
                return invalid(format!(
                    "format must be \"fatturapa\" or \"ubl\", not a {}",
                    other.type_name()
                ));
            }
        };
        let Some(value) = request.input.get("invoice") else {
            return invalid("the input has no `invoice`".into());
        };
        let invoice = match Invoice::from_json_value(value.to_json()) {
            Ok(invoice) => invoice,
            Err(e) => return invalid(format!("invoice: {e}")),
        };
        // Checked before anything is allocated or delivered.
        if let Err(problems) = render(&invoice, format, PREVIEW_PROGRESSIVE) {
            return invalid(describe(&problems));
        }
        let mut result = ciclo_engine::Vars::new();
        result.insert("format".into(), Value::String(format.name().into()));
        match request.operation.as_str() {
            "render" => {
                let Ok(xml) = render(&invoice, format, PREVIEW_PROGRESSIVE) else {
                    return JobOutcome::Failed("the invoice could not be rendered".into());
                };
                result.insert("xml".into(), Value::String(xml));
                JobOutcome::Done(result)
            }
            "issue" | "deliver" => {
                let seller_vat = invoice.seller.vat_id.clone().unwrap_or_default();
                let delivered = self
                    .delivery
                    .deliver(&request.key, &seller_vat, |progressive| {
                        render(&invoice, format, progressive).map_err(|p| describe(&p))
                    })
                    .await;
                match delivered {
                    Ok(d) => {
                        result.insert("file".into(), Value::String(d.file));
                        result.insert("progressive".into(), Value::String(d.progressive));
                        JobOutcome::Done(result)
                    }
                    Err(DeliveryError::Technical(message)) => JobOutcome::Failed(message),
                    Err(e @ DeliveryError::Rejected { .. }) => JobOutcome::BusinessError {
                        code: "EINVOICE_REJECTED".into(),
                        message: e.to_string(),
                    },
                }
            }
            other => JobOutcome::BusinessError {
                code: "UNKNOWN_OPERATION".into(),
                message: format!("einvoice has no operation `{other}`: use issue or render"),
            },
        }
    }
}

impl Connector for EinvoiceConnector {
    fn call(&self, request: JobRequest) -> JobFuture {
        let this = self.clone();
        Box::pin(async move { this.run(request).await })
    }
}
