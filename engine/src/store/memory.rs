//! `MemoryStore`: the store in ordered maps behind one lock, for tests and the in-memory
//! benchmark. It keeps the same orderings and semantics as the sled store (the conformance
//! suite checks both) but nothing survives the process, so `commit` returns as soon as the
//! maps are updated.
//!
//! Records are kept as they are, not encoded: a commit moves them into the maps, reads clone
//! them out. Secondary indexes hold only keys, so each record lives in exactly one place.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use jiff::Timestamp;

use super::{
    Batch, DefinitionRecord, HistoryRecord, IncidentRecord, InstanceFilter, InstanceId,
    InstanceRecord, JobRecord, LinkRecord, MessageRecord, Op, Result, RotationRecord,
    SessionRecord, Store, SubscriptionRecord, TaskRecord, TimerRecord, TokenRecord, UserRecord,
};

/// `(instance, number)`: how timers, jobs, tasks, incidents, history lines and subscriptions
/// are identified within their instance.
type Owned = (InstanceId, u64);

/// An in-memory store. Cheap to create; share it behind an `Arc`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    maps: RwLock<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    definitions: BTreeMap<(String, u32), DefinitionRecord>,
    instances: BTreeMap<InstanceId, InstanceRecord>,
    timers: BTreeMap<Owned, TimerRecord>,
    timers_by_due: BTreeSet<(Timestamp, InstanceId, u64)>,
    jobs: BTreeMap<Owned, JobRecord>,
    /// Jobs the runtime runs, by due time (external jobs are not here).
    jobs_by_due: BTreeSet<(Timestamp, InstanceId, u64)>,
    /// External jobs, by type and due time.
    external_by_type: BTreeSet<(String, Timestamp, InstanceId, u64)>,
    tasks: BTreeMap<Owned, TaskRecord>,
    tasks_by_creation: BTreeSet<(Timestamp, InstanceId, u64)>,
    /// By `(name, key)`, then by `(instance, subscription)`.
    subscriptions: HashMap<(String, String), BTreeMap<Owned, SubscriptionRecord>>,
    /// Where each subscription is filed, to delete it by `(instance, subscription)`.
    subscription_topics: BTreeMap<Owned, (String, String)>,
    /// By `(name, key)`, then by sequence (arrival order).
    messages: HashMap<(String, String), BTreeMap<u64, MessageRecord>>,
    message_topics: BTreeMap<u64, (String, String)>,
    /// The last sequence given to a message; the next one is this plus one.
    last_message_seq: u64,
    message_ids: HashMap<String, Timestamp>,
    incidents: BTreeMap<Owned, IncidentRecord>,
    history: BTreeMap<Owned, HistoryRecord>,
    request_keys: HashMap<String, InstanceId>,
    users: BTreeMap<String, UserRecord>,
    /// By hash.
    tokens: BTreeMap<String, TokenRecord>,
    tokens_by_creation: BTreeSet<(Timestamp, String)>,
    /// By hash.
    sessions: BTreeMap<String, SessionRecord>,
    links: BTreeMap<String, LinkRecord>,
    rotations: BTreeMap<String, RotationRecord>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A poisoned lock means a panic while the maps were being changed. Every change below is
    /// infallible, so a panic can only come from outside the store's code (an allocation
    /// failure); the maps are still consistent enough to read, so keep going.
    fn read(&self) -> RwLockReadGuard<'_, Maps> {
        self.maps
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Maps> {
        self.maps
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Everything in `map` whose key starts with `instance`, as a range.
fn of_instance<V>(
    map: &BTreeMap<Owned, V>,
    instance: InstanceId,
) -> impl Iterator<Item = (&Owned, &V)> {
    map.range((instance, 0)..=(instance, u64::MAX))
}

/// Removes every entry of `instance` from `map`, returning what was removed.
fn remove_instance<V>(map: &mut BTreeMap<Owned, V>, instance: InstanceId) -> Vec<(Owned, V)> {
    let keys: Vec<Owned> = of_instance(map, instance).map(|(k, _)| *k).collect();
    keys.into_iter()
        .filter_map(|k| map.remove(&k).map(|v| (k, v)))
        .collect()
}

impl Maps {
    fn apply(&mut self, op: Op) {
        match op {
            Op::PutDefinition(d) => {
                self.definitions.insert((d.process.clone(), d.version), d);
            }
            Op::PutInstance(i) => {
                self.instances.insert(i.id, i);
            }
            Op::PutTimer(t) => {
                let indexed = (t.due, t.instance, t.timer);
                if let Some(old) = self.timers.insert((t.instance, t.timer), t) {
                    self.timers_by_due
                        .remove(&(old.due, old.instance, old.timer));
                }
                self.timers_by_due.insert(indexed);
            }
            Op::DeleteTimer { instance, timer } => {
                if let Some(old) = self.timers.remove(&(instance, timer)) {
                    self.timers_by_due.remove(&(old.due, instance, timer));
                }
            }
            Op::PutJob(j) => {
                if let Some(old) = self.jobs.remove(&(j.instance, j.job)) {
                    self.index_job(&old, false);
                }
                self.index_job(&j, true);
                self.jobs.insert((j.instance, j.job), j);
            }
            Op::DeleteJob { instance, job } => {
                if let Some(old) = self.jobs.remove(&(instance, job)) {
                    self.index_job(&old, false);
                }
            }
            Op::PutTask(t) => {
                let indexed = (t.created_at, t.instance, t.task);
                if let Some(old) = self.tasks.insert((t.instance, t.task), t) {
                    self.tasks_by_creation
                        .remove(&(old.created_at, old.instance, old.task));
                }
                self.tasks_by_creation.insert(indexed);
            }
            Op::DeleteTask { instance, task } => {
                if let Some(old) = self.tasks.remove(&(instance, task)) {
                    self.tasks_by_creation
                        .remove(&(old.created_at, instance, task));
                }
            }
            Op::PutSubscription(s) => {
                let id = (s.instance, s.subscription);
                self.delete_subscription(id);
                let topic = (s.name.clone(), s.key.clone());
                self.subscription_topics.insert(id, topic.clone());
                self.subscriptions.entry(topic).or_default().insert(id, s);
            }
            Op::DeleteSubscription {
                instance,
                subscription,
            } => self.delete_subscription((instance, subscription)),
            Op::PutMessage(mut m) => {
                self.last_message_seq += 1;
                m.seq = self.last_message_seq;
                let topic = (m.name.clone(), m.key.clone());
                self.message_topics.insert(m.seq, topic.clone());
                self.messages.entry(topic).or_default().insert(m.seq, m);
            }
            Op::DeleteMessage { seq } => {
                if let Some(topic) = self.message_topics.remove(&seq)
                    && let Some(queue) = self.messages.get_mut(&topic)
                {
                    queue.remove(&seq);
                    if queue.is_empty() {
                        self.messages.remove(&topic);
                    }
                }
            }
            Op::PutMessageId { id, until } => {
                self.message_ids.insert(id, until);
            }
            Op::PutIncident(i) => {
                self.incidents.insert((i.instance, i.incident), i);
            }
            Op::DeleteIncident { instance, incident } => {
                self.incidents.remove(&(instance, incident));
            }
            Op::AppendHistory(h) => {
                self.history.insert((h.instance, h.seq), h);
            }
            Op::PutRequestKey { key, instance } => {
                self.request_keys.insert(key, instance);
            }
            Op::PutUser(u) => {
                self.users.insert(u.name.clone(), u);
            }
            Op::DeleteUser { name } => {
                self.users.remove(&name);
            }
            Op::PutToken(t) => {
                let indexed = (t.created_at, t.hash.clone());
                if let Some(old) = self.tokens.insert(t.hash.clone(), t) {
                    self.tokens_by_creation.remove(&(old.created_at, old.hash));
                }
                self.tokens_by_creation.insert(indexed);
            }
            Op::DeleteToken { hash } => {
                if let Some(old) = self.tokens.remove(&hash) {
                    self.tokens_by_creation.remove(&(old.created_at, hash));
                }
            }
            Op::PutLink(link) => {
                self.links.insert(link.hash.clone(), link);
            }
            Op::PutRotation(rotation) => {
                self.rotations.insert(rotation.name.clone(), rotation);
            }
            Op::PutSession(session) => {
                self.sessions.insert(session.hash.clone(), session);
            }
            Op::DeleteSession { hash } => {
                self.sessions.remove(&hash);
            }
        }
    }

    /// Adds a job to (or removes it from) the index it belongs in: by due time for the
    /// runtime, by type and due time for external workers.
    fn index_job(&mut self, j: &JobRecord, add: bool) {
        if j.is_external() {
            let key = (j.operation.clone(), j.due, j.instance, j.job);
            if add {
                self.external_by_type.insert(key);
            } else {
                self.external_by_type.remove(&key);
            }
        } else {
            let key = (j.due, j.instance, j.job);
            if add {
                self.jobs_by_due.insert(key);
            } else {
                self.jobs_by_due.remove(&key);
            }
        }
    }

    fn delete_subscription(&mut self, id: Owned) {
        if let Some(topic) = self.subscription_topics.remove(&id)
            && let Some(subscribers) = self.subscriptions.get_mut(&topic)
        {
            subscribers.remove(&id);
            if subscribers.is_empty() {
                self.subscriptions.remove(&topic);
            }
        }
    }

    /// Removes an instance and everything it owns.
    fn remove_instance(&mut self, instance: InstanceId) {
        self.instances.remove(&instance);
        for (_, t) in remove_instance(&mut self.timers, instance) {
            self.timers_by_due.remove(&(t.due, t.instance, t.timer));
        }
        for (_, j) in remove_instance(&mut self.jobs, instance) {
            self.index_job(&j, false);
        }
        for (_, t) in remove_instance(&mut self.tasks, instance) {
            self.tasks_by_creation
                .remove(&(t.created_at, t.instance, t.task));
        }
        let subscriptions: Vec<Owned> = of_instance(&self.subscription_topics, instance)
            .map(|(k, _)| *k)
            .collect();
        for id in subscriptions {
            self.delete_subscription(id);
        }
        remove_instance(&mut self.incidents, instance);
        remove_instance(&mut self.history, instance);
    }
}

impl Store for MemoryStore {
    fn commit(&self, batch: Batch) -> Result<()> {
        // Every op is infallible here, so applying them in order under one write lock is
        // atomic for every reader.
        let mut maps = self.write();
        for op in batch.ops {
            maps.apply(op);
        }
        Ok(())
    }

    fn definitions(&self) -> Result<Vec<DefinitionRecord>> {
        Ok(self.read().definitions.values().cloned().collect())
    }

    fn definition(&self, process: &str, version: u32) -> Result<Option<DefinitionRecord>> {
        Ok(self
            .read()
            .definitions
            .get(&(process.to_string(), version))
            .cloned())
    }

    fn instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>> {
        Ok(self.read().instances.get(&id).cloned())
    }

    fn instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>> {
        let maps = self.read();
        let range = match filter.after {
            Some(after) => maps
                .instances
                .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => maps.instances.range(..),
        };
        Ok(range
            .map(|(_, i)| i)
            .filter(|i| filter.matches(i))
            .take(filter.effective_limit())
            .cloned()
            .collect())
    }

    fn remove_finished(&self, before: Timestamp) -> Result<usize> {
        let mut maps = self.write();
        let doomed: Vec<InstanceId> = maps
            .instances
            .values()
            .filter(|i| i.finished_before(before))
            .map(|i| i.id)
            .collect();
        for id in &doomed {
            maps.remove_instance(*id);
        }
        Ok(doomed.len())
    }

    fn due_timers(&self, until: Timestamp, limit: usize) -> Result<Vec<TimerRecord>> {
        let maps = self.read();
        Ok(maps
            .timers_by_due
            .iter()
            .take_while(|(due, _, _)| *due <= until)
            .take(limit)
            .filter_map(|(_, instance, timer)| maps.timers.get(&(*instance, *timer)).cloned())
            .collect())
    }

    fn next_timer(&self) -> Result<Option<TimerRecord>> {
        let maps = self.read();
        Ok(maps
            .timers_by_due
            .first()
            .and_then(|(_, instance, timer)| maps.timers.get(&(*instance, *timer)).cloned()))
    }

    fn timers_of(&self, instance: InstanceId) -> Result<Vec<TimerRecord>> {
        Ok(of_instance(&self.read().timers, instance)
            .map(|(_, t)| t.clone())
            .collect())
    }

    fn job(&self, instance: InstanceId, job: u64) -> Result<Option<JobRecord>> {
        Ok(self.read().jobs.get(&(instance, job)).cloned())
    }

    fn due_jobs(&self, now: Timestamp, limit: usize) -> Result<Vec<JobRecord>> {
        let maps = self.read();
        Ok(maps
            .jobs_by_due
            .iter()
            .take_while(|(due, _, _)| *due <= now)
            .filter_map(|(_, instance, job)| maps.jobs.get(&(*instance, *job)))
            .filter(|j| j.is_free_at(now))
            .take(limit)
            .cloned()
            .collect())
    }

    fn jobs_of(&self, instance: InstanceId) -> Result<Vec<JobRecord>> {
        Ok(of_instance(&self.read().jobs, instance)
            .map(|(_, j)| j.clone())
            .collect())
    }

    fn due_external_jobs(
        &self,
        job_type: &str,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        let maps = self.read();
        let from = (job_type.to_string(), Timestamp::MIN, InstanceId::nil(), 0);
        Ok(maps
            .external_by_type
            .range(from..)
            .take_while(|(kind, due, _, _)| kind == job_type && *due <= now)
            .filter_map(|(_, _, instance, job)| maps.jobs.get(&(*instance, *job)))
            .filter(|j| j.is_free_at(now))
            .take(limit)
            .cloned()
            .collect())
    }

    fn external_jobs(&self, limit: usize) -> Result<Vec<JobRecord>> {
        let maps = self.read();
        Ok(maps
            .external_by_type
            .iter()
            .take(limit)
            .filter_map(|(_, _, instance, job)| maps.jobs.get(&(*instance, *job)).cloned())
            .collect())
    }

    fn task(&self, instance: InstanceId, task: u64) -> Result<Option<TaskRecord>> {
        Ok(self.read().tasks.get(&(instance, task)).cloned())
    }

    fn tasks(&self, limit: usize) -> Result<Vec<TaskRecord>> {
        let maps = self.read();
        Ok(maps
            .tasks_by_creation
            .iter()
            .take(limit)
            .filter_map(|(_, instance, task)| maps.tasks.get(&(*instance, *task)).cloned())
            .collect())
    }

    fn subscriptions(&self, name: &str, key: &str) -> Result<Vec<SubscriptionRecord>> {
        Ok(self
            .read()
            .subscriptions
            .get(&(name.to_string(), key.to_string()))
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default())
    }

    fn messages(&self, name: &str, key: &str) -> Result<Vec<MessageRecord>> {
        Ok(self
            .read()
            .messages
            .get(&(name.to_string(), key.to_string()))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    fn message_id_seen(&self, id: &str, now: Timestamp) -> Result<bool> {
        Ok(self
            .read()
            .message_ids
            .get(id)
            .is_some_and(|until| now < *until))
    }

    fn incidents(&self) -> Result<Vec<IncidentRecord>> {
        Ok(self.read().incidents.values().cloned().collect())
    }

    fn incidents_of(&self, instance: InstanceId) -> Result<Vec<IncidentRecord>> {
        Ok(of_instance(&self.read().incidents, instance)
            .map(|(_, i)| i.clone())
            .collect())
    }

    fn history(&self, instance: InstanceId) -> Result<Vec<HistoryRecord>> {
        Ok(of_instance(&self.read().history, instance)
            .map(|(_, h)| h.clone())
            .collect())
    }

    fn request_key(&self, key: &str) -> Result<Option<InstanceId>> {
        Ok(self.read().request_keys.get(key).copied())
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        Ok(self.read().users.get(name).cloned())
    }

    fn users(&self) -> Result<Vec<UserRecord>> {
        Ok(self.read().users.values().cloned().collect())
    }

    fn token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        Ok(self.read().tokens.get(hash).cloned())
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let maps = self.read();
        Ok(maps
            .tokens_by_creation
            .iter()
            .filter_map(|(_, hash)| maps.tokens.get(hash).cloned())
            .collect())
    }

    fn session(&self, hash: &str) -> Result<Option<SessionRecord>> {
        Ok(self.read().sessions.get(hash).cloned())
    }

    fn sessions(&self) -> Result<Vec<SessionRecord>> {
        Ok(self.read().sessions.values().cloned().collect())
    }

    fn link(&self, hash: &str) -> Result<Option<LinkRecord>> {
        Ok(self.read().links.get(hash).cloned())
    }

    fn rotation(&self, name: &str) -> Result<Option<RotationRecord>> {
        Ok(self.read().rotations.get(name).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;
    use crate::store::conformance::{Fixture, conformance_tests};

    fn memory() -> Fixture {
        Fixture {
            store: Box::new(MemoryStore::new()),
            keep: None,
        }
    }

    conformance_tests!(memory);
}
