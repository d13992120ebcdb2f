//! `ciclo import leads` and `ciclo leads score-report`: a lead export (CSV) read through a
//! mapping file (`processes/imports/*.yaml`) into lead fields; each lead sent to the server's
//! `POST /api/leads` (idempotency key = its external id, so importing a file twice adds
//! nothing), or scored by the shipped decision tables and measured against the file's real
//! outcome (area under the ROC curve).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use ciclo_engine::Value;
use ciclo_engine::decision;
use ciclo_engine::expr::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use serde_json::json;

use crate::client::Remote;

#[derive(Subcommand)]
pub enum ImportCommand {
    /// Import leads from a CSV export into a running server, or into a data folder (`--data`;
    /// a server is started on it for the import when none answers): one `POST /api/leads` per
    /// row, then a summary (imported, duplicates, rejected rows with reasons, hot/warm/cold,
    /// assigned per salesperson, suppressed e-mails).
    Leads(ImportArgs),
}

#[derive(Args)]
pub struct ImportArgs {
    /// The CSV file.
    pub file: PathBuf,
    /// The mapping file (columns to lead fields, cleaning), e.g. processes/imports/x-education.yaml.
    #[arg(long)]
    pub mapping: PathBuf,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// How long to wait for hot leads to get their salesperson after the rows are sent.
    #[arg(long, default_value = "60")]
    pub settle_seconds: u64,
    /// For demos and trials: give each lead without an e-mail address a placeholder one,
    /// `<external id>@DOMAIN` (lower-cased; `line-<N>@DOMAIN` without an id), so that the
    /// e-mails the processes send can be seen in the outbox. Use a domain nobody receives
    /// mail at, such as example.com.
    #[arg(long, value_name = "DOMAIN")]
    pub placeholder_email: Option<String>,
    /// The data folder to import into. When a server answers at --server, the import goes
    /// through it with the folder's admin token; when none does, `ciclo serve` is started on
    /// the folder (with --processes) for the import, and stopped after it: the leads' work
    /// (nurture e-mails, timers) goes on at the next `ciclo serve`.
    #[arg(long, env = "CICLO_DATA")]
    pub data: Option<PathBuf>,
    /// With --data and no server running: the process folder the started server deploys.
    #[arg(long, default_value = "processes")]
    pub processes: PathBuf,
    #[command(flatten)]
    pub remote: Remote,
}

/// `ciclo serve` started on a data folder for an import, stopped (SIGTERM, then waited for)
/// when dropped.
struct ImportServer {
    child: std::process::Child,
    url: String,
}

impl ImportServer {
    fn start(data: &Path, processes: &Path) -> anyhow::Result<ImportServer> {
        use std::io::BufRead as _;
        let exe = std::env::current_exe().context("cannot find the ciclo program itself")?;
        std::fs::create_dir_all(data)
            .with_context(|| format!("cannot create the data folder {}", data.display()))?;
        // Its log goes to a file in the data folder (a pipe nobody reads would fill up).
        let log_path = data.join("import-server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot write {}", log_path.display()))?;
        let mut child = std::process::Command::new(exe)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--processes")
            .arg(processes)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot start `ciclo serve` for the import")?;
        let stdout = child
            .stdout
            .take()
            .context("no output from `ciclo serve`")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.wait();
                    let why = std::fs::read_to_string(&log_path).unwrap_or_default();
                    return Err(UserError(format!(
                        "`ciclo serve --data {} --processes {}` did not start: {}",
                        data.display(),
                        processes.display(),
                        why.trim()
                    ))
                    .into());
                }
            }
        };
        // Keep reading its output so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        eprintln!(
            "started ciclo serve on {} at {url} for the import (log: {})",
            data.display(),
            log_path.display()
        );
        Ok(ImportServer { child, url })
    }
}

impl Drop for ImportServer {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the pid of our own child, which has not been waited for, so
            // the pid cannot have been reused.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let _ = self.child.wait();
    }
}

