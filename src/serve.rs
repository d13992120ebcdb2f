//! `ciclo serve`: the server on the embedded store. Configuration comes in layers — defaults,
//! then `ciclo.toml` (or `--config FILE`), then `CICLO_...` environment variables, then flags —
//! and every option is documented where it is defined, here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use ciclo_engine::parse::Catalog;
use ciclo_engine::runtime::{Connectors, Engine, Runtime, RuntimeOptions, SystemClock};
use ciclo_engine::store::{Role, UserRecord};
use serde::Deserialize;

/// Flags of `ciclo serve`; each can also come from the environment or the config file.
#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port and prints it).
    #[arg(long, env = "CICLO_LISTEN")]
    pub listen: Option<String>,
    /// Data folder: the store, the admin token, the outbox.
    #[arg(long, env = "CICLO_DATA")]
    pub data: Option<PathBuf>,
    /// Folder of process files deployed at start (every .yaml inside, sub-folders too).
    #[arg(long, env = "CICLO_PROCESSES")]
    pub processes: Option<PathBuf>,
    /// Configuration file (default: ./ciclo.toml when it exists).
    #[arg(long, env = "CICLO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: `human` or `json`.
    #[arg(long, env = "CICLO_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Durable store: `sled` (default) or `redb`. Without it, a data folder that holds only a
    /// redb store opens on redb.
    #[arg(long, env = "CICLO_STORE")]
    pub store: Option<String>,
    /// For demos and trials only: the engine's clock runs this many times faster than real
    /// time (86400: a day per second), so timers of days fire in seconds. Use a fresh data
    /// folder: the times it stores are in the future for a normal start.
    #[arg(long, env = "CICLO_CLOCK_SPEED")]
    pub clock_speed: Option<f64>,
    /// With --clock-speed: the day (`2025-03-01`, midnight UTC) or instant (RFC 3339) the
    /// clock starts at. Default: now.
    #[arg(long, env = "CICLO_CLOCK_START", requires = "clock_speed")]
    pub clock_start: Option<String>,
    /// How long a finished instance is kept, with its history, before the retention sweep
    /// removes it: a duration (`90d`, `12h`, `2m`, `1h30m`, `PT2M`; a day is 24 hours) or
    /// `forever`. Wins over `retention` and `retention_days` in the config file. Default 90
    /// days.
    #[arg(long, env = "CICLO_RETENTION")]
    pub retention: Option<String>,
    /// How often the retention sweep runs: a duration of at least one second (`1h`, `30s`).
    /// Default one hour. Each sweep scans every instance in the store.
    #[arg(long, env = "CICLO_RETENTION_SWEEP")]
    pub retention_sweep: Option<String>,
}

/// The engine's clock: the system's, or with `--clock-speed` one that runs faster.
fn engine_clock(
    args: &ServeArgs,
) -> anyhow::Result<(Arc<dyn ciclo_engine::runtime::Clock>, Option<f64>)> {
    let Some(speed) = args.clock_speed else {
        return Ok((Arc::new(SystemClock), None));
    };
    let start = match args.clock_start.as_deref().map(str::trim) {
        None => jiff::Timestamp::now(),
        Some(text) => match text.parse::<jiff::Timestamp>() {
            Ok(t) => t,
            Err(_) => text
                .parse::<jiff::civil::Date>()
                .ok()
                .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
                .map(|z| z.timestamp())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--clock-start `{text}` is neither a day (2025-03-01) nor an instant (2025-03-01T09:00:00Z)"
                    )
                })?,
        },
    };
    let clock = ciclo_engine::runtime::ScaledClock::new(start, speed)
        .map_err(|e| anyhow::anyhow!("--clock-speed: {e}"))?;
    Ok((Arc::new(clock), Some(speed)))
}

