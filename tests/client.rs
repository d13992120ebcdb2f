//! The commands that talk to a running server, as a person at a terminal uses them: the real
//! `ciclo serve` on port 0 with a temporary data folder, and the real `ciclo` binary against
//! it, checked by exit code, stdout and stderr.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::Server;

const ORDER: &str = r#"process: order
name: Order
steps:
  review:
    task: Review order {{name}}
    candidates: [sales]
    form: { decision: [approve, reject], discount: { type: number, min: 0, max: 0.5 } }
    goto: done
  done:
    end: true
"#;

const REPLY: &str = r#"process: reply
steps:
  wait-reply: { receive: reply, key: order, goto: done }
  done: { end: true }
"#;

const DIVIDE: &str = r#"process: divide
steps:
  calc: { set: { ratio: amount / count }, goto: done }
  done: { end: true }
"#;

const BROKEN: &str = "process: broken\nstart: a\nsteps:\n  a:\n    goto: nowhere\n";

/// Runs `ciclo` in `dir` with no `CICLO_...` variables, so only the arguments count.
fn ciclo_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ciclo"))
        .args(args)
        .current_dir(dir)
        .env_remove("CICLO_SERVER")
        .env_remove("CICLO_TOKEN")
        .env_remove("CICLO_DATA")
        .output()
        .expect("ciclo runs")
}

