//! Start or correlate: one instance per business key of a process. A caller that gives a
//! business key and a message name either starts the instance (when none has that key) or
//! delivers the message to the instance that has it (a lead arriving again becomes an
//! activity of the first one), as one decision under the correlation lock, so two arrivals
//! of the same key at once cannot both start.
//!
//! The business-key index is kept in the store's request-key table under a prefix that
//! starts with a control character, which no request key from outside can contain
//! (`check_text` refuses them), so the two kinds of key never meet. It maps
//! `process + business key` to the instance, is written in the same batch as the start, and
//! is read with one point lookup, never a scan. Only instances started here are indexed.

use uuid::Uuid;

use super::{Correlation, Engine, EngineError, Message, Result, StartOptions, check_text, lock};
use crate::machine::StartRequest;
use crate::model::StartTrigger;
use crate::store::{InstanceId, Op};

/// What [`Engine::start_or_correlate`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// No instance had the business key: this one was started.
    Started(InstanceId),
    /// An instance had it: the message went to it (delivered, or buffered until it waits
    /// for it; `Dropped` when that instance has already ended).
    Matched {
        instance: InstanceId,
        correlation: Correlation,
    },
    /// The request key was seen before: the instance the first request started or matched.
    Repeated(InstanceId),
}

impl Arrival {
    pub fn instance(&self) -> InstanceId {
        match self {
            Arrival::Started(i) | Arrival::Repeated(i) => *i,
            Arrival::Matched { instance, .. } => *instance,
        }
    }
}

fn identity_key(process: &str, business_key: &str) -> String {
    format!("\u{1}identity\u{1}{process}\u{1}{business_key}")
}

impl Engine {
    /// The instance of `process` started by [`Engine::start_or_correlate`] with this business
    /// key, if it still exists. One index lookup.
    pub fn instance_by_business_key(
        &self,
        process: &str,
        business_key: &str,
    ) -> Result<Option<InstanceId>> {
        let Some(id) = self
            .store
            .request_key(&identity_key(process, business_key))?
        else {
            return Ok(None);
        };
        // A finished instance removed after its retention leaves its index entry behind.
        Ok(self.store.instance(id)?.map(|r| r.id))
    }