/// The configuration file (`ciclo.toml`). Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    listen: Option<String>,
    /// Data folder. Default `./ciclo-data`.
    data: Option<PathBuf>,
    /// Process folder. Default `./processes`.
    processes: Option<PathBuf>,
    /// `human` (default) or `json`.
    log_format: Option<String>,
    /// `sled` (default) or `redb`.
    store: Option<String>,
    /// Days a finished instance is kept, with its history. Default 90; 0 keeps them for ever.
    /// `retention` says the same as a duration; set one of the two.
    retention_days: Option<u32>,
    /// How long a finished instance is kept, with its history: a duration (`90d`, `12h`,
    /// `2m`, `PT2M`; a day is 24 hours) or `forever`. Default 90 days.
    retention: Option<String>,
    /// How often the retention sweep runs (`1h`, `30s`; at least one second). Default 1 hour.
    retention_sweep: Option<String>,
    /// The `From:` address of e-mails. Default `ciclo@localhost`.
    mail_from: Option<String>,
    /// Send e-mails through an SMTP server. Without this table they are written to the outbox
    /// folder `<data>/outbox` as `.eml` files.
    smtp: Option<FileSmtp>,
    /// Whether `/metrics` is open without a token. Default true.
    public_metrics: Option<bool>,
    /// Largest request body in bytes. Default 1 MiB.
    max_body_bytes: Option<usize>,
    /// Base URL of the ERP, read by the ERP mapping as `{{erp_url}}` (also `CICLO_ERP_URL`).
    /// Needed when `<processes>/connectors/erp.yaml` exists.
    erp_url: Option<String>,
    /// A PEM file of certificate authorities the ERP client trusts besides the system's (also
    /// `CICLO_ERP_CA_FILE`), for an `https://` ERP behind a company CA.
    erp_ca_file: Option<PathBuf>,
    /// People and their groups, created or updated at start.
    #[serde(default)]
    users: Vec<FileUser>,
    /// Where `call: einvoice.issue` delivers invoices (docs/einvoicing.md).
    einvoice: Option<FileEinvoice>,
    /// The address people reach this server at, for links in e-mails (also
    /// `CICLO_PUBLIC_URL`). Default `http://<the address it listens on>`.
    public_url: Option<String>,
    /// Days an e-mail decision link works after it is sent. Default 7.
    link_ttl_days: Option<u32>,
}

/// `[einvoice]` of the configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEinvoice {
    /// Folder the invoices are written to as `IT<VAT>_<progressive>.xml`; with `endpoint`, the
    /// folder that keeps only the progressive counter and the job index. Default
    /// `<data>/einvoices`.
    folder: Option<PathBuf>,
    /// An access point's URL (plain `http://`): invoices are POSTed there instead of written.
    endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUser {
    name: String,
    #[serde(default)]
    groups: Vec<String>,
    email: Option<String>,
    display_name: Option<String>,
    /// The name of an environment variable holding the user's password for the pages (the
    /// password itself is never in the file). Set at start, argon2-hashed; unchanged
    /// passwords keep the user's sessions.
    password_env: Option<String>,
}

/// `[smtp]` of the configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSmtp {
    /// Host name of the server.
    host: String,
    /// Port. Default 587 with `starttls`, 465 with `tls`, 25 with `none`.
    port: Option<u16>,
    /// `starttls` (default), `tls` (TLS from the first byte) or `none` (no encryption: only for
    /// a relay on this machine; a login over it to another host is refused).
    tls: Option<String>,
    /// Login user; leave out when the server needs no login.
    user: Option<String>,
    /// The name of the environment variable that holds the password. The password itself is
    /// never in the file, so the file can be shared and committed.
    password_env: Option<String>,
    /// The `From:` address (`Name <address>` or an address). Default: `mail_from`.
    from: Option<String>,
    /// The `Reply-To:` address. Default: none.
    reply_to: Option<String>,
    /// A PEM file of certificate authorities to trust besides the system's (a company CA, a
    /// test server). Relative to the working folder.
    ca_file: Option<PathBuf>,
}

impl FileSmtp {
    /// The `[smtp]` table with the `CICLO_SMTP_*` environment variables laid over it (each
    /// wins over its key). `CICLO_SMTP_HOST` alone turns SMTP on; `CICLO_SMTP_PASSWORD` holds
    /// the password itself, for containers whose secrets arrive as variables.
    fn with_env(
        file: Option<FileSmtp>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<(FileSmtp, Option<String>)>> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let host = var("CICLO_SMTP_HOST");
        let mut smtp = match (file, host) {
            (Some(mut smtp), host) => {
                if let Some(host) = host {
                    smtp.host = host;
                }
                smtp
            }
            (None, Some(host)) => FileSmtp {
                host,
                port: None,
                tls: None,
                user: None,
                password_env: None,
                from: None,
                reply_to: None,
                ca_file: None,
            },
            (None, None) => {
                let stray: Vec<&str> = SMTP_VARS
                    .iter()
                    .copied()
                    .filter(|v| *v != "CICLO_SMTP_HOST" && var(v).is_some())
                    .collect();
                if !stray.is_empty() {
                    bail!(
                        "{} set but no SMTP server: set CICLO_SMTP_HOST or [smtp] host in ciclo.toml",
                        stray.join(", ")
                    );
                }
                return Ok(None);
            }
        };
        if let Some(port) = var("CICLO_SMTP_PORT") {
            smtp.port = Some(port.trim().parse().map_err(|_| {
                anyhow::anyhow!("CICLO_SMTP_PORT must be a port number (1-65535), not {port:?}")
            })?);
        }
        if let Some(tls) = var("CICLO_SMTP_TLS") {
            smtp.tls = Some(tls);
        }
        if let Some(user) = var("CICLO_SMTP_USER") {
            smtp.user = Some(user);
        }
        if let Some(from) = var("CICLO_SMTP_FROM") {
            smtp.from = Some(from);
        }
        if let Some(reply_to) = var("CICLO_SMTP_REPLY_TO") {
            smtp.reply_to = Some(reply_to);
        }
        if let Some(ca) = var("CICLO_SMTP_CA_FILE") {
            smtp.ca_file = Some(PathBuf::from(ca));
        }
        Ok(Some((smtp, env("CICLO_SMTP_PASSWORD"))))
    }
}

