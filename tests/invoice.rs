//! `ciclo invoice render` and `ciclo invoice check` as a user runs them: XML on stdout and
//! exit 0, broken rules on stderr and exit 1, an unreadable or malformed file exit 2.

use std::path::PathBuf;
use std::process::{Command, Output};

fn ciclo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ciclo"))
        .args(args)
        .output()
        .expect("ciclo runs")
}

fn invoices() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("connectors/tests/invoices")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn render_writes_xml_and_exits_0() {
    let file = invoices().join("simple-b2b.yaml");
    let file = file.to_str().unwrap();
    let out = ciclo(&["invoice", "render", "--format", "fatturapa", file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let xml = text(&out.stdout);
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains("versione=\"FPR12\""), "{xml}");
    assert!(
        xml.contains("<ProgressivoInvio>00001</ProgressivoInvio>"),
        "{xml}"
    );
    assert!(text(&out.stderr).is_empty());
    let out = ciclo(&["invoice", "render", "--format", "ubl", file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("<cbc:PayableAmount currencyID=\"EUR\">732.00</cbc:PayableAmount>")
    );
    let out = ciclo(&["invoice", "check", file]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "ok: taxable 600.00, VAT 132.00, total 732.00, due 732.00\n"
    );
}

#[test]
fn broken_rules_go_to_stderr_with_exit_1_and_no_xml() {
    let file = invoices().join("broken/bare-natura.yaml");
    let name = file.to_str().unwrap();
    let out = ciclo(&["invoice", "render", "--format", "fatturapa", name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{name}: EINV-NATURA-SUBCODE line 2: Natura N2 must be written with its sub-code"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("  hint: use N2.1 or N2.2"), "{stderr}");
    let out = ciclo(&["invoice", "render", "--format", "pdf", name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown format `pdf`"));
}

#[test]
fn unreadable_or_malformed_files_exit_2_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let out = ciclo(&[
        "invoice",
        "render",
        "--format",
        "ubl",
        dir.path().join("missing.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read"));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "number: A1\nissue_date: 2026-01-01\nsellr: {}\n").unwrap();
    let out = ciclo(&[
        "invoice",
        "render",
        "--format",
        "ubl",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:3:", bad.display())),
        "{stderr}"
    );
    assert!(stderr.contains("sellr"), "{stderr}");
    let json = dir.path().join("bad.json");
    std::fs::write(&json, "{\"number\": \"A1\",\n \"issue_date\": }").unwrap();
    let out = ciclo(&["invoice", "check", json.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with(&format!("{}:2:", json.display())));
}
