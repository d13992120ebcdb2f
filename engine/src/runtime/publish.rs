//! The built-in `message` connector: `call: message.publish` sends a message from one process
//! to the instances of others, as the API's correlate does (customer care telling dunning
//! that a dispute opened on an invoice).
//!
//! It runs as a job, so a publish is durable and retried like any connector call; the job's
//! idempotency key is the message id, so a retry after a crash never delivers twice.

use jiff::SignedDuration;

use super::{Correlation, Engine, JobOutcome, Message, Result};
use crate::store::JobRecord;
use crate::value::{Value, Vars};

/// The connector name of message publishing.
pub const MESSAGE_CONNECTOR: &str = "message";

/// How long a published message waits for its receiver when none waits yet (`ttl` in the
/// step's input overrides it).
const DEFAULT_TTL: SignedDuration = SignedDuration::from_hours(24 * 30);

impl Engine {
    /// Runs one `message.publish` job: `{name, key, vars?, ttl?}` becomes a message, and the
    /// step goes on with `correlation` ("delivered", "started", "buffered", "duplicate" or
    /// "dropped"). A malformed input fails the job (retried, then an incident).
    pub fn run_message_job(&self, job: &JobRecord) -> Result<()> {
        let outcome = match message_of(job) {
            Err(why) => JobOutcome::Failed(why),
            Ok(message) => match self.correlate(message) {
                Ok(correlation) => {
                    let word = match correlation {
                        Correlation::Delivered(_) => "delivered",
                        Correlation::Started(_) => "started",
                        Correlation::Buffered => "buffered",
                        Correlation::Duplicate => "duplicate",
                        Correlation::Dropped => "dropped",
                    };
                    let mut output = Vars::new();
                    output.insert("correlation".into(), Value::String(word.into()));
                    JobOutcome::Done(output)
                }
                Err(error) => JobOutcome::Failed(error.to_string()),
            },
        };
        self.job_result(job, outcome)
    }
}

fn message_of(job: &JobRecord) -> std::result::Result<Message, String> {
    if job.operation != "publish" {
        return Err(format!(
            "the message connector has no operation `{}` (only `publish`)",
            job.operation
        ));
    }
    let text = |name: &str| match job.input.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) if name == "key" => Ok(n.normalize().to_string()),
        _ => Err(format!(
            "message.publish needs a text `{name}` in its input"
        )),
    };
    let vars = match job.input.get("vars") {
        None | Some(Value::Null) => Vars::new(),
        Some(Value::Map(map)) => map.clone(),
        Some(_) => return Err("message.publish: `vars` must be a map".into()),
    };
    let span = match job.input.get("ttl") {
        None | Some(Value::Null) => None,
        Some(Value::Duration(span)) => Some(*span),
        Some(Value::String(s)) => Some(
            s.parse::<jiff::Span>()
                .map_err(|e| format!("message.publish: `ttl` \"{s}\": {e}"))?,
        ),
        Some(_) => return Err("message.publish: `ttl` must be a duration such as P30D".into()),
    };
    let ttl = match span {
        None => DEFAULT_TTL,
        Some(span) => span
            .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
            .map_err(|e| format!("message.publish: `ttl`: {e}"))?,
    };
    Ok(Message {
        name: text("name")?,
        key: text("key")?,
        vars,
        id: Some(format!("publish-{}", job.key)),
        ttl: Some(ttl),
    })
}