/// The environment variables that configure SMTP (docs/connectors.md).
const SMTP_VARS: [&str; 8] = [
    "CICLO_SMTP_HOST",
    "CICLO_SMTP_PORT",
    "CICLO_SMTP_TLS",
    "CICLO_SMTP_USER",
    "CICLO_SMTP_PASSWORD",
    "CICLO_SMTP_FROM",
    "CICLO_SMTP_REPLY_TO",
    "CICLO_SMTP_CA_FILE",
];

/// The resolved configuration.
#[derive(Debug)]
pub struct Config {
    /// `--clock-speed`, when the clock runs faster than real time.
    pub clock_speed: Option<f64>,
    pub listen: String,
    pub data: PathBuf,
    pub processes: PathBuf,
    pub log_format: String,
    pub store: String,
    /// How long finished instances are kept; `None`: for ever.
    pub retention: Option<jiff::SignedDuration>,
    /// How often the retention sweep runs.
    pub retention_sweep: std::time::Duration,
    pub mail_from: String,
    pub mail_reply_to: Option<String>,
    /// `None`: e-mails go to the outbox folder.
    pub smtp: Option<ciclo_connectors::email::SmtpOptions>,
    pub public_metrics: bool,
    pub max_body_bytes: usize,
    pub erp_url: Option<String>,
    pub erp_ca_file: Option<PathBuf>,
    /// The e-invoice folder (files, or the counter and job index with an endpoint).
    pub einvoice_folder: PathBuf,
    /// The access point e-invoices are POSTed to; `None`: written to the folder.
    pub einvoice_endpoint: Option<String>,
    /// The address links in e-mails start with; `None`: `http://<listen address>`.
    pub public_url: Option<String>,
    /// How long an e-mail decision link works.
    pub link_ttl: jiff::SignedDuration,
    users: Vec<FileUser>,
}

impl Config {
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => Some(read_config(path)?),
            None if Path::new("ciclo.toml").exists() => Some(read_config(Path::new("ciclo.toml"))?),
            None => None,
        }
        .unwrap_or_default();
        let store = args.store.clone().or(file.store);
        let log_format = args
            .log_format
            .clone()
            .or(file.log_format)
            .unwrap_or_else(|| "human".into());
        if log_format != "human" && log_format != "json" {
            bail!("unknown log format `{log_format}`: use `human` or `json`");
        }
        let env = |name: &str| std::env::var(name).ok();
        let (smtp, smtp_from, mail_reply_to) = match FileSmtp::with_env(file.smtp, &env)? {
            Some((smtp, env_password)) => {
                let security: ciclo_connectors::email::Security = smtp
                    .tls
                    .as_deref()
                    .unwrap_or("starttls")
                    .parse()
                    .map_err(|e| anyhow::anyhow!("[smtp] {e}"))?;
                let password = match (env_password, &smtp.password_env) {
                    (Some(password), _) => Some(password),
                    (None, Some(var)) => Some(std::env::var(var).with_context(|| {
                        format!("[smtp] the password variable {var} is not set")
                    })?),
                    (None, None) => None,
                };
                let login = match (smtp.user, password) {
                    (Some(user), Some(password)) => {
                        Some((user, ciclo_connectors::email::Password::new(password)))
                    }
                    (Some(_), None) => bail!(
                        "[smtp] user is set but no password: set password_env in ciclo.toml or CICLO_SMTP_PASSWORD"
                    ),
                    (None, Some(_)) => bail!(
                        "[smtp] a password is set but no user: set user in ciclo.toml or CICLO_SMTP_USER"
                    ),
                    (None, None) => None,
                };
                let extra_roots_pem = match &smtp.ca_file {
                    Some(path) => Some(std::fs::read(path).with_context(|| {
                        format!("[smtp] cannot read the CA file {}", path.display())
                    })?),
                    None => None,
                };
                let options = ciclo_connectors::email::SmtpOptions {
                    host: smtp.host,
                    port: smtp.port,
                    security,
                    login,
                    timeout: std::time::Duration::from_secs(30),
                    extra_roots_pem,
                };
                (Some(options), smtp.from, smtp.reply_to)
            }
            None => (None, None, None),
        };
        let data = args
            .data
            .clone()
            .or(file.data)
            .unwrap_or_else(|| PathBuf::from("ciclo-data"));
        // The store asked for, else the one the data folder already holds (a folder made with
        // `--store redb` reopens on redb rather than on a new, empty sled store), else sled.
        let store = crate::data::store_kind(&data, store.as_deref())?;
        let (einvoice_folder, einvoice_endpoint) = match file.einvoice {
            Some(e) => (e.folder, e.endpoint),
            None => (None, None),
        };
        if let Some(url) = &einvoice_endpoint
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            bail!("[einvoice] endpoint `{url}`: give an https:// (or http://) URL");
        }
        Ok(Config {
            clock_speed: args.clock_speed,
            einvoice_folder: einvoice_folder.unwrap_or_else(|| data.join("einvoices")),
            einvoice_endpoint,
            listen: args
                .listen
                .clone()
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            data,
            processes: args
                .processes
                .clone()
                .or(file.processes)
                .unwrap_or_else(|| PathBuf::from("processes")),
            log_format,
            store,
            retention: retention(
                args.retention.as_deref(),
                file.retention.as_deref(),
                file.retention_days,
            )?,
            retention_sweep: match args
                .retention_sweep
                .as_deref()
                .or(file.retention_sweep.as_deref())
            {
                None => RuntimeOptions::default().retention_sweep,
                Some(text) => {
                    let every = config_duration("retention_sweep", text)?;
                    if every < jiff::SignedDuration::from_secs(1) {
                        bail!("retention_sweep = {text:?}: give at least one second (such as 30s)");
                    }
                    std::time::Duration::try_from(every)?
                }
            },
            mail_from: smtp_from
                .or(file.mail_from)
                .unwrap_or_else(|| "ciclo@localhost".into()),
            mail_reply_to,
            smtp,
            public_metrics: file.public_metrics.unwrap_or(true),
            max_body_bytes: file.max_body_bytes.unwrap_or(1 << 20),
            erp_url: std::env::var("CICLO_ERP_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
                .or(file.erp_url),
            erp_ca_file: std::env::var("CICLO_ERP_CA_FILE")
                .ok()
                .filter(|p| !p.trim().is_empty())
                .map(PathBuf::from)
                .or(file.erp_ca_file),
            public_url: std::env::var("CICLO_PUBLIC_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
                .or(file.public_url)
                .map(|u| u.trim_end_matches('/').to_string()),
            link_ttl: {
                let days = file.link_ttl_days.unwrap_or(7);
                if days == 0 {
                    bail!("link_ttl_days must be at least 1");
                }
                jiff::SignedDuration::from_hours(24 * i64::from(days))
            },
            users: file.users,
        })
    }
}

