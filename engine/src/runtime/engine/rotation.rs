//! The built-in `assign` connector: `call: assign.round_robin` picks the next person of a team
//! in rotation, skipping who is absent or at capacity (open user tasks assigned to them), and
//! remembers the team's position durably (`RotationRecord`).
//!
//! Like `message.publish` it is a job the runtime answers itself. The pick and the moved
//! rotation are written in the same batch as the job's answer, under the engine's rotation
//! lock, which is held from reading the rotation and the open tasks to that durable write: two
//! leads assigned at once never take the same turn, and a pick that a crash lost before its
//! write is made again by the retried job, from the same stored position.

use std::collections::HashMap;

use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::{Engine, JobOutcome, Result, lock};
use crate::store::{JobRecord, Op, RotationRecord};
use crate::value::{Value, Vars};

/// The connector name of round-robin assignment.
pub const ASSIGN_CONNECTOR: &str = "assign";

/// One member of a team, as the job's input lists them.
#[derive(Debug)]
struct Member {
    name: String,
    /// At most this many open tasks (`None`: no limit).
    capacity: Option<u64>,
    absent: bool,
    /// Absence ranges, both days included.
    away: Vec<(Date, Date)>,
}

/// What a job asks: the rotation's name and its members in rotation order.
#[derive(Debug)]
struct Request {
    team: String,
    members: Vec<Member>,
    /// Only open tasks of this process count towards capacity (`None`: every open task).
    process: Option<String>,
}

impl Engine {
    /// Runs one `assign.round_robin` job: `{team, members: [{name, capacity?, absent?,
    /// away?}], process?}`; the step goes on with `assigned_to` (a name, or null when nobody
    /// is available), `available` and `skipped` (who was passed over and why). A malformed
    /// input fails the job (retried, then an incident naming the problem).
    pub fn run_assign_job(&self, job: &JobRecord) -> Result<()> {
        let request = match request_of(job) {
            Ok(request) => request,
            Err(why) => return self.job_result(job, JobOutcome::Failed(why)),
        };
        let _turn = lock(&self.rotation);
        let now = self.clock.now();
        let today = now.to_zoned(TimeZone::UTC).date();
        let stored = self.store.rotation(&request.team)?;
        let mut load: HashMap<&str, u64> = HashMap::new();
        for task in self.store.tasks(usize::MAX)? {
            if request.process.as_ref().is_some_and(|p| *p != task.process) {
                continue;
            }
            if let Some(who) = &task.assignee
                && let Some(member) = request.members.iter().find(|m| m.name == *who)
            {
                *load.entry(member.name.as_str()).or_default() += 1;
            }
        }

        let count = request.members.len();
        // After the last pick; when that person has left the list, whoever now holds their
        // place is next.
        let first = match &stored {
            None => 0,
            Some(r) => match request.members.iter().position(|m| m.name == r.last) {
                Some(i) => (i + 1) % count,
                None => usize::try_from(r.position).unwrap_or(0) % count,
            },
        };
        let mut skipped = Vec::new();
        let mut picked = None;
        for offset in 0..count {
            let index = (first + offset) % count;
            let member = &request.members[index];
            let open = load.get(member.name.as_str()).copied().unwrap_or(0);
            let why = if member.absent {
                Some("absent".to_string())
            } else if member
                .away
                .iter()
                .any(|(from, to)| *from <= today && today <= *to)
            {
                Some("away today".to_string())
            } else if member.capacity.is_some_and(|c| open >= c) {
                Some(format!("at capacity ({open} open tasks)"))
            } else {
                None
            };
            match why {
                Some(why) => {
                    let mut entry = Vars::new();
                    entry.insert("name".into(), Value::String(member.name.clone()));
                    entry.insert("why".into(), Value::String(why));
                    skipped.push(Value::Map(entry));
                }
                None => {
                    picked = Some(index);
                    break;
                }
            }
        }

        let mut output = Vars::new();
        output.insert("skipped".into(), Value::List(skipped));
        output.insert("available".into(), Value::Bool(picked.is_some()));
        let mut extra = Vec::new();
        match picked {
            Some(index) => {
                let name = request.members[index].name.clone();
                output.insert("assigned_to".into(), Value::String(name.clone()));
                extra.push(Op::PutRotation(RotationRecord {
                    name: request.team.clone(),
                    last: name,
                    position: index as u64,
                    picks: stored.as_ref().map_or(0, |r| r.picks) + 1,
                    updated_at: now,
                }));
            }
            // Nobody takes a turn, so the rotation stays where it is.
            None => {
                output.insert("assigned_to".into(), Value::Null);
            }
        }
        self.job_result_with(job, JobOutcome::Done(output), &extra)
    }
}