    /// Starts `process` with `options` (its business key is required) unless an instance of
    /// it started here has that business key; then correlates `message` to that instance
    /// instead (name `message.name`, key = the business key; `message.key` is ignored). A
    /// request key (`options.request_key`) seen before returns `Repeated` with nothing done,
    /// so a retried or repeated arrival changes nothing.
    pub fn start_or_correlate(
        &self,
        process: &str,
        options: StartOptions,
        mut message: Message,
    ) -> Result<Arrival> {
        let Some(business_key) = options.business_key.clone() else {
            return Err(EngineError::BadInput(
                "a start-or-correlate needs a business key".into(),
            ));
        };
        check_text("the business key", &business_key, 200)?;
        check_text("the message name", &message.name, 200)?;
        if let Some(key) = &options.request_key {
            check_text("the idempotency key", key, 300)?;
        }
        let (version, def) = self
            .definition(process)
            .ok_or_else(|| EngineError::UnknownProcess(process.into()))?;
        let start = def
            .starts
            .iter()
            .position(|s| matches!(s.trigger, StartTrigger::None))
            .ok_or_else(|| EngineError::NoPlainStart(process.into()))?;

        // Lock order as in `start_at`: request key, then correlation, then instance.
        let _key_guard = options.request_key.as_ref().map(|k| {
            let h = k.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
            lock(&self.key_locks[(h % 64) as usize])
        });
        if let Some(key) = &options.request_key
            && let Some(existing) = self.store.request_key(key)?
        {
            return Ok(Arrival::Repeated(existing));
        }
        let now = self.clock.now();
        let _correlation = lock(&self.correlation);
        let request_key_op = |instance: InstanceId| {
            options
                .request_key
                .as_ref()
                .map(|key| Op::PutRequestKey {
                    key: key.clone(),
                    instance,
                })
                .into_iter()
                .collect::<Vec<_>>()
        };

        if let Some(existing) = self
            .store
            .request_key(&identity_key(process, &business_key))?
            && let Some(record) = self.store.instance(existing)?
        {
            let extra = request_key_op(existing);
            if record.status.is_finished() {
                // Nobody will ever wait for the message: record the request only.
                if !extra.is_empty() {
                    self.store.commit(crate::store::Batch { ops: extra })?;
                }
                return Ok(Arrival::Matched {
                    instance: existing,
                    correlation: Correlation::Dropped,
                });
            }
            message.key = business_key;
            let correlation = self.correlate_locked(message, now, &extra)?;
            return Ok(Arrival::Matched {
                instance: existing,
                correlation,
            });
        }

        let id = Uuid::now_v7();
        self.transact_locked(Some(id), now, true, |tx| {
            tx.start_instance(
                def.clone(),
                StartRequest {
                    id,
                    version,
                    start,
                    vars: options.vars.clone(),
                    business_key: Some(business_key.clone()),
                    actor: options.actor.clone().unwrap_or_else(|| "api".into()),
                    parent: None,
                },
            )?;
            tx.batch.push(Op::PutRequestKey {
                key: identity_key(process, &business_key),
                instance: id,
            });
            for op in request_key_op(id) {
                tx.batch.push(op);
            }
            Ok(())
        })?;
        Ok(Arrival::Started(id))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::parse::Catalog;
    use crate::runtime::ManualClock;
    use crate::store::MemoryStore;
    use crate::value::{Value, Vars};

    const LEADS: &str = r#"
process: leads
start: init
steps:
  init: { set: { activities: "[]" }, goto: listen }
  listen:
    race:
      - { message: lead-activity, key: lead_key, goto: record }
      - { timer: P30D, goto: done }
  record: { set: { activities: "append(activities, activity)" }, goto: listen }
  done: { end: true }
"#;

    fn engine() -> Engine {
        let clock = Arc::new(ManualClock::new("2027-01-04T09:00:00Z".parse().unwrap()));
        let engine =
            Engine::open(Arc::new(MemoryStore::new()), clock, Catalog::standard()).expect("engine");
        engine.deploy("leads.yaml", LEADS).expect("deploy");
        engine
    }

    fn arrive(engine: &Engine, key: &str, request: Option<&str>, activity: &str) -> Arrival {
        let mut vars = Vars::new();
        vars.insert("lead_key".into(), Value::String(key.into()));
        let mut message_vars = Vars::new();
        message_vars.insert("activity".into(), Value::String(activity.into()));
        engine
            .start_or_correlate(
                "leads",
                StartOptions {
                    vars,
                    business_key: Some(key.into()),
                    request_key: request.map(str::to_string),
                    ..Default::default()
                },
                Message {
                    name: "lead-activity".into(),
                    vars: message_vars,
                    ..Default::default()
                },
            )
            .expect("arrival")
    }

    fn activities(engine: &Engine, id: InstanceId) -> Value {
        let (_, state) = engine.instance(id).unwrap().unwrap();
        state.vars.get("activities").cloned().unwrap_or(Value::Null)
    }

    #[test]
    fn a_second_arrival_is_an_activity_of_the_first_instance() {
        let engine = engine();
        let Arrival::Started(first) = arrive(&engine, "email:a@x.it", Some("r1"), "form") else {
            panic!("the first arrival starts");
        };
        let again = arrive(&engine, "email:a@x.it", Some("r2"), "import");
        assert_eq!(
            again,
            Arrival::Matched {
                instance: first,
                correlation: Correlation::Delivered(vec![first])
            }
        );
        assert_eq!(
            activities(&engine, first),
            Value::List(vec![Value::String("import".into())])
        );
        assert_eq!(
            engine
                .instance_by_business_key("leads", "email:a@x.it")
                .unwrap(),
            Some(first)
        );
        assert_eq!(
            engine
                .instance_by_business_key("leads", "email:b@x.it")
                .unwrap(),
            None
        );
        // Another key is another instance.
        let other = arrive(&engine, "email:b@x.it", None, "form");
        assert!(matches!(other, Arrival::Started(id) if id != first));
    }

    #[test]
    fn a_repeated_request_key_changes_nothing() {
        let engine = engine();
        let first = arrive(&engine, "lead:1", Some("row-1"), "import").instance();
        assert_eq!(
            arrive(&engine, "lead:1", Some("row-1"), "import"),
            Arrival::Repeated(first)
        );
        assert_eq!(activities(&engine, first), Value::List(vec![]));
        let matched = arrive(&engine, "lead:1", Some("api-7"), "api");
        assert!(matches!(matched, Arrival::Matched { .. }));
        assert_eq!(
            arrive(&engine, "lead:1", Some("api-7"), "api"),
            Arrival::Repeated(first)
        );
        assert_eq!(
            activities(&engine, first).to_json().to_string(),
            r#"["api"]"#
        );
    }

    #[test]
    fn bad_input_is_refused() {
        let engine = engine();
        let err = engine
            .start_or_correlate("leads", StartOptions::default(), Message::default())
            .unwrap_err();
        assert!(err.to_string().contains("business key"), "{err}");
        let err = engine
            .start_or_correlate(
                "nope",
                StartOptions {
                    business_key: Some("k".into()),
                    ..Default::default()
                },
                Message {
                    name: "m".into(),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(matches!(err, EngineError::UnknownProcess(_)));
    }
}