/// How long finished instances are kept: `--retention` (or `CICLO_RETENTION`), else the
/// file's `retention` or `retention_days` (not both), else 90 days. `None`: for ever.
fn retention(
    flag: Option<&str>,
    file: Option<&str>,
    file_days: Option<u32>,
) -> anyhow::Result<Option<jiff::SignedDuration>> {
    if file.is_some() && file_days.is_some() {
        bail!(
            "the config file sets both `retention` and `retention_days`: keep one (`retention` takes a duration such as \"90d\")"
        );
    }
    let text = match (flag, file, file_days) {
        (Some(text), _, _) | (None, Some(text), _) => text,
        (None, None, Some(0)) => return Ok(None),
        (None, None, Some(days)) => {
            return Ok(Some(jiff::SignedDuration::from_hours(24 * i64::from(days))));
        }
        (None, None, None) => return Ok(RuntimeOptions::default().retention),
    };
    if text.trim().eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    let kept = config_duration("retention", text)?;
    if kept.is_zero() {
        bail!(
            "retention = {text:?} would remove instances as soon as they end: give a duration longer than zero, or `forever`"
        );
    }
    Ok(Some(kept))
}

/// A duration of the configuration: jiff's friendly format (`90d`, `12h`, `2m`, `30s`,
/// `1h30m`, `2 minutes`) or ISO 8601 (`P90D`, `PT2M`), a day counting 24 hours. Months and
/// years are refused (their length varies), and so is a negative duration.
fn config_duration(key: &str, text: &str) -> anyhow::Result<jiff::SignedDuration> {
    let hint = "write it as 90d, 12h, 2m, 30s or PT2M";
    let span: jiff::Span = text
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{key} = {text:?} is not a duration ({e}): {hint}"))?;
    let duration = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|_| {
            anyhow::anyhow!("{key} = {text:?}: months and years have no fixed length; {hint}")
        })?;
    if duration.is_negative() {
        bail!("{key} = {text:?} is negative: {hint}");
    }
    Ok(duration)
}

fn read_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

/// The connectors and operations deploys are checked against: the engine's standard list,
/// with the operations of the e-invoice connector as this binary implements them.
pub fn catalog() -> Catalog {
    let mut catalog = Catalog::standard();
    catalog.connectors.insert(
        "einvoice".into(),
        ciclo_connectors::einvoice::OPERATIONS
            .iter()
            .map(|op| op.to_string())
            .collect(),
    );
    // E-mail decision links (`email:` on a user task), served by `links::LinksConnector`.
    catalog
        .connectors
        .insert("links".into(), vec!["send".to_string()]);
    catalog
}

