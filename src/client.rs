//! The commands that talk to a running server over its HTTP API: `deploy`, `start`,
//! `instances`, `instance`, `tasks`, `complete`, `message`, `incidents`, `retry`, and
//! `token create` when no data folder is given.
//!
//! Each command prints a compact table for people or, with `--json`, the server's JSON as one
//! document for scripts. Failures map to the exit codes of `main`: 1 when the server refused
//! what the user asked (a 4xx: its code, its message and its details one per line), 2 when the
//! server could not be reached, failed (5xx), or answered something that is not Ciclo's JSON.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};

/// Where `ciclo serve` listens by default.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The largest page the server accepts by default; asking for it keeps long lists to few
/// requests.
const PAGE: usize = 500;

/// Which server to talk to, with which token, and how to print the answer.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// The server's base URL.
    #[arg(long, alias = "url", env = "CICLO_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// API token (default: the `admin-token` file of `--data`, else of ./ciclo-data).
    #[arg(long, env = "CICLO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON, one document, instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `Remote`, plus the data folder whose admin token to use when no token is given.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    #[command(flatten)]
    pub remote: Remote,
    /// Data folder of the server: its `admin-token` file is the token when none is given.
    #[arg(long, env = "CICLO_DATA")]
    pub data: Option<PathBuf>,
}

/// Variables given on the command line.
#[derive(Args, Debug, Clone, Default)]
pub struct VarArgs {
    /// A variable, `NAME=VALUE`; VALUE is read as JSON when it parses (`1250.50`, `true`,
    /// `'"text"'`, `'{"a":1}'`), otherwise as a string. Repeatable; wins over --vars-file.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// A JSON object of variables.
    #[arg(long, value_name = "FILE.json")]
    pub vars_file: Option<PathBuf>,
}

