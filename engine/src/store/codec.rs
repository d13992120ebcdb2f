//! The stored (postcard) form of each record, for the sled store.
//!
//! The records' own serde derives suit JSON, not postcard: `Decimal` deserializes through
//! `deserialize_any`, which postcard (not self-describing) cannot do, and an instant is written
//! as a 20-30 byte RFC 3339 string. So each record has a serde "remote" definition here that
//! writes the same fields in the same order, but instants as `(seconds, nanoseconds)` varints
//! and decimals as `(mantissa, scale)`. This also keeps the disk format a decision of this
//! file: a field added to a record fails to compile here until its stored form is chosen.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::{
    DefinitionRecord, HistoryRecord, IncidentRecord, InstanceRecord, InstanceStatus, JobRecord,
    LinkRecord, LinkUse, MessageRecord, Role, RotationRecord, SessionRecord, SubscriptionRecord,
    TaskRecord, TimerRecord, TokenRecord, UserRecord,
};
use crate::value::{Value, Vars};

/// A record with a stored form.
pub(super) trait Stored: Sized {
    fn to_bytes(&self) -> postcard::Result<Vec<u8>>;
    fn from_bytes(bytes: &[u8]) -> postcard::Result<Self>;
}

macro_rules! stored {
    ($($record:ty => $def:ident),* $(,)?) => {$(
        impl Stored for $record {
            fn to_bytes(&self) -> postcard::Result<Vec<u8>> {
                struct Out<'a>(&'a $record);
                impl Serialize for Out<'_> {
                    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                        $def::serialize(self.0, s)
                    }
                }
                postcard::to_stdvec(&Out(self))
            }

            fn from_bytes(bytes: &[u8]) -> postcard::Result<Self> {
                $def::deserialize(&mut postcard::Deserializer::from_bytes(bytes))
            }
        }
    )*};
}

stored! {
    DefinitionRecord => DefinitionDef,
    InstanceRecord => InstanceDef,
    TimerRecord => TimerDef,
    TaskRecord => TaskDef,
    SubscriptionRecord => SubscriptionDef,
    MessageRecord => MessageDef,
    IncidentRecord => IncidentDef,
    HistoryRecord => HistoryDef,
    UserRecord => UserDef,
    TokenRecord => TokenDef,
    SessionRecord => SessionDef,
    LinkRecord => LinkDef,
    RotationRecord => RotationDef,
}

/// An instant as `(seconds, nanoseconds)` since the Unix epoch.
mod instant {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        (at.as_second(), at.subsec_nanosecond()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let (second, nanosecond) = <(i64, i32)>::deserialize(d)?;
        Timestamp::new(second, nanosecond).map_err(D::Error::custom)
    }
}

mod optional_instant {
    use super::*;

    pub fn serialize<S: Serializer>(at: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        at.map(|at| (at.as_second(), at.subsec_nanosecond()))
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        match <Option<(i64, i32)>>::deserialize(d)? {
            Some((second, nanosecond)) => Timestamp::new(second, nanosecond)
                .map(Some)
                .map_err(D::Error::custom),
            None => Ok(None),
        }
    }
}

/// A decimal as `(mantissa, scale)`, checked on the way back in.
mod decimal {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        (d.mantissa(), d.scale()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let (mantissa, scale) = <(i128, u32)>::deserialize(d)?;
        Decimal::try_from_i128_with_scale(mantissa, scale).map_err(D::Error::custom)
    }
}

/// A role by its name, not by its place in the enum: reordering or adding roles then cannot
/// silently turn a stored `operator` into an `admin`.
mod role {
    use super::*;