/// The folder of connector mappings inside a process folder: its YAML files describe
/// connectors (`erp.yaml`), not processes, so deploy and `ciclo validate` skip it.
pub const CONNECTORS_FOLDER: &str = "connectors";

/// The folder of import mappings (`ciclo import leads --mapping`), also not process files.
pub const IMPORTS_FOLDER: &str = "imports";

/// Whether a folder inside a process folder holds something else than processes.
pub fn is_not_processes(folder: &Path) -> bool {
    matches!(
        folder.file_name().and_then(|n| n.to_str()),
        Some(CONNECTORS_FOLDER | IMPORTS_FOLDER)
    )
}

/// Every process file under `dir`, table libraries first (processes may use their tables).
/// The connector mappings of `dir/connectors/` are not process files.
pub(crate) fn process_files(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                if is_not_processes(&p) {
                    continue;
                }
                walk(&p, out)?;
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut paths = Vec::new();
    if dir.exists() {
        walk(dir, &mut paths)
            .with_context(|| format!("cannot read the process folder {}", dir.display()))?;
    }
    let mut files = Vec::new();
    for p in paths {
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let name = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
        files.push((name, text));
    }
    files.sort_by_key(|(name, text)| {
        (
            text.lines().any(|l| l.starts_with("process:")),
            name.clone(),
        )
    });
    Ok(files)
}

