//! E-invoices: every invoice of `tests/invoices/` rendered as FatturaPA and UBL and checked by
//! the official schemas and the EN 16931 rules (`einvoice-reference/validate`); the arithmetic
//! read back from the XML; every invoice of `tests/invoices/broken/` refused with its rule and
//! line before any XML is written; delivery to a folder and to an HTTP access point.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use ciclo_connectors::einvoice::{self, Delivery, EinvoiceConnector, Format, Invoice, Target};
use ciclo_engine::runtime::{Connector, JobOutcome, JobRequest};
use ciclo_engine::{Value, Vars};

fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn invoice_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Invoice {
    let text = std::fs::read_to_string(path).unwrap();
    Invoice::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn render(path: &Path, format: Format) -> String {
    einvoice::render(&load(path), format, "00001")
        .unwrap_or_else(|problems| panic!("{}: {}", path.display(), einvoice::describe(&problems)))
}

/// Whether xmllint and saxonche are here; without them the validator cannot run. With
/// CICLO_REQUIRE_EINVOICE_TOOLS=1 (CI) their absence fails the test instead of skipping it.
fn tools_available(test: &str) -> bool {
    let xmllint = Command::new("xmllint").arg("--version").output().is_ok();
    let saxon = Command::new("python3")
        .args(["-c", "import saxonche"])
        .output()
        .is_ok_and(|o| o.status.success());
    if xmllint && saxon {
        return true;
    }
    let message = format!(
        "SKIPPED: {test}: xmllint or saxonche is missing (apt-get install libxml2-utils; pip install saxonche)"
    );
    if std::env::var("CICLO_REQUIRE_EINVOICE_TOOLS").as_deref() == Ok("1") {
        panic!("{message}, and CICLO_REQUIRE_EINVOICE_TOOLS=1");
    }
    println!("{message}");
    false
}

/// Runs the reference validator on all files at once (its XSLT compile is slow).
fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(here().join("einvoice-reference/validate"))
        .args(files)
        .output()
        .expect("the validate script runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The texts of every element with this local name, in document order.
fn texts(xml: &str, name: &str) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    // quick-xml hands `&amp;` over as its own event, so a text is gathered until its end tag.
    let mut current: Option<String> = None;
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => {
                current = (e.local_name().as_ref() == name).then(String::new);
            }
            Event::Text(t) => {
                if let Some(text) = current.as_mut() {
                    text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(text) = current.as_mut() {
                    let entity = r.xml10_content().into_owned();
                    text.push_str(match entity.as_str() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        other => panic!("unexpected entity {other}"),
                    });
                }
            }
            Event::End(_) => {
                if let Some(text) = current.take() {
                    out.push(text);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

/// The invoices of the test set, and which formats each is rendered in.
fn test_set() -> Vec<(PathBuf, Vec<Format>)> {
    invoice_files(&here().join("invoices"))
        .into_iter()
        .map(|p| (p, vec![Format::FatturaPa, Format::Ubl]))
        .collect()
}

#[test]
fn the_test_set_covers_the_cases_the_issue_names() {
    let names: Vec<String> = test_set()
        .iter()
        .map(|(p, _)| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for case in [
        "simple-b2b",
        "several-rates",
        "discount",
        "reverse-charge",
        "split-payment-pa",
        "credit-note",
        "foreign-buyer",
    ] {
        assert!(names.iter().any(|n| n == case), "missing {case}: {names:?}");
    }
}

#[test]
fn every_generated_file_passes_the_validator() {
    if !tools_available("every_generated_file_passes_the_validator") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (path, formats) in test_set() {
        for format in formats {
            let xml = render(&path, format);
            let name = format!(
                "{}.{}.xml",
                path.file_stem().unwrap().to_string_lossy(),
                format.name()
            );
            let out = dir.path().join(name);
            std::fs::write(&out, xml).unwrap();
            files.push(out);
        }
    }
    assert!(files.len() >= 14, "{files:?}");
    let (ok, report) = validate(&files);
    println!("{report}");
    assert!(ok, "the validator refused some files:\n{report}");
    for file in &files {
        assert!(
            report.contains(&format!("ok   {}", file.display())),
            "{} not reported ok:\n{report}",
            file.display()
        );
    }
}

#[test]
fn the_validator_catches_a_broken_file() {
    // The check above only means something if the validator fails bad files: an amount off by
    // 0.01 in a UBL file we wrote must break EN 16931, and a FatturaPA without its lines the schema.
    if !tools_available("the_validator_catches_a_broken_file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = here().join("invoices/simple-b2b.yaml");
    let ubl = render(&path, Format::Ubl).replace(
        "<cbc:PayableAmount currencyID=\"EUR\">732.00</cbc:PayableAmount>",
        "<cbc:PayableAmount currencyID=\"EUR\">732.01</cbc:PayableAmount>",
    );
    let fatturapa = render(&path, Format::FatturaPa).replace("<Numero>2026/001</Numero>", "");
    let files = [dir.path().join("u.xml"), dir.path().join("f.xml")];
    std::fs::write(&files[0], ubl).unwrap();
    std::fs::write(&files[1], fatturapa).unwrap();
    let (ok, report) = validate(&files);
    assert!(!ok, "{report}");
    assert!(report.contains("BR-CO-16"), "{report}");
    assert!(
        report.contains(&format!("FAIL {}", files[1].display())),
        "{report}"
    );
}

#[test]
fn vat_is_computed_on_the_sum_of_rounded_line_amounts() {
    let path = here().join("invoices/rounding-three-lines.yaml");
    let xml = render(&path, Format::FatturaPa);
    assert_eq!(texts(&xml, "PrezzoTotale"), ["0.33", "0.33", "0.33"]);
    assert_eq!(texts(&xml, "ImponibileImporto"), ["0.99"]);
    assert_eq!(texts(&xml, "Imposta"), ["0.22"]);
    assert_eq!(texts(&xml, "ImportoTotaleDocumento"), ["1.21"]);
    let xml = render(&path, Format::Ubl);
    assert_eq!(texts(&xml, "TaxableAmount"), ["0.99"]);
    assert_eq!(texts(&xml, "TaxAmount"), ["0.22", "0.22"]);
    assert_eq!(texts(&xml, "PayableAmount"), ["1.21"]);

    let path = here().join("invoices/rounding-one-line.yaml");
    let xml = render(&path, Format::FatturaPa);
    assert_eq!(texts(&xml, "PrezzoTotale"), ["30.45"]);
    assert_eq!(texts(&xml, "Imposta"), ["6.70"]);
    assert_eq!(texts(&xml, "ImportoTotaleDocumento"), ["37.15"]);
    let xml = render(&path, Format::Ubl);
    assert_eq!(texts(&xml, "LineExtensionAmount"), ["30.45", "30.45"]);
    assert_eq!(texts(&xml, "TaxAmount"), ["6.70", "6.70"]);
    assert_eq!(texts(&xml, "TaxInclusiveAmount"), ["37.15"]);
}

#[test]
fn split_payment_to_a_pa_is_fpa12_with_vat_left_out_of_the_amount_due() {
    let path = here().join("invoices/split-payment-pa.yaml");
    let xml = render(&path, Format::FatturaPa);
    assert!(xml.contains("versione=\"FPA12\""), "{xml}");
    assert_eq!(texts(&xml, "FormatoTrasmissione"), ["FPA12"]);
    assert_eq!(texts(&xml, "CodiceDestinatario"), ["UF1234"]);
    assert_eq!(texts(&xml, "EsigibilitaIVA"), ["S"]);
    assert_eq!(texts(&xml, "ImportoTotaleDocumento"), ["609.95"]);
    assert_eq!(texts(&xml, "ImportoPagamento"), ["499.96"]);
    let xml = render(&path, Format::Ubl);
    assert_eq!(texts(&xml, "PrepaidAmount"), ["109.99"]);
    assert_eq!(texts(&xml, "PayableAmount"), ["499.96"]);
}

#[test]
fn reverse_charge_foreign_buyer_and_credit_note_are_mapped() {
    let xml = render(
        &here().join("invoices/reverse-charge.yaml"),
        Format::FatturaPa,
    );
    assert_eq!(texts(&xml, "Natura"), ["N6.3", "N6.3", "N6.3"]);
    assert_eq!(texts(&xml, "Imposta"), ["0.00"]);
    assert_eq!(texts(&xml, "RiferimentoNormativo").len(), 1);
    let xml = render(&here().join("invoices/reverse-charge.yaml"), Format::Ubl);
    assert!(texts(&xml, "ID").iter().any(|t| t == "AE"), "{xml}");
    assert_eq!(texts(&xml, "TaxExemptionReasonCode"), ["VATEX-EU-AE"]);

    let xml = render(
        &here().join("invoices/foreign-buyer.yaml"),
        Format::FatturaPa,
    );
    assert_eq!(texts(&xml, "CodiceDestinatario"), ["XXXXXXX"]);
    assert_eq!(texts(&xml, "IdPaese"), ["IT", "IT", "NL"]);
    assert_eq!(texts(&xml, "CAP"), ["20100", "00000"]);
    let xml = render(&here().join("invoices/foreign-buyer.yaml"), Format::Ubl);
    assert!(texts(&xml, "ID").iter().any(|t| t == "K"), "{xml}");
    assert!(xml.contains("<cbc:EndpointID schemeID=\"9944\">NL123456789B01</cbc:EndpointID>"));

    let xml = render(&here().join("invoices/credit-note.yaml"), Format::FatturaPa);
    assert_eq!(texts(&xml, "TipoDocumento"), ["TD04"]);
    assert_eq!(texts(&xml, "IdDocumento"), ["2026/001"]);
    let xml = render(&here().join("invoices/credit-note.yaml"), Format::Ubl);
    assert!(xml.contains("<CreditNote "), "{xml}");
    assert_eq!(texts(&xml, "CreditNoteTypeCode"), ["381"]);
    assert!(xml.contains("<cac:BillingReference>"), "{xml}");
}

#[test]
fn names_are_escaped() {
    let path = here().join("invoices/simple-b2b.yaml");
    for format in [Format::FatturaPa, Format::Ubl] {
        let xml = render(&path, format);
        assert!(xml.contains("Rossi &amp; Figli &lt;srl&gt;"), "{xml}");
        assert!(!xml.contains("Rossi & Figli"), "{xml}");
        assert!(
            texts(&xml, "Denominazione")
                .iter()
                .chain(&texts(&xml, "RegistrationName"))
                .any(|t| t == "Rossi & Figli <srl>")
        );
    }
}

/// `# Refused: CODE line N` at the top of each broken invoice.
fn expectation(path: &Path) -> (String, Option<usize>) {
    let text = std::fs::read_to_string(path).unwrap();
    let first = text.lines().next().unwrap_or_default();
    let rest = first
        .strip_prefix("# Refused: ")
        .unwrap_or_else(|| panic!("{}: no `# Refused:` line", path.display()));
    let mut words = rest.split_whitespace();
    let code = words.next().unwrap().to_string();
    let line = match (words.next(), words.next()) {
        (Some("line"), Some(n)) => Some(n.parse().unwrap()),
        _ => None,
    };
    (code, line)
}

fn request(operation: &str, key: &str, invoice_path: &Path, format: &str) -> JobRequest {
    let text = std::fs::read_to_string(invoice_path).unwrap();
    let json: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let mut input = Vars::new();
    input.insert("invoice".into(), Value::from_json(json).unwrap());
    input.insert("format".into(), Value::String(format.into()));
    JobRequest {
        instance: uuid::Uuid::nil(),
        job: 1,
        attempt: 1,
        operation: operation.into(),
        key: key.into(),
        input,
    }
}

#[tokio::test]
async fn broken_invoices_are_refused_before_any_xml_is_written() {
    let files = invoice_files(&here().join("invoices/broken"));
    assert!(files.len() >= 10, "{files:?}");
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("out");
    let connector = EinvoiceConnector::new(Delivery::new(&folder, Target::Folder));
    for path in files {
        let (code, line) = expectation(&path);
        let invoice = load(&path);
        for format in [Format::FatturaPa, Format::Ubl] {
            let problems = einvoice::render(&invoice, format, "00001")
                .map(|_| ())
                .expect_err(&format!("{} was accepted", path.display()));
            assert!(
                problems.iter().any(|p| p.code == code && p.line == line),
                "{}: expected {code} at {line:?}, got:\n{}",
                path.display(),
                einvoice::describe(&problems)
            );
            let outcome = connector
                .call(request("issue", "k", &path, format.name()))
                .await;
            match outcome {
                JobOutcome::BusinessError { code: c, message } => {
                    assert_eq!(c, "INVOICE_INVALID");
                    assert!(message.contains(&code), "{message}");
                }
                other => panic!("{}: {other:?}", path.display()),
            }
        }
        assert!(
            !folder.exists(),
            "something was written for {}",
            path.display()
        );
    }
}

#[test]
fn problems_are_all_reported_sorted_by_line_with_hints() {
    let mut invoice = load(&here().join("invoices/several-rates.yaml"));
    invoice.lines[2].natura = Some("N3".into());
    invoice.lines[2].vat_rate = ciclo_connectors::einvoice::model::Number(0.into());
    invoice.lines[0].vat_rate = ciclo_connectors::einvoice::model::Number(0.into());
    invoice.seller.vat_id = None;
    let problems = einvoice::render(&invoice, Format::FatturaPa, "00001").unwrap_err();
    let listed: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        listed,
        [
            "EINV-SELLER-VAT seller.vat_id: the seller has no VAT number",
            "EINV-ZERO-RATE-NEEDS-NATURA line 1: a 0% VAT rate needs a Natura code saying why no VAT is charged",
            "EINV-NATURA-SUBCODE line 3: Natura N3 must be written with its sub-code",
        ]
    );
    assert!(problems.iter().all(|p| !p.hint.is_empty()));
}

#[tokio::test]
async fn folder_delivery_names_files_as_sdi_expects_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let connector = EinvoiceConnector::new(Delivery::new(dir.path(), Target::Folder));
    let simple = here().join("invoices/simple-b2b.yaml");
    let result = |outcome: JobOutcome| match outcome {
        JobOutcome::Done(vars) => vars,
        other => panic!("{other:?}"),
    };
    let first = result(
        connector
            .call(request("issue", "job-1", &simple, "fatturapa"))
            .await,
    );
    assert_eq!(
        first["file"],
        Value::String("IT01234567890_00001.xml".into())
    );
    assert_eq!(first["progressive"], Value::String("00001".into()));
    assert_eq!(first["format"], Value::String("fatturapa".into()));
    let again = result(
        connector
            .call(request("issue", "job-1", &simple, "fatturapa"))
            .await,
    );
    assert_eq!(again, first);
    let other = here().join("invoices/several-rates.yaml");
    let second = result(
        connector
            .call(request("deliver", "job-2", &other, "ubl"))
            .await,
    );
    assert_eq!(
        second["file"],
        Value::String("IT01234567890_00002.xml".into())
    );
    let xml_files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".xml"))
        .collect();
    let mut sorted = xml_files.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["IT01234567890_00001.xml", "IT01234567890_00002.xml"]
    );
    let written = std::fs::read_to_string(dir.path().join("IT01234567890_00001.xml")).unwrap();
    assert_eq!(texts(&written, "ProgressivoInvio"), ["00001"]);
    // A new connector on the same folder (a restart) still knows job-1 and counts on.
    let connector = EinvoiceConnector::new(Delivery::new(dir.path(), Target::Folder));
    let again = result(
        connector
            .call(request("issue", "job-1", &simple, "fatturapa"))
            .await,
    );
    assert_eq!(
        again["file"],
        Value::String("IT01234567890_00001.xml".into())
    );
    let third = result(
        connector
            .call(request("issue", "job-3", &simple, "fatturapa"))
            .await,
    );
    assert_eq!(third["progressive"], Value::String("00003".into()));
    // render gives the XML and delivers nothing.
    let rendered = result(
        connector
            .call(request("render", "job-4", &simple, "ubl"))
            .await,
    );
    let Value::String(xml) = &rendered["xml"] else {
        panic!("{rendered:?}")
    };
    assert!(xml.contains("<Invoice "));
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".xml")
            })
            .count(),
        3
    );
}