    pub fn serialize<S: Serializer>(role: &Role, s: S) -> Result<S::Ok, S::Error> {
        role.as_str().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Value")]
enum ValueDef {
    Null,
    Bool(bool),
    Number(#[serde(with = "decimal")] Decimal),
    String(String),
    List(#[serde(with = "values")] Vec<Value>),
    Map(#[serde(with = "vars")] BTreeMap<String, Value>),
    // Dates and spans keep their own (string) forms: rare, and postcard reads them fine.
    Date(jiff::civil::Date),
    Instant(#[serde(with = "instant")] Timestamp),
    Duration(jiff::Span),
}

struct ValueOut<'a>(&'a Value);

impl Serialize for ValueOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ValueDef::serialize(self.0, s)
    }
}

#[derive(Deserialize)]
struct ValueIn(#[serde(with = "ValueDef")] Value);

mod values {
    use super::*;

    #[expect(clippy::ptr_arg, reason = "serde's `with` passes the field as it is")]
    pub fn serialize<S: Serializer>(list: &Vec<Value>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(ValueOut))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
        let list = Vec::<ValueIn>::deserialize(d)?;
        Ok(list.into_iter().map(|v| v.0).collect())
    }
}

mod vars {
    use super::*;

    pub fn serialize<S: Serializer>(vars: &Vars, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(vars.iter().map(|(name, value)| (name, ValueOut(value))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vars, D::Error> {
        let vars = BTreeMap::<String, ValueIn>::deserialize(d)?;
        Ok(vars.into_iter().map(|(name, v)| (name, v.0)).collect())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "DefinitionRecord")]
struct DefinitionDef {
    process: String,
    version: u32,
    source: String,
    file: String,
    #[serde(with = "instant")]
    deployed_at: Timestamp,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "InstanceRecord")]
struct InstanceDef {
    id: Uuid,
    process: String,
    version: u32,
    business_key: Option<String>,
    status: InstanceStatus,
    #[serde(with = "instant")]
    started_at: Timestamp,
    #[serde(with = "optional_instant")]
    ended_at: Option<Timestamp>,
    state: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "TimerRecord")]
struct TimerDef {
    instance: Uuid,
    timer: u64,
    #[serde(with = "instant")]
    due: Timestamp,
    label: String,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "JobRecord")]
struct JobDef {
    instance: Uuid,
    job: u64,
    attempt: u32,
    connector: String,
    operation: String,
    key: String,
    #[serde(with = "vars")]
    input: Vars,
    #[serde(with = "instant")]
    due: Timestamp,
    #[serde(with = "optional_instant")]
    locked_until: Option<Timestamp>,
    locked_by: Option<String>,
    last_error: Option<String>,
    lease_token: Option<String>,
}

/// A job as stored before external workers (no lease token): still read, never written.
#[derive(Deserialize)]
#[serde(remote = "JobRecord")]
struct JobWithoutLeaseDef {
    instance: Uuid,
    job: u64,
    attempt: u32,
    connector: String,
    operation: String,
    key: String,
    #[serde(with = "vars")]
    input: Vars,
    #[serde(with = "instant")]
    due: Timestamp,
    #[serde(with = "optional_instant")]
    locked_until: Option<Timestamp>,
    locked_by: Option<String>,
    last_error: Option<String>,
    #[serde(skip)]
    lease_token: Option<String>,
}

impl Stored for JobRecord {
    fn to_bytes(&self) -> postcard::Result<Vec<u8>> {
        struct Out<'a>(&'a JobRecord);
        impl Serialize for Out<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                JobDef::serialize(self.0, s)
            }
        }
        postcard::to_stdvec(&Out(self))
    }

    /// The current form, else the form before lease tokens (which ends one field early).
    fn from_bytes(bytes: &[u8]) -> postcard::Result<Self> {
        JobDef::deserialize(&mut postcard::Deserializer::from_bytes(bytes)).or_else(|_| {
            JobWithoutLeaseDef::deserialize(&mut postcard::Deserializer::from_bytes(bytes))
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "TaskRecord")]
struct TaskDef {
    instance: Uuid,
    task: u64,
    process: String,
    step: String,
    title: String,
    assignee: Option<String>,
    candidates: Vec<String>,
    #[serde(with = "instant")]
    created_at: Timestamp,
    #[serde(with = "optional_instant")]
    due: Option<Timestamp>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "SubscriptionRecord")]
struct SubscriptionDef {
    name: String,
    key: String,
    instance: Uuid,
    subscription: u64,
    #[serde(with = "instant")]
    created_at: Timestamp,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "MessageRecord")]
struct MessageDef {
    seq: u64,
    id: Option<String>,
    name: String,
    key: String,
    #[serde(with = "vars")]
    vars: Vars,
    #[serde(with = "instant")]
    received_at: Timestamp,
    #[serde(with = "instant")]
    expires_at: Timestamp,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "IncidentRecord")]
struct IncidentDef {
    instance: Uuid,
    incident: u64,
    step: String,
    job: Option<u64>,
    error: String,
    #[serde(with = "instant")]
    created_at: Timestamp,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "HistoryRecord")]
struct HistoryDef {
    instance: Uuid,
    seq: u64,
    #[serde(with = "instant")]
    at: Timestamp,
    actor: String,
    what: String,
    step: Option<String>,
    detail: String,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "UserRecord")]
