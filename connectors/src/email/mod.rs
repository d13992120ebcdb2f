//! The e-mail connector: runs the jobs of `send:` steps. It renders the step's template
//! (subject, HTML and text bodies, in the recipient's locale), builds one MIME message with
//! lettre, and hands it to a transport: an SMTP server (STARTTLS, implicit TLS, or plain for
//! local test servers) or the outbox folder of `.eml` files, the default.
//!
//! The job input is the step's `input` mapping plus `to` and `template` (set by the engine).
//! Two optional inputs steer it: `locale` (`it`, `en`, ... picks a template variant) and
//! `do_not_email` (when `true` nothing is sent and the step records `email_status:
//! "suppressed"`; processes pass `do_not_email: lead.do_not_email`).
//!
//! Answers: `Done { email_status: "sent", message_id }` or `Done { email_status: "suppressed" }`;
//! a recipient the SMTP server permanently refuses (5xx) or an address that is not one is the
//! business error `EMAIL_REJECTED` or `EMAIL_INVALID_ADDRESS`, which a process can catch;
//! anything that may pass on a later attempt (no connection, 4xx, a template to fix) is a
//! technical failure, retried and then an incident.

mod message;
pub mod templates;

use std::sync::Arc;
use std::time::Duration;

use ciclo_engine::runtime::{Connector, JobFuture, JobOutcome, JobRequest};
use ciclo_engine::{Value, Vars};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

pub use message::{Sender, parse_mailbox};
pub use templates::{Rendered, TemplateError, Templates};

use crate::outbox::Outbox;

/// Business error codes of this connector, for error boundary events.
pub const EMAIL_REJECTED: &str = "EMAIL_REJECTED";
pub const EMAIL_INVALID_ADDRESS: &str = "EMAIL_INVALID_ADDRESS";

/// A problem setting the connector up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("e-mail configuration: {0}")]
    Config(String),
}

/// How the connection to the SMTP server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain connection upgraded with STARTTLS (port 587 by default); refused if the server
    /// does not offer it.
    StartTls,
    /// TLS from the first byte (port 465 by default).
    Tls,
    /// No encryption (port 25 by default): for a relay on the same machine or a test server.
    None,
}

impl std::str::FromStr for Security {
    type Err = String;
    fn from_str(text: &str) -> Result<Security, String> {
        match text {
            "starttls" => Ok(Security::StartTls),
            "tls" => Ok(Security::Tls),
            "none" => Ok(Security::None),
            other => Err(format!(
                "tls must be \"starttls\", \"tls\" or \"none\", not {other:?}"
            )),
        }
    }
}

/// A password that `Debug` does not print.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn new(secret: impl Into<String>) -> Password {
        Password(secret.into())
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Where and how to reach the SMTP server.
#[derive(Clone, Debug)]
pub struct SmtpOptions {
    pub host: String,
    /// Default: 587 for STARTTLS, 465 for TLS, 25 for none.
    pub port: Option<u16>,
    pub security: Security,
    /// User and password for AUTH; none when the server needs no login.
    pub login: Option<(String, Password)>,
    /// Longest wait for the server on one command.
    pub timeout: Duration,
    /// Extra certificate authorities (PEM), trusted besides the system's: for a company CA or
    /// a test server. The server's name must still match its certificate.
    pub extra_roots_pem: Option<Vec<u8>>,
}

impl SmtpOptions {
    /// Options for a server without TLS or login, such as a test server on localhost.
    pub fn plain(host: impl Into<String>, port: u16) -> SmtpOptions {
        SmtpOptions {
            host: host.into(),
            port: Some(port),
            security: Security::None,
            login: None,
            timeout: Duration::from_secs(30),
            extra_roots_pem: None,
        }
    }
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(Outbox),
}

struct Inner {
    templates: Templates,
    sender: Sender,
    transport: Transport,
}

/// The `email` connector. Cheap to clone.
#[derive(Clone)]
pub struct EmailConnector {
    inner: Arc<Inner>,
}

impl EmailConnector {
    /// Sends through an SMTP server.
    pub fn smtp(
        options: &SmtpOptions,
        sender: Sender,
        templates: Templates,
    ) -> Result<EmailConnector, Error> {
        let host = options.host.as_str();
        let tls = |wrap: fn(TlsParameters) -> Tls| -> Result<Tls, Error> {
            let mut params = TlsParameters::builder(host.to_string());
            if let Some(pem) = &options.extra_roots_pem {
                for cert in pem_certificates(pem)? {
                    params = params.add_root_certificate(cert);
                }
            }
            let params = params
                .build()
                .map_err(|e| Error::Config(format!("TLS for SMTP server {host}: {e}")))?;
            Ok(wrap(params))
        };
        let builder = match options.security {
            Security::StartTls => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                .tls(tls(Tls::Required)?),
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                .tls(tls(Tls::Wrapper)?),
            Security::None => {
                // A password in clear text is only acceptable to a server on this machine.
                if options.login.is_some() && !is_loopback(host) {
                    return Err(Error::Config(format!(
                        "a login over an unencrypted connection to {host} is refused: \
                         use tls = \"starttls\" or \"tls\""
                    )));
                }
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            }
        };
        let port = options.port.unwrap_or(match options.security {
            Security::StartTls => 587,
            Security::Tls => 465,
            Security::None => 25,
        });
        let mut builder = builder.port(port).timeout(Some(options.timeout));
        if let Some((user, password)) = &options.login {
            builder = builder.credentials(Credentials::new(user.clone(), password.0.clone()));
        }
        Ok(EmailConnector {
            inner: Arc::new(Inner {
                templates,
                sender,
                transport: Transport::Smtp(builder.build()),
            }),
        })
    }

