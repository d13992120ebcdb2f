//! The outbox: e-mails written as `.eml` files into a folder instead of being sent, for
//! development and demos, and the default until SMTP is configured. Each file is the same full
//! MIME message SMTP would carry, so it opens in any mail reader.
//!
//! One file per job, named after the job's idempotency key, so a retried attempt (for example
//! after a crash between writing and committing) finds its file and does not write a second
//! e-mail: the outbox de-duplicates by key, as a careful mail relay would.

use std::path::{Path, PathBuf};

/// Writes e-mails into a folder. It is a transport only: the `EmailConnector` renders and
/// builds the message.
#[derive(Clone, Debug)]
pub struct Outbox {
    dir: PathBuf,
}

/// What happened to a message given to the outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    New,
    /// An earlier attempt of the same job already wrote it; nothing was written.
    AlreadyThere,
}

impl Outbox {
    /// An outbox in `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Outbox {
        Outbox { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of the job with idempotency key `key`.
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{}.eml", file_name(key)))
    }

    /// Writes `message` (the formatted MIME bytes) as the job's file, unless it exists.
    pub fn write(&self, key: &str, message: &[u8]) -> Result<Written, String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create the outbox {}: {e}", self.dir.display()))?;
        let path = self.path(key);
        if path.exists() {
            // Written by an earlier attempt of the same job: one e-mail per job.
            return Ok(Written::AlreadyThere);
        }
        // Written to a temporary name and renamed, so a crash never leaves half an e-mail
        // under the final name (which would stop the retry from writing it).
        let partial = self.dir.join(format!(".{}.eml.partial", file_name(key)));
        std::fs::write(&partial, message)
            .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
        std::fs::rename(&partial, &path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(Written::New)
    }
}

/// A key as a file name: anything but letters, digits and `-` becomes `_`, so a key can never
/// name a path outside the folder.
fn file_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_file_per_job_key() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path().join("outbox"));
        assert_eq!(outbox.write("inst-7", b"first").unwrap(), Written::New);
        assert_eq!(
            outbox.write("inst-7", b"second").unwrap(),
            Written::AlreadyThere
        );
        let files: Vec<_> = std::fs::read_dir(outbox.dir()).unwrap().collect();
        assert_eq!(files.len(), 1);
        assert_eq!(std::fs::read(outbox.path("inst-7")).unwrap(), b"first");
    }

    #[test]
    fn a_key_cannot_leave_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path());
        assert_eq!(
            outbox.path("../../etc/x"),
            dir.path().join("______etc_x.eml")
        );
    }
}