fn request_of(job: &JobRecord) -> std::result::Result<Request, String> {
    if job.operation != "round_robin" {
        return Err(format!(
            "the assign connector has no operation `{}` (only `round_robin`)",
            job.operation
        ));
    }
    let team = match job.input.get("team") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => return Err("assign.round_robin needs a text `team` in its input".into()),
    };
    if team.chars().count() > 200 || team.chars().any(char::is_control) {
        return Err(
            "assign.round_robin: `team` must be printable text of at most 200 characters".into(),
        );
    }
    let list = match job.input.get("members") {
        Some(Value::List(list)) if !list.is_empty() => list,
        Some(Value::List(_)) => {
            return Err(format!("the team `{team}` has no members"));
        }
        None | Some(Value::Null) => {
            return Err(format!(
                "the team `{team}` is not known: no members were given (is it in data/sales-teams.yaml?)"
            ));
        }
        Some(other) => {
            return Err(format!(
                "assign.round_robin: the members of `{team}` must be a list, not {}",
                other.type_name()
            ));
        }
    };
    let mut members: Vec<Member> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let at = format!("member {} of the team `{team}`", i + 1);
        let Value::Map(map) = item else {
            return Err(format!("{at} must be a map with a `name`"));
        };
        let name = match map.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            _ => return Err(format!("{at} has no text `name`")),
        };
        if members.iter().any(|m| m.name == name) {
            return Err(format!("`{name}` is listed twice in the team `{team}`"));
        }
        let capacity = match map.get("capacity") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.is_integer() && !n.is_sign_negative() => {
                Some(u64::try_from(*n).map_err(|_| format!("{at}: `capacity` is too large"))?)
            }
            Some(_) => {
                return Err(format!(
                    "{at} (`{name}`): `capacity` must be a whole number, 0 or more"
                ));
            }
        };
        let absent = match map.get("absent") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(format!("{at} (`{name}`): `absent` must be true or false")),
        };
        let mut away = Vec::new();
        match map.get("away") {
            None | Some(Value::Null) => {}
            Some(Value::List(ranges)) => {
                for range in ranges {
                    let day = |key: &str| match range {
                        Value::Map(r) => match r.get(key) {
                            Some(Value::Date(d)) => Some(*d),
                            Some(Value::String(s)) => s.parse::<Date>().ok(),
                            _ => None,
                        },
                        _ => None,
                    };
                    match (day("from"), day("to")) {
                        (Some(from), Some(to)) if from <= to => away.push((from, to)),
                        _ => {
                            return Err(format!(
                                "{at} (`{name}`): each `away` range is {{from: YYYY-MM-DD, to: YYYY-MM-DD}}, from not after to"
                            ));
                        }
                    }
                }
            }
            Some(_) => return Err(format!("{at} (`{name}`): `away` must be a list of ranges")),
        }
        members.push(Member {
            name,
            capacity,
            absent,
            away,
        });
    }
    let process = match job.input.get("process") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("assign.round_robin: `process` must be a text".into()),
    };
    Ok(Request {
        team,
        members,
        process,
    })
}
