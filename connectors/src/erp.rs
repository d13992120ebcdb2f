//! The ERP over HTTP JSON: `call: erp.<operation>` steps become HTTP requests described by a
//! mapping file written in YAML (`processes/connectors/erp.yaml`), so that pointing Ciclo at a
//! different ERP is a change of that file, not of code.
//!
//! One file may define several operations; each key is an operation's name:
//!
//! ```yaml
//! create-order:
//!   url: "{{erp_url}}/orders"          # a template; erp_url comes from the configuration
//!   method: POST
//!   headers:
//!     Authorization: "Bearer {{secret.ERP_TOKEN}}"   # from CICLO_SECRET_ERP_TOKEN
//!   body:                              # field: expression over the job's input
//!     customer: order.customer.code
//!     lines: order.lines
//!   result:                            # variable: path into the ERP's JSON answer
//!     number: $.order_number
//!   timeout: PT10S
//! ```
//!
//! Every request carries `Idempotency-Key` (the job's key, the same on every retry), so the ERP
//! can answer a repeated order with its first answer instead of creating a second order.
//! Outcomes: 2xx is `Done` with the `result` fields; 5xx, a timeout or a refused connection is
//! `Failed` (the engine retries it); 4xx is a `BusinessError` the process can catch, its code
//! taken from the answer's `code` field (else `ERP_<status>`).
//!
//! Secrets never reach a log or an error message: they are only rendered into request headers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ciclo_engine::expr::{Context, Expr, Scope, Template};
use ciclo_engine::runtime::{Connector, JobFuture, JobOutcome, JobRequest};
use ciclo_engine::{Value, Vars};
use serde::Deserialize;

/// The default time an ERP request may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A problem with the mapping file, naming the file and the operation key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the ERP mapping {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("ERP mapping {file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("ERP mapping {file}, operation `{operation}`, {field}: {message}")]
    Field {
        file: PathBuf,
        operation: String,
        field: String,
        message: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// One operation as written in the file, before its expressions are parsed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperation {
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: BTreeMap<String, RawBody>,
    #[serde(default)]
    result: BTreeMap<String, String>,
    timeout: Option<String>,
}

fn default_method() -> String {
    "POST".into()
}

/// A body field: an expression, or a map of further fields.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawBody {
    Expression(String),
    Fields(BTreeMap<String, RawBody>),
}

/// A body field, parsed.
#[derive(Debug)]
enum BodyField {
    Expression(Expr),
    Fields(BTreeMap<String, BodyField>),
}

/// One operation, parsed and checked.
#[derive(Debug)]
pub struct Operation {
    url: Template,
    method: reqwest::Method,
    headers: Vec<(reqwest::header::HeaderName, Template)>,
    body: BTreeMap<String, BodyField>,
    result: BTreeMap<String, Vec<PathPart>>,
    timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
enum PathPart {
    Key(String),
    Index(usize),
}

/// Values of `CICLO_SECRET_<NAME>` variables, readable by templates as `secret.NAME`.
/// `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, Value>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Secrets {
    /// Every `CICLO_SECRET_<NAME>` of the environment.
    pub fn from_env() -> Secrets {
        Secrets::from_pairs(std::env::vars().filter_map(|(k, v)| {
            k.strip_prefix("CICLO_SECRET_")
                .map(|name| (name.to_string(), v))
        }))
    }

    /// Secrets given by name (tests, embedding).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Secrets {
        Secrets(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    }
}

/// What templates of the URL and headers may read: `erp_url` and `secret.NAME`.
struct Settings {
    vars: Vars,
}

impl Scope for Settings {
    fn get(&self, name: &str) -> Option<&Value> {
        self.vars.get(name)
    }
}

/// The parsed mapping file: operations by name.
#[derive(Debug)]
pub struct ErpConfig {
    pub file: PathBuf,
    operations: BTreeMap<String, Operation>,
}

impl ErpConfig {
    /// Reads and checks a mapping file.
    pub fn load(file: &Path) -> Result<ErpConfig, Error> {
        let text = std::fs::read_to_string(file).map_err(|source| Error::Read {
            file: file.to_path_buf(),
            source,
        })?;
        ErpConfig::parse(file, &text)
    }