/// Whether a Ciclo server answers `GET /healthz` at `base`.
fn server_answers(base: &str) -> bool {
    let (Ok(runtime), Ok(client)) = (
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build(),
    ) else {
        return false;
    };
    runtime.block_on(async {
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
}

/// `--placeholder-email`: an address for every lead that has none.
fn add_placeholder_emails(rows: &mut [LeadRow], domain: &str) -> Result<(), String> {
    let domain = domain.trim().trim_start_matches('@').to_lowercase();
    let valid = !domain.is_empty()
        && domain.contains('.')
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !valid {
        return Err(format!(
            "--placeholder-email `{domain}` is not a domain name: give one such as example.com"
        ));
    }
    for row in rows {
        let has_email = row.lead["email"]
            .as_str()
            .is_some_and(|e| !e.trim().is_empty());
        if has_email {
            continue;
        }
        let local = match &row.external_id {
            Some(id) => id
                .to_lowercase()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect(),
            None => format!("line-{}", row.line),
        };
        if let Some(lead) = row.lead.as_object_mut() {
            lead.insert("email".into(), format!("{local}@{domain}").into());
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum LeadsCommand {
    /// Score every row of a lead export with the decision tables of a process folder
    /// (lead-fit + lead-engagement, then lead-grade) and measure the score against the
    /// file's real outcome: the area under the ROC curve, and conversion per grade.
    ScoreReport(ScoreArgs),
}

#[derive(Args)]
pub struct ScoreArgs {
    pub file: PathBuf,
    #[arg(long)]
    pub mapping: PathBuf,
    /// The folder with the tables (default ./processes).
    #[arg(long, default_value = "processes")]
    pub processes: PathBuf,
    /// Only every N-th data row: rows 1, 1+N, 1+2N, ... (the rows a held-out learning left out).
    #[arg(long)]
    pub every: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

// ----- the mapping ---------------------------------------------------------------------

/// A mapping file: see processes/imports/x-education.yaml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub external_id: Option<String>,
    pub outcome: Option<String>,
    #[serde(default)]
    pub empty: Vec<String>,
    pub fields: BTreeMap<String, FieldRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    pub column: String,
    #[serde(default, rename = "type")]
    pub kind: FieldType,
    pub empty: Option<Vec<String>>,
    #[serde(default)]
    pub lowercase: bool,
    #[serde(default)]
    pub map: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    #[default]
    Text,
    Number,
    Boolean,
}

impl Mapping {
    pub fn load(path: &Path) -> anyhow::Result<Mapping> {
        let text = crate::read(path)?;
        let mut options = serde_saphyr::Options::default();
        options.strict_booleans = true;
        serde_saphyr::from_str_with_options(&text, options)
            .map_err(|e| anyhow!("{}: {e}", path.display()))
    }
}

/// One data row read through the mapping.
#[derive(Debug)]
pub struct LeadRow {
    /// Its line in the file (the header is line 1).
    pub line: u64,
    pub lead: serde_json::Value,
    pub external_id: Option<String>,
    pub outcome: Option<bool>,
}

/// What reading a file gave: good rows, and rejected rows with their line and reason.
#[derive(Debug, Default)]
pub struct ReadFile {
    pub rows: Vec<LeadRow>,
    pub rejected: Vec<(u64, String)>,
}

impl ReadFile {
    pub fn total(&self) -> usize {
        self.rows.len() + self.rejected.len()
    }
}

/// Reads a CSV export through a mapping. A row with the wrong number of fields or a value
/// that does not fit its type is rejected with its line; it never stops the reading.
pub fn read_file(path: &Path, mapping: &Mapping) -> anyhow::Result<ReadFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(bytes.as_slice());
    // Line numbers from byte offsets: with CRLF, the csv crate counts a record's line before
    // it has read the previous line's `\n`, one too low.
    let mut counted = (0usize, 1u64);
    let mut line_at = |offset: u64| {
        let mut at = (offset as usize).min(bytes.len());
        while at < bytes.len() && matches!(bytes[at], b'\r' | b'\n') {
            at += 1;
        }
        if at >= counted.0 {
            counted.1 += bytes[counted.0..at].iter().filter(|b| **b == b'\n').count() as u64;
            counted.0 = at;
        }
        counted.1
    };
    let headers = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header line", path.display()))?
        .clone();
    let index = |column: &str| {
        headers
            .iter()
            .position(|h| h.trim() == column)
            .ok_or_else(|| {
                anyhow!(
                    "{}: no column `{column}` in the header line",
                    path.display()
                )
            })
    };
    let fields = mapping
        .fields
        .iter()
        .map(|(name, rule)| Ok((name.as_str(), rule, index(&rule.column)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let external = mapping.external_id.as_deref().map(index).transpose()?;
    let outcome = mapping.outcome.as_deref().map(index).transpose()?;
    let mut out = ReadFile::default();
    let mut record = csv::StringRecord::new();
    loop {
        let before = reader.position().byte();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = line_at(e.position().map_or(before, |p| p.byte()));
                out.rejected.push((line, format!("unreadable row: {e}")));
                continue;
            }
        }
        let line = line_at(record.position().map_or(before, |p| p.byte()));
        if record.len() != headers.len() {
            out.rejected.push((
                line,
                format!("{} fields, the header has {}", record.len(), headers.len()),
            ));
            continue;
        }
        match row(mapping, &fields, &record, external, outcome) {
            Ok((lead, external_id, outcome)) => out.rows.push(LeadRow {
                line,
                lead,
                external_id,
                outcome,
            }),
            Err(reason) => out.rejected.push((line, reason)),
        }
    }
    Ok(out)
}

type Fields<'m> = [(&'m str, &'m FieldRule, usize)];

fn row(
    mapping: &Mapping,
    fields: &Fields<'_>,
    record: &csv::StringRecord,
    external: Option<usize>,
    outcome: Option<usize>,
) -> Result<(serde_json::Value, Option<String>, Option<bool>), String> {
    let mut lead = serde_json::Map::new();
    for (name, rule, at) in fields {
        let raw = record.get(*at).unwrap_or("").trim();
        let value = clean(mapping, rule, raw)
            .map_err(|reason| format!("column `{}`: {reason}", rule.column))?;
        lead.insert(name.to_string(), value);
    }
    let external_id = external
        .and_then(|i| record.get(i))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    if let Some(id) = &external_id {
        lead.insert("external_id".into(), id.clone().into());
    }
    let outcome = match outcome.and_then(|i| record.get(i)).map(str::trim) {
        None | Some("") => None,
        Some("1" | "Yes" | "yes" | "true") => Some(true),
        Some("0" | "No" | "no" | "false") => Some(false),
        Some(other) => return Err(format!("outcome `{other}` is not 0 or 1")),
    };
    Ok((serde_json::Value::Object(lead), external_id, outcome))
}

/// One value cleaned by its rule: empty markers are null, then lowercase, map, type.
pub fn clean(mapping: &Mapping, rule: &FieldRule, raw: &str) -> Result<serde_json::Value, String> {
    let empty = rule.empty.as_ref().unwrap_or(&mapping.empty);
    if raw.is_empty() || empty.iter().any(|e| e == raw) {
        return Ok(serde_json::Value::Null);
    }
    let mut text = if rule.lowercase {
        raw.to_lowercase()
    } else {
        raw.to_string()
    };
    if let Some(mapped) = rule.map.get(&text) {
        text = mapped.clone();
    }
    match rule.kind {
        FieldType::Text => Ok(text.into()),
        FieldType::Boolean => match text.as_str() {
            "Yes" | "yes" | "true" => Ok(true.into()),
            "No" | "no" | "false" => Ok(false.into()),
            _ => Err(format!("`{text}` is not Yes or No")),
        },
        FieldType::Number => {
            let ok = text.parse::<f64>().is_ok_and(f64::is_finite)
                && text
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
            if !ok {
                return Err(format!("`{text}` is not a number"));
            }
            serde_json::from_str::<serde_json::Number>(&text)
                .map(serde_json::Value::Number)
                .map_err(|_| format!("`{text}` is not a number"))
        }
    }
}

// ----- import ----------------------------------------------------------------------------

#[derive(Debug, Default, serde::Serialize)]
struct Summary {
    rows: usize,
    imported: usize,
    duplicates: usize,
    already_imported: usize,
    rejected: usize,
    rejected_reasons: BTreeMap<String, Vec<u64>>,
    hot: usize,
    warm: usize,
    cold: usize,
    assigned: BTreeMap<String, usize>,
    unassigned_hot: usize,
    suppressed_emails: usize,
    seconds: f64,
}

pub fn run_import(command: ImportCommand) -> ExitCode {
    let ImportCommand::Leads(args) = command;
    match import(&args) {
        Ok(summary) => {
            if args.remote.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).unwrap_or_default()
                );
            } else {
                print!("{}", render_summary(&summary));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ciclo: {e:#}");
            ExitCode::from(if e.is::<UserError>() { 1 } else { 2 })
        }
    }
}

/// A mistake in what the user gave (exit 1), as opposed to I/O or the server (exit 2).
#[derive(Debug)]
struct UserError(String);

impl std::error::Error for UserError {}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn import(args: &ImportArgs) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let mapping = Mapping::load(&args.mapping).map_err(|e| UserError(format!("{e:#}")))?;
    let mut file = read_file(&args.file, &mapping).map_err(|e| UserError(format!("{e:#}")))?;
    if let Some(domain) = &args.placeholder_email {
        add_placeholder_emails(&mut file.rows, domain).map_err(UserError)?;
    }
    let mut base = args.remote.server.trim().trim_end_matches('/').to_string();
    let mut _server = None;
    if let Some(data) = &args.data
        && !server_answers(&base)
    {
        let server = ImportServer::start(data, &args.processes)?;
        base = server.url.trim_end_matches('/').to_string();
        _server = Some(server);
    }
    let token = match (&args.remote.token, &args.data) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(data)) => {
            let path = data.join("admin-token");
            std::fs::read_to_string(&path)
                .map(|t| t.trim().to_string())
                .map_err(|e| {
                    UserError(format!(
                        "cannot read the admin token {}: {e} (is {} a Ciclo data folder?)",
                        path.display(),
                        data.display()
                    ))
                })?
        }
        (None, None) => crate::client::default_token()
            .map_err(UserError)?
            .ok_or_else(|| {
                UserError("no token: give --token or CICLO_TOKEN, or --data DIR".into())
            })?,
    };
    let mut summary = Summary {
        rows: file.total(),
        ..Default::default()
    };
    for (line, reason) in &file.rejected {
        summary
            .rejected_reasons
            .entry(reason_kind(reason))
            .or_default()
            .push(*line);
        eprintln!("line {line}: {reason}");
    }
    let bar = progress(file.rows.len() as u64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(120))
        .build()?;
    let rows = Arc::new(file.rows);
    let answers = runtime.block_on(send_all(
        &http,
        &base,
        &token,
        rows.clone(),
        args.concurrency.max(1),
        &bar,
    ))?;
    bar.finish_and_clear();
    let mut hot_waiting = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        let row = &rows[i];
        let answer = match answer {
            Ok(a) => a,
            Err(reason) => {
                summary
                    .rejected_reasons
                    .entry(reason_kind(&reason))
                    .or_default()
                    .push(row.line);
                eprintln!("line {}: {reason}", row.line);
                continue;
            }
        };
        match answer["outcome"].as_str() {
            Some("created") => summary.imported += 1,
            Some("matched") => summary.duplicates += 1,
            _ => summary.already_imported += 1,
        }
        if row.lead["do_not_email"] == json!(true) {
            summary.suppressed_emails += 1;
        }
        match answer["grade"].as_str() {
            Some("hot") => {
                summary.hot += 1;
                match answer["assigned_to"].as_str() {
                    Some(who) => *summary.assigned.entry(who.to_string()).or_default() += 1,
                    None => {
                        if let Some(id) = answer["instance"].as_str() {
                            hot_waiting.push(id.to_string());
                        }
                    }
                }
            }
            Some("warm") => summary.warm += 1,
            Some("cold") => summary.cold += 1,
            _ => {}
        }
    }
    summary.rejected = summary.rejected_reasons.values().map(Vec::len).sum();
    // Hot leads get their salesperson when the called assignment process has ended and woken
    // the lead's instance: read each one again until it has, within a bounded wait.
    let deadline = Instant::now() + Duration::from_secs(args.settle_seconds);
    let assigned = runtime.block_on(wait_assigned(&http, &base, &token, hot_waiting, deadline))?;
    for who in &assigned {
        match who {
            Some(who) => *summary.assigned.entry(who.clone()).or_default() += 1,
            None => summary.unassigned_hot += 1,
        }
    }
    summary.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    Ok(summary)
}

