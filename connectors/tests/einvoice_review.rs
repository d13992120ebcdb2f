//! E-invoices from the review of issue 4: hostile inputs that used to be written as XML the
//! official schemas or the EN 16931 rules reject. Each must now be refused by its rule, on its
//! line, or written so that `einvoice-reference/validate` accepts it.

use std::path::PathBuf;
use std::process::Command;

use ciclo_connectors::einvoice::{self, Format, Invoice};
use serde_json::{Value, json};

fn base() -> Value {
    json!({
        "number": "2026/001", "issue_date": "2026-03-02",
        "seller": {"name": "Rossi srl", "vat_id": "IT01234567890",
            "address": {"street": "Via Roma 15", "city": "Milano", "postal_code": "20100",
                "province": "MI", "country": "IT"}},
        "buyer": {"name": "Bianchi SpA", "vat_id": "IT09876543217",
            "address": {"street": "Corso Francia 8", "city": "Torino", "postal_code": "10138",
                "province": "TO", "country": "IT"},
            "sdi_code": "ABC1234"},
        "lines": [{"description": "Consulenza", "quantity": "8", "unit_price": "75.00",
            "vat_rate": "22"}],
        "payment": {"due_date": "2026-04-01", "iban": "IT60X0542811101000000123456"}
    })
}

/// The base invoice with `value` at the JSON pointer `path` (created if missing).
fn with(changes: &[(&str, Value)]) -> Invoice {
    let mut invoice = base();
    for (path, value) in changes {
        let (parent, key) = path.rsplit_once('/').unwrap();
        let parent = invoice
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("{path}"));
        match parent {
            Value::Array(items) => items[key.parse::<usize>().unwrap()] = value.clone(),
            Value::Object(map) => {
                map.insert(key.to_string(), value.clone());
            }
            _ => panic!("{path}"),
        }
    }
    Invoice::from_json_value(invoice).unwrap()
}

/// Renders in `format` and expects the rule `code`, on `line` when given.
fn refused(invoice: &Invoice, format: Format, code: &str, line: Option<usize>) {
    match einvoice::render(invoice, format, "00001") {
        Ok(xml) => panic!("{code} expected, but XML was written:\n{xml}"),
        Err(problems) => assert!(
            problems.iter().any(|p| p.code == code && p.line == line),
            "{code} on line {line:?} expected, got {}",
            einvoice::describe(&problems)
        ),
    }
}

fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// Runs the reference validator when its tools are here (see tests/einvoice.rs).
fn validator_accepts(xml: &str, name: &str) {
    let tools = Command::new("xmllint").arg("--version").output().is_ok()
        && Command::new("python3")
            .args(["-c", "import saxonche"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !tools {
        assert_ne!(
            std::env::var("CICLO_REQUIRE_EINVOICE_TOOLS").as_deref(),
            Ok("1"),
            "xmllint or saxonche is missing"
        );
        println!("SKIPPED validation of {name}: xmllint or saxonche is missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{name}.xml"));
    std::fs::write(&file, xml).unwrap();
    let out = Command::new(here().join("einvoice-reference/validate"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn zero_rated_lines_carry_no_exemption_reason_in_ubl() {
    // N3.3..N3.6 are UBL category Z, and BR-Z-10 forbids an exemption reason on Z.
    for natura in ["N3.3", "N3.6"] {
        let invoice = with(&[
            ("/lines/0/vat_rate", json!("0")),
            ("/lines/0/natura", json!(natura)),
        ]);
        let xml = einvoice::render(&invoice, Format::Ubl, "00001").unwrap();
        assert!(!xml.contains("TaxExemptionReason"), "{xml}");
        validator_accepts(&xml, natura);
    }
}

#[test]
fn inputs_the_schemas_or_en16931_reject_are_refused_by_their_rule() {
    use Format::{FatturaPa, Ubl};
    let ten_thousand_lines: Vec<Value> = (0..10_000)
        .map(|_| json!({"description": "x", "quantity": "1", "unit_price": "1", "vat_rate": "22"}))
        .collect();
    // (what, changes, formats, rule, line)
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, Value)>,
        Vec<Format>,
        &'a str,
        Option<usize>,
    );
    let cases: Vec<Case> = vec![
        // XML 1.0 cannot carry these at all: the file would not even be well-formed.
        (
            "control character in a name",
            vec![("/seller/name", json!("Rossi\u{1}srl"))],
            vec![FatturaPa, Ubl],
            "EINV-TEXT-CHARACTER",
            None,
        ),
        (
            "control character in a description",
            vec![("/lines/0/description", json!("Cons\u{1b}ulenza"))],
            vec![FatturaPa, Ubl],
            "EINV-TEXT-CHARACTER",
            Some(1),
        ),
        (
            "U+FFFF in a name",
            vec![("/seller/name", json!("Rossi\u{ffff}"))],
            vec![Ubl],
            "EINV-TEXT-CHARACTER",
            None,
        ),
        // Code lists of EN 16931 (BR-CL-04, BR-CL-14, BR-CO-09, BR-CL-25).
        (
            "currency not in ISO 4217",
            vec![("/currency", json!("XYZ"))],
            vec![FatturaPa, Ubl],
            "EINV-CURRENCY",
            None,
        ),
        (
            "country not in ISO 3166",
            vec![("/buyer/address/country", json!("XX"))],
            vec![FatturaPa, Ubl],
            "EINV-COUNTRY",
            None,
        ),
        (
            "VAT number with an unknown prefix",
            vec![
                ("/buyer/vat_id", json!("XX123456")),
                ("/buyer/endpoint", json!({"scheme": "0088", "id": "123"})),
            ],
            vec![FatturaPa, Ubl],
            "EINV-BUYER-VAT",
            None,
        ),
        (
            "endpoint scheme not in the EAS list",
            vec![("/buyer/endpoint", json!({"scheme": "1234", "id": "123"}))],
            vec![FatturaPa, Ubl],
            "EINV-ENDPOINT",
            None,
        ),
        // FatturaPA's schema: Data from 1970, Numero and UnitaMisura in ASCII, e-mail types,
        // non-empty texts, NumeroLinea up to 9999.
        (
            "issue date before 1970",
            vec![
                ("/issue_date", json!("1960-01-01")),
                ("/payment/due_date", json!("1960-02-01")),
            ],
            vec![FatturaPa, Ubl],
            "EINV-ISSUE-DATE",
            None,
        ),
        (
            "accented invoice number",
            vec![("/number", json!("2026/è1"))],
            vec![FatturaPa],
            "EINV-FATTURAPA-TEXT",
            None,
        ),
        (
            "accented referred number",
            vec![
                ("/type", json!("credit_note")),
                (
                    "/refers_to",
                    json!({"number": "è", "issue_date": "2026-03-01"}),
                ),
            ],
            vec![FatturaPa],
            "EINV-FATTURAPA-TEXT",
            None,
        ),
        (
            "accented unit",
            vec![("/lines/0/unit", json!("pezzò"))],
            vec![FatturaPa],
            "EINV-FATTURAPA-TEXT",
            Some(1),
        ),
        (
            "empty unit",
            vec![("/lines/0/unit", json!(""))],
            vec![FatturaPa],
            "EINV-FATTURAPA-TEXT",
            Some(1),
        ),
        (
            "seller e-mail without a domain",
            vec![("/seller/email", json!("abc@example"))],
            vec![FatturaPa, Ubl],
            "EINV-EMAIL",
            None,
        ),
        (
            "seller e-mail too short",
            vec![("/seller/email", json!("a@b.c"))],
            vec![FatturaPa, Ubl],
            "EINV-EMAIL",
            None,
        ),
        (
            "PEC without a local part",
            vec![("/buyer/pec", json!("@abcdefg.it"))],
            vec![FatturaPa, Ubl],
            "EINV-PEC",
            None,
        ),
        (
            "empty exemption reason",
            vec![
                ("/lines/0/vat_rate", json!("0")),
                ("/lines/0/natura", json!("N4")),
                ("/lines/0/exemption_reason", json!("")),
            ],
            vec![FatturaPa, Ubl],
            "EINV-EXEMPTION-REASON",
            Some(1),
        ),
        (
            "10,000 lines",
            vec![("/lines", Value::Array(ten_thousand_lines))],
            vec![FatturaPa],
            "EINV-FATTURAPA-LINES",
            None,
        ),
    ];
    for (name, changes, formats, code, line) in cases {
        let invoice = with(&changes);
        for format in formats {
            println!("{name} ({})", format.name());
            refused(&invoice, format, code, line);
        }
    }
}

#[test]
fn what_the_rules_still_accept_passes_the_validator() {
    // The neighbours of the refused cases: Greek VAT numbers start with EL, tabs and line
    // breaks are fine in texts, Latin-1 in names, a PEC of the usual shape.
    let invoice = with(&[
        ("/seller/name", json!("Müller & Söhne\tS.r.l.")),
        ("/seller/email", json!("fatture@rossi.example.it")),
        ("/lines/0/description", json!("riga 1\nriga 2 <&>")),
        ("/lines/0/unit", json!("pz")),
        ("/buyer/vat_id", json!("EL123456789")),
        ("/buyer/address/country", json!("GR")),
        ("/buyer/address/postal_code", json!("10431")),
        (
            "/buyer/endpoint",
            json!({"scheme": "9933", "id": "123456789"}),
        ),
        ("/issue_date", json!("1970-01-01")),
        ("/payment/due_date", json!("1970-02-01")),
    ]);
    for format in [Format::FatturaPa, Format::Ubl] {
        let xml = einvoice::render(&invoice, format, "00001")
            .unwrap_or_else(|p| panic!("{}", einvoice::describe(&p)));
        validator_accepts(&xml, format.name());
    }
}
