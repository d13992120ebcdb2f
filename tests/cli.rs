//! The `ciclo` command as a user runs it: exit codes, output format, the shipped files.

use std::path::Path;
use std::process::{Command, Output};

fn ciclo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ciclo"))
        .args(args)
        .output()
        .expect("ciclo runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn schedule_prints_rfc3339_utc_across_dst() {
    let out = ciclo(&[
        "schedule",
        "0 30 2 * * *",
        "--tz",
        "Europe/Rome",
        "--from",
        "2027-03-27T00:00:00Z",
        "--count",
        "3",
    ]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        "2027-03-27T01:30:00Z\n2027-03-28T01:30:00Z\n2027-03-29T00:30:00Z\n"
    );
    let out = ciclo(&[
        "schedule",
        "0 30 2 * * *",
        "--tz",
        "Europe/Rome",
        "--from",
        "2027-10-30T00:00:00Z",
        "--count",
        "3",
    ]);
    assert_eq!(
        text(&out.stdout),
        "2027-10-30T00:30:00Z\n2027-10-31T00:30:00Z\n2027-11-01T01:30:00Z\n"
    );
    let out = ciclo(&[
        "schedule",
        "0 0 13 * 5",
        "--from",
        "2026-03-01T00:00:00Z",
        "--count",
        "8",
    ]);
    let days: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l[..10].to_string())
        .collect();
    assert_eq!(
        days,
        [
            "2026-03-06",
            "2026-03-13",
            "2026-03-20",
            "2026-03-27",
            "2026-04-03",
            "2026-04-10",
            "2026-04-13",
            "2026-04-17"
        ]
    );
}

