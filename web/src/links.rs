//! Decision links sent by e-mail (a user task's `email:`), for approvers without an account.
//!
//! `issue` is the server side of a `links.send` job: it finds the open task of the job's
//! step, makes one token per option of the decision field and stores a `LinkRecord` per token
//! (only the token's SHA-256). A token is HMAC-SHA256 over the job's idempotency key, the task
//! and the decision with the server's link secret, so a retried job makes the same links and
//! an e-mail sent twice carries links that work the same. The pages under `/links/{token}`
//! (`pages::links`) show the decision and take it; a GET never decides.
//!
//! Invariants: the token is never stored or logged; a link decides only its own task and its
//! own decision; a used, expired or unknown link changes nothing.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use ciclo_engine::Value;
use ciclo_engine::auth::hash_secret;
use ciclo_engine::machine::Wait;
use ciclo_engine::model::{FieldKind, StepKind, UserTask};
use ciclo_engine::runtime::{Engine, JobRequest};
use ciclo_engine::store::{LinkRecord, TaskRecord};
use ciclo_engine::value::Vars;
use hmac::{KeyInit, Mac};
use jiff::SignedDuration;
use sha2::Sha256;

/// The server's secret for link tokens: 32 random bytes. `Debug` never prints it.
#[derive(Clone)]
pub struct LinkSecret([u8; 32]);

impl std::fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSecret(..)")
    }
}