    /// Checks a mapping given as text; `file` is only used in messages.
    pub fn parse(file: &Path, text: &str) -> Result<ErpConfig, Error> {
        let mut options = serde_saphyr::Options::default();
        // `NO` or `off` in a body stays text, as analysts expect.
        options.strict_booleans = true;
        let raw: BTreeMap<String, RawOperation> =
            serde_saphyr::from_str_with_options(text, options).map_err(|e| Error::Syntax {
                file: file.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut operations = BTreeMap::new();
        for (name, raw) in raw {
            let operation = Operation::parse(&raw).map_err(|(field, message)| Error::Field {
                file: file.to_path_buf(),
                operation: name.clone(),
                field,
                message,
            })?;
            operations.insert(name, operation);
        }
        Ok(ErpConfig {
            file: file.to_path_buf(),
            operations,
        })
    }

    /// The operation names, for validation of `call: erp.<operation>`.
    pub fn operations(&self) -> impl Iterator<Item = &str> {
        self.operations.keys().map(String::as_str)
    }
}

impl Operation {
    /// Parses one operation; an error names the field.
    fn parse(raw: &RawOperation) -> Result<Operation, (String, String)> {
        let url = Template::parse(&raw.url).map_err(|e| ("url".to_string(), e.to_string()))?;
        let method = raw
            .method
            .to_ascii_uppercase()
            .parse::<reqwest::Method>()
            .map_err(|_| {
                (
                    "method".to_string(),
                    format!("`{}` is not an HTTP method", raw.method),
                )
            })?;
        let mut headers = Vec::new();
        for (name, value) in &raw.headers {
            let field = format!("headers.{name}");
            let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| (field.clone(), "not a valid header name".to_string()))?;
            let template = Template::parse(value).map_err(|e| (field, e.to_string()))?;
            headers.push((header, template));
        }
        let body = parse_body(&raw.body, "body")?;
        let mut result = BTreeMap::new();
        for (name, path) in &raw.result {
            let parts = parse_path(path).map_err(|m| (format!("result.{name}"), m))?;
            result.insert(name.clone(), parts);
        }
        let timeout = match &raw.timeout {
            None => DEFAULT_TIMEOUT,
            Some(text) => parse_timeout(text).map_err(|m| ("timeout".to_string(), m))?,
        };
        Ok(Operation {
            url,
            method,
            headers,
            body,
            result,
            timeout,
        })
    }
}

fn parse_body(
    raw: &BTreeMap<String, RawBody>,
    at: &str,
) -> Result<BTreeMap<String, BodyField>, (String, String)> {
    let mut out = BTreeMap::new();
    for (name, field) in raw {
        let here = format!("{at}.{name}");
        let parsed = match field {
            RawBody::Expression(source) => BodyField::Expression(
                Expr::parse(source).map_err(|e| (here.clone(), e.to_string()))?,
            ),
            RawBody::Fields(fields) => BodyField::Fields(parse_body(fields, &here)?),
        };
        out.insert(name.clone(), parsed);
    }
    Ok(out)
}

/// `$.a.b[0]` (or `a.b[0]`) as keys and indexes.
fn parse_path(text: &str) -> Result<Vec<PathPart>, String> {
    let bad = || format!("`{text}` is not a path like `$.order_number` or `$.lines[0].id`");
    let rest = text.trim();
    let rest = rest.strip_prefix('$').unwrap_or(rest);
    let mut parts = Vec::new();
    for segment in rest.split('.') {
        if segment.is_empty() {
            if parts.is_empty() {
                continue; // the dot after `$`
            }
            return Err(bad());
        }
        let (key, mut indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !key.is_empty() {
            parts.push(PathPart::Key(key.to_string()));
        }
        while let Some(after) = indexes.strip_prefix('[') {
            let end = after.find(']').ok_or_else(bad)?;
            let index = after[..end].trim().parse::<usize>().map_err(|_| bad())?;
            parts.push(PathPart::Index(index));
            indexes = &after[end + 1..];
        }
        if !indexes.is_empty() {
            return Err(bad());
        }
    }
    Ok(parts)
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not an ISO 8601 duration like PT10S");
    let span: jiff::Span = text.trim().parse().map_err(|_| bad())?;
    // Calendar units (days, months) have no fixed length; a request timeout needs one.
    let seconds = span
        .total(jiff::Unit::Second)
        .map_err(|_| format!("`{text}`: use hours, minutes and seconds (PT30S)"))?;
    if seconds <= 0.0 {
        return Err(format!("`{text}`: the timeout must be longer than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn lookup<'a>(
    mut value: &'a serde_json::Value,
    path: &[PathPart],
) -> Option<&'a serde_json::Value> {
    for part in path {
        value = match part {
            PathPart::Key(k) => value.get(k)?,
            PathPart::Index(i) => value.get(*i)?,
        };
    }
    Some(value)
}

/// The ERP connector: one HTTP client, the mapping, and the settings its templates read.
#[derive(Clone)]
pub struct ErpConnector {
    inner: Arc<Inner>,
}

struct Inner {
    config: ErpConfig,
    settings: Settings,
    client: reqwest::Client,
}

impl std::fmt::Debug for ErpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErpConnector")
            .field("file", &self.inner.config.file)
            .field("operations", &self.inner.config.operations.keys())
            .finish_non_exhaustive()
    }
}

impl ErpConnector {
    /// A connector for `config`, where templates read `erp_url` and `secret.NAME`. A template
    /// naming a secret that is not given is refused here, at start, rather than sending an
    /// empty `Authorization` header on the first order.
    pub fn new(config: ErpConfig, erp_url: &str, secrets: Secrets) -> Result<ErpConnector, Error> {
        ErpConnector::with_extra_roots(config, erp_url, secrets, None)
    }

    /// Like `new`, also trusting the certificate authorities of `extra_roots_pem` (a PEM
    /// bundle) besides the system's, for an ERP behind a company CA. `https://` addresses are
    /// verified in either case; there is no switch that turns verification off.
    pub fn with_extra_roots(
        config: ErpConfig,
        erp_url: &str,
        secrets: Secrets,
        extra_roots_pem: Option<&[u8]>,
    ) -> Result<ErpConnector, Error> {
        for (name, operation) in &config.operations {
            let templates = std::iter::once(("url".to_string(), &operation.url)).chain(
                operation
                    .headers
                    .iter()
                    .map(|(h, t)| (format!("headers.{h}"), t)),
            );
            for (field, template) in templates {
                for secret in secret_names(template.source()) {
                    if !secrets.0.contains_key(&secret) {
                        return Err(Error::Field {
                            file: config.file.clone(),
                            operation: name.clone(),
                            field,
                            message: format!(
                                "the secret {secret} is not set (environment variable CICLO_SECRET_{secret})"
                            ),
                        });
                    }
                }
            }
        }
        let mut vars = Vars::new();
        vars.insert(
            "erp_url".into(),
            Value::String(erp_url.trim_end_matches('/').to_string()),
        );
        vars.insert("secret".into(), Value::Map(secrets.0));
        let mut client = reqwest::Client::builder();
        if let Some(pem) = extra_roots_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Client(format!("the CA file: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Client(
                    "the CA file holds no `-----BEGIN CERTIFICATE-----` block".into(),
                ));
            }
            client = client.tls_certs_merge(certs);
        }
        let client = client.build().map_err(|e| Error::Client(e.to_string()))?;
        Ok(ErpConnector {
            inner: Arc::new(Inner {
                config,
                settings: Settings { vars },
                client,
            }),
        })
    }
}