/// Creates the admin token on first start, in `<data>/admin-token`, readable by the owner only.
fn ensure_admin_token(engine: &Engine, data: &Path) -> anyhow::Result<(PathBuf, bool)> {
    let path = data.join("admin-token");
    if path.exists() {
        return Ok((path, false));
    }
    let secret = engine.create_token(Role::Admin, None, Some("admin (created at first start)"))?;
    #[cfg(unix)]
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(f, "{secret}")?;
        f.sync_all()?;
    }
    #[cfg(not(unix))]
    std::fs::write(&path, format!("{secret}\n"))?;
    Ok((path, true))
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args)?;
    crate::logging::init(&config.log_format);
    // Mistakes in the options are refused before anything is created on disk.
    if std::net::ToSocketAddrs::to_socket_addrs(config.listen.as_str()).is_err() {
        bail!(
            "cannot listen on `{}`: give an address and port such as 127.0.0.1:8080",
            config.listen
        );
    }
    let processes_given = args.processes.is_some();
    if processes_given && !config.processes.is_dir() {
        bail!(
            "the process folder {} does not exist",
            config.processes.display()
        );
    }
    std::fs::create_dir_all(&config.data)
        .with_context(|| format!("cannot create the data folder {}", config.data.display()))?;
    let store = crate::data::open_store(&config.data, &config.store)?;
    let erp = erp_connector(&config)?;
    let mut catalog = catalog();
    if let Some(erp) = &erp {
        // Deploys then refuse `call: erp.<operation>` for an operation the mapping lacks.
        catalog
            .connectors
            .insert("erp".into(), erp.operations().map(str::to_string).collect());
    }
    // E-mail templates are checked now, so a broken one refuses the start instead of failing
    // the first customer's e-mail, and deploys refuse a `send:` naming a template that is not
    // there (the same set an API deploy is checked against later).
    let templates_dir = config.processes.join("templates");
    let templates = ciclo_connectors::email::Templates::load(&templates_dir)
        .map_err(|e| anyhow::anyhow!("e-mail templates: {e}"))?;
    catalog.templates = Some(templates.names().map(str::to_string).collect());
    // The e-invoice folder (the files, or with an endpoint the counter and the job index) must
    // be writable now rather than at the first customer's invoice.
    writable_folder(&config.einvoice_folder).with_context(|| {
        format!(
            "the e-invoice folder {} is not writable: fix its permissions or set [einvoice] folder in ciclo.toml",
            config.einvoice_folder.display()
        )
    })?;
    let (clock, speed) = engine_clock(&args)?;
    if let Some(speed) = speed {
        tracing::warn!(
            speed,
            start = %clock.now(),
            "the clock runs {speed} times faster than real time (--clock-speed): for demos and trials only"
        );
    }
    let engine = Engine::open(store, clock, catalog)?;

    // Deploy the process folder: a file with problems stops the start, with every problem.
    let mut problems = Vec::new();
    let mut deployed = 0;
    for (file, text) in process_files(&config.processes)? {
        match engine.deploy(&file, &text) {
            Ok(versions) => deployed += versions.iter().filter(|d| !d.unchanged).count(),
            Err(ciclo_engine::runtime::EngineError::Invalid(list)) => problems.extend(list),
            Err(e) => return Err(e.into()),
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!(
                "{}",
                p.to_string().replace(
                    &format!("{}:", p.file),
                    &format!("{}:", config.processes.join(&p.file).display())
                )
            );
        }
        bail!(
            "{} problem(s) in the process folder {}: nothing was started",
            problems.len(),
            config.processes.display()
        );
    }
    // Passwords of configured users, read and checked before anything is written.
    let mut passwords = Vec::new();
    for user in &config.users {
        if let Some(var) = &user.password_env {
            let password = std::env::var(var).with_context(|| {
                format!(
                    "[[users]] {}: the password variable {var} is not set",
                    user.name
                )
            })?;
            ciclo_web::pages::passwords::check_new_password(&password)
                .map_err(|e| anyhow::anyhow!("[[users]] {} ({var}): {}", user.name, e.message()))?;
            passwords.push((user.name.clone(), password));
        }
    }
    for user in &config.users {
        let existing = engine.user(&user.name)?;
        engine.put_user(UserRecord {
            name: user.name.clone(),
            display_name: user.display_name.clone(),
            email: user.email.clone(),
            groups: user.groups.clone(),
            password_hash: existing.as_ref().and_then(|u| u.password_hash.clone()),
            created_at: existing
                .map(|u| u.created_at)
                .unwrap_or_else(jiff::Timestamp::now),
        })?;
    }
    for (name, password) in passwords {
        let unchanged = engine
            .user(&name)?
            .and_then(|u| u.password_hash)
            .is_some_and(|hash| ciclo_web::pages::passwords::verify_password(&password, &hash));
        if !unchanged {
            let hash = ciclo_web::pages::passwords::hash_password(&password)
                .map_err(|e| anyhow::anyhow!("[[users]] {name}: {}", e.message()))?;
            engine.set_password_hash(&name, Some(hash))?;
        }
    }
    let (token_path, created) = ensure_admin_token(&engine, &config.data)?;

    let sender =
        ciclo_connectors::email::Sender::parse(&config.mail_from, config.mail_reply_to.as_deref())
            .map_err(|e| anyhow::anyhow!("e-mail configuration: {e}"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let email = Email { templates, sender };
    runtime.block_on(serve(
        engine, config, erp, email, token_path, created, deployed,
    ))
}

/// The ERP connector, when the process folder has `connectors/erp.yaml`.
fn erp_connector(config: &Config) -> anyhow::Result<Option<ciclo_connectors::ErpConnector>> {
    let file = config.processes.join(CONNECTORS_FOLDER).join("erp.yaml");
    if !file.exists() {
        if config.erp_url.is_some() || config.erp_ca_file.is_some() {
            println!(
                "ERP: erp_url / CICLO_ERP_URL is set but {} does not exist: no ERP connector",
                file.display()
            );
        }
        return Ok(None);
    }
    let mapping = ciclo_connectors::ErpConfig::load(&file)?;
    let Some(url) = &config.erp_url else {
        // Not an error: the shipped process folder has a mapping, and the quick start (no ERP
        // at hand) must still run. ERP jobs then fail with "no connector `erp`" and become
        // incidents, which says the same to an operator.
        println!(
            "ERP: {} is not used: set `erp_url` in ciclo.toml or CICLO_ERP_URL",
            file.display()
        );
        return Ok(None);
    };
    let extra_roots = match &config.erp_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read the ERP CA file {}", path.display()))?,
        ),
        None => None,
    };
    let connector = ciclo_connectors::ErpConnector::with_extra_roots(
        mapping,
        url,
        ciclo_connectors::Secrets::from_env(),
        extra_roots.as_deref(),
    )
    .map_err(|e| match (e, &config.erp_ca_file) {
        (ciclo_connectors::erp::Error::Client(message), Some(path)) => anyhow::anyhow!(
            "the ERP CA file {} (erp_ca_file or CICLO_ERP_CA_FILE): {message}",
            path.display()
        ),
        (other, _) => other.into(),
    })?;
    if url.starts_with("http://") && !is_local_url(url) {
        tracing::warn!(
            url = %url,
            "the ERP is reached over plain http: its token and orders cross the network unencrypted; use https://"
        );
    }
    Ok(Some(connector))
}

/// What the e-mail connector is built from, checked before the async runtime starts.
struct Email {
    templates: ciclo_connectors::email::Templates,
    sender: ciclo_connectors::email::Sender,
}