impl LinkSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> LinkSecret {
        LinkSecret(bytes)
    }

    /// Reads the secret at `path`, or creates it (32 random bytes, mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> std::io::Result<LinkSecret> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
                    std::io::Error::other(format!(
                        "{} must hold exactly 32 bytes; remove it to make a new one (every link sent so far stops working)",
                        path.display()
                    ))
                })?;
                Ok(LinkSecret(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes)
                    .map_err(|e| std::io::Error::other(format!("no random bytes: {e}")))?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt as _;
                    options.mode(0o600);
                }
                let mut file = options.open(path)?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                Ok(LinkSecret(bytes))
            }
            Err(e) => Err(e),
        }
    }

    /// The token of one link: HMAC-SHA256(secret, key | task | decision) in lowercase hex.
    pub fn token(&self, key: &str, task: u64, decision: &str) -> String {
        // A length-prefixed key and decision, so no two inputs run together the same way.
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(&(key.len() as u64).to_le_bytes());
        mac.update(key.as_bytes());
        mac.update(&task.to_le_bytes());
        mac.update(&(decision.len() as u64).to_le_bytes());
        mac.update(decision.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// How links are made: the secret, how long they last, and the public address of the server.
#[derive(Clone, Debug)]
pub struct LinkOptions {
    pub secret: LinkSecret,
    /// How long a link works after it is sent (`link_ttl_days`, default 7 days).
    pub ttl: SignedDuration,
    /// The address people reach the server at, without a trailing `/`
    /// (`public_url`, `CICLO_PUBLIC_URL`).
    pub public_url: String,
}

/// What the e-mail of a `links.send` job needs.
#[derive(Clone, Debug)]
pub struct Issued {
    pub task: TaskRecord,
    /// The e-mail template (`email.template` of the user task).
    pub template: String,
    pub to: String,
    pub name: Option<String>,
    /// Decision -> absolute URL of its link.
    pub links: BTreeMap<String, String>,
    /// The instance's variables, for the template.
    pub vars: Vars,
}

/// Whether a text is the shape of a token (64 lowercase hex digits): anything else is refused
/// before the store is asked.
pub fn is_token(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The user task a task record belongs to, and its definition's `email:`.
pub fn user_task(engine: &Engine, task: &TaskRecord) -> Option<UserTask> {
    let (def, id) = engine.task_step(task).ok()??;
    match &def.step(id).kind {
        StepKind::User(user) => Some(user.clone()),
        _ => None,
    }
}

/// Makes and stores the links of a `links.send` job (input: `to`, `name`, `step`). An `Err`
/// is a technical failure of the job (retried, then an incident on the generated step).
/// An empty `to` sends nothing: `Ok(None)`.
pub fn issue(
    engine: &Engine,
    options: &LinkOptions,
    request: &JobRequest,
) -> Result<Option<Issued>, String> {
    let text = |name: &str| match request.input.get(name) {
        Some(Value::String(s)) => Some(s.trim().to_string()),
        _ => None,
    };
    let to = text("to").unwrap_or_default();
    if to.is_empty() {
        return Ok(None);
    }
    let name = text("name").filter(|n| !n.is_empty());
    let step = text("step").ok_or("the job has no `step`")?;
    let (record, state) = engine
        .instance(request.instance)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no instance {}", request.instance))?;
    let def = engine
        .definition_version(&record.process, record.version)
        .ok_or_else(|| format!("no definition {} v{}", record.process, record.version))?;
    let step_id = *def
        .index
        .get(&step)
        .ok_or_else(|| format!("no step `{step}`"))?;
    let StepKind::User(user) = &def.step(step_id).kind else {
        return Err(format!("step `{step}` is not a user task"));
    };
    let email = user
        .email
        .as_ref()
        .ok_or_else(|| format!("step `{step}` has no `email:`"))?;
    let options_of_field = user
        .form
        .iter()
        .find(|f| f.name == email.field)
        .and_then(|f| match &f.kind {
            FieldKind::Choice(options) => Some(options.clone()),
            _ => None,
        })
        .ok_or_else(|| format!("field `{}` is not a choice", email.field))?;
    let task_id = state
        .tokens
        .iter()
        .filter(|t| t.step == step_id)
        .find_map(|t| match t.wait {
            Wait::Task { task } => Some(task),
            _ => None,
        })
        .ok_or_else(|| format!("step `{step}` has no open task"))?;
    let task = engine
        .store()
        .task(request.instance, task_id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("task {task_id} is not open"))?;
    let now = engine.clock().now();
    let tokens: Vec<(String, String)> = options_of_field
        .iter()
        .map(|decision| {
            (
                decision.clone(),
                options.secret.token(&request.key, task_id, decision),
            )
        })
        .collect();
    let hashes: Vec<String> = tokens.iter().map(|(_, t)| hash_secret(t)).collect();
    let records = tokens
        .iter()
        .zip(&hashes)
        .map(|((decision, _), hash)| LinkRecord {
            hash: hash.clone(),
            instance: request.instance,
            task: task_id,
            decision: decision.clone(),
            email: to.clone(),
            name: name.clone(),
            created_at: now,
            expires_at: now + options.ttl,
            siblings: hashes.iter().filter(|h| *h != hash).cloned().collect(),
            used: None,
        })
        .collect();
    engine
        .put_links(request.instance, records)
        .map_err(|e| e.to_string())?;
    let base = options.public_url.trim_end_matches('/');
    let links = tokens
        .into_iter()
        .map(|(decision, token)| (decision, format!("{base}/links/{token}")))
        .collect();
    Ok(Some(Issued {
        task,
        template: email.template.clone(),
        to,
        name,
        links,
        vars: state.vars,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_depend_on_every_input_and_the_secret() {
        let secret = LinkSecret::from_bytes([7; 32]);
        let token = secret.token("job-key", 3, "approve");
        assert!(is_token(&token), "{token}");
        assert_eq!(
            token,
            secret.token("job-key", 3, "approve"),
            "deterministic"
        );
        assert_ne!(token, secret.token("job-key", 3, "reject"));
        assert_ne!(token, secret.token("job-key", 4, "approve"));
        assert_ne!(token, secret.token("job-kez", 3, "approve"));
        assert_ne!(
            token,
            LinkSecret::from_bytes([8; 32]).token("job-key", 3, "approve")
        );
        assert_eq!(format!("{secret:?}"), "LinkSecret(..)");
    }

    #[test]
    fn token_shape() {
        assert!(!is_token("abc"));
        assert!(!is_token(&"A".repeat(64)));
        assert!(is_token(&"a".repeat(64)));
    }

    #[test]
    fn secret_file_is_made_once_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("ciclo-link-secret-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("link-secret");
        let first = LinkSecret::load_or_create(&path).unwrap();
        let again = LinkSecret::load_or_create(&path).unwrap();
        assert_eq!(first.0, again.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(LinkSecret::load_or_create(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