impl ErpConnector {
    /// The mapping file it was built from.
    pub fn file(&self) -> &Path {
        &self.inner.config.file
    }

    /// The operations it maps.
    pub fn operations(&self) -> impl Iterator<Item = &str> {
        self.inner.config.operations()
    }
}

/// The `NAME`s of `secret.NAME` in a template's text.
fn secret_names(source: &str) -> Vec<String> {
    source
        .match_indices("secret.")
        .map(|(i, m)| {
            source[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

fn eval_body(
    fields: &BTreeMap<String, BodyField>,
    input: &Vars,
    ctx: &Context,
    at: &str,
) -> Result<serde_json::Value, String> {
    let mut out = serde_json::Map::new();
    for (name, field) in fields {
        let here = if at.is_empty() {
            name.clone()
        } else {
            format!("{at}.{name}")
        };
        let value = match field {
            BodyField::Expression(expr) => expr
                .eval(input, ctx)
                .map_err(|e| format!("body field `{here}` (`{}`): {e}", expr.source()))?
                .to_json(),
            BodyField::Fields(inner) => eval_body(inner, input, ctx, &here)?,
        };
        out.insert(name.clone(), value);
    }
    Ok(serde_json::Value::Object(out))
}

impl Inner {
    async fn call(&self, request: JobRequest) -> JobOutcome {
        let Some(operation) = self.config.operations.get(&request.operation) else {
            return JobOutcome::Failed(format!(
                "no ERP operation `{}` in {}",
                request.operation,
                self.config.file.display()
            ));
        };
        let ctx = Context::utc(jiff::Timestamp::now());
        // Expressions failing on this input fail the attempt: it becomes an incident after the
        // retries, where a person sees which field and why.
        let body = match eval_body(&operation.body, &request.input, &ctx, "") {
            Ok(body) => body,
            Err(message) => return JobOutcome::Failed(message),
        };
        let url = match operation.url.render(&self.settings, &ctx) {
            Ok(url) => url,
            Err(e) => return JobOutcome::Failed(format!("the ERP url: {e}")),
        };
        let mut builder = self
            .client
            .request(operation.method.clone(), &url)
            .timeout(operation.timeout)
            .header("Idempotency-Key", &request.key);
        for (name, template) in &operation.headers {
            match template.render(&self.settings, &ctx) {
                Ok(value) => builder = builder.header(name.clone(), value),
                // The message names the header only: its value may hold a secret.
                Err(_) => {
                    return JobOutcome::Failed(format!("the ERP header `{name}` cannot be built"));
                }
            }
        }
        if operation.method != reqwest::Method::GET {
            builder = builder.json(&body);
        }
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return JobOutcome::Failed(format!(
                    "the ERP did not answer within {:?} ({url})",
                    operation.timeout
                ));
            }
            Err(e) => return JobOutcome::Failed(format!("cannot reach the ERP at {url}: {e}")),
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) if e.is_timeout() => {
                return JobOutcome::Failed(format!(
                    "the ERP did not finish its answer within {:?} ({url})",
                    operation.timeout
                ));
            }
            Err(e) => return JobOutcome::Failed(format!("reading the ERP's answer failed: {e}")),
        };
        let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return done(operation, json.as_ref(), &text);
        }
        if status.is_client_error() {
            return business_error(status.as_u16(), json.as_ref(), &text);
        }
        JobOutcome::Failed(format!("the ERP answered {status}: {}", excerpt(&text)))
    }
}