struct UserDef {
    name: String,
    display_name: Option<String>,
    email: Option<String>,
    groups: Vec<String>,
    password_hash: Option<String>,
    #[serde(with = "instant")]
    created_at: Timestamp,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "TokenRecord")]
struct TokenDef {
    hash: String,
    #[serde(with = "role")]
    role: Role,
    user: Option<String>,
    label: Option<String>,
    #[serde(with = "instant")]
    created_at: Timestamp,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "SessionRecord")]
struct SessionDef {
    hash: String,
    user: String,
    csrf: String,
    #[serde(with = "instant")]
    created_at: Timestamp,
    #[serde(with = "instant")]
    last_seen: Timestamp,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "LinkRecord")]
struct LinkDef {
    hash: String,
    instance: Uuid,
    task: u64,
    decision: String,
    email: String,
    name: Option<String>,
    #[serde(with = "instant")]
    created_at: Timestamp,
    #[serde(with = "instant")]
    expires_at: Timestamp,
    siblings: Vec<String>,
    #[serde(with = "link_use")]
    used: Option<LinkUse>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "RotationRecord")]
struct RotationDef {
    name: String,
    last: String,
    position: u64,
    picks: u64,
    #[serde(with = "instant")]
    updated_at: Timestamp,
}

/// A link's use as `(by, (seconds, nanoseconds), decision)`.
mod link_use {
    use super::*;

    pub fn serialize<S: Serializer>(used: &Option<LinkUse>, s: S) -> Result<S::Ok, S::Error> {
        used.as_ref()
            .map(|u| {
                (
                    &u.by,
                    (u.at.as_second(), u.at.subsec_nanosecond()),
                    &u.decision,
                )
            })
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LinkUse>, D::Error> {
        match <Option<(String, (i64, i32), String)>>::deserialize(d)? {
            Some((by, (second, nanosecond), decision)) => Ok(Some(LinkUse {
                by,
                at: Timestamp::new(second, nanosecond).map_err(D::Error::custom)?,
                decision,
            })),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{at, history, id, job, token, vars};

    #[test]
    fn values_round_trip_compactly() {
        let record = job(id(1), 1, at(0));
        let bytes = record.to_bytes().unwrap();
        assert_eq!(JobRecord::from_bytes(&bytes).unwrap(), record);
        assert_eq!(Vars::len(&vars()), record.input.len());

        let line = history(id(1), 1);
        let bytes = line.to_bytes().unwrap();
        assert_eq!(HistoryRecord::from_bytes(&bytes).unwrap(), line);
        // uuid 17 + seq 1 + instant 6 + strings: far below the JSON-ish string forms.
        assert!(bytes.len() < 60, "{} bytes", bytes.len());
    }

    #[test]
    fn jobs_stored_before_lease_tokens_still_read() {
        let record = job(id(1), 1, at(0));
        let bytes = record.to_bytes().unwrap();
        // The form before lease tokens is the same without the last field (`None`: one byte).
        assert_eq!(bytes.last(), Some(&0));
        let old = &bytes[..bytes.len() - 1];
        assert_eq!(JobRecord::from_bytes(old).unwrap(), record);
        let mut leased = record.clone();
        leased.lease_token = Some("abc".into());
        let bytes = leased.to_bytes().unwrap();
        assert_eq!(JobRecord::from_bytes(&bytes).unwrap(), leased);
    }

    #[test]
    fn roles_are_stored_by_name() {
        for role in Role::ALL {
            let record = token("ab", role, at(1));
            let bytes = record.to_bytes().unwrap();
            assert_eq!(TokenRecord::from_bytes(&bytes).unwrap(), record);
            let name = role.as_str().as_bytes();
            assert!(bytes.windows(name.len()).any(|w| w == name), "{role}");
        }
        // A role name no longer known is an error, not some other role.
        let mut bytes = token("ab", Role::User, at(1)).to_bytes().unwrap();
        let at_name = bytes.windows(4).position(|w| w == b"user").unwrap();
        bytes[at_name..at_name + 4].copy_from_slice(b"root");
        assert!(TokenRecord::from_bytes(&bytes).is_err());
    }

    #[test]
    fn bad_bytes_are_errors() {
        assert!(JobRecord::from_bytes(&[0xFF; 4]).is_err());
        assert!(HistoryRecord::from_bytes(&[]).is_err());
        // A decimal with a scale past 28 is refused, not built.
        let bad = postcard::to_stdvec(&(1i128, 99u32)).unwrap();
        let mut d = postcard::Deserializer::from_bytes(&bad);
        assert!(decimal::deserialize(&mut d).is_err());
    }
}