async fn serve(
    engine: Engine,
    config: Config,
    erp: Option<ciclo_connectors::ErpConnector>,
    email: Email,
    token_path: PathBuf,
    created: bool,
    deployed: usize,
) -> anyhow::Result<()> {
    let engine = Arc::new(engine);
    let mut connectors: Connectors = Default::default();
    // Built inside the async runtime: lettre's connection pool starts a task of its own.
    let (email, mail_line) = match &config.smtp {
        Some(smtp) => (
            ciclo_connectors::EmailConnector::smtp(smtp, email.sender, email.templates)?,
            format!("e-mails go to the SMTP server {}", smtp.host),
        ),
        None => {
            let outbox = ciclo_connectors::Outbox::new(config.data.join("outbox"));
            let line = format!("e-mails go to the outbox {}", outbox.dir().display());
            (
                ciclo_connectors::EmailConnector::outbox(outbox, email.sender, email.templates),
                line,
            )
        }
    };
    let email = Arc::new(email);
    connectors.insert("email".into(), email.clone());
    let erp_line = erp.as_ref().map(|erp| {
        format!(
            "ERP: {} at {}",
            erp.file().display(),
            config.erp_url.as_deref().unwrap_or_default()
        )
    });
    if let Some(erp) = erp {
        connectors.insert("erp".into(), Arc::new(erp));
    }
    let (target, einvoice_line) = match &config.einvoice_endpoint {
        Some(url) => (
            ciclo_connectors::einvoice::Target::Http(url.clone()),
            format!("e-invoices go to the access point {url}"),
        ),
        None => (
            ciclo_connectors::einvoice::Target::Folder,
            format!(
                "e-invoices go to the folder {}",
                config.einvoice_folder.display()
            ),
        ),
    };
    connectors.insert(
        "einvoice".into(),
        Arc::new(ciclo_connectors::EinvoiceConnector::new(
            ciclo_connectors::einvoice::Delivery::new(&config.einvoice_folder, target),
        )),
    );
    // Bound before the runtime starts, so links can name the real port (`--listen ...:0`).
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr: SocketAddr = listener.local_addr()?;
    let link_secret =
        ciclo_web::links::LinkSecret::load_or_create(&config.data.join("link-secret"))
            .with_context(|| {
                format!(
                    "cannot read or create {}",
                    config.data.join("link-secret").display()
                )
            })?;
    connectors.insert(
        "links".into(),
        Arc::new(crate::links::LinksConnector {
            engine: engine.clone(),
            email,
            options: Arc::new(ciclo_web::links::LinkOptions {
                secret: link_secret,
                ttl: config.link_ttl,
                public_url: config
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{addr}")),
            }),
        }),
    );
    let handle = Runtime::spawn(
        engine.clone(),
        connectors,
        RuntimeOptions {
            retention: config.retention,
            retention_sweep: config.retention_sweep,
            // Under a fast clock a pause of 200 ms real time is hours of process time.
            poll: match config.clock_speed {
                Some(_) => std::time::Duration::from_millis(20),
                None => RuntimeOptions::default().poll,
            },
            ..Default::default()
        },
    );

    let metrics = ciclo_web::install_metrics();
    // `install_recorder` starts no upkeep task: without one, every histogram sample stays in
    // memory until `/metrics` is next rendered, which may be never (under HTTP load the
    // server grew by the samples of every request). Fold them into the histograms every
    // 5 s, as the exporter's own upkeep task does.
    tokio::spawn({
        let metrics = metrics.clone();
        async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                metrics.run_upkeep();
            }
        }
    });
    let stopping = ciclo_web::Stopping::default();
    let web_config = ciclo_web::WebConfig {
        stopping: stopping.clone(),
        max_body_bytes: config.max_body_bytes,
        public_metrics: config.public_metrics,
        ..Default::default()
    };
    let app = ciclo_web::app(engine.clone(), web_config, metrics);
    // These lines are read by people and by tests: keep their shape.
    println!("listening on http://{addr}");
    println!("data folder: {}", config.data.display());
    println!(
        "processes: {} ({} new version(s) deployed)",
        config.processes.display(),
        deployed
    );
    println!("{mail_line}");
    println!("{einvoice_line}");
    if let Some(line) = erp_line {
        println!("{line}");
    }
    if created {
        println!(
            "admin token created in {} (readable by you only)",
            token_path.display()
        );
    } else {
        println!("admin token in {}", token_path.display());
    }
    tracing::info!(%addr, store = %config.store, "server started");

    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Long polls answer now; the graceful shutdown then waits only for short requests.
            stopping.stop();
        })
        .await
        .context("the HTTP server failed")?;
    // No new requests now: let jobs in flight finish and be recorded, then flush and close.
    tracing::info!("stopping: finishing work in flight");
    handle.shutdown().await;
    drop(handle);
    match Arc::try_unwrap(engine) {
        Ok(engine) => drop(engine),
        Err(_) => {
            tracing::warn!("the engine is still shared at shutdown; the store closes on exit")
        }
    }
    println!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Whether an `http://` address names this machine (where plain HTTP is harmless).