/// The commands that need a running server.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Deploy process files (and folders of them) to a running server. A file with problems
    /// prints `FILE:LINE:COLUMN: CODE message` per problem and exits 1.
    Deploy {
        /// Process or decision-table files (.yaml), or folders to search for them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Start an instance of a process.
    Start {
        /// The process id.
        process: String,
        #[command(flatten)]
        vars: VarArgs,
        /// A business key to find the instance by.
        #[arg(long)]
        business_key: Option<String>,
        /// Repeating a start with the same key returns the first instance instead of a new one.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// A specific version (default: the latest).
        #[arg(long)]
        version: Option<u32>,
        #[command(flatten)]
        connection: Connection,
    },
    /// List instances, oldest first.
    Instances {
        /// Only instances in this state.
        #[arg(long, value_parser = ["active", "completed", "failed", "terminated", "cancelled"])]
        state: Option<String>,
        /// Only instances of this process.
        #[arg(long)]
        process: Option<String>,
        /// Only instances with this business key.
        #[arg(long)]
        business_key: Option<String>,
        /// Only instances whose variable NAME equals VALUE (JSON when it parses, else text).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// At most this many (default: all).
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        connection: Connection,
    },
    /// One instance: where it stands, what it waits for, its variables.
    Instance {
        /// The instance id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Open user tasks (all of them for admins and operators, else the token's user's).
    Tasks {
        /// At most this many (default: all).
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Complete a user task with form values (`--var field=value`).
    Complete {
        /// The instance id, or `INSTANCE/TASK` as `ciclo tasks` prints it.
        instance: String,
        /// The task number (when not given as `INSTANCE/TASK`).
        task: Option<String>,
        #[command(flatten)]
        vars: VarArgs,
        #[command(flatten)]
        connection: Connection,
    },
    /// Send a message: delivered to the instances waiting for its name and key.
    Message {
        /// The message name.
        name: String,
        /// The correlation key (empty when the waiting step gives none).
        #[arg(long, default_value = "")]
        key: String,
        #[command(flatten)]
        vars: VarArgs,
        /// A message id: a repeat of an id seen in the last 7 days is ignored.
        #[arg(long)]
        id: Option<String>,
        /// Keep the message this long (ISO 8601, `PT10M`) when nobody waits for it yet.
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Open incidents: what needs a person's look.
    Incidents {
        /// Only this instance's.
        #[arg(long)]
        instance: Option<String>,
        /// At most this many (default: all).
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Retry an incident: its step (or job, with fresh retries) runs again.
    Retry {
        /// The instance id, or `INSTANCE/INCIDENT` as `ciclo incidents` prints it.
        instance: String,
        /// The incident number (when not given as `INSTANCE/INCIDENT`).
        incident: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

/// Why a command failed, with the lines to print; the variant is the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Exit 1: what the user gave was refused (a bad argument, a 4xx from the server).
    User(Vec<String>),
    /// Exit 2: the server could not be reached or failed, or a file could not be read.
    Io(Vec<String>),
}

impl Failure {
    fn user(line: impl Into<String>) -> Failure {
        Failure::User(vec![line.into()])
    }

    fn io(line: impl Into<String>) -> Failure {
        Failure::Io(vec![line.into()])
    }

    fn lines(&self) -> &[String] {
        match self {
            Failure::User(lines) | Failure::Io(lines) => lines,
        }
    }

    /// Prints the lines on stderr, the first one as `ciclo: ...`, and gives the exit code.
    pub fn report(&self) -> ExitCode {
        let mut lines = self.lines().iter();
        if let Some(first) = lines.next() {
            eprintln!("ciclo: {first}");
        }
        for line in lines {
            eprintln!("{line}");
        }
        match self {
            Failure::User(_) => ExitCode::from(1),
            Failure::Io(_) => ExitCode::from(2),
        }
    }
}

/// Runs a client command and prints its outcome.
pub fn run(command: ClientCommand) -> ExitCode {
    let outcome = match command {
        ClientCommand::Deploy { files, connection } => {
            connect(&connection).and_then(|c| deploy(&c, &files))
        }
        ClientCommand::Start {
            process,
            vars,
            business_key,
            idempotency_key,
            version,
            connection,
        } => connect(&connection).and_then(|c| {
            let variables = variables(&vars)?;
            let mut body = json!({ "process": process, "variables": variables });
            if let Some(key) = business_key {
                body["business_key"] = json!(key);
            }
            if let Some(version) = version {
                body["version"] = json!(version);
            }
            let headers: Vec<(&str, String)> = idempotency_key
                .map(|k| ("idempotency-key", k))
                .into_iter()
                .collect();
            let answer = c.send(
                Method::POST,
                &["api", "instances"],
                &[],
                Some(&body),
                &headers,
            )?;
            c.print(&answer, || render_instance(&answer))
        }),
        ClientCommand::Instances {
            state,
            process,
            business_key,
            vars,
            limit,
            connection,
        } => connect(&connection).and_then(|c| {
            let mut query = Vec::new();
            query.extend(state.map(|s| ("state".to_string(), s)));
            query.extend(process.map(|p| ("definition".to_string(), p)));
            query.extend(business_key.map(|k| ("business_key".to_string(), k)));
            for pair in &vars {
                let (name, value) = split_var(pair)?;
                query.push((format!("var.{name}"), value.to_string()));
            }
            let page = c.pages(&["api", "instances"], &query, limit, "instances")?;
            c.print(&page, || render_instances(&page))
        }),
        ClientCommand::Instance { id, connection } => connect(&connection).and_then(|c| {
            let answer = c.send(Method::GET, &["api", "instances", &id], &[], None, &[])?;
            c.print(&answer, || render_instance(&answer))
        }),
        ClientCommand::Tasks { limit, connection } => connect(&connection).and_then(|c| {
            let page = c.pages(&["api", "tasks"], &[], limit, "tasks")?;
            c.print(&page, || render_tasks(&page))
        }),
        ClientCommand::Complete {
            instance,
            task,
            vars,
            connection,
        } => connect(&connection).and_then(|c| {
            let (instance, task) = target(&instance, task.as_deref(), "task")?;
            let body = json!({ "values": variables(&vars)? });
            let path = ["api", "tasks", &instance, &task.to_string(), "complete"];
            c.send(Method::POST, &path, &[], Some(&body), &[])?;
            // The server answers 204 with no body; scripts still get one JSON document.
            let done = json!({ "instance": instance, "task": task, "completed": true });
            c.print(&done, || {
                format!("completed task {task} of instance {instance}\n")
            })
        }),
        ClientCommand::Message {
            name,
            key,
            vars,
            id,
            ttl,
            connection,
        } => connect(&connection).and_then(|c| {
            let mut body = json!({ "name": name, "key": key, "variables": variables(&vars)? });
            if let Some(id) = id {
                body["id"] = json!(id);
            }
            if let Some(ttl) = &ttl {
                body["ttl"] = json!(ttl);
            }
            let answer = c.send(Method::POST, &["api", "messages"], &[], Some(&body), &[])?;
            c.print(&answer, || {
                render_correlation(&answer, &name, &key, ttl.as_deref())
            })
        }),
        ClientCommand::Incidents {
            instance,
            limit,
            connection,
        } => connect(&connection).and_then(|c| {
            let query: Vec<(String, String)> = instance
                .map(|i| ("instance".to_string(), i))
                .into_iter()
                .collect();
            let page = c.pages(&["api", "incidents"], &query, limit, "incidents")?;
            c.print(&page, || render_incidents(&page))
        }),
        ClientCommand::Retry {
            instance,
            incident,
            connection,
        } => connect(&connection).and_then(|c| {
            let (instance, incident) = target(&instance, incident.as_deref(), "incident")?;
            let path = [
                "api",
                "incidents",
                &instance,
                &incident.to_string(),
                "retry",
            ];
            c.send(Method::POST, &path, &[], None, &[])?;
            let done = json!({ "instance": instance, "incident": incident, "retried": true });
            c.print(&done, || {
                format!("retried incident {incident} of instance {instance}\n")
            })
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// `ciclo token create` through the server: prints the secret (or, with `--json`, the
/// server's answer with the token's description).
/// `ciclo user password NAME` against the running server.
pub fn user_password(remote: &Remote, name: &str, password: &str) -> ExitCode {
    let outcome = (|| {
        let client = Client::new(remote, None)?;
        let body = json!({ "password": password });
        client.send(
            Method::PUT,
            &["api", "users", name, "password"],
            &[],
            Some(&body),
            &[],
        )?;
        client.print(&json!({ "user": name, "password": "set" }), || {
            format!("password set for {name}\n")
        })
    })();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

pub fn token_create(
    remote: &Remote,
    role: &str,
    user: Option<&str>,
    label: Option<&str>,
) -> ExitCode {
    let outcome = (|| {
        // Checked here so a typo gets the same message as in data-folder mode, not a JSON
        // deserialisation error from the server.
        let role: ciclo_engine::store::Role = role
            .parse()
            .map_err(|e: ciclo_engine::store::UnknownRole| Failure::user(e.to_string()))?;
        let client = Client::new(remote, None)?;
        let body = json!({ "role": role.as_str(), "user": user, "label": label });
        let answer = client.send(Method::POST, &["api", "tokens"], &[], Some(&body), &[])?;
        let secret = answer
            .get("secret")
            .and_then(Value::as_str)
            .ok_or_else(|| client.not_ciclo("a token without its secret"))?
            .to_string();
        client.print(&answer, || format!("{secret}\n"))
    })();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

fn connect(connection: &Connection) -> Result<Client, Failure> {
    Client::new(&connection.remote, connection.data.as_deref())
}

/// A blocking HTTP client of one server: requests run on a small runtime of their own, as
/// the rest of the CLI is synchronous.
struct Client {
    base: Url,
    token: Option<String>,
    json: bool,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    fn new(remote: &Remote, data: Option<&Path>) -> Result<Client, Failure> {
        let mut base = Url::parse(remote.server.trim()).map_err(|e| {
            Failure::user(format!(
                "--server `{}` is not a URL ({e}); write it like {DEFAULT_SERVER}",
                remote.server
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Failure::user(format!(
                "--server `{}` is not an http:// URL; write it like {DEFAULT_SERVER}",
                remote.server
            )));
        }
        base.set_query(None);
        base.set_fragment(None);
        let token = match &remote.token {
            Some(token) => Some(token.trim().to_string()),
            None => admin_token(data)?,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("ciclo-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::io(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::io(format!("cannot start the async runtime: {e}")))?;
        Ok(Client {
            base,
            token,
            json: remote.json,
            http,
            runtime,
        })
    }

    /// The server's URL as people gave it (without a trailing slash), for messages.
    fn server(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // Each segment is percent-encoded, so an id with a `/` or `?` cannot change the path.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends one request and reads the answer: the JSON of a 2xx (`null` when it has no
    /// body), else a `Failure` made from the server's error body.
    fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Value, Failure> {
        let url = self.url(segments);
        let mut request = self.http.request(method, url.clone());
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let (status, bytes) = self
            .runtime
            .block_on(async {
                let response = request.send().await?;
                let status = response.status();
                let bytes = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, bytes))
            })
            .map_err(|e| self.transport_failure(&e))?;
        if status.is_success() {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .map_err(|_| self.not_ciclo(&format!("{status} with a body that is not JSON")));
        }
        Err(self.refusal(status, &bytes))
    }

    fn transport_failure(&self, error: &reqwest::Error) -> Failure {
        let server = self.server();
        if error.is_connect() {
            Failure::Io(vec![
                format!("cannot connect to {server}: {}", root_cause(error)),
                "  hint: is the server running? Start it with `ciclo serve`, or point --server \
                 (or CICLO_SERVER) at it"
                    .to_string(),
            ])
        } else if error.is_timeout() {
            Failure::io(format!("{server} did not answer in time: {}", chain(error)))
        } else {
            Failure::io(format!("talking to {server} failed: {}", chain(error)))
        }
    }

    /// An answer that Ciclo's API would not give: the URL may be another service.
    fn not_ciclo(&self, what: &str) -> Failure {
        Failure::Io(vec![
            format!("{} answered {what}", self.server()),
            "  hint: is --server the URL of a Ciclo server of this version?".to_string(),
        ])
    }

    /// The failure for a 4xx or 5xx answer: the server's code and message, then its details.
    fn refusal(&self, status: StatusCode, bytes: &[u8]) -> Failure {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(bytes) else {
            return self.not_ciclo(&format!("{status} without Ciclo's error body"));
        };
        let (Some(code), Some(message)) = (
            body.get("code").and_then(Value::as_str),
            body.get("message").and_then(Value::as_str),
        ) else {
            return self.not_ciclo(&format!("{status} without Ciclo's error body"));
        };
        let details = body.get("details").unwrap_or(&Value::Null);
        // A message may list what the details list again (a definition's problems): then its
        // first line is the summary, and the details are printed once, one per line.
        let message = match message.split_once('\n') {
            Some((first, _)) if !details.is_null() => first.trim_end(),
            _ => message,
        };
        let mut lines = vec![format!("{code}: {message}")];
        lines.extend(detail_lines(details));
        if status == StatusCode::UNAUTHORIZED {
            lines.push(
                "  hint: give a valid token with --token or CICLO_TOKEN; the admin token is in \
                 the server's data folder (--data DIR reads DIR/admin-token)"
                    .to_string(),
            );
        }
        if status.is_server_error() {
            Failure::Io(lines)
        } else {
            Failure::User(lines)
        }
    }

    /// Every page of a list (or the first `limit` items), as one `{items, next_cursor}`
    /// document; `next_cursor` is set only when `limit` stopped it early.
    fn pages(
        &self,
        segments: &[&str],
        query: &[(String, String)],
        limit: Option<usize>,
        what: &str,
    ) -> Result<Value, Failure> {
        let mut items: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        // Shown only from the second page on, so a short list does not flash a bar; indicatif
        // draws nothing when stderr is not a terminal.
        let mut progress: Option<ProgressBar> = None;
        let next_cursor = loop {
            let want = limit.map_or(PAGE, |l| l.saturating_sub(items.len()).min(PAGE));
            if want == 0 {
                break cursor;
            }
            let mut page_query = query.to_vec();
            page_query.push(("limit".into(), want.to_string()));
            if let Some(c) = &cursor {
                page_query.push(("cursor".into(), c.clone()));
            }
            let page = self.send(Method::GET, segments, &page_query, None, &[])?;
            let (Some(page_items), Some(next)) = (
                page.get("items").and_then(Value::as_array),
                page.get("next_cursor"),
            ) else {
                return Err(self.not_ciclo("a list that is not `{items, next_cursor}`"));
            };
            let progressed = !page_items.is_empty();
            items.extend(page_items.iter().cloned());
            let next = next.as_str().map(str::to_string);
            // A cursor that does not move would loop for ever; stop at what was read.
            match next {
                Some(n) if progressed && cursor.as_deref() != Some(n.as_str()) => {
                    cursor = Some(n);
                    let bar = progress.get_or_insert_with(|| {
                        let bar = ProgressBar::new_spinner();
                        bar.enable_steady_tick(Duration::from_millis(120));
                        bar
                    });
                    bar.set_message(format!("{} {what} read", items.len()));
                }
                _ => break None,
            }
        };
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        Ok(json!({ "items": items, "next_cursor": next_cursor }))
    }

    /// Prints `value` as JSON with `--json`, else what `human` renders.
    fn print(&self, value: &Value, human: impl FnOnce() -> String) -> Result<(), Failure> {
        use std::io::Write as _;
        let text = if self.json {
            let mut text = serde_json::to_string_pretty(value)
                .map_err(|e| Failure::io(format!("cannot write JSON: {e}")))?;
            text.push('\n');
            text
        } else {
            human()
        };
        // A closed pipe (`| head`) is not an error worth a message.
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        Ok(())
    }
}

/// The admin token of a data folder: `--data DIR`, else ./ciclo-data when it has one (the
/// folder `ciclo serve` uses by default), else none (the server will say so).
fn admin_token(data: Option<&Path>) -> Result<Option<String>, Failure> {
    let (path, given) = match data {
        Some(dir) => (dir.join("admin-token"), true),
        None => (PathBuf::from("ciclo-data").join("admin-token"), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !given => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Failure::User(vec![
            format!("no admin token in {}", path.display()),
            "  hint: --data is the server's data folder, where it writes `admin-token` at its \
             first start; or give --token"
                .to_string(),
        ])),
        Err(e) => Err(Failure::io(format!(
            "cannot read the admin token {}: {e}",
            path.display()
        ))),
    }
}

/// The admin token of ./ciclo-data when there is one, for commands that take no `--data`.
pub(crate) fn default_token() -> Result<Option<String>, String> {
    let path = PathBuf::from("ciclo-data").join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "cannot read the admin token {}: {e}",
            path.display()
        )),
    }
}

/// An error with its causes, `a: b: c`; reqwest's own message alone is often just "error
/// sending request".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and reqwest often repeat their cause in their own message.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The innermost cause, the one that says what happened ("Connection refused (os error 111)").
fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The lines for an error's `details`: a definition's problems as `ciclo validate` prints
/// them (`FILE:LINE:COLUMN: CODE message`, then a hint), a form's field errors one per line,
/// anything else as compact JSON.
fn detail_lines(details: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    match details {
        Value::Null => {}
        Value::Array(entries) => {
            for entry in entries {
                let text = |key: &str| entry.get(key).and_then(Value::as_str);
                if let Some(location) = text("location") {
                    lines.push(format!(
                        "{location}: {} {}",
                        text("code").unwrap_or(""),
                        text("message").unwrap_or("")
                    ));
                    if let Some(hint) = text("hint") {
                        lines.push(format!("  hint: {hint}"));
                    }
                } else if let (Some(field), Some(message)) = (text("field"), text("message")) {
                    lines.push(format!("  {field}: {message}"));
                } else {
                    lines.push(format!("  {entry}"));
                }
            }
        }
        other => lines.push(format!("  details: {other}")),
    }
    lines
}

/// Splits `NAME=VALUE` at the first `=`.
fn split_var(pair: &str) -> Result<(&str, &str), Failure> {
    match pair.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim(), value)),
        _ => Err(Failure::user(format!(
            "--var `{pair}` is not NAME=VALUE (for example --var amount=1250.50)"
        ))),
    }
}

/// A `--var` value: JSON when it parses (numbers keep every digit, as serde_json keeps their
/// text), otherwise the text itself.
fn var_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// The variables of `--vars-file` and `--var`, the latter winning, as a JSON object.
fn variables(args: &VarArgs) -> Result<Value, Failure> {
    let mut vars = Map::new();
    if let Some(path) = &args.vars_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::io(format!("cannot read {}: {e}", path.display())))?;
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => vars = map,
            Ok(_) => {
                return Err(Failure::user(format!(
                    "{} is not a JSON object of variables",
                    path.display()
                )));
            }
            Err(e) => {
                return Err(Failure::user(format!(
                    "{}:{}:{}: not JSON: {e}",
                    path.display(),
                    e.line(),
                    e.column()
                )));
            }
        }
    }
    for pair in &args.vars {
        let (name, value) = split_var(pair)?;
        vars.insert(name.to_string(), var_value(value));
    }
    Ok(Value::Object(vars))
}

/// An `INSTANCE NUMBER` pair, also accepted as one `INSTANCE/NUMBER` argument.
fn target(first: &str, second: Option<&str>, what: &str) -> Result<(String, u64), Failure> {
    let (instance, number) = match (second, first.rsplit_once('/')) {
        (Some(number), _) => (first, number),
        (None, Some((instance, number))) => (instance, number),
        (None, None) => {
            return Err(Failure::user(format!(
                "which {what}? Give `INSTANCE {upper}` or `INSTANCE/{upper}`",
                upper = what.to_uppercase()
            )));
        }
    };
    let number = number
        .trim()
        .parse::<u64>()
        .map_err(|_| Failure::user(format!("the {what} `{number}` is not a number (like 1)")))?;
    if instance.trim().is_empty() {
        return Err(Failure::user(format!(
            "the instance of the {what} is empty"
        )));
    }
    Ok((instance.trim().to_string(), number))
}

/// A JSON field as text for a table: strings bare, `null` or absent as `-`.
fn cell(value: &Value, key: &str) -> String {
    match value.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// An instant as `2026-05-04 10:11:12Z`: seconds are enough in a table.
fn when(value: &Value, key: &str) -> String {
    match value.get(key).and_then(Value::as_str) {
        Some(text) => match text.parse::<jiff::Timestamp>() {
            Ok(t) => t.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
            Err(_) => text.to_string(),
        },
        None => "-".into(),
    }
}

/// Cuts a cell to `max` characters, with `…` when cut, so one long error keeps a table legible.
fn cut(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut short: String = one_line.chars().take(max.saturating_sub(1)).collect();
        short.push('…');
        short
    }
}

/// Columns aligned with two spaces between them; the last column is not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<pad$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn items(page: &Value) -> &[Value] {
    page.get("items")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The note under a list cut by `--limit`.
fn more_note(page: &Value, out: &mut String) {
    if page.get("next_cursor").is_some_and(|c| !c.is_null()) {
        out.push_str("(more: raise --limit to see them)\n");
    }
}

fn render_instances(page: &Value) -> String {
    let rows: Vec<Vec<String>> = items(page)
        .iter()
        .map(|i| {
            vec![
                cell(i, "id"),
                format!("{} v{}", cell(i, "definition"), cell(i, "version")),
                cell(i, "state"),
                cell(i, "business_key"),
                when(i, "started_at"),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no instances\n".into();
    }
    let mut out = table(
        &["ID", "PROCESS", "STATE", "BUSINESS KEY", "STARTED"],
        &rows,
    );
    more_note(page, &mut out);
    out
}

/// What a position waits for, in words, with the command that moves it on where there is one.
fn waits_for(instance: &str, wait: &Value) -> String {
    let field = |key: &str| cell(wait, key);
    match wait.get("kind").and_then(Value::as_str).unwrap_or("") {
        "task" => format!(
            "task {} (ciclo complete {instance}/{})",
            field("task"),
            field("task")
        ),
        "job" => format!("job {} (attempt {})", field("job"), field("attempt")),
        "timer" => format!("timer due {}", when(wait, "due")),
        "message" => format!(
            "message {} with key {:?}",
            field("message"),
            wait.get("key").and_then(Value::as_str).unwrap_or("")
        ),
        "race" => {
            let alternatives: Vec<String> = wait
                .get("alternatives")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            format!("the first of: {}", alternatives.join(", "))
        }
        "child" => format!("called instance {}", field("child")),
        "items" => format!(
            "items ({} of {} done)",
            field("items_done"),
            field("items_total")
        ),
        "incident" => format!(
            "incident {} (ciclo retry {instance}/{})",
            field("incident"),
            field("incident")
        ),
        "" => "-".into(),
        other => other.to_string(),
    }
}

fn render_instance(detail: &Value) -> String {
    let id = cell(detail, "id");
    let mut rows = vec![
        vec!["instance".to_string(), id.clone()],
        vec![
            "process".into(),
            format!(
                "{} v{}",
                cell(detail, "definition"),
                cell(detail, "version")
            ),
        ],
        vec!["state".into(), cell(detail, "state")],
    ];
    for (label, key) in [("business key", "business_key"), ("parent", "parent")] {
        if detail.get(key).is_some_and(|v| !v.is_null()) {
            rows.push(vec![label.into(), cell(detail, key)]);
        }
    }
    rows.push(vec!["started".into(), when(detail, "started_at")]);
    if detail.get("ended_at").is_some_and(|v| !v.is_null()) {
        rows.push(vec!["ended".into(), when(detail, "ended_at")]);
    }
    if detail.get("failure").is_some_and(|v| !v.is_null()) {
        rows.push(vec!["failure".into(), cell(detail, "failure")]);
    }
    let mut out = String::new();
    for row in &rows {
        let _ = writeln!(out, "{:<13}{}", row[0], row[1]);
    }
    let position = detail
        .get("position")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if !position.is_empty() {
        out.push_str("position\n");
        for p in position {
            let label = match p.get("label").and_then(Value::as_str) {
                Some(label) => format!(" ({label})"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {}{label}: waits for {}",
                cell(p, "step"),
                waits_for(&id, p.get("waits_for").unwrap_or(&Value::Null))
            );
        }
    }
    if let Some(vars) = detail.get("variables").and_then(Value::as_object)
        && !vars.is_empty()
    {
        out.push_str("variables\n");
        for (name, value) in vars {
            let _ = writeln!(out, "  {name} = {}", cut(&value.to_string(), 200));
        }
    }
    out
}

fn render_tasks(page: &Value) -> String {
    let rows: Vec<Vec<String>> = items(page)
        .iter()
        .map(|t| {
            let holder = match t.get("assignee").and_then(Value::as_str) {
                Some(user) => user.to_string(),
                None => {
                    let groups: Vec<&str> = t
                        .get("candidates")
                        .and_then(Value::as_array)
                        .map(|g| g.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    if groups.is_empty() {
                        "-".into()
                    } else {
                        format!("groups: {}", groups.join(", "))
                    }
                }
            };
            vec![
                format!("{}/{}", cell(t, "instance"), cell(t, "task")),
                cell(t, "definition"),
                cell(t, "step"),
                holder,
                when(t, "due"),
                cut(&cell(t, "title"), 60),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no open tasks\n".into();
    }
    let mut out = table(
        &["TASK", "PROCESS", "STEP", "ASSIGNEE", "DUE", "TITLE"],
        &rows,
    );
    more_note(page, &mut out);
    out
}

fn render_incidents(page: &Value) -> String {
    let rows: Vec<Vec<String>> = items(page)
        .iter()
        .map(|i| {
            vec![
                format!("{}/{}", cell(i, "instance"), cell(i, "incident")),
                cell(i, "step"),
                cell(i, "job"),
                when(i, "created_at"),
                cut(&cell(i, "error"), 80),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no open incidents\n".into();
    }
    let mut out = table(&["INCIDENT", "STEP", "JOB", "CREATED", "ERROR"], &rows);
    more_note(page, &mut out);
    out
}

fn render_correlation(answer: &Value, name: &str, key: &str, ttl: Option<&str>) -> String {
    let instances: BTreeSet<String> = answer
        .get("instances")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let list = instances.into_iter().collect::<Vec<_>>().join("\n  ");
    match answer.get("outcome").and_then(Value::as_str).unwrap_or("") {
        "delivered" => format!("delivered to\n  {list}\n"),
        "started" => format!("started instance\n  {list}\n"),
        "buffered" => format!(
            "nobody waits for message {name} with key {key:?} yet: kept for {}\n",
            ttl.unwrap_or("its time to live")
        ),
        "duplicate" => "a message with this id was seen before: ignored\n".into(),
        "dropped" => format!(
            "nobody waits for message {name} with key {key:?}: dropped (give --ttl PT10M to keep it until someone does)\n"
        ),
        other => format!("outcome: {other}\n"),
    }
}

/// Every process file named: files as given, folders searched for .yaml and .yml files.
/// Table libraries (files without `process:`) come first, as processes may use their tables.
fn collect_files(args: &[PathBuf]) -> Result<Vec<(String, String)>, Failure> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                // Connector and import mappings (`connectors/`, `imports/`) are not processes,
                // as for `ciclo validate` and `ciclo serve --processes`.
                if !crate::serve::is_not_processes(&path) {
                    walk(&path, out)?;
                }
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut paths = Vec::new();
    for arg in args {
        if arg.is_dir() {
            let before = paths.len();
            walk(arg, &mut paths).map_err(|e| {
                Failure::io(format!("cannot read the folder {}: {e}", arg.display()))
            })?;
            if paths.len() == before {
                return Err(Failure::user(format!(
                    "no .yaml files in the folder {}",
                    arg.display()
                )));
            }
        } else {
            paths.push(arg.clone());
        }
    }
    let mut seen = BTreeSet::new();
    let mut files = Vec::new();
    for path in paths {
        if !seen.insert(path.clone()) {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Failure::io(format!("cannot read {}: {e}", path.display())))?;
        files.push((path.display().to_string(), text));
    }
    files.sort_by_key(|(_, text)| text.lines().any(|l| l.starts_with("process:")));
    Ok(files)
}

/// Deploys each file; a refused file does not stop the others, so one run reports every
/// problem. A server that cannot be reached or fails stops at once.
fn deploy(client: &Client, args: &[PathBuf]) -> Result<(), Failure> {
    let files = collect_files(args)?;
    let progress = (files.len() > 1).then(|| {
        let bar = ProgressBar::new(files.len() as u64);
        if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}") {
            bar.set_style(style);
        }
        bar
    });
    let mut deployed: Vec<Value> = Vec::new();
    let mut rows = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    let mut refused_files = 0;
    for (file, source) in &files {
        if let Some(bar) = &progress {
            bar.set_message(file.clone());
        }
        let body = json!({ "file": file, "source": source });
        match client.send(Method::POST, &["api", "definitions"], &[], Some(&body), &[]) {
            Ok(answer) => {
                for d in answer.as_array().map_or(&[][..], Vec::as_slice) {
                    let unchanged = d.get("unchanged").and_then(Value::as_bool) == Some(true);
                    rows.push(vec![
                        cell(d, "process"),
                        cell(d, "version"),
                        if unchanged { "unchanged" } else { "new" }.into(),
                        file.clone(),
                    ]);
                    deployed.push(d.clone());
                }
            }
            Err(Failure::User(lines)) => {
                refused_files += 1;
                // The server's first line names the error; the problems already carry their
                // file, so only that line needs the file name.
                let mut lines = lines.into_iter();
                if let Some(first) = lines.next() {
                    refused.push(format!("{file}: {first}"));
                }
                refused.extend(lines);
            }
            Err(failure) => {
                if let Some(bar) = &progress {
                    bar.finish_and_clear();
                }
                return Err(failure);
            }
        }
        if let Some(bar) = &progress {
            bar.inc(1);
        }
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    if !deployed.is_empty() || refused.is_empty() {
        client.print(&Value::Array(deployed), || {
            table(&["PROCESS", "VERSION", "STATUS", "FILE"], &rows)
        })?;
    }
    if refused.is_empty() {
        return Ok(());
    }
    refused.push(format!(
        "{refused_files} of {} file(s) not deployed",
        files.len()
    ));
    Err(Failure::User(refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_are_json_when_they_parse_and_keep_every_digit() {
        let vars = variables(&VarArgs {
            vars: vec![
                "amount=1250.50".into(),
                "big=123456789012345678901234567890.000000000000000001".into(),
                "name=\"Rossi\"".into(),
                "city=Milano".into(),
                "ok=true".into(),
                "code=007".into(),
                "eq=a=b".into(),
                "empty=".into(),
            ],
            vars_file: None,
        })
        .unwrap_or_default();
        assert_eq!(
            vars.to_string(),
            r#"{"amount":1250.50,"big":123456789012345678901234567890.000000000000000001,"city":"Milano","code":"007","empty":"","eq":"a=b","name":"Rossi","ok":true}"#
        );
    }

    #[test]
    fn a_var_without_a_name_is_refused() {
        for bad in ["amount", "=5", " =5"] {
            let result = variables(&VarArgs {
                vars: vec![bad.into()],
                vars_file: None,
            });
            assert!(matches!(result, Err(Failure::User(_))), "{bad}");
        }
    }

    #[test]
    fn targets_are_two_arguments_or_one_with_a_slash() {
        assert_eq!(
            target("abc", Some("3"), "task").ok(),
            Some(("abc".to_string(), 3))
        );
        assert_eq!(
            target("abc/4", None, "task").ok(),
            Some(("abc".to_string(), 4))
        );
        assert!(matches!(target("abc", None, "task"), Err(Failure::User(_))));
        assert!(matches!(
            target("abc/x", None, "task"),
            Err(Failure::User(_))
        ));
        assert!(matches!(target("/4", None, "task"), Err(Failure::User(_))));
    }

    #[test]
    fn details_print_problems_and_field_errors_one_per_line() {
        let problems = json!([{ "location": "a.yaml:3:7", "file": "a.yaml", "line": 3, "column": 7,
            "code": "CICLO-E0201", "message": "unknown step `nowhere`", "hint": "did you mean `done`?" }]);
        assert_eq!(
            detail_lines(&problems),
            [
                "a.yaml:3:7: CICLO-E0201 unknown step `nowhere`",
                "  hint: did you mean `done`?"
            ]
        );
        let fields = json!([{ "field": "decision", "message": "must be one of approve, reject" }]);
        assert_eq!(
            detail_lines(&fields),
            ["  decision: must be one of approve, reject"]
        );
        assert!(detail_lines(&Value::Null).is_empty());
        assert_eq!(detail_lines(&json!({"a": 1})), [r#"  details: {"a":1}"#]);
    }

    #[test]
    fn tables_align_columns() {
        let out = table(
            &["ID", "STATE"],
            &[
                vec!["a".into(), "active".into()],
                vec!["bbbb".into(), "x".into()],
            ],
        );
        assert_eq!(out, "ID    STATE\na     active\nbbbb  x\n");
    }
}