/// Content-Type, Idempotency-Key, Content-Disposition and body of a request.
type Call = (String, String, String, String);

#[derive(Clone, Default)]
struct Received {
    calls: Arc<Mutex<Vec<Call>>>,
    status: Arc<Mutex<u16>>,
}

async fn access_point(received: Received) -> String {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new()
        .route(
            "/invoices",
            axum::routing::post(
                |axum::extract::State(state): axum::extract::State<Received>,
                 headers: HeaderMap,
                 body: String| async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    state.calls.lock().unwrap().push((
                        header("content-type"),
                        header("idempotency-key"),
                        header("content-disposition"),
                        body,
                    ));
                    let status = *state.status.lock().unwrap();
                    (StatusCode::from_u16(status).unwrap(), "answer")
                },
            ),
        )
        .with_state(received);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/invoices")
}

#[tokio::test]
async fn http_delivery_posts_xml_with_the_idempotency_key() {
    let received = Received::default();
    *received.status.lock().unwrap() = 202;
    let url = access_point(received.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let connector = EinvoiceConnector::new(Delivery::new(dir.path(), Target::Http(url)));
    let simple = here().join("invoices/simple-b2b.yaml");
    match connector
        .call(request("issue", "job-9", &simple, "fatturapa"))
        .await
    {
        JobOutcome::Done(vars) => {
            assert_eq!(
                vars["file"],
                Value::String("IT01234567890_00001.xml".into())
            )
        }
        other => panic!("{other:?}"),
    }
    {
        let calls = received.calls.lock().unwrap();
        assert_eq!(calls.len(), 1);
        let (content_type, key, disposition, body) = &calls[0];
        assert_eq!(content_type, "application/xml");
        assert_eq!(key, "job-9");
        assert!(
            disposition.contains("IT01234567890_00001.xml"),
            "{disposition}"
        );
        assert_eq!(texts(body, "ProgressivoInvio"), ["00001"]);
    }
    // A retry of the same job sends the same document again (the access point de-duplicates
    // by key); no XML file is written locally in HTTP mode.
    *received.status.lock().unwrap() = 503;
    match connector
        .call(request("issue", "job-9", &simple, "fatturapa"))
        .await
    {
        JobOutcome::Failed(message) => assert!(message.contains("503"), "{message}"),
        other => panic!("{other:?}"),
    }
    *received.status.lock().unwrap() = 200;
    assert!(matches!(
        connector
            .call(request("issue", "job-9", &simple, "fatturapa"))
            .await,
        JobOutcome::Done(_)
    ));
    {
        let calls = received.calls.lock().unwrap();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[2].3, calls[0].3, "a retry sends the same document");
    }
    *received.status.lock().unwrap() = 422;
    match connector
        .call(request("issue", "job-10", &simple, "ubl"))
        .await
    {
        JobOutcome::BusinessError { code, message } => {
            assert_eq!(code, "EINVOICE_REJECTED");
            assert!(message.contains("422"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".xml"))
    );
    // Nothing listens here: a technical failure, retried by the engine.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let connector = EinvoiceConnector::new(Delivery::new(
        dir.path(),
        Target::Http(format!("http://127.0.0.1:{port}/x")),
    ));
    assert!(matches!(
        connector
            .call(request("issue", "job-11", &simple, "fatturapa"))
            .await,
        JobOutcome::Failed(_)
    ));
}
