//! The `ciclo` command: check process files, preview timers, print the process format's JSON
//! Schema, draw a process, check and write e-invoices (`invoice`), run the server (`serve`), and talk to a running server (`client`).
//!
//! Exit codes: 0 ok, 1 a problem in what the user gave (an invalid process, a timer that can
//! never fire, a bad flag, a request the server refused), 2 an I/O or server error (a file that
//! cannot be read, a server that cannot be reached or fails).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

mod client;
mod data;
mod fake_erp;
mod invoice;
mod leads;
mod links;
mod logging;
mod serve;
mod validate;

#[derive(Parser)]
#[command(name = "ciclo", version, about = "Durable lead-to-cash process server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check process files (and folders of them): prints `FILE:LINE:COLUMN: CODE message` per
    /// problem on stderr and exits 1 when there is any.
    Validate {
        /// Process or decision-table files (.yaml), or folders to search for them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print when a timer fires: the next instants, one per line, in RFC 3339 UTC.
    Schedule {
        /// A cron expression (5 or 6 fields), an ISO 8601 duration (P1D), date-time or cycle
        /// (R3/PT10H).
        expr: String,
        /// IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Start instant (RFC 3339, e.g. 2027-03-27T00:00:00Z); default now.
        #[arg(long)]
        from: Option<String>,
        /// How many instants to print.
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
    /// Print the JSON Schema of the process file format, for editors.
    Schema,
    /// Draw a process: BPMN-style SVG (default) or Graphviz DOT, from a file.
    Graph {
        /// The process file (.yaml); decision tables in other files of its folder are found.
        file: PathBuf,
        /// `svg` or `dot`.
        #[arg(long, default_value = "svg")]
        format: String,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// People who use the pages.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Run the server: the API, the runtime and the processes of a folder, on the embedded
    /// store of a data folder.
    Serve(serve::ServeArgs),
    /// Run a fake ERP over HTTP JSON for tests and demos: stores orders, answers repeated
    /// idempotency keys with the first answer, can fail or be slow on demand.
    FakeErp(fake_erp::FakeErpArgs),
    /// E-invoices: check an invoice (YAML or JSON) and write it as FatturaPA or UBL.
    Invoice {
        #[command(subcommand)]
        command: invoice::InvoiceCommand,
    },
    /// Import data from files: `ciclo import leads FILE --mapping M`.
    Import {
        #[command(subcommand)]
        command: leads::ImportCommand,
    },
    /// Leads: `ciclo leads score-report FILE --mapping M`.
    Leads {
        #[command(subcommand)]
        command: leads::LeadsCommand,
    },
    #[command(flatten)]
    Client(client::ClientCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it once (it is stored only as a hash): through the running
    /// server, or, with --data, directly in a data folder no server is using.
    Create {
        /// admin, analyst, operator, user or worker.
        #[arg(long)]
        role: String,
        /// The person the token acts for (must exist).
        #[arg(long)]
        user: Option<String>,
        /// A note to recognise the token by.
        #[arg(long)]
        label: Option<String>,
        /// Work on this data folder directly (no server may be running on it).
        #[arg(long, env = "CICLO_DATA")]
        data: Option<PathBuf>,
        /// `sled` or `redb` (default: what the folder holds); only with --data.
        #[arg(long, env = "CICLO_STORE", requires = "data")]
        store: Option<String>,
        #[command(flatten)]
        remote: client::Remote,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Set a user's password for the pages, read from the first line of standard input
    /// (`echo "$PW" | ciclo user password anna`): through the running server, or, with --data,
    /// directly in a data folder no server is using. At least 10 characters; stored only as
    /// an argon2 hash. The user's open sessions end.
    Password {
        /// The user (must exist).
        name: String,
        /// Work on this data folder directly (no server may be running on it).
        #[arg(long, env = "CICLO_DATA")]
        data: Option<PathBuf>,
        /// `sled` or `redb` (default: what the folder holds); only with --data.
        #[arg(long, env = "CICLO_STORE", requires = "data")]
        store: Option<String>,
        #[command(flatten)]
        remote: client::Remote,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // A bad flag is the user's mistake: exit 1 as for every other one (clap's own
            // usage code is 2, which here means an I/O or server error). Help and version
            // are not errors.
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Validate { files } => validate::run(&files),
        Command::Schedule {
            expr,
            tz,
            from,
            count,
        } => schedule(&expr, &tz, from.as_deref(), count),
        Command::Graph {
            file,
            format,
            output,
        } => graph(&file, &format, output.as_deref()),
        Command::Token {
            command:
                TokenCommand::Create {
                    role,
                    user,
                    label,
                    data,
                    store,
                    remote,
                },
        } => match data {
            Some(data) => match token_create(
                &role,
                user.as_deref(),
                label.as_deref(),
                &data,
                store.as_deref(),
            ) {
                Ok(secret) => {
                    println!("{secret}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, &e),
            },
            None => client::token_create(&remote, &role, user.as_deref(), label.as_deref()),
        },
        Command::User {
            command:
                UserCommand::Password {
                    name,
                    data,
                    store,
                    remote,
                },
        } => {
            let password = match read_password() {
                Ok(p) => p,
                Err(e) => return fail(1, &e),
            };
            match data {
                Some(data) => match user_password(&name, &password, &data, store.as_deref()) {
                    Ok(()) => {
                        println!("password set for {name}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(1, &e),
                },
                None => client::user_password(&remote, &name, &password),
            }
        }
        Command::Client(command) => client::run(command),
        Command::Serve(args) => match serve::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, &e),
        },
        Command::FakeErp(args) => match fake_erp::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(2, &e),
        },
        Command::Invoice { command } => invoice::run(command),
        Command::Import { command } => leads::run_import(command),
        Command::Leads { command } => leads::run_leads(command),
        Command::Schema => {
            let schema = ciclo_engine::parse::json_schema();
            match serde_json::to_string_pretty(&schema) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(2, &anyhow::anyhow!(e)),
            }
        }
    }
}

fn fail(code: u8, error: &anyhow::Error) -> ExitCode {
    eprintln!("ciclo: {error:#}");
    ExitCode::from(code)
}

fn schedule(expr: &str, tz: &str, from: Option<&str>, count: usize) -> ExitCode {
    let from = match from {
        Some(text) => match text.parse::<jiff::Timestamp>() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("ciclo: --from `{text}` is not an RFC 3339 instant ({e})");
                eprintln!("  hint: write it like 2027-03-27T00:00:00Z");
                return ExitCode::from(1);
            }
        },
        None => jiff::Timestamp::now(),
    };
    match ciclo_engine::schedule::occurrences(expr, Some(tz), from) {
        Ok(instants) => {
            use std::io::Write as _;
            // Printed as found, so a huge --count streams; a closed pipe (`| head`) ends quietly.
            let mut out = std::io::stdout().lock();
            let mut printed = 0usize;
            for t in instants.take(count) {
                if writeln!(out, "{t}").is_err() {
                    return ExitCode::SUCCESS;
                }
                printed += 1;
            }
            let _ = out.flush();
            if printed == 0 && count > 0 {
                eprintln!("ciclo: timer `{expr}` never fires at or after {from}");
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ciclo: timer `{expr}`: {}", e.message);
            if e.offset <= expr.len() {
                eprintln!("  {expr}");
                eprintln!(
                    "  {}^",
                    " ".repeat(expr.get(..e.offset).map_or(0, |p| p.chars().count()))
                );
            }
            ExitCode::from(1)
        }
    }
}

fn graph(file: &Path, format: &str, output: Option<&Path>) -> ExitCode {
    if format != "svg" && format != "dot" {
        eprintln!("ciclo: unknown format `{format}`: use `svg` or `dot`");
        return ExitCode::from(1);
    }
    let text = match read(file) {
        Ok(t) => t,
        Err(e) => return fail(2, &e),
    };
    let def = match validate::load_with_folder(file, &text) {
        Ok(def) => def,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!(
                "{} problem(s): fix them to draw the process",
                problems.len()
            );
            return ExitCode::from(1);
        }
    };
    let drawing = if format == "dot" {
        ciclo_engine::diagram::dot(&def)
    } else {
        ciclo_engine::diagram::svg(&def, None)
    };
    match output {
        Some(path) => match std::fs::write(path, drawing) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(2, &anyhow::anyhow!("cannot write {}: {e}", path.display())),
        },
        None => {
            use std::io::Write as _;
            let _ = std::io::stdout().lock().write_all(drawing.as_bytes());
            ExitCode::SUCCESS
        }
    }
}

/// The new password: the first line of standard input, without its line ending.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| anyhow::anyhow!("cannot read the password from standard input: {e}"))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    ciclo_web::pages::passwords::check_new_password(&password)
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    Ok(password)
}

