//! Leads end to end, against the real server serving the repository's `processes/` folder:
//! matching an arriving lead to an existing one (test 1 of issue 6), importing a small lead
//! export of the real file's shape twice, and, when the real file is there, importing all of
//! it and measuring the shipped scoring against its real outcome.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Server;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn serve() -> (Server, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("temp");
    let server = Server::start(data.path(), &repo().join("processes"));
    (server, data)
}

async fn post_lead(c: &reqwest::Client, s: &Server, lead: Value) -> (u16, Value) {
    let r = c
        .post(format!("{}/api/leads", s.url))
        .bearer_auth(&s.token)
        .json(&json!({ "lead": lead, "source": "web-form" }))
        .send()
        .await
        .expect("POST /api/leads");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

async fn instance(c: &reqwest::Client, s: &Server, id: &str) -> Value {
    c.get(format!("{}/api/instances/{id}", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("GET instance")
        .json()
        .await
        .expect("json")
}

/// Issue 6, test 1: `  Mario.Rossi@Example.IT ` after `mario.rossi@example.it` is no new
/// lead but an activity on the first; a `+tag` address is a lead of its own, flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_email_again_is_an_activity_of_the_first_lead() {
    let (s, _data) = serve();
    let c = reqwest::Client::new();
    let lead = json!({ "email": "mario.rossi@example.it", "origin": "Lead Add Form",
                       "source": "Reference", "time_on_site": 1500 });
    let (status, first) = post_lead(&c, &s, lead).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["outcome"], "created");
    assert_eq!(first["business_key"], "email:mario.rossi@example.it");
    assert!(first["grade"].is_string(), "scored at once: {first}");

    let (status, second) = post_lead(&c, &s, json!({ "email": "  Mario.Rossi@Example.IT " })).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["outcome"], "matched");
    assert_eq!(second["instance"], first["instance"]);

    // The activity reaches the instance as soon as it listens (it may be handing the lead to
    // assignment or nurture first): read it until it has, within a bound.
    let id = first["instance"].as_str().expect("id");
    let deadline = Instant::now() + Duration::from_secs(30);
    let activities = loop {
        let detail = instance(&c, &s, id).await;
        let activities = detail["variables"]["activities"].clone();
        if activities.as_array().is_some_and(|a| !a.is_empty()) {
            break activities;
        }
        assert!(Instant::now() < deadline, "no activity recorded: {detail}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(activities.as_array().map(Vec::len), Some(1), "{activities}");
    assert_eq!(activities[0]["source"], "web-form");
    assert_eq!(activities[0]["lead"]["email"], "  Mario.Rossi@Example.IT ");

    // Still one lead-intake instance.
    let list: Value = c
        .get(format!("{}/api/instances?definition=lead-intake", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    let (status, tagged) =
        post_lead(&c, &s, json!({ "email": "Mario.Rossi+News@example.it" })).await;
    assert_eq!(status, 201, "{tagged}");
    assert_eq!(tagged["outcome"], "created");
    assert_ne!(tagged["instance"], first["instance"]);
    assert_eq!(
        tagged["possible_duplicate_of"],
        "email:mario.rossi@example.it"
    );
    let detail = instance(&c, &s, tagged["instance"].as_str().expect("id")).await;
    assert_eq!(
        detail["variables"]["possible_duplicate_of"],
        "email:mario.rossi@example.it"
    );

    // A lead without identity is refused, and says why.
    let (status, refused) = post_lead(&c, &s, json!({ "origin": "API" })).await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .contains("external_id")
    );
    // An address that is none is refused by name, and nothing is started.
    for bad in ["not-an-email", "a@b@c", "<script>alert(1)</script>@x.io"] {
        let (status, refused) = post_lead(&c, &s, json!({ "email": bad })).await;
        assert_eq!(status, 400, "{bad}: {refused}");
        let message = refused["message"].as_str().unwrap_or("");
        assert!(message.contains("not an e-mail address"), "{message}");
    }
    let (status, refused) = post_lead(&c, &s, json!({ "email": 42 })).await;
    assert_eq!(status, 400);
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .contains("must be a text")
    );
    // A numeric external id is an id.
    let (status, numeric) = post_lead(&c, &s, json!({ "external_id": 660737 })).await;
    assert_eq!(status, 201, "{numeric}");
    assert_eq!(numeric["business_key"], "lead:660737");
}

fn ciclo(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ciclo"))
        .current_dir(repo())
        .args(args)
        .output()
        .expect("ciclo runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn import(s: &Server, file: &Path) -> (Value, String) {
    let file = file.to_str().expect("utf-8 path");
    let (code, out, err) = ciclo(&[
        "import",
        "leads",
        file,
        "--mapping",
        "processes/imports/x-education.yaml",
        "--server",
        &s.url,
        "--token",
        &s.token,
        "--json",
    ]);
    assert_eq!(code, 0, "import failed:\n{out}\n{err}");
    (serde_json::from_str(&out).expect("--json summary"), err)
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("`{key}` in {v}"))
}

/// The small file of the real file's shape (37 columns, trailing comma, CRLF, `Select`,
/// google/Google, empty numbers, Do Not Email, a broken row, a bad number, a duplicate
/// Prospect ID), imported twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_export_imports_once_and_reports_bad_rows_by_line() {
    let (s, _data) = serve();
    let sample = repo().join("tests/data/leads-sample.csv");
    let (first, err) = import(&s, &sample);
    assert_eq!(n(&first, "rows"), 30, "{first}");
    assert_eq!(n(&first, "imported"), 27, "{first}");
    assert_eq!(n(&first, "duplicates"), 1, "{first}");
    assert_eq!(n(&first, "already_imported"), 0, "{first}");
    assert_eq!(n(&first, "rejected"), 2, "{first}");
    assert!(
        err.contains("line 11: 36 fields, the header has 38"),
        "{err}"
    );
    assert!(
        err.contains("line 26: column `TotalVisits`: `ten` is not a number"),
        "{err}"
    );
    assert_eq!(
        n(&first, "hot") + n(&first, "warm") + n(&first, "cold"),
        28,
        "every accepted row is graded: {first}"
    );
    assert!(n(&first, "hot") >= 3, "the three plainly hot rows: {first}");
    let assigned: u64 = first["assigned"]
        .as_object()
        .expect("assigned")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(
        assigned,
        n(&first, "hot"),
        "every hot lead assigned: {first}"
    );
    assert_eq!(n(&first, "suppressed_emails"), 3, "{first}");

    let (second, _) = import(&s, &sample);
    assert_eq!(n(&second, "rows"), 30);
    assert_eq!(n(&second, "imported"), 0, "{second}");
    assert_eq!(n(&second, "duplicates"), 0, "{second}");
    assert_eq!(n(&second, "already_imported"), 28, "{second}");
    assert_eq!(n(&second, "rejected"), 2, "{second}");
}

/// `--data DIR` with no server running: the import starts `ciclo serve` on the folder, imports,
/// and stops it; a second import adds nothing; a server started on the folder afterwards has
/// the 27 leads. With a server running on the folder, the import goes through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_into_a_data_folder_starts_a_server_for_it() {
    let data = tempfile::tempdir().expect("temp");
    let folder = data.path().join("ciclo-data");
    let folder_text = folder.to_str().expect("utf-8");
    let into_folder = || {
        ciclo(&[
            "import",
            "leads",
            "tests/data/leads-sample.csv",
            "--mapping",
            "processes/imports/x-education.yaml",
            "--data",
            folder_text,
            // Nothing listens there: the import must start its own server.
            "--server",
            "http://127.0.0.1:9",
            "--settle-seconds",
            "20",
            "--json",
        ])
    };
    let (code, out, err) = into_folder();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("started ciclo serve on"), "{err}");
    let first: Value = serde_json::from_str(&out).expect("--json summary");
    assert_eq!(n(&first, "imported"), 27, "{first}");
    let (code, out, err) = into_folder();
    assert_eq!(code, 0, "{out}\n{err}");
    let second: Value = serde_json::from_str(&out).expect("--json summary");
    assert_eq!(n(&second, "imported"), 0, "{second}");
    assert_eq!(n(&second, "already_imported"), 28, "{second}");

    // The folder is a normal data folder: a server on it has the 28 lead instances, and an
    // import while it runs goes through it.
    let s = Server::start(&folder, &repo().join("processes"));
    let c = reqwest::Client::new();
    let listed: Value = c
        .get(format!(
            "{}/api/instances?definition=lead-intake&limit=100",
            s.url
        ))
        .bearer_auth(&s.token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let items = listed["items"].as_array().expect("items");
    // 27 leads: of the 28 rows taken, one is a duplicate (an activity on another lead).
    assert_eq!(items.len(), 27, "{listed}");
    let (code, out, err) = ciclo(&[
        "import",
        "leads",
        "tests/data/leads-sample.csv",
        "--mapping",
        "processes/imports/x-education.yaml",
        "--data",
        folder_text,
        "--server",
        &s.url,
        "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("started ciclo serve"), "{err}");
    let third: Value = serde_json::from_str(&out).expect("--json summary");
    assert_eq!(n(&third, "already_imported"), 28, "{third}");
}

/// `--placeholder-email`: the anonymised file has no addresses; with a placeholder domain the
/// warm leads' nurture e-mails land in the outbox, addressed `<prospect id>@example.com`, and
/// a Do Not Email lead still gets none. A bad domain is refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_addresses_make_the_nurture_emails_visible() {
    let (s, data) = serve();
    let sample = repo().join("tests/data/leads-sample.csv");
    let file = sample.to_str().expect("utf-8 path");
    let (code, _, err) = ciclo(&[
        "import",
        "leads",
        file,
        "--mapping",
        "processes/imports/x-education.yaml",
        "--server",
        &s.url,
        "--token",
        &s.token,
        "--placeholder-email",
        "not a domain",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--placeholder-email `not a domain` is not a domain name"),
        "{err}"
    );
    let (code, out, err) = ciclo(&[
        "import",
        "leads",
        file,
        "--mapping",
        "processes/imports/x-education.yaml",
        "--server",
        &s.url,
        "--token",
        &s.token,
        "--placeholder-email",
        "Example.com",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let summary: Value = serde_json::from_str(&out).expect("--json summary");
    assert!(n(&summary, "warm") > 0, "{summary}");
    // The welcome e-mail of every warm lead that may be e-mailed, once each.
    let outbox = data.path().join("outbox");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mails = loop {
        let mails: Vec<String> = std::fs::read_dir(&outbox)
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        if !mails.is_empty() || std::time::Instant::now() > deadline {
            break mails;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        !mails.is_empty(),
        "no nurture e-mail in {}",
        outbox.display()
    );
    for mail in &mails {
        let to = mail
            .lines()
            .find_map(|l| l.strip_prefix("To: "))
            .unwrap_or_else(|| panic!("no To: in\n{mail}"));
        assert!(to.ends_with("@example.com"), "{to}");
        assert!(mail.contains("Subject: Welcome"), "{mail}");
    }
    assert!(
        mails.len() as u64 <= n(&summary, "warm"),
        "{} e-mails for {} warm leads",
        mails.len(),
        n(&summary, "warm")
    );
}

fn leads_csv() -> Option<PathBuf> {
    let path = std::env::var_os("CICLO_LEADS_CSV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data/leads/Leads.csv"));
    path.exists().then_some(path)
}

fn auc_of(report: &str) -> f64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("AUC: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no AUC in:\n{report}"))
}

/// Issue 6, test 5: the real lead file (9,240 leads), when it is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_lead_file_imports_and_scores_above_0_85() {
    let Some(file) = leads_csv() else {
        println!("SKIPPED: ../shared/data/leads/Leads.csv not found (set CICLO_LEADS_CSV)");
        return;
    };
    let (s, _data) = serve();
    let started = Instant::now();
    let (first, _) = import(&s, &file);
    println!("imported the real file in {:?}: {first}", started.elapsed());
    assert_eq!(n(&first, "rows"), 9240, "{first}");
    assert_eq!(
        n(&first, "imported") + n(&first, "duplicates") + n(&first, "rejected"),
        9240,
        "{first}"
    );
    assert_eq!(
        n(&first, "imported"),
        9240,
        "every Prospect ID is unique: {first}"
    );
    assert_eq!(
        n(&first, "hot") + n(&first, "warm") + n(&first, "cold"),
        9240
    );
    assert_eq!(
        n(&first, "suppressed_emails"),
        734,
        "Do Not Email = Yes: {first}"
    );

    let (second, _) = import(&s, &file);
    assert_eq!(n(&second, "imported"), 0, "{second}");
    assert_eq!(n(&second, "duplicates"), 0, "{second}");
    assert_eq!(n(&second, "already_imported"), 9240, "{second}");

    let file = file.to_str().expect("utf-8 path");
    let mapping = "processes/imports/x-education.yaml";
    let (code, report, err) = ciclo(&["leads", "score-report", file, "--mapping", mapping]);
    assert_eq!(code, 0, "{report}{err}");
    println!("{report}");
    assert!(report.contains("rows: 9240"), "{report}");
    assert!(report.contains("converted: 3561"), "{report}");
    let auc = auc_of(&report);
    assert!(auc >= 0.85, "AUC {auc} on the whole file");

    // The tables learned without every fifth row, measured on those rows only.
    let (code, held, err) = ciclo(&[
        "leads",
        "score-report",
        file,
        "--mapping",
        mapping,
        "--processes",
        "scripts/lead-scoring-holdout",
        "--every",
        "5",
    ]);
    assert_eq!(code, 0, "{held}{err}");
    println!("{held}");
    assert!(held.contains("rows: 1848"), "{held}");
    let held_auc = auc_of(&held);
    assert!(held_auc >= 0.85, "held-out AUC {held_auc}");
}
