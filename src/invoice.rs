//! `ciclo invoice render|check FILE`: an invoice in YAML or JSON checked against the rules of
//! `docs/einvoicing.md` and written as FatturaPA or UBL on stdout.
//!
//! Exit codes: 0 written (or, for `check`, valid); 1 a broken rule (each on stderr as
//! `FILE: CODE line N: message` and a hint) or a bad flag; 2 a file that cannot be read or is
//! not an invoice document (with `FILE:LINE:COLUMN` when known).

use std::path::Path;
use std::process::ExitCode;

use ciclo_connectors::einvoice::{self, Format, Invoice};

#[derive(clap::Subcommand)]
pub enum InvoiceCommand {
    /// Check an invoice and write it as XML on stdout.
    Render {
        /// `fatturapa` or `ubl`.
        #[arg(long)]
        format: String,
        /// FatturaPA's ProgressivoInvio (up to 10 letters and digits).
        #[arg(long, default_value = "00001")]
        progressive: String,
        /// The invoice (.yaml, .yml or .json).
        file: std::path::PathBuf,
    },
    /// Check an invoice and print its totals, writing no XML.
    Check {
        /// The invoice (.yaml, .yml or .json).
        file: std::path::PathBuf,
    },
}

pub fn run(command: InvoiceCommand) -> ExitCode {
    match command {
        InvoiceCommand::Render {
            format,
            progressive,
            file,
        } => render(&file, &format, &progressive),
        InvoiceCommand::Check { file } => check(&file),
    }
}

/// Reads the invoice; on failure prints why and gives the exit code.
fn load(file: &Path) -> Result<Invoice, ExitCode> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("ciclo: cannot read {}: {e}", file.display());
            return Err(ExitCode::from(2));
        }
    };
    Invoice::from_file_text(&file.display().to_string(), &text).map_err(|e| {
        eprintln!("{}:{e}", file.display());
        ExitCode::from(2)
    })
}

fn report(file: &Path, problems: &[einvoice::Problem]) -> ExitCode {
    for p in problems {
        eprintln!("{}: {p}", file.display());
        eprintln!("  hint: {}", p.hint);
    }
    eprintln!("{} problem(s): no XML written", problems.len());
    ExitCode::from(1)
}

fn render(file: &Path, format: &str, progressive: &str) -> ExitCode {
    let format: Format = match format.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ciclo: {e}");
            return ExitCode::from(1);
        }
    };
    if progressive.is_empty()
        || progressive.len() > 10
        || !progressive.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        eprintln!("ciclo: --progressive must be 1 to 10 letters and digits");
        return ExitCode::from(1);
    }
    let invoice = match load(file) {
        Ok(invoice) => invoice,
        Err(code) => return code,
    };
    match einvoice::render(&invoice, format, progressive) {
        Ok(xml) => {
            use std::io::Write as _;
            let _ = std::io::stdout().lock().write_all(xml.as_bytes());
            ExitCode::SUCCESS
        }
        Err(problems) => report(file, &problems),
    }
}

fn check(file: &Path) -> ExitCode {
    let invoice = match load(file) {
        Ok(invoice) => invoice,
        Err(code) => return code,
    };
    match einvoice::check(&invoice) {
        Ok(checked) => {
            println!(
                "ok: taxable {:.2}, VAT {:.2}, total {:.2}, due {:.2}",
                checked.taxable, checked.vat, checked.total, checked.payable
            );
            ExitCode::SUCCESS
        }
        Err(problems) => report(file, &problems),
    }
}