fn done(operation: &Operation, json: Option<&serde_json::Value>, text: &str) -> JobOutcome {
    let mut out = Vars::new();
    if operation.result.is_empty() {
        return JobOutcome::Done(out);
    }
    let Some(json) = json else {
        return JobOutcome::Failed(format!("the ERP's answer is not JSON: {}", excerpt(text)));
    };
    for (name, path) in &operation.result {
        let Some(found) = lookup(json, path) else {
            return JobOutcome::Failed(format!(
                "the ERP's answer has no `{}` (for result `{name}`): {}",
                show_path(path),
                excerpt(text)
            ));
        };
        match Value::from_json(found.clone()) {
            Ok(value) => {
                out.insert(name.clone(), value);
            }
            Err(e) => return JobOutcome::Failed(format!("result `{name}`: {e}")),
        }
    }
    JobOutcome::Done(out)
}

fn business_error(status: u16, json: Option<&serde_json::Value>, text: &str) -> JobOutcome {
    let field = |name: &str| {
        json.and_then(|j| j.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    JobOutcome::BusinessError {
        code: field("code").unwrap_or_else(|| format!("ERP_{status}")),
        message: field("message").unwrap_or_else(|| excerpt(text)),
    }
}

fn show_path(path: &[PathPart]) -> String {
    let mut s = String::from("$");
    for part in path {
        match part {
            PathPart::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            PathPart::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The start of an answer, for messages: ERP error pages can be long.
fn excerpt(text: &str) -> String {
    const MAX: usize = 500;
    let text = text.trim();
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

impl Connector for ErpConnector {
    fn call(&self, request: JobRequest) -> JobFuture {
        let inner = self.inner.clone();
        Box::pin(async move { inner.call(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_keys_and_indexes() {
        assert_eq!(
            parse_path("$.order_number").unwrap(),
            vec![PathPart::Key("order_number".into())]
        );
        assert_eq!(
            parse_path("$.lines[0].id").unwrap(),
            vec![
                PathPart::Key("lines".into()),
                PathPart::Index(0),
                PathPart::Key("id".into())
            ]
        );
        assert!(parse_path("$.a..b").is_err());
        assert!(parse_path("$.a[x]").is_err());
    }

    #[test]
    fn timeouts_are_iso_durations() {
        assert_eq!(parse_timeout("PT10S").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_timeout("PT0.5S").unwrap(), Duration::from_millis(500));
        assert!(parse_timeout("ten seconds").is_err());
        assert!(parse_timeout("PT0S").is_err());
    }

    #[test]
    fn a_bad_mapping_names_the_file_and_the_operation() {
        let file = Path::new("erp.yaml");
        let e = ErpConfig::parse(
            file,
            "create-order:\n  url: \"{{erp_url}}/orders\"\n  body:\n    customer: order.customer.(\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("erp.yaml") && e.contains("`create-order`"),
            "{e}"
        );
        assert!(e.contains("body.customer"), "{e}");
        let e = ErpConfig::parse(file, "create-order:\n  url: x\n  verb: POST\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("erp.yaml") && e.contains("verb"), "{e}");
        let e = ErpConfig::parse(file, "create-order:\n  url: x\n  timeout: P1D\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("timeout"), "{e}");
    }

    #[test]
    fn a_missing_secret_is_refused_at_start_and_secrets_do_not_print() {
        let config = ErpConfig::parse(
            Path::new("erp.yaml"),
            "create-order:\n  url: \"{{erp_url}}/orders\"\n  headers:\n    Authorization: \"Bearer {{secret.ERP_TOKEN}}\"\n",
        )
        .unwrap();
        let e = ErpConnector::new(config, "http://erp", Secrets::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("CICLO_SECRET_ERP_TOKEN"), "{e}");
        let secrets = Secrets::from_pairs([("ERP_TOKEN".to_string(), "hunter2".to_string())]);
        assert!(!format!("{secrets:?}").contains("hunter2"));
    }
}