fn user_password(
    name: &str,
    password: &str,
    data: &Path,
    store: Option<&str>,
) -> anyhow::Result<()> {
    if !data.exists() {
        anyhow::bail!(
            "no data folder {} (start the server once to create it)",
            data.display()
        );
    }
    let store = data::open_store(data, &data::store_kind(data, store)?)?;
    let engine = ciclo_engine::runtime::Engine::open(
        store,
        std::sync::Arc::new(ciclo_engine::runtime::SystemClock),
        ciclo_engine::parse::Catalog::standard(),
    )?;
    let hash = ciclo_web::pages::passwords::hash_password(password)
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    if !engine.set_password_hash(name, Some(hash))? {
        anyhow::bail!(
            "no user {name:?}: create it first (PUT /api/users/NAME or [[users]] in ciclo.toml)"
        );
    }
    Ok(())
}

fn token_create(
    role: &str,
    user: Option<&str>,
    label: Option<&str>,
    data: &Path,
    store: Option<&str>,
) -> anyhow::Result<String> {
    let role: ciclo_engine::store::Role = role.parse()?;
    if !data.exists() {
        anyhow::bail!(
            "no data folder {} (start the server once to create it)",
            data.display()
        );
    }
    let store = data::open_store(data, &data::store_kind(data, store)?)?;
    let engine = ciclo_engine::runtime::Engine::open(
        store,
        std::sync::Arc::new(ciclo_engine::runtime::SystemClock),
        ciclo_engine::parse::Catalog::standard(),
    )?;
    Ok(engine.create_token(role, user, label)?)
}

/// Reads a file, with the path in the error.
pub(crate) fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}