/// Runs `ciclo ARGS --server URL --token ADMIN`.
fn ciclo(server: &Server, dir: &Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--server", &server.url, "--token", &server.token]);
    ciclo_in(dir, &all)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

#[track_caller]
fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

#[track_caller]
fn exits(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

fn started(server: &Server, dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["start"];
    all.extend(args);
    all.push("--json");
    let out = ciclo(server, dir, &all);
    ok(&out);
    json(&out)["id"].as_str().expect("an id").to_string()
}

#[test]
fn a_session_from_a_terminal() {
    let data = tempfile::tempdir().expect("temp dir");
    let empty = support::processes(&[]);
    let server = Server::start(data.path(), empty.path());
    let work = support::processes(&[
        ("order.yaml", ORDER),
        ("reply.yaml", REPLY),
        ("divide.yaml", DIVIDE),
        ("broken.yaml", BROKEN),
    ]);
    let dir = work.path();

    // Deploy: good files go in, a broken one is refused with FILE:LINE:COL problems.
    let out = ciclo(
        &server,
        dir,
        &["deploy", "order.yaml", "reply.yaml", "divide.yaml"],
    );
    ok(&out);
    for process in ["order", "reply", "divide"] {
        assert!(
            stdout(&out)
                .lines()
                .any(|l| l.starts_with(process) && l.contains("new")),
            "{}",
            stdout(&out)
        );
    }
    let out = ciclo(&server, dir, &["deploy", "order.yaml"]);
    ok(&out);
    assert!(stdout(&out).contains("unchanged"), "{}", stdout(&out));
    let out = ciclo(&server, dir, &["deploy", "broken.yaml"]);
    exits(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("invalid_definition"), "{err}");
    let problem = err
        .lines()
        .find(|l| l.starts_with("broken.yaml:"))
        .unwrap_or_else(|| panic!("a FILE:LINE:COL line: {err}"));
    let mut parts = problem.splitn(4, ':');
    assert_eq!(parts.next(), Some("broken.yaml"));
    assert!(
        parts.next().is_some_and(|l| l.parse::<u32>().is_ok()),
        "{problem}"
    );
    assert!(
        parts.next().is_some_and(|c| c.parse::<u32>().is_ok()),
        "{problem}"
    );
    assert!(
        parts.next().is_some_and(|rest| rest.contains("CICLO-E")),
        "{problem}"
    );

    // Start: the amount keeps every digit, the quoted name is a string.
    let out = ciclo(
        &server,
        dir,
        &[
            "start",
            "order",
            "--var",
            "amount=1250.50",
            "--var",
            "big=12345678901234567.89",
            "--var",
            "name=\"Rossi\"",
            "--business-key",
            "PO-1",
        ],
    );
    ok(&out);
    let human = stdout(&out);
    assert!(human.contains("waits for task"), "{human}");
    let order = human
        .lines()
        .find_map(|l| l.strip_prefix("instance"))
        .map(|rest| rest.trim().to_string())
        .unwrap_or_else(|| panic!("an instance line: {human}"));
    let out = ciclo(&server, dir, &["instance", &order, "--json"]);
    ok(&out);
    // Exact decimals, never binary floats: the engine writes them normalized (1250.50 is
    // 1250.5), and a number an f64 would round (…567.89 -> …568) keeps every digit.
    let detail = json(&out);
    assert_eq!(detail["variables"]["amount"].to_string(), "1250.5");
    assert_eq!(
        detail["variables"]["big"].to_string(),
        "12345678901234567.89"
    );
    assert!(
        stdout(&out).contains("\"big\": 12345678901234567.89"),
        "{}",
        stdout(&out)
    );
    assert_eq!(detail["variables"]["name"], "Rossi");
    assert_eq!(detail["business_key"], "PO-1");

    // An idempotency key returns the first instance on a repeat.
    let first = started(&server, dir, &["order", "--idempotency-key", "k-1"]);
    let again = started(&server, dir, &["order", "--idempotency-key", "k-1"]);
    assert_eq!(first, again);

    // Tasks: the table names the task as INSTANCE/TASK, which `complete` takes.
    let out = ciclo(&server, dir, &["tasks"]);
    ok(&out);
    let table = stdout(&out);
    assert!(table.starts_with("TASK"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&order))
        .unwrap_or_else(|| panic!("a row for {order}: {table}"));
    assert!(row.contains("Review order Rossi"), "{row}");
    assert!(row.contains("groups: sales"), "{row}");
    let task = row
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();

    let out = ciclo(
        &server,
        dir,
        &[
            "complete",
            &task,
            "--var",
            "decision=maybe",
            "--var",
            "discount=0.1",
        ],
    );
    exits(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("invalid_form"), "{err}");
    assert!(err.lines().any(|l| l.starts_with("  decision: ")), "{err}");
    let (instance, number) = task.split_once('/').expect("INSTANCE/TASK");
    let out = ciclo(
        &server,
        dir,
        &[
            "complete",
            instance,
            number,
            "--var",
            "decision=approve",
            "--var",
            "discount=0.1",
        ],
    );
    ok(&out);
    assert!(stdout(&out).contains("completed task"), "{}", stdout(&out));

    let out = ciclo(
        &server,
        dir,
        &["instances", "--state", "completed", "--json"],
    );
    ok(&out);
    let page = json(&out);
    let ids: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, [order.as_str()]);
    let out = ciclo(&server, dir, &["instances", "--process", "order"]);
    ok(&out);
    assert_eq!(stdout(&out).lines().count(), 3, "{}", stdout(&out));
    let out = ciclo(&server, dir, &["instances", "--business-key", "PO-1"]);
    ok(&out);
    assert!(stdout(&out).contains("completed"), "{}", stdout(&out));

    // A message to an instance waiting on a receive.
    let waiting = started(&server, dir, &["reply", "--var", "order=\"A-7\""]);
    let out = ciclo(
        &server,
        dir,
        &["message", "reply", "--key", "A-7", "--var", "paid=true"],
    );
    ok(&out);
    assert!(stdout(&out).contains("delivered to"), "{}", stdout(&out));
    assert!(stdout(&out).contains(&waiting), "{}", stdout(&out));
    let out = ciclo(&server, dir, &["instance", &waiting, "--json"]);
    ok(&out);
    assert_eq!(json(&out)["state"], "completed");
    assert_eq!(json(&out)["variables"]["paid"], true);
    let out = ciclo(&server, dir, &["message", "reply", "--key", "nobody"]);
    ok(&out);
    assert!(stdout(&out).contains("dropped"), "{}", stdout(&out));
    let out = ciclo(
        &server,
        dir,
        &[
            "message", "reply", "--key", "later", "--ttl", "PT10M", "--json",
        ],
    );
    ok(&out);
    assert_eq!(json(&out)["outcome"], "buffered");
    let out = ciclo(
        &server,
        dir,
        &["message", "reply", "--key", "x", "--ttl", "ten minutes"],
    );
    exits(&out, 1);
    assert!(stderr(&out).contains("bad_request"), "{}", stderr(&out));

    // An incident: the script divides by zero; retrying runs it again.
    let failing = started(
        &server,
        dir,
        &["divide", "--var", "amount=10", "--var", "count=0"],
    );
    let out = ciclo(&server, dir, &["incidents"]);
    ok(&out);
    let row = stdout(&out)
        .lines()
        .find(|l| l.starts_with(&failing))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("an incident of {failing}: {}", stdout(&out)));
    assert!(row.contains("calc"), "{row}");
    let out = ciclo(&server, dir, &["instance", &failing]);
    ok(&out);
    assert!(
        stdout(&out).contains("waits for incident"),
        "{}",
        stdout(&out)
    );
    let out = ciclo(
        &server,
        dir,
        &["incidents", "--instance", &failing, "--json"],
    );
    ok(&out);
    let incidents = json(&out);
    let number = incidents["items"][0]["incident"].to_string();
    let out = ciclo(&server, dir, &["retry", &failing, &number]);
    ok(&out);
    assert!(
        stdout(&out).contains("retried incident"),
        "{}",
        stdout(&out)
    );
    let out = ciclo(&server, dir, &["retry", &format!("{failing}/999")]);
    exits(&out, 1);
    assert!(stderr(&out).contains("not_found"), "{}", stderr(&out));

    // Paging: a small --limit reads several pages and says more remain.
    let out = ciclo(&server, dir, &["instances", "--limit", "2", "--json"]);
    ok(&out);
    let page = json(&out);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    assert!(page["next_cursor"].is_string(), "{page}");
    let out = ciclo(&server, dir, &["instances"]);
    ok(&out);
    // A header and one row per instance: order, the idempotent one, reply, divide.
    assert_eq!(stdout(&out).lines().count(), 5, "{}", stdout(&out));

    let out = ciclo(
        &server,
        dir,
        &["instance", "00000000-0000-0000-0000-000000000000"],
    );
    exits(&out, 1);
    assert!(stderr(&out).contains("not_found"), "{}", stderr(&out));
}

