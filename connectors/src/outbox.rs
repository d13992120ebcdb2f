//! The outbox: e-mails of `send:` steps written as `.eml` files into a folder instead of being
//! sent, for development and demos, and the default until SMTP is configured.
//!
//! One file per job, named after the job's idempotency key, so a retried attempt (for example
//! after a crash between writing and committing) finds its file and does not write a second
//! e-mail: the outbox de-duplicates by key, as a careful mail relay would.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ciclo_engine::Value;
use ciclo_engine::runtime::{Connector, JobFuture, JobOutcome, JobRequest};

/// Writes e-mails into a folder.
#[derive(Clone, Debug)]
pub struct Outbox {
    dir: PathBuf,
    from: String,
}

impl Outbox {
    /// An outbox in `dir` (created on first use), sending as `from`.
    pub fn new(dir: impl Into<PathBuf>, from: impl Into<String>) -> Outbox {
        Outbox {
            dir: dir.into(),
            from: from.into(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, request: &JobRequest) -> Result<(), String> {
        let to = match request.input.get("to") {
            Some(Value::String(to)) if !to.trim().is_empty() => to.trim().to_string(),
            Some(Value::Null) | None => {
                return Err("the e-mail has no recipient (`to` is empty)".into());
            }
            Some(other) => {
                return Err(format!(
                    "the recipient must be an address, not a {}",
                    other.type_name()
                ));
            }
        };
        if to.contains(['\r', '\n']) {
            return Err("the recipient contains a line break".into());
        }
        let template = match request.input.get("template") {
            Some(Value::String(t)) => t.clone(),
            _ => "message".into(),
        };
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create the outbox {}: {e}", self.dir.display()))?;
        let name: String = request
            .key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.dir.join(format!("{name}.eml"));
        if path.exists() {
            // Written by an earlier attempt of the same job: one e-mail per job.
            return Ok(());
        }
        let mut text = String::new();
        let _ = write!(
            text,
            "From: {}\r\nTo: {}\r\nSubject: {}\r\nMessage-ID: <{}@ciclo.outbox>\r\nX-Ciclo-Idempotency-Key: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
            self.from,
            to,
            one_line(&template),
            name,
            one_line(&request.key),
        );
        for (k, v) in &request.input {
            if k == "to" || k == "template" {
                continue;
            }
            let _ = write!(text, "{k}: {}\r\n", v.to_json());
        }
        // Written to a temporary name and renamed, so a crash never leaves half an e-mail
        // under the final name (which would stop the retry from writing it).
        let partial = self.dir.join(format!(".{name}.eml.partial"));
        std::fs::write(&partial, text)
            .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
        std::fs::rename(&partial, &path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(())
    }
}

/// A header value on one line: line breaks would start new headers.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

impl Connector for Outbox {
    fn call(&self, request: JobRequest) -> JobFuture {
        let outbox = self.clone();
        Box::pin(async move {
            let result = tokio::task::spawn_blocking(move || outbox.write(&request)).await;
            match result {
                Ok(Ok(())) => JobOutcome::Done(Default::default()),
                Ok(Err(error)) => JobOutcome::Failed(error),
                Err(error) => JobOutcome::Failed(format!("the outbox writer stopped: {error}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &str, to: &str, subject_var: &str) -> JobRequest {
        let mut input = ciclo_engine::Vars::new();
        input.insert("to".into(), Value::from(to));
        input.insert("template".into(), Value::from("quote-email"));
        input.insert("quote".into(), Value::from(subject_var));
        JobRequest {
            instance: uuid::Uuid::nil(),
            job: 1,
            attempt: 1,
            operation: "send".into(),
            key: key.into(),
            input,
        }
    }

    #[tokio::test]
    async fn writes_one_file_per_job_key() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path().join("outbox"), "ciclo@example.com");
        for _ in 0..2 {
            let outcome = outbox
                .call(request("inst-7", "ann@example.com", "Q-1"))
                .await;
            assert_eq!(outcome, JobOutcome::Done(Default::default()));
        }
        let files: Vec<_> = std::fs::read_dir(outbox.dir()).unwrap().collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(outbox.dir().join("inst-7.eml")).unwrap();
        assert!(text.contains("To: ann@example.com\r\n"));
        assert!(text.contains("Subject: quote-email\r\n"));
        assert!(text.contains("quote: \"Q-1\""));
    }

    #[tokio::test]
    async fn refuses_a_recipient_with_a_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path(), "ciclo@example.com");
        let outcome = outbox
            .call(request("k", "a@example.com\r\nBcc: x@example.net", "Q"))
            .await;
        assert!(matches!(outcome, JobOutcome::Failed(e) if e.contains("line break")));
    }
}