    /// Writes e-mails into an outbox folder instead of sending them.
    pub fn outbox(outbox: Outbox, sender: Sender, templates: Templates) -> EmailConnector {
        EmailConnector {
            inner: Arc::new(Inner {
                templates,
                sender,
                transport: Transport::Outbox(outbox),
            }),
        }
    }

    /// The outbox folder, when e-mails go there.
    pub fn outbox_dir(&self) -> Option<&std::path::Path> {
        match &self.inner.transport {
            Transport::Outbox(outbox) => Some(outbox.dir()),
            Transport::Smtp(_) => None,
        }
    }

    /// Runs one send job.
    pub async fn send(&self, request: &JobRequest) -> JobOutcome {
        let inner = &self.inner;
        let input = &request.input;
        match input.get("do_not_email") {
            Some(Value::Bool(true)) => {
                tracing::info!(key = %request.key, "e-mail suppressed: recipient is Do Not Email");
                return done([("email_status", Value::from("suppressed"))]);
            }
            Some(Value::Bool(false) | Value::Null) | None => {}
            Some(other) => {
                // Guessing here could e-mail someone who asked not to be: stop instead.
                return JobOutcome::Failed(format!(
                    "`do_not_email` must be true or false, not a {}",
                    other.type_name()
                ));
            }
        }
        let to = match input.get("to") {
            Some(Value::String(to)) => to.as_str(),
            Some(Value::Null) | None => {
                return invalid_address("the e-mail has no recipient (`to` is empty)".into());
            }
            Some(other) => {
                return invalid_address(format!(
                    "the recipient must be an address, not a {}",
                    other.type_name()
                ));
            }
        };
        let to = match parse_mailbox(to) {
            Ok(to) => to,
            Err(e) => return invalid_address(format!("the recipient {e}")),
        };
        let template = match input.get("template") {
            Some(Value::String(t)) => t.as_str(),
            _ => return JobOutcome::Failed("the send job has no `template`".into()),
        };
        let locale = match input.get("locale") {
            Some(Value::String(l)) => Some(l.as_str()),
            _ => None,
        };
        let data = Value::Map(input.clone()).to_json();
        let rendered = match inner.templates.render(template, locale, &data) {
            Ok(r) => r,
            Err(e) => return JobOutcome::Failed(e.to_string()),
        };
        let (message, message_id) = match message::build(&inner.sender, to, &request.key, &rendered)
        {
            Ok(m) => m,
            Err(e) => return JobOutcome::Failed(e),
        };
        let sent = || {
            done([
                ("email_status", Value::from("sent")),
                ("message_id", Value::from(message_id.as_str())),
            ])
        };
        match &inner.transport {
            Transport::Outbox(outbox) => {
                let outbox = outbox.clone();
                let key = request.key.clone();
                let bytes = message.formatted();
                match tokio::task::spawn_blocking(move || outbox.write(&key, &bytes)).await {
                    Ok(Ok(_)) => sent(),
                    Ok(Err(e)) => JobOutcome::Failed(e),
                    Err(e) => JobOutcome::Failed(format!("the outbox writer stopped: {e}")),
                }
            }
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(_) => sent(),
                Err(e) => smtp_failure(&e),
            },
        }
    }
}

/// A permanent refusal (5xx) is the recipient's or the message's fault and will not pass on a
/// retry, except a refused login (53x), which is ours to fix in the configuration.
fn smtp_failure(error: &lettre::transport::smtp::Error) -> JobOutcome {
    let code = error.status().map(|c| c.to_string()).unwrap_or_default();
    if error.is_permanent() && !code.starts_with("53") {
        JobOutcome::BusinessError {
            code: EMAIL_REJECTED.into(),
            message: format!("the SMTP server refused the e-mail: {error}"),
        }
    } else {
        JobOutcome::Failed(format!("SMTP: {error}"))
    }
}

fn invalid_address(message: String) -> JobOutcome {
    JobOutcome::BusinessError {
        code: EMAIL_INVALID_ADDRESS.into(),
        message,
    }
}

fn done<const N: usize>(pairs: [(&str, Value); N]) -> JobOutcome {
    JobOutcome::Done(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<Vars>(),
    )
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Connector for EmailConnector {
    fn call(&self, request: JobRequest) -> JobFuture {
        let connector = self.clone();
        Box::pin(async move { connector.send(&request).await })
    }
}

/// Every certificate of a PEM bundle. lettre reads one certificate per call, so the bundle is
/// cut at its `-----BEGIN CERTIFICATE-----` lines; anything that is not a certificate is an
/// error rather than silently trusted or ignored.
fn pem_certificates(pem: &[u8]) -> Result<Vec<Certificate>, Error> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| Error::Config("the CA file is not PEM text".into()))?;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    let starts: Vec<usize> = text.match_indices(BEGIN).map(|(i, _)| i).collect();
    if starts.is_empty() {
        return Err(Error::Config(
            "the CA file holds no `-----BEGIN CERTIFICATE-----` block".into(),
        ));
    }
    let mut certs = Vec::new();
    for (n, start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(text.len());
        let cert = Certificate::from_pem(&text.as_bytes()[*start..end])
            .map_err(|e| Error::Config(format!("certificate {} of the CA file: {e}", n + 1)))?;
        certs.push(cert);
    }
    Ok(certs)
}