/// The idempotency key of an imported row: its external id and a hash of its values, so that
/// importing the same file again changes nothing, while a second row with the same id but
/// other values (the lead came back) is recorded as an activity of the lead.
fn import_key(external_id: &str, lead: &serde_json::Value) -> String {
    // FNV-1a: stable across runs and versions, unlike std's hasher.
    let hash = lead
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("import:{external_id}:{hash:016x}")
}

fn reason_kind(reason: &str) -> String {
    // Group by the reason without the value in backquotes: "column `TotalVisits`: `x` is not
    // a number" and the same with `y` are one kind. The value is the quoted part right after
    // ": "; other quoted parts are names ("a non-empty `external_id` or `email`") and stay.
    let mut out = String::new();
    let mut inside = false;
    let mut quoted = String::new();
    for c in reason.chars() {
        if c == '`' {
            if inside {
                if !out.ends_with(": ") {
                    out.push('`');
                    out.push_str(&quoted);
                    out.push('`');
                } else {
                    out.push_str("`…`");
                }
                quoted.clear();
            }
            inside = !inside;
        } else if inside {
            quoted.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

fn progress(len: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} leads {per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

async fn send_all(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    rows: Arc<Vec<LeadRow>>,
    concurrency: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Result<serde_json::Value, String>>> {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (http, rows, bar) = (http.clone(), rows.clone(), bar.clone());
        let url = format!("{base}/api/leads");
        let token = token.to_string();
        tasks.spawn(async move {
            let mut out = Vec::new();
            let mut i = worker;
            while i < rows.len() {
                let row = &rows[i];
                let mut request = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({ "lead": row.lead, "source": "import" }));
                if let Some(id) = &row.external_id {
                    request = request.header("Idempotency-Key", import_key(id, &row.lead));
                }
                let answer = match request.send().await {
                    Err(e) => return Err(anyhow!("cannot reach {url}: {e}")),
                    Ok(r) if r.status().is_server_error() => {
                        return Err(anyhow!(
                            "{url} answered {}: {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        ));
                    }
                    Ok(r) if r.status().is_success() => Ok(r.json::<serde_json::Value>().await?),
                    Ok(r) if matches!(r.status().as_u16(), 401 | 403 | 404) => {
                        let body = r.text().await.unwrap_or_default();
                        return Err(anyhow!(UserError(format!(
                            "the server refused the import: {body}"
                        ))));
                    }
                    Ok(r) => {
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        Err(body["message"].as_str().unwrap_or("refused").to_string())
                    }
                };
                out.push((i, answer));
                bar.inc(1);
                i += concurrency;
            }
            Ok::<_, anyhow::Error>(out)
        });
    }
    let mut answers: Vec<Option<Result<serde_json::Value, String>>> =
        (0..rows.len()).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        for (i, answer) in done?? {
            answers[i] = Some(answer);
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err("not sent".into())))
        .collect())
}

async fn wait_assigned(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    ids: Vec<String>,
    deadline: Instant,
) -> anyhow::Result<Vec<Option<String>>> {
    let mut out = Vec::with_capacity(ids.len());
    let mut pending: Vec<String> = ids;
    let mut delay = Duration::from_millis(20);
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let detail: serde_json::Value = http
                .get(format!("{base}/api/instances/{id}"))
                .bearer_auth(token)
                .send()
                .await?
                .json()
                .await?;
            match detail["variables"]["assigned_to"].as_str() {
                Some(who) => out.push(Some(who.to_string())),
                None => still.push(id),
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            out.extend(pending.iter().map(|_| None));
            break;
        }
        // Backing off between rounds; the wait is bounded by --settle-seconds.
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
    Ok(out)
}

fn render_summary(s: &Summary) -> String {
    let mut out = String::new();
    out.push_str(&format!("rows read:          {}\n", s.rows));
    out.push_str(&format!("imported (new):     {}\n", s.imported));
    out.push_str(&format!("duplicates:         {}\n", s.duplicates));
    out.push_str(&format!("already imported:   {}\n", s.already_imported));
    out.push_str(&format!("rejected:           {}\n", s.rejected));
    for (reason, lines) in &s.rejected_reasons {
        let shown: Vec<String> = lines.iter().take(10).map(u64::to_string).collect();
        let more = if lines.len() > 10 { ", ..." } else { "" };
        out.push_str(&format!(
            "  {} x {reason} (lines {}{more})\n",
            lines.len(),
            shown.join(", ")
        ));
    }
    out.push_str(&format!(
        "hot / warm / cold:  {} / {} / {}\n",
        s.hot, s.warm, s.cold
    ));
    out.push_str("assigned:\n");
    for (who, n) in &s.assigned {
        out.push_str(&format!("  {who}: {n}\n"));
    }
    if s.unassigned_hot > 0 {
        out.push_str(&format!("  not yet assigned: {}\n", s.unassigned_hot));
    }
    out.push_str(&format!("suppressed e-mails: {}\n", s.suppressed_emails));
    out.push_str(&format!("took {:.1} s\n", s.seconds));
    out
}

// ----- score report ------------------------------------------------------------------------

pub fn run_leads(command: LeadsCommand) -> ExitCode {
    let LeadsCommand::ScoreReport(args) = command;
    match score_report(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ciclo: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn score_report(args: &ScoreArgs) -> anyhow::Result<String> {
    let mapping = Mapping::load(&args.mapping)?;
    let file = read_file(&args.file, &mapping)?;
    let files = crate::serve::process_files(&args.processes)?;
    let library = ciclo_engine::parse::load(&files, &crate::serve::catalog());
    let table = |name: &str| {
        library
            .tables
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| anyhow!("no decision table `{name}` in {}", args.processes.display()))
    };
    let (fit, engagement, grade) = (
        table("lead-fit")?,
        table("lead-engagement")?,
        table("lead-grade")?,
    );
    let ctx = Context::utc(jiff::Timestamp::now());
    let every = args.every.unwrap_or(1).max(1);
    let mut scored: Vec<(rust_decimal::Decimal, bool)> = Vec::new();
    let mut grades: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (i, row) in file.rows.iter().enumerate() {
        if i % every != 0 {
            continue;
        }
        let Some(converted) = row.outcome else {
            continue;
        };
        let lead =
            Value::from_json(row.lead.clone()).map_err(|e| anyhow!("line {}: {e}", row.line))?;
        let mut vars = ciclo_engine::Vars::new();
        vars.insert("lead".into(), lead);
        let number = |v: Value, what: &str| match v {
            Value::Number(n) => Ok(n),
            other => Err(anyhow!(
                "line {}: {what} is {other:?}, not a number",
                row.line
            )),
        };
        let eval =
            |t| decision::evaluate(t, &vars, &ctx).map_err(|e| anyhow!("line {}: {e}", row.line));
        // The same sum as lead-intake's `total` step.
        let score = number(eval(fit)?, "lead-fit")? + number(eval(engagement)?, "lead-engagement")?;
        let mut scope = ciclo_engine::Vars::new();
        scope.insert("score".into(), Value::Number(score));
        let name = match decision::evaluate(grade, &scope, &ctx)
            .map_err(|e| anyhow!("line {}: {e}", row.line))?
        {
            Value::Map(m) => match m.get("grade") {
                Some(Value::String(g)) => g.clone(),
                _ => "none".into(),
            },
            Value::String(g) => g,
            _ => "none".into(),
        };
        let entry = grades.entry(name).or_default();
        entry.0 += 1;
        entry.1 += usize::from(converted);
        scored.push((score, converted));
    }
    let converted = scored.iter().filter(|(_, c)| *c).count();
    let auc =
        auc(&scored).ok_or_else(|| anyhow!("the AUC needs converted and not converted rows"))?;
    let which = if every == 1 {
        "every row".to_string()
    } else {
        format!(
            "every {every}th row (1, {}, {}, ...)",
            1 + every,
            1 + 2 * every
        )
    };
    if args.json {
        let grades: serde_json::Map<String, serde_json::Value> = grades
            .iter()
            .map(|(g, (n, c))| (g.clone(), json!({ "leads": n, "converted": c })))
            .collect();
        return Ok(format!(
            "{}\n",
            json!({ "rows": scored.len(), "converted": converted, "auc": auc, "grades": grades, "rejected": file.rejected.len() })
        ));
    }
    let mut out = format!(
        "rows: {} ({which}; {} rejected)\nconverted: {converted}\nAUC: {auc:.4}\n",
        scored.len(),
        file.rejected.len()
    );
    for g in ["hot", "warm", "cold"] {
        if let Some((n, c)) = grades.get(g) {
            out.push_str(&format!(
                "{g}: {n} leads, {c} converted ({:.1} %)\n",
                100.0 * *c as f64 / (*n).max(1) as f64
            ));
        }
    }
    Ok(out)
}

/// The area under the ROC curve of `score` against the outcome: the chance that a converted
/// lead scores above one that did not (Mann-Whitney U), ties counted half. `None` without
/// both kinds.
pub fn auc<S: PartialOrd + Copy>(scored: &[(S, bool)]) -> Option<f64> {
    let mut sorted: Vec<(S, bool)> = scored.to_vec();
    sorted.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    let positives = sorted.iter().filter(|(_, c)| *c).count() as f64;
    let negatives = sorted.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Sum of the ranks of the positives, tied scores sharing their average rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += rank * sorted[i..=j].iter().filter(|(_, c)| *c).count() as f64;
        i = j + 1;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_by_hand() {
        // Perfect ranking, reversed, and all tied.
        assert_eq!(auc(&[(1, false), (2, false), (3, true)]), Some(1.0));
        assert_eq!(auc(&[(3, false), (2, true), (1, true)]), Some(0.0));
        assert_eq!(auc(&[(5, false), (5, true)]), Some(0.5));
        // Pairs (pos, neg): (4,1) win, (4,3) win, (2,1) win, (2,3) lose: 3 of 4.
        assert_eq!(
            auc(&[(1, false), (2, true), (3, false), (4, true)]),
            Some(0.75)
        );
        // A tie between a positive and a negative counts half: (2,1) win, (2,2) half = 1.5/2.
        assert_eq!(auc(&[(1, false), (2, false), (2, true)]), Some(0.75));
        assert_eq!(auc(&[(1, true), (2, true)]), None);
        assert_eq!(auc::<i32>(&[]), None);
    }

    fn mapping() -> Mapping {
        serde_saphyr::from_str(
            "empty: [Select, \"\"]\nfields:\n  source: { column: S, lowercase: true, map: { google: Google } }\n  n: { column: N, type: number }\n  b: { column: B, type: boolean }\n",
        )
        .expect("mapping")
    }

    #[test]
    fn cleaning() {
        let m = mapping();
        let source = &m.fields["source"];
        assert_eq!(clean(&m, source, "google").unwrap(), json!("Google"));
        assert_eq!(clean(&m, source, "Google").unwrap(), json!("Google"));
        assert_eq!(clean(&m, source, "Select").unwrap(), json!(null));
        assert_eq!(clean(&m, &m.fields["n"], "").unwrap(), json!(null));
        assert_eq!(clean(&m, &m.fields["n"], "2.5").unwrap().to_string(), "2.5");
        assert!(clean(&m, &m.fields["n"], "lots").is_err());
        assert!(clean(&m, &m.fields["n"], "inf").is_err());
        assert_eq!(clean(&m, &m.fields["b"], "Yes").unwrap(), json!(true));
        assert!(clean(&m, &m.fields["b"], "maybe").is_err());
    }

    #[test]
    fn unknown_mapping_keys_are_refused_with_their_place() {
        let err = serde_saphyr::from_str::<Mapping>("fields:\n  a: { column: A, colour: red }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(err.contains("line 2") || err.contains("2:"), "{err}");
    }

    #[test]
    fn reasons_group_without_their_values() {
        assert_eq!(
            reason_kind("column `TotalVisits`: `x` is not a number"),
            "column `TotalVisits`: `…` is not a number"
        );
        assert_eq!(
            reason_kind("a lead needs a non-empty `external_id` or `email`"),
            "a lead needs a non-empty `external_id` or `email`"
        );
        assert_eq!(
            reason_kind("`email`: `a@b@c` is not an e-mail address"),
            "`email`: `…` is not an e-mail address"
        );
        assert_eq!(
            reason_kind("36 fields, the header has 38"),
            "36 fields, the header has 38"
        );
    }
}
