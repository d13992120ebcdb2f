//! QA review: the `ciclo` command as an analyst uses it. Tests that fail document bugs.

use std::io::Read;
use std::process::{Command, Stdio};

fn ciclo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ciclo"))
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD: &str = "process: good\nsteps:\n  a: { set: { x: 1 } }\n";

/// `ciclo schedule ... | head -1` must not panic when the reader closes the pipe.
#[test]
fn schedule_into_a_closed_pipe_does_not_panic() {
    let mut child = ciclo()
        .args([
            "schedule",
            "* * * * *",
            "--from",
            "2027-01-01T00:00:00Z",
            "--count",
            "200000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 21];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout); // like `head -1`
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A huge --count must start printing (or be refused), not compute every instant in memory
/// first: here nothing is printed within 10 seconds.
#[test]
fn schedule_with_a_huge_count_streams_or_refuses() {
    let mut child = ciclo()
        .args([
            "schedule",
            "R/PT1S",
            "--from",
            "2027-01-01T00:00:00Z",
            "--count",
            "18446744073709551615",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = [0u8; 1];
        let r = stdout.read(&mut first);
        let _ = tx.send(r.map(|n| n > 0).unwrap_or(false));
    });
    let printed = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or(false);
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(
        printed || status.code() == Some(1),
        "nothing printed within 10 s and not refused"
    );
}

/// A cycle whose repetitions all lie before --from never fires again: it should say so and
/// exit 1 (the issue: "a never-firing expression says so and exits 1"), not print nothing
/// and exit 0.
#[test]
fn schedule_of_a_cycle_that_ended_says_so() {
    let out = ciclo()
        .args([
            "schedule",
            "R2/2026-01-01T09:00/P1D",
            "--from",
            "2027-01-01T00:00:00Z",
        ])
        .output()
        .unwrap();
    assert!(
        !(out.status.success() && out.stdout.is_empty()),
        "silent exit 0 with no output; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Naming a file twice (or a folder and a file in it) makes the file conflict with itself.
#[test]
fn validate_a_file_named_twice_is_still_valid() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(&dir, "good.yaml", GOOD);
    let out = ciclo()
        .arg("validate")
        .arg(dir.path())
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A file with two YAML documents: the second process is silently dropped ("ok: 1 process").
#[test]
fn validate_reports_a_second_yaml_document() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "two.yaml",
        "process: p\nsteps:\n  a: { set: { x: 1 } }\n---\nprocess: q\nsteps:\n  b: { set: { x: 1 }, goto: nowhere }\n",
    );
    let out = ciclo().arg("validate").arg(&f).output().unwrap();
    assert!(
        !out.status.success(),
        "second document ignored: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Validating a whole folder, a call to a process that no file declares is not reported
/// (docs/errors.md lists CICLO-E0133 for it).
#[test]
fn validate_a_folder_reports_a_call_to_an_unknown_process() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir,
        "dunning.yaml",
        "process: dunning\nsteps:\n  a: { set: { x: 1 } }\n",
    );
    write(
        &dir,
        "caller.yaml",
        "process: caller\nsteps:\n  call:\n    process: duning\n",
    );
    let out = ciclo().arg("validate").arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CICLO-E0133"),
        "exit {:?}, stderr: {stderr}",
        out.status
    );
}

/// A bad expression written with a `\u` escape: the column should point at the `*`, not at
/// the opening quote.
#[test]
fn validate_column_inside_an_escaped_string() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "esc.yaml",
        "process: p\nsteps:\n  a:\n    set: { x: \"\\u00e9 + * 1\" }\n",
    );
    let out = ciclo().arg("validate").arg(&f).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // `    set: { x: "` is 15 columns; `\u00e9` 6 more, then ` + ` 3: the `*` is column 25.
    assert!(stderr.contains("esc.yaml:4:25:"), "{stderr}");
}

/// In `set:` a value is an expression, so the advice to quote a bare `{{ y }}` leads to
/// another error (CICLO-E0120 on `{{ y }}`); the hint should say to write `y`.
#[test]
fn validate_bare_braces_in_set_gives_advice_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "set.yaml",
        "process: p\nsteps:\n  a:\n    set: { x: {{ y }} }\n",
    );
    let out = ciclo().arg("validate").arg(&f).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("put it in quotes: \"{{ y }}\""),
        "{stderr}"
    );
}

/// Every shipped example validates, also each file on its own.
#[test]
fn shipped_examples_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("processes/examples");
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let out = ciclo().arg("validate").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `--store` with a name that is no store is refused by every command that opens a data
/// folder, and nothing is made in the folder (token create used to open a new sled store).
#[test]
fn an_unknown_store_is_refused_before_the_folder_is_touched() {
    let data = tempfile::tempdir().unwrap();
    let folder = data.path().to_str().unwrap();
    let runs: [&[&str]; 3] = [
        &[
            "token", "create", "--role", "admin", "--data", folder, "--store", "mongo",
        ],
        &[
            "user", "password", "anna", "--data", folder, "--store", "mongo",
        ],
        &[
            "serve",
            "--data",
            folder,
            "--store",
            "mongo",
            "--listen",
            "127.0.0.1:0",
        ],
    ];
    for args in runs {
        let mut child = ciclo()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // `user password` reads the password first: a good one, so the store is what fails.
        let mut stdin = child.stdin.take().unwrap();
        let _ = std::io::Write::write_all(&mut stdin, b"a good long password\n");
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("unknown store `mongo`: use `sled` or `redb`"),
            "{args:?}: {stderr}"
        );
        let made: Vec<_> = std::fs::read_dir(data.path()).unwrap().collect();
        assert!(made.is_empty(), "{args:?} made {made:?}");
    }
}

/// A data folder's own store is never shadowed by a new, empty one beside it: asking for the
/// store it does not hold is refused (and makes nothing), and so is asking for none of a
/// folder that holds both.
#[test]
fn the_store_a_folder_does_not_hold_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let folder = data.path().to_str().unwrap();
    let token = |extra: &[&str]| {
        ciclo()
            .args(["token", "create", "--role", "admin", "--data", folder])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = token(&["--store", "redb"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        token(&[]).status.success(),
        "a redb-only folder opens on redb"
    );

    for extra in [
        &["--store", "sled"][..],
        &["--store", "sled", "--user", "nobody"],
    ] {
        let out = token(extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(
            stderr.contains("holds a redb store, not a sled one: use --store redb"),
            "{stderr}"
        );
        assert!(
            !data.path().join("store").exists(),
            "no sled store was made"
        );
    }

    std::fs::create_dir(data.path().join("store")).unwrap();
    let out = token(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("holds both a sled store"), "{stderr}");
    assert!(token(&["--store", "redb"]).status.success(), "{stderr}");
}
