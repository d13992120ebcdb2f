//! Delivery of rendered invoices: into a folder that an SdI channel or an access point picks up
//! (`IT<seller VAT digits>_<progressive>.xml`), or by HTTP POST to an access point.
//!
//! Progressives are 5 characters of 0-9A-Z (base 36, as SdI allows in file names), allocated
//! from a counter kept in `<folder>/.ciclo/counter`. Each job's idempotency key gets one
//! progressive, recorded in `<folder>/.ciclo/keys/<sha256 of the key>` *before* the invoice is
//! written, so a retried job (the same key) finds its progressive again and writes or sends
//! the same file, never a second one. Every file is written under a temporary name and renamed.
//! One process per folder: allocation is serialised by a mutex inside this process.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use sha2::Digest as _;

/// How long an access point may take to answer.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where invoices go.
#[derive(Clone, Debug)]
pub enum Target {
    /// Written as files into the folder.
    Folder,
    /// POSTed to this URL (the folder then only keeps the counter and the key index).
    Http(String),
}

/// What a delivery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub file: String,
    pub progressive: String,
    /// False when an earlier attempt with the same key had already delivered it.
    pub new: bool,
}

/// A failed delivery: technical failures are retried, business errors are not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryError {
    Technical(String),
    Rejected { status: u16, message: String },
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliveryError::Technical(m) => f.write_str(m),
            DeliveryError::Rejected { status, message } => {
                write!(
                    f,
                    "the access point refused the invoice ({status}): {message}"
                )
            }
        }
    }
}

pub struct Delivery {
    folder: PathBuf,
    target: Target,
    lock: Mutex<()>,
    client: reqwest::Client,
}

/// A number as 5 characters of 0-9A-Z; `None` past 36^5 - 1.
pub fn progressive(mut n: u64) -> Option<String> {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    if n >= 36u64.pow(5) {
        return None;
    }
    let mut out = [b'0'; 5];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The SdI file name for a seller VAT id (with its country prefix) and a progressive.
pub fn file_name(seller_vat: &str, progressive: &str) -> String {
    format!("{seller_vat}_{progressive}.xml")
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = path.with_file_name(format!(".{name}.partial"));
    std::fs::write(&partial, bytes)
        .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    std::fs::rename(&partial, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

impl Delivery {
    pub fn new(folder: impl Into<PathBuf>, target: Target) -> Delivery {
        Delivery {
            folder: folder.into(),
            target,
            lock: Mutex::new(()),
            client: reqwest::Client::builder()
                .timeout(HTTP_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    fn state(&self) -> PathBuf {
        self.folder.join(".ciclo")
    }

    /// The progressive of `key`: the one recorded earlier, or a new one. `(progressive, new)`.
    fn allocate(&self, key: &str) -> Result<(String, bool), String> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let keys = self.state().join("keys");
        std::fs::create_dir_all(&keys)
            .map_err(|e| format!("cannot create {}: {e}", keys.display()))?;
        let digest = sha2::Sha256::digest(key.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let marker = keys.join(hex);
        if let Ok(text) = std::fs::read_to_string(&marker) {
            let text = text.trim();
            if text.len() == 5 {
                return Ok((text.to_string(), false));
            }
        }
        let counter = self.state().join("counter");
        let last = match std::fs::read_to_string(&counter) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("{} is damaged: `{}`", counter.display(), text.trim()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("cannot read {}: {e}", counter.display())),
        };
        let next = last + 1;
        let progressive = progressive(next)
            .ok_or_else(|| format!("{}: all progressives are used", counter.display()))?;
        // The counter moves first: a crash after it only leaves a gap, never a reuse.
        write_atomically(&counter, next.to_string().as_bytes())?;
        write_atomically(&marker, progressive.as_bytes())?;
        Ok((progressive, true))
    }

    /// Delivers the invoice of job `key`: `render` makes the XML for a progressive (FatturaPA
    /// writes it into the document).
    pub async fn deliver(
        &self,
        key: &str,
        seller_vat: &str,
        render: impl FnOnce(&str) -> Result<String, String>,
    ) -> Result<Delivered, DeliveryError> {
        let folder = self.folder.clone();
        // Small synchronous file work (a few tiny files); not worth a hop to a blocking thread.
        let (progressive, first) = self.allocate(key).map_err(DeliveryError::Technical)?;
        let file = file_name(seller_vat, &progressive);
        match &self.target {
            Target::Folder => {
                let path = folder.join(&file);
                if path.exists() {
                    return Ok(Delivered {
                        file,
                        progressive,
                        new: false,
                    });
                }
                let xml = render(&progressive).map_err(DeliveryError::Technical)?;
                write_atomically(&path, xml.as_bytes()).map_err(DeliveryError::Technical)?;
                Ok(Delivered {
                    file,
                    progressive,
                    new: first,
                })
            }
            Target::Http(url) => {
                let xml = render(&progressive).map_err(DeliveryError::Technical)?;
                let answer = self
                    .client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/xml")
                    .header("Idempotency-Key", key)
                    .header(
                        reqwest::header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{file}\""),
                    )
                    .body(xml)
                    .send()
                    .await
                    .map_err(|e| DeliveryError::Technical(format!("access point {url}: {e}")))?;
                let status = answer.status();
                if status.is_success() {
                    return Ok(Delivered {
                        file,
                        progressive,
                        new: first,
                    });
                }
                let text = answer.text().await.unwrap_or_default();
                let text: String = text.chars().take(300).collect();
                if status.is_client_error() {
                    Err(DeliveryError::Rejected {
                        status: status.as_u16(),
                        message: text,
                    })
                } else {
                    Err(DeliveryError::Technical(format!(
                        "access point {url} answered {status}: {text}"
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progressives_are_five_base36_characters() {
        assert_eq!(progressive(1).unwrap(), "00001");
        assert_eq!(progressive(35).unwrap(), "0000Z");
        assert_eq!(progressive(36).unwrap(), "00010");
        assert_eq!(progressive(36u64.pow(5) - 1).unwrap(), "ZZZZZ");
        assert!(progressive(36u64.pow(5)).is_none());
    }
}