#[test]
fn tokens_through_the_server_and_a_wrong_token() {
    let data = tempfile::tempdir().expect("temp dir");
    let processes = support::processes(&[("order.yaml", ORDER)]);
    let server = Server::start(data.path(), processes.path());
    let dir = processes.path();
    let data_arg = data.path().to_str().expect("UTF-8 path");

    let out = ciclo_in(
        dir,
        &[
            "token",
            "create",
            "--role",
            "operator",
            "--label",
            "night shift",
            "--server",
            &server.url,
            "--json",
        ],
    );
    // No token given and no ./ciclo-data here: the server refuses, and says how to give one.
    exits(&out, 1);
    assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--token"), "{}", stderr(&out));

    let out = ciclo_in(
        dir,
        &[
            "token",
            "create",
            "--role",
            "operator",
            "--server",
            &server.url,
            "--token",
            &server.token,
        ],
    );
    ok(&out);
    let operator = stdout(&out).trim().to_string();
    assert!(operator.starts_with("ciclo_"), "{operator}");

    // The operator works with instances but may not create tokens.
    let out = ciclo_in(
        dir,
        &[
            "start",
            "order",
            "--var",
            "name=Bianchi",
            "--server",
            &server.url,
            "--token",
            &operator,
        ],
    );
    ok(&out);
    let out = ciclo_in(
        dir,
        &["instances", "--server", &server.url, "--token", &operator],
    );
    ok(&out);
    assert!(stdout(&out).contains("order v1"), "{}", stdout(&out));
    let out = ciclo_in(
        dir,
        &[
            "token",
            "create",
            "--role",
            "admin",
            "--server",
            &server.url,
            "--token",
            &operator,
        ],
    );
    exits(&out, 1);
    assert!(stderr(&out).contains("forbidden"), "{}", stderr(&out));

    // `--data` on a client command reads the admin token from the data folder.
    let out = ciclo_in(
        dir,
        &[
            "tasks",
            "--server",
            &server.url,
            "--data",
            data_arg,
            "--json",
        ],
    );
    ok(&out);
    assert_eq!(json(&out)["items"].as_array().map(Vec::len), Some(1));

    // A wrong token: exit 1, the server's code, and a hint.
    let out = ciclo_in(
        dir,
        &[
            "instances",
            "--server",
            &server.url,
            "--token",
            "ciclo_wrong",
        ],
    );
    exits(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("unauthorized: "), "{err}");
    assert!(err.contains("hint:"), "{err}");

    // A role that does not exist is refused before asking the server.
    let out = ciclo(&server, dir, &["token", "create", "--role", "boss"]);
    exits(&out, 1);
}

#[test]
fn no_server_running_exits_2_and_says_how_to_start_one() {
    // A port that was free a moment ago: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("temp dir");
    for args in [
        vec!["instances"],
        vec!["deploy", "missing.yaml"],
        vec!["token", "create", "--role", "operator"],
    ] {
        let mut all = args.clone();
        all.extend(["--server", &url, "--token", "ciclo_x"]);
        let out = ciclo_in(dir.path(), &all);
        if args[0] == "deploy" {
            // The file is read before any request: a missing file is an I/O error too.
            exits(&out, 2);
            assert!(
                stderr(&out).contains("cannot read missing.yaml"),
                "{}",
                stderr(&out)
            );
            continue;
        }
        exits(&out, 2);
        let err = stderr(&out);
        assert!(err.contains(&format!("cannot connect to {url}")), "{err}");
        assert!(err.contains("ciclo serve"), "{err}");
    }
    let out = ciclo_in(dir.path(), &["instances", "--server", "not a url"]);
    exits(&out, 1);
}