fn is_local_url(url: &str) -> bool {
    let rest = url.trim_start_matches("http://");
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Creates `dir` if needed and proves a file can be written in it.
fn writable_folder(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".ciclo-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn file_smtp() -> FileSmtp {
        toml::from_str::<FileConfig>(
            "[smtp]\nhost = \"mail.example\"\nport = 587\nuser = \"ciclo\"\npassword_env = \"MAIL_PW\"\n",
        )
        .unwrap()
        .smtp
        .unwrap()
    }

    #[test]
    fn smtp_environment_variables_override_the_file_key_by_key() {
        let (smtp, password) = FileSmtp::with_env(
            Some(file_smtp()),
            &env(&[
                ("CICLO_SMTP_HOST", "relay.example"),
                ("CICLO_SMTP_PORT", "2525"),
                ("CICLO_SMTP_TLS", "tls"),
                ("CICLO_SMTP_PASSWORD", "pw"),
                ("CICLO_SMTP_CA_FILE", "/etc/ca.pem"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(smtp.host, "relay.example");
        assert_eq!(smtp.port, Some(2525));
        assert_eq!(smtp.tls.as_deref(), Some("tls"));
        assert_eq!(smtp.user.as_deref(), Some("ciclo"), "kept from the file");
        assert_eq!(smtp.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(password.as_deref(), Some("pw"));
    }

    #[test]
    fn the_host_variable_alone_turns_smtp_on_and_stray_variables_are_refused() {
        let (smtp, password) = FileSmtp::with_env(None, &env(&[("CICLO_SMTP_HOST", "localhost")]))
            .unwrap()
            .unwrap();
        assert_eq!(smtp.host, "localhost");
        assert_eq!(smtp.port, None);
        assert!(password.is_none());

        assert!(FileSmtp::with_env(None, &env(&[])).unwrap().is_none());
        let error = FileSmtp::with_env(None, &env(&[("CICLO_SMTP_USER", "x")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("CICLO_SMTP_USER") && error.contains("CICLO_SMTP_HOST"),
            "{error}"
        );

        let error = FileSmtp::with_env(Some(file_smtp()), &env(&[("CICLO_SMTP_PORT", "smtp")]))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("CICLO_SMTP_PORT"), "{error}");
    }

    #[test]
    fn retention_takes_a_duration_or_days_and_refuses_bad_values() {
        let days = |d: i64| Some(jiff::SignedDuration::from_hours(24 * d));
        assert_eq!(retention(None, None, None).unwrap(), days(90));
        assert_eq!(retention(None, None, Some(30)).unwrap(), days(30));
        assert_eq!(
            retention(None, None, Some(0)).unwrap(),
            None,
            "0 days: for ever"
        );
        assert_eq!(retention(None, Some("90d"), None).unwrap(), days(90));
        assert_eq!(
            retention(None, Some("PT2M"), None).unwrap(),
            Some(jiff::SignedDuration::from_mins(2))
        );
        assert_eq!(
            retention(None, Some("1h30m"), None).unwrap(),
            Some(jiff::SignedDuration::from_mins(90))
        );
        assert_eq!(retention(None, Some("forever"), None).unwrap(), None);
        // The flag (or CICLO_RETENTION) wins over the file's keys.
        assert_eq!(
            retention(Some("2m"), None, Some(30)).unwrap(),
            Some(jiff::SignedDuration::from_mins(2))
        );
        for (text, says) in [
            ("soon", "is not a duration"),
            ("0s", "longer than zero"),
            ("-5m", "negative"),
            ("1 month", "no fixed length"),
        ] {
            let error = retention(None, Some(text), None).unwrap_err().to_string();
            assert!(
                error.contains(says) && error.contains("retention"),
                "{text}: {error}"
            );
        }
        let error = retention(None, Some("2m"), Some(30))
            .unwrap_err()
            .to_string();
        assert!(error.contains("both"), "{error}");
    }

    #[test]
    fn the_retention_sweep_interval_is_a_duration_of_a_second_or_more() {
        let resolve = |text: &str| {
            Config::resolve(&ServeArgs {
                retention_sweep: Some(text.into()),
                config: Some(PathBuf::from("/dev/null")),
                ..Default::default()
            })
        };
        assert_eq!(
            resolve("30s").unwrap().retention_sweep,
            std::time::Duration::from_secs(30)
        );
        let error = resolve("500ms").unwrap_err().to_string();
        assert!(error.contains("at least one second"), "{error}");
        let error = resolve("often").unwrap_err().to_string();
        assert!(error.contains("retention_sweep"), "{error}");
    }

    #[test]
    fn only_loopback_http_addresses_count_as_local() {
        assert!(is_local_url("http://127.0.0.1:8090"));
        assert!(is_local_url("http://localhost/orders"));
        assert!(!is_local_url("http://erp.example:8080"));
        assert!(is_local_url("http://[::1]:8090/x"));
        assert!(!is_local_url("http://127.0.0.1.evil.example"));
    }
}
