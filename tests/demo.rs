//! The whole-cycle demo of examples/lead-to-cash runs to its end on the small sample export:
//! leads imported, quotes approved and accepted, orders in the fake ERP, e-invoices written,
//! invoices paid on time, late (after two letters), partially, and one disputed.

use std::path::Path;
use std::process::Command;

#[test]
fn the_whole_cycle_demo_completes_on_the_sample_leads() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .arg(repo.join("examples/lead-to-cash/demo.py"))
        .args(["--ciclo", env!("CARGO_BIN_EXE_ciclo")])
        .arg("--leads")
        .arg(repo.join("tests/data/leads-sample.csv"))
        .arg("--data")
        .arg(data.path().join("demo"))
        .args(["--seconds", "170"])
        .output()
        .expect("python3 runs the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    for line in [
        "30 rows",
        "late invoices paid after two letters: ",
        "care cases resolved: ",
        "invoices paid partially: 1",
        "orders in the ERP: ",
    ] {
        assert!(stdout.contains(line), "`{line}` is not in:\n{stdout}");
    }
    let demo = data.path().join("demo");
    let count = |folder: &str, suffix: &str| {
        std::fs::read_dir(demo.join(folder))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                    .count()
            })
            .unwrap_or(0)
    };
    assert!(count("einvoices", ".xml") > 0, "no e-invoice:\n{stdout}");
    let outbox: Vec<String> = std::fs::read_dir(demo.join("outbox"))
        .expect("outbox")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect();
    for subject in [
        "Subject: Welcome",
        "Subject: Your quote",
        "Subject: Payment reminder",
        "Subject: Second reminder",
    ] {
        assert!(
            outbox.iter().any(|m| m.contains(subject)),
            "no e-mail with `{subject}` among {} in the outbox",
            outbox.len()
        );
    }
}