#[test]
fn schedule_refuses_never_firing_and_malformed_expressions() {
    let out = ciclo(&["schedule", "0 0 31 4 *"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("April has no day 31"),
        "{}",
        text(&out.stderr)
    );
    let out = ciclo(&["schedule", "R0/PT1H"]);
    assert_eq!(out.status.code(), Some(1));
    let out = ciclo(&["schedule", "0 0 3x * *"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    // The caret sits under the bad field.
    assert!(err.contains("  0 0 3x * *\n       ^"), "{err}");
    let out = ciclo(&["schedule", "P1D", "--from", "yesterday"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn validate_accepts_the_shipped_processes() {
    let out = ciclo(&[
        "validate",
        concat!(env!("CARGO_MANIFEST_DIR"), "/processes"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn validate_skips_the_connector_mappings_of_a_process_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("connectors")).unwrap();
    std::fs::write(
        dir.path().join("connectors/erp.yaml"),
        "create-order:\n  url: \"{{erp_url}}/orders\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "process: p\nstart: done\nsteps:\n  done:\n    end: true\n",
    )
    .unwrap();
    let out = ciclo(&["validate", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok: 1 file(s), 1 process(es)"));
}

/// A server with an ERP refuses a `call: erp.<operation>` its mapping lacks; validate says so
/// first, with the operations the mapping has.
#[test]
fn validate_checks_erp_calls_against_the_folders_mapping() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("connectors")).unwrap();
    std::fs::write(
        dir.path().join("connectors/erp.yaml"),
        "create-order:\n  url: \"{{erp_url}}/orders\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "process: p\nstart: ship\nsteps:\n  ship:\n    call: erp.ship-samples\n    goto: book\n  book:\n    call: erp.create-order\n",
    )
    .unwrap();
    let out = ciclo(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("CICLO-E0131 connector `erp` has no operation `ship-samples`"),
        "{err}"
    );
    assert!(err.contains("operations: `create-order`"), "{err}");
    assert!(err.contains("1 problem(s)"), "{err}");
}

#[test]
fn validate_reports_file_line_column_code_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "process: bad\nstart: check\nsteps:\n  check:\n    decide:\n      - when: amount > > 5\n        goto: ok\n      - otherwise: ok\n  ok:\n    task: Approve\n    cadidates: [x]\n",
    )
    .unwrap();
    let out = ciclo(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let name = file.display().to_string();
    assert!(
        err.contains(&format!(
            "{name}:6:24: CICLO-E0120 bad expression `amount > > 5`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{name}:11:5: CICLO-E0103 unknown key `cadidates`")),
        "{err}"
    );
    assert!(
        err.contains("\n  hint: did you mean `candidates`?"),
        "{err}"
    );
}

#[test]
fn validate_exits_2_when_a_file_cannot_be_read() {
    let out = ciclo(&["validate", "/no/such/file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read /no/such/file.yaml"));
}

#[test]
fn the_committed_schema_is_current() {
    let out = ciclo(&["schema"]);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/ciclo-process.schema.json"
    ))
    .unwrap();
    assert_eq!(
        text(&out.stdout),
        committed,
        "regenerate with `cargo run -- schema > ciclo-process.schema.json`"
    );
}

#[test]
fn a_bad_flag_is_a_user_error_and_help_is_not_an_error() {
    let out = ciclo(&["instances", "--state", "bogus"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("possible values: active"));
    let out = ciclo(&["start", "--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("--idempotency-key"));
}

#[test]
fn validate_reports_a_send_step_whose_template_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("processes");
    std::fs::create_dir_all(folder.join("templates/welcome")).unwrap();
    for file in ["subject.hbs", "body.html.hbs", "body.txt.hbs"] {
        std::fs::write(
            folder.join("templates/welcome").join(file),
            "Hello {{name}}",
        )
        .unwrap();
    }
    let process = "process: greet\nstart: mail\nsteps:\n  mail:\n    send: welcom\n    to: email\n    goto: done\n  done: { end: true }\n";
    std::fs::write(folder.join("greet.yaml"), process).unwrap();
    let file = folder.join("greet.yaml");
    let out = ciclo(&["validate", file.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("greet.yaml:5:11: CICLO-E0137 unknown e-mail template `welcom`"),
        "{err}"
    );
    assert!(err.contains("did you mean `welcome`?"), "{err}");

    // The right name passes; a file far from any templates folder is not checked for them.
    std::fs::write(&file, process.replace("welcom\n", "welcome\n")).unwrap();
    let out = ciclo(&["validate", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let alone = tempfile::tempdir().unwrap();
    let lone = alone.path().join("greet.yaml");
    std::fs::write(&lone, process).unwrap();
    assert!(
        ciclo(&["validate", lone.to_str().unwrap()])
            .status
            .success()
    );
}

#[test]
fn serve_refuses_an_unwritable_einvoice_folder_and_a_bad_erp_ca_file_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "a file, not a folder").unwrap();
    let processes = Path::new(env!("CARGO_MANIFEST_DIR")).join("processes");
    let config = dir.path().join("ciclo.toml");
    std::fs::write(
        &config,
        format!("[einvoice]\nfolder = {:?}\n", blocker.join("invoices")),
    )
    .unwrap();
    let data = dir.path().join("data");
    let serve = |config: &Path, env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_ciclo"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .arg("--data")
            .arg(&data)
            .arg("--processes")
            .arg(&processes)
            .envs(env.iter().copied())
            .output()
            .expect("ciclo runs")
    };
    let out = serve(&config, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the e-invoice folder") && err.contains("not writable"),
        "{err}"
    );

    let not_pem = dir.path().join("ca.txt");
    std::fs::write(&not_pem, "no certificate here").unwrap();
    std::fs::write(&config, "erp_url = \"https://erp.example\"\n").unwrap();
    let out = serve(
        &config,
        &[
            ("CICLO_ERP_CA_FILE", not_pem.to_str().unwrap()),
            ("CICLO_SECRET_ERP_TOKEN", "t"),
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ERP CA file") && err.contains("ca.txt"),
        "{err}"
    );
}
