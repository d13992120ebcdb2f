//! `SledStore`: the embedded, durable store, in one sled tree of a data folder.
//!
//! **Layout.** Every record lives in the one default tree, under a key that starts with a
//! one-byte kind and continues with big-endian, order-preserving parts, so a prefix scan
//! returns records in the order the trait promises (see `kind`). Values are postcard. Where a
//! record is listed in one order and found in another (timers, jobs and tasks by time; a
//! subscription or a message by name and key but deleted by its id), a small second key maps
//! the id to the ordered key, and both are written in the same atomic batch.
//!
//! **Writes.** One committer thread owns every write. `commit` sends its batch over a channel
//! and waits; the committer takes all batches waiting, turns each into one `sled::Batch`
//! (reading what it must, such as a timer's old due time, without races because nobody else
//! writes) and applies it atomically, then makes the whole group durable with one
//! `flush()` and one `sync_data()` of the data file, and only then answers every waiter. So
//! many concurrent commits share one disk flush (group commit), and an answered commit
//! survives a crash. sled 0.34's `flush` only calls `sync_file_range`, which survives a killed
//! process but not a power cut; the extra `sync_data` covers the power cut.
//!
//! **Reads** go straight to the tree, under a read gate the committer closes while it applies
//! a batch: sled makes each batch atomic for single-key reads, but a read that looks at several
//! keys (a scan, or an index then its record) could otherwise see half of a batch. A reader
//! can see a batch that is applied but whose flush has not yet finished; the write is durable
//! within that flush, and only the committing caller acts on it before that.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, RwLockReadGuard, mpsc};
use std::thread::JoinHandle;

use jiff::Timestamp;
use uuid::Uuid;

use super::codec::Stored;
use super::keys::{
    Key, decode, decode_history, encode, encode_history, io, read_time, read_u64, show, time_bytes,
    topic,
};
use super::{
    Batch, Counters, DefinitionRecord, HistoryRecord, IncidentRecord, InstanceFilter, InstanceId,
    InstanceRecord, JobRecord, LinkRecord, MessageRecord, Op, Result, RotationRecord,
    SessionRecord, Store, StoreError, StoreStats, SubscriptionRecord, TaskRecord, TimerRecord,
    TokenRecord, UserRecord,
};

/// The first byte of every key: what kind of record follows. Lower case keys hold records or
/// point to them by id; upper case keys order them.
mod kind {
    /// `(process, version)` -> `DefinitionRecord`.
    pub const DEFINITION: u8 = b'd';
    /// `instance` -> `InstanceRecord`.
    pub const INSTANCE: u8 = b'i';
    /// `(instance, timer)` -> due time (16 bytes, as in the key below).
    pub const TIMER: u8 = b't';
    /// `(due, instance, timer)` -> `TimerRecord`.
    pub const TIMER_BY_DUE: u8 = b'T';
    /// `(instance, job)` -> due time.
    pub const JOB: u8 = b'j';
    /// `(due, instance, job)` -> `JobRecord`. External jobs are not here.
    pub const JOB_BY_DUE: u8 = b'J';
    /// `(instance, job)` of an external job -> `(type, due)`, as in the key below.
    pub const EXTERNAL_JOB: u8 = b'x';
    /// `(type, due, instance, job)` -> `JobRecord` of an external job.
    pub const EXTERNAL_JOB_BY_TYPE: u8 = b'X';
    /// `(instance, task)` -> creation time.
    pub const TASK: u8 = b'k';
    /// `(created_at, instance, task)` -> `TaskRecord`.
    pub const TASK_BY_CREATION: u8 = b'K';
    /// `(instance, subscription)` -> the `(name, key)` part of the key below.
    pub const SUBSCRIPTION: u8 = b's';
    /// `(name, key, instance, subscription)` -> `SubscriptionRecord`.
    pub const SUBSCRIPTION_BY_TOPIC: u8 = b'S';
    /// `seq` -> the `(name, key)` part of the key below.
    pub const MESSAGE: u8 = b'm';
    /// `(name, key, seq)` -> `MessageRecord`.
    pub const MESSAGE_BY_TOPIC: u8 = b'M';
    /// message id (raw) -> until (16 bytes).
    pub const MESSAGE_ID: u8 = b'u';
    /// `(instance, incident)` -> `IncidentRecord`.
    pub const INCIDENT: u8 = b'e';
    /// `(instance, seq)` -> `HistoryRecord`.
    pub const HISTORY: u8 = b'h';
    /// request key (raw) -> instance id (16 bytes).
    pub const REQUEST_KEY: u8 = b'r';
    /// user name -> `UserRecord`.
    pub const USER: u8 = b'a';
    /// token hash -> creation time (16 bytes, as in the key below).
    pub const TOKEN: u8 = b'o';
    /// `(created_at, hash)` -> `TokenRecord`.
    pub const TOKEN_BY_CREATION: u8 = b'O';
    /// session hash -> `SessionRecord`.
    pub const SESSION: u8 = b'w';
    /// link hash -> `LinkRecord`.
    pub const LINK: u8 = b'l';
    /// rotation name -> `RotationRecord`.
    pub const ROTATION: u8 = b'q';
}

/// Store bookkeeping: the next message sequence (its kind byte, `#`, is used by nothing else).
const NEXT_MESSAGE_SEQ: &[u8] = b"#next-message-seq";

/// The most requests one group takes, so waiters at the front are not held up behind an
/// endless stream.
const MAX_GROUP: usize = 4096;

/// Instances removed per atomic batch in `remove_finished`: each instance goes all at once,
/// and a long removal does not build one huge batch.
const REMOVAL_CHUNK: usize = 256;

/// How to open a `SledStore`.
#[derive(Clone, Debug)]
pub struct SledOptions {
    /// The data folder; created if missing.
    pub path: PathBuf,
    /// Bytes of sled's page cache. The process's memory can be several times this.
    pub cache_capacity: u64,
}

impl SledOptions {
    /// Default cache: 64 MiB, enough for the working set of many thousands of waiting
    /// instances while keeping the server's memory modest.
    pub const DEFAULT_CACHE_CAPACITY: u64 = 64 * 1024 * 1024;

    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache_capacity: Self::DEFAULT_CACHE_CAPACITY,
        }
    }
}

/// A request to the committer, with where to send the answer.
enum Request {
    Commit(Batch, mpsc::SyncSender<Result<usize>>),
    RemoveFinished(Timestamp, mpsc::SyncSender<Result<usize>>),
}

/// The durable store in a sled data folder. Dropping it drains and stops the committer.
pub struct SledStore {
    db: sled::Db,
    gate: Arc<RwLock<()>>,
    requests: Option<mpsc::Sender<Request>>,
    committer: Option<JoinHandle<Result<()>>>,
    counters: Arc<Counters>,
    path: PathBuf,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish()
    }
}

fn from_sled(error: sled::Error) -> StoreError {
    match error {
        sled::Error::Corruption { .. } => StoreError::Corrupt(error.to_string()),
        other => io(other),
    }
}

impl SledStore {
    /// Opens (or creates) the store in `options.path` and starts its committer.
    ///
    /// Fails with `StoreError::Locked` if another process (or another `SledStore` in this
    /// one) has the folder open.
    pub fn open(options: SledOptions) -> Result<Self> {
        let path = options.path.clone();
        let open = || {
            sled::Config::new()
                .path(&path)
                .cache_capacity(options.cache_capacity)
                // Every commit group is flushed by the committer; sled's own timed flusher would
                // only add a background thread that keeps the folder locked after a close.
                .flush_every_ms(None)
                .open()
                .map_err(|error| match error {
                    // sled reports a failed `flock` of its data file as this I/O error.
                    sled::Error::Io(ref e) if e.to_string().contains("could not acquire lock") => {
                        StoreError::Locked(path.display().to_string())
                    }
                    other => from_sled(other),
                })
        };
        // A store of this very process that was just closed may release its lock a moment
        // later (sled's threads end asynchronously): look again for a short while before
        // telling the caller that another process holds the folder.
        let mut attempts = 0;
        let db = loop {
            match open() {
                Err(StoreError::Locked(_)) if attempts < 20 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        // The data file, opened read-only, only to `sync_data` it after each group flush.
        let data_file = File::open(path.join("db")).map_err(|e| {
            io(format!(
                "cannot open {} to sync it: {e}",
                path.join("db").display()
            ))
        })?;
        // A new folder's entries (the data file itself) must be durable too.
        File::open(&path)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io(format!("cannot sync folder {}: {e}", path.display())))?;

        let next_message_seq = next_message_seq(&db)?;
        let gate = Arc::new(RwLock::new(()));
        let counters = Arc::new(Counters::default());
        let (requests, inbox) = mpsc::channel();
        let committer = Committer {
            tree: (*db).clone(),
            data_file,
            gate: gate.clone(),
            counters: counters.clone(),
            next_message_seq,
        };
        let committer = std::thread::Builder::new()
            .name("ciclo-store-committer".into())
            .spawn(move || committer.run(inbox))
            .map_err(|e| io(format!("cannot start the committer thread: {e}")))?;
        Ok(Self {
            db,
            gate,
            requests: Some(requests),
            committer: Some(committer),
            counters,
            path,
        })
    }

    /// Commits and group flushes so far.
    pub fn stats(&self) -> StoreStats {
        self.counters.stats()
    }

    /// Stops the committer after it answered every pending request and made them durable,
    /// and reports whether that last flush worked. Dropping the store does the same but can
    /// only log a failure.
    pub fn close(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        // Closing the channel ends the committer's loop once the queue is empty.
        drop(self.requests.take());
        match self.committer.take() {
            Some(handle) => handle
                .join()
                .map_err(|_| io("the committer thread panicked"))?,
            None => Ok(()),
        }
    }

    fn ask(
        &self,
        request: impl FnOnce(mpsc::SyncSender<Result<usize>>) -> Request,
    ) -> Result<usize> {
        let (reply, answer) = mpsc::sync_channel(1);
        let stopped = || io("the store is closed: its committer stopped");
        self.requests
            .as_ref()
            .ok_or_else(stopped)?
            .send(request(reply))
            .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }

    /// Holds off the committer while a read looks at several keys.
    fn read_gate(&self) -> RwLockReadGuard<'_, ()> {
        // The gate guards no data, so a panic elsewhere while it was held changes nothing.
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.db.get(key).map_err(from_sled)
    }

    /// Decodes every record under `prefix`, in key order.
    fn scan<T: Stored>(&self, prefix: &[u8], what: &str) -> Result<Vec<T>> {
        let _gate = self.read_gate();
        self.db
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry.map_err(from_sled)?;
                decode(what, &key, &value)
            })
            .collect()
    }

    /// Records listed through an ordering index: under `prefix` in the index `by`, each
    /// (key `kind + id parts`, value `order bytes`) points at `by + order + id parts`.
    fn through_index<T: Stored>(&self, prefix: &[u8], by: u8, what: &str) -> Result<Vec<T>> {
        let _gate = self.read_gate();
        self.db
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, order) = entry.map_err(from_sled)?;
                self.indexed(&key, &order, by, what)
            })
            .collect()
    }

    /// The record an id key points to through its ordering index.
    fn indexed<T: Stored>(&self, id_key: &[u8], order: &[u8], by: u8, what: &str) -> Result<T> {
        let ordered = ordered_key(by, order, id_key);
        match self.get(&ordered)? {
            Some(value) => decode(what, &ordered, &value),
            None => Err(StoreError::Corrupt(format!(
                "{what} {} has no index entry {}",
                show(id_key),
                show(&ordered)
            ))),
        }
    }

    /// One record found by id through its ordering index.
    fn by_id<T: Stored>(&self, id_key: &[u8], by: u8, what: &str) -> Result<Option<T>> {
        let _gate = self.read_gate();
        match self.get(id_key)? {
            Some(order) => self.indexed(id_key, &order, by, what).map(Some),
            None => Ok(None),
        }
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::error!(%error, path = %self.path.display(), "closing the store failed");
        }
    }
}

/// `by + order + (id_key without its kind byte)`: the ordering key an id key points to.
fn ordered_key(by: u8, order: &[u8], id_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + order.len() + id_key.len());
    key.push(by);
    key.extend_from_slice(order);
    key.extend_from_slice(id_key.get(1..).unwrap_or_default());
    key
}

/// The next message sequence: one past both the recorded counter and the highest stored
/// message, so a sequence is never given twice.
fn next_message_seq(db: &sled::Db) -> Result<u64> {
    let recorded = match db.get(NEXT_MESSAGE_SEQ).map_err(from_sled)? {
        Some(bytes) => read_u64(&bytes, "the next message sequence")?,
        None => 1,
    };
    let highest = match db.scan_prefix([kind::MESSAGE]).next_back() {
        Some(entry) => {
            let (key, _) = entry.map_err(from_sled)?;
            read_u64(key.get(1..).unwrap_or_default(), "a message sequence")? + 1
        }
        None => 1,
    };
    Ok(recorded.max(highest))
}

// ---------------------------------------------------------------------------------------------
// The committer

struct Committer {
    /// The default tree of the store's `Db` (a clone shares everything with it).
    tree: sled::Tree,
    data_file: File,
    gate: Arc<RwLock<()>>,
    counters: Arc<Counters>,
    next_message_seq: u64,
}

impl Committer {
    fn run(mut self, inbox: mpsc::Receiver<Request>) -> Result<()> {
        while let Ok(first) = inbox.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match inbox.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            let mut answers = Vec::with_capacity(group.len());
            let mut commits = 0;
            let applying = std::time::Instant::now();
            for request in group {
                match request {
                    Request::Commit(batch, reply) => {
                        commits += 1;
                        let done = self.commit(batch).map(|()| 0);
                        answers.push((reply, done));
                    }
                    Request::RemoveFinished(before, reply) => {
                        answers.push((reply, self.remove_finished(before)));
                    }
                }
            }
            let flushing = std::time::Instant::now();
            self.counters
                .apply_micros
                .fetch_add((flushing - applying).as_micros() as u64, Ordering::Relaxed);
            let durable = self.make_durable();
            self.counters
                .flush_micros
                .fetch_add(flushing.elapsed().as_micros() as u64, Ordering::Relaxed);
            self.counters.commits.fetch_add(commits, Ordering::Relaxed);
            self.counters.flushes.fetch_add(1, Ordering::Relaxed);
            for (reply, done) in answers {
                let answer = match (&durable, done) {
                    (Ok(()), done) => done,
                    (Err(e), Ok(_)) => Err(io(format!("flushing the store: {e}"))),
                    (Err(_), Err(e)) => Err(e),
                };
                // A waiter that went away needs no answer.
                let _ = reply.send(answer);
            }
        }
        self.make_durable()
    }

    /// One flush and one `sync_data` for everything applied so far.
    fn make_durable(&self) -> Result<()> {
        self.tree.flush().map_err(from_sled)?;
        self.data_file
            .sync_data()
            .map_err(|e| io(format!("sync_data of the data file: {e}")))
    }

    fn apply(&self, writes: Writes) -> Result<()> {
        let batch = writes.into_batch();
        let _gate = self.gate.write().unwrap_or_else(|p| p.into_inner());
        self.tree.apply_batch(batch).map_err(from_sled)
    }

    fn commit(&mut self, batch: Batch) -> Result<()> {
        let mut writes = Writes::new(self.tree.clone());
        // Sequences given to a batch that then fails are not taken back: a gap is harmless,
        // a sequence given twice is not.
        let seq_before = self.next_message_seq;
        // History lines of one batch go under one key per instance: sled's cost is per key
        // written, and a step of an instance typically writes several lines at once.
        let mut history: Vec<(InstanceId, Vec<HistoryRecord>)> = Vec::new();
        for op in batch.ops {
            match op {
                Op::AppendHistory(h) => match history.iter_mut().find(|(i, _)| *i == h.instance) {
                    Some((_, lines)) => lines.push(h),
                    None => history.push((h.instance, vec![h])),
                },
                op => self.op(&mut writes, op)?,
            }
        }
        for (instance, mut lines) in history {
            lines.sort_by_key(|h| h.seq);
            let first = lines.first().map(|h| h.seq).unwrap_or_default();
            let key = Key::new(kind::HISTORY).id(instance).u64(first);
            writes.put(key.into_bytes(), encode_history(&lines)?);
        }
        if self.next_message_seq != seq_before {
            writes.put(
                NEXT_MESSAGE_SEQ.to_vec(),
                self.next_message_seq.to_be_bytes().to_vec(),
            );
        }
        self.apply(writes)
    }

    fn op(&mut self, w: &mut Writes, op: Op) -> Result<()> {
        match op {
            Op::PutDefinition(d) => {
                let key = Key::new(kind::DEFINITION).str(&d.process).u32(d.version);
                w.put(key.into_bytes(), encode("definition", &d)?);
            }
            Op::PutInstance(i) => {
                w.put(
                    Key::new(kind::INSTANCE).id(i.id).into_bytes(),
                    encode("instance", &i)?,
                );
            }
            Op::PutTimer(t) => {
                let id = Key::new(kind::TIMER)
                    .id(t.instance)
                    .u64(t.timer)
                    .into_bytes();
                w.put_ordered(
                    id,
                    kind::TIMER_BY_DUE,
                    &time_bytes(t.due),
                    encode("timer", &t)?,
                )?;
            }
            Op::DeleteTimer { instance, timer } => {
                let id = Key::new(kind::TIMER).id(instance).u64(timer).into_bytes();
                w.delete_ordered(id, kind::TIMER_BY_DUE)?;
            }
            Op::PutJob(j) => {
                // A job's connector never changes, so it stays in the same pair of keys.
                let record = encode("job", &j)?;
                if j.is_external() {
                    let id = Key::new(kind::EXTERNAL_JOB).id(j.instance).u64(j.job);
                    let order = Key::empty().str(&j.operation).raw(&time_bytes(j.due));
                    let (id, order) = (id.into_bytes(), order.into_bytes());
                    w.put_ordered(id, kind::EXTERNAL_JOB_BY_TYPE, &order, record)?;
                } else {
                    let id = Key::new(kind::JOB).id(j.instance).u64(j.job).into_bytes();
                    w.put_ordered(id, kind::JOB_BY_DUE, &time_bytes(j.due), record)?;
                }
            }
            Op::DeleteJob { instance, job } => {
                let id = Key::new(kind::JOB).id(instance).u64(job).into_bytes();
                w.delete_ordered(id, kind::JOB_BY_DUE)?;
                let id = Key::new(kind::EXTERNAL_JOB)
                    .id(instance)
                    .u64(job)
                    .into_bytes();
                w.delete_ordered(id, kind::EXTERNAL_JOB_BY_TYPE)?;
            }
            Op::PutTask(t) => {
                let id = Key::new(kind::TASK).id(t.instance).u64(t.task).into_bytes();
                let order = time_bytes(t.created_at);
                w.put_ordered(id, kind::TASK_BY_CREATION, &order, encode("task", &t)?)?;
            }
            Op::DeleteTask { instance, task } => {
                let id = Key::new(kind::TASK).id(instance).u64(task).into_bytes();
                w.delete_ordered(id, kind::TASK_BY_CREATION)?;
            }
            Op::PutSubscription(s) => {
                let id = Key::new(kind::SUBSCRIPTION)
                    .id(s.instance)
                    .u64(s.subscription)
                    .into_bytes();
                let order = topic(&s.name, &s.key);
                let record = encode("subscription", &s)?;
                w.put_ordered(id, kind::SUBSCRIPTION_BY_TOPIC, &order, record)?;
            }
            Op::DeleteSubscription {
                instance,
                subscription,
            } => {
                let id = Key::new(kind::SUBSCRIPTION)
                    .id(instance)
                    .u64(subscription)
                    .into_bytes();
                w.delete_ordered(id, kind::SUBSCRIPTION_BY_TOPIC)?;
            }
            Op::PutMessage(mut m) => {
                m.seq = self.next_message_seq;
                self.next_message_seq += 1;
                let id = Key::new(kind::MESSAGE).u64(m.seq).into_bytes();
                let order = topic(&m.name, &m.key);
                let record = encode("message", &m)?;
                // The sequence goes last in the ordered key (name, key, seq): `put_ordered`
                // appends the id key's tail, which is exactly the sequence.
                w.put_ordered(id, kind::MESSAGE_BY_TOPIC, &order, record)?;
            }
            Op::DeleteMessage { seq } => {
                let id = Key::new(kind::MESSAGE).u64(seq).into_bytes();
                w.delete_ordered(id, kind::MESSAGE_BY_TOPIC)?;
            }
            Op::PutMessageId { id, until } => {
                let key = Key::new(kind::MESSAGE_ID).raw(id.as_bytes()).into_bytes();
                w.put(key, time_bytes(until).to_vec());
            }
            Op::PutIncident(i) => {
                let key = Key::new(kind::INCIDENT).id(i.instance).u64(i.incident);
                w.put(key.into_bytes(), encode("incident", &i)?);
            }
            Op::DeleteIncident { instance, incident } => {
                let key = Key::new(kind::INCIDENT).id(instance).u64(incident);
                w.delete(key.into_bytes());
            }
            Op::AppendHistory(h) => {
                // Normally grouped by `commit`; a single line is a group of one.
                let key = Key::new(kind::HISTORY).id(h.instance).u64(h.seq);
                w.put(key.into_bytes(), encode_history(&[h])?);
            }
            Op::PutRequestKey { key, instance } => {
                let key = Key::new(kind::REQUEST_KEY).raw(key.as_bytes()).into_bytes();
                w.put(key, instance.as_bytes().to_vec());
            }
            Op::PutUser(u) => {
                let key = Key::new(kind::USER).str(&u.name).into_bytes();
                w.put(key, encode("user", &u)?);
            }
            Op::DeleteUser { name } => {
                w.delete(Key::new(kind::USER).str(&name).into_bytes());
            }
            Op::PutToken(t) => {
                let id = Key::new(kind::TOKEN).str(&t.hash).into_bytes();
                let order = time_bytes(t.created_at);
                w.put_ordered(id, kind::TOKEN_BY_CREATION, &order, encode("token", &t)?)?;
            }
            Op::DeleteToken { hash } => {
                let id = Key::new(kind::TOKEN).str(&hash).into_bytes();
                w.delete_ordered(id, kind::TOKEN_BY_CREATION)?;
            }
            Op::PutLink(link) => {
                let key = Key::new(kind::LINK).str(&link.hash).into_bytes();
                w.put(key, encode("link", &link)?);
            }
            Op::PutRotation(rotation) => {
                let key = Key::new(kind::ROTATION).str(&rotation.name).into_bytes();
                w.put(key, encode("rotation", &rotation)?);
            }
            Op::PutSession(session) => {
                let key = Key::new(kind::SESSION).str(&session.hash).into_bytes();
                w.put(key, encode("session", &session)?);
            }
            Op::DeleteSession { hash } => {
                w.delete(Key::new(kind::SESSION).str(&hash).into_bytes());
            }
        }
        Ok(())
    }

    fn remove_finished(&mut self, before: Timestamp) -> Result<usize> {
        let mut doomed = Vec::new();
        for entry in self.tree.scan_prefix([kind::INSTANCE]) {
            let (key, value) = entry.map_err(from_sled)?;
            let instance: InstanceRecord = decode("instance", &key, &value)?;
            if instance.finished_before(before) {
                doomed.push(instance.id);
            }
        }
        for chunk in doomed.chunks(REMOVAL_CHUNK) {
            let mut writes = Writes::new(self.tree.clone());
            for &instance in chunk {
                writes.delete(Key::new(kind::INSTANCE).id(instance).into_bytes());
                for own in [kind::HISTORY, kind::INCIDENT] {
                    writes.delete_prefix(&Key::new(own).id(instance).into_bytes())?;
                }
                let indexed = [
                    (kind::TIMER, kind::TIMER_BY_DUE),
                    (kind::JOB, kind::JOB_BY_DUE),
                    (kind::EXTERNAL_JOB, kind::EXTERNAL_JOB_BY_TYPE),
                    (kind::TASK, kind::TASK_BY_CREATION),
                    (kind::SUBSCRIPTION, kind::SUBSCRIPTION_BY_TOPIC),
                ];
                for (own, by) in indexed {
                    let prefix = Key::new(own).id(instance).into_bytes();
                    for entry in self.tree.scan_prefix(&prefix) {
                        let (id, _) = entry.map_err(from_sled)?;
                        writes.delete_ordered(id.to_vec(), by)?;
                    }
                }
            }
            self.apply(writes)?;
        }
        Ok(doomed.len())
    }
}

/// The writes of one batch being built: later ops read what earlier ops of the same batch
/// wrote (a timer put then deleted), then everything goes to sled in one `apply_batch`.
struct Writes {
    tree: sled::Tree,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Writes {
    fn new(tree: sled::Tree) -> Self {
        Self {
            tree,
            pending: BTreeMap::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.pending.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => Ok(self.tree.get(key).map_err(from_sled)?.map(|v| v.to_vec())),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.pending.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.pending.insert(key, None);
    }

    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<()> {
        for entry in self.tree.scan_prefix(prefix) {
            let (key, _) = entry.map_err(from_sled)?;
            self.delete(key.to_vec());
        }
        Ok(())
    }

    /// Puts a record listed in the index `by` under `order`: drops its old index entry if
    /// it moved, and points its id key at the new one.
    fn put_ordered(&mut self, id: Vec<u8>, by: u8, order: &[u8], record: Vec<u8>) -> Result<()> {
        if let Some(old) = self.get(&id)?
            && old != order
        {
            self.delete(ordered_key(by, &old, &id));
        }
        self.put(ordered_key(by, order, &id), record);
        self.put(id, order.to_vec());
        Ok(())
    }

    fn delete_ordered(&mut self, id: Vec<u8>, by: u8) -> Result<()> {
        if let Some(old) = self.get(&id)? {
            self.delete(ordered_key(by, &old, &id));
            self.delete(id);
        }
        Ok(())
    }

    fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in self.pending {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch
    }
}

// ---------------------------------------------------------------------------------------------
// The trait

impl Store for SledStore {
    fn commit(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.ask(|reply| Request::Commit(batch, reply)).map(|_| ())
    }

    fn definitions(&self) -> Result<Vec<DefinitionRecord>> {
        self.scan(&[kind::DEFINITION], "definition")
    }

    fn definition(&self, process: &str, version: u32) -> Result<Option<DefinitionRecord>> {
        let key = Key::new(kind::DEFINITION)
            .str(process)
            .u32(version)
            .into_bytes();
        self.get(&key)?
            .map(|v| decode("definition", &key, &v))
            .transpose()
    }

    fn instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>> {
        let key = Key::new(kind::INSTANCE).id(id).into_bytes();
        self.get(&key)?
            .map(|v| decode("instance", &key, &v))
            .transpose()
    }

    fn instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>> {
        let start = match filter.after {
            Some(after) => Bound::Excluded(Key::new(kind::INSTANCE).id(after).into_bytes()),
            None => Bound::Included(vec![kind::INSTANCE]),
        };
        let end = Bound::Excluded(vec![kind::INSTANCE + 1]);
        let _gate = self.read_gate();
        let mut found = Vec::new();
        for entry in self.db.range::<Vec<u8>, _>((start, end)) {
            if found.len() >= filter.effective_limit() {
                break;
            }
            let (key, value) = entry.map_err(from_sled)?;
            let instance: InstanceRecord = decode("instance", &key, &value)?;
            if filter.matches(&instance) {
                found.push(instance);
            }
        }
        Ok(found)
    }

    fn remove_finished(&self, before: Timestamp) -> Result<usize> {
        self.ask(|reply| Request::RemoveFinished(before, reply))
    }

    fn due_timers(&self, until: Timestamp, limit: usize) -> Result<Vec<TimerRecord>> {
        self.due(kind::TIMER_BY_DUE, until, limit, "timer", |_| true)
    }

    fn next_timer(&self) -> Result<Option<TimerRecord>> {
        match self.db.scan_prefix([kind::TIMER_BY_DUE]).next() {
            Some(entry) => {
                let (key, value) = entry.map_err(from_sled)?;
                decode("timer", &key, &value).map(Some)
            }
            None => Ok(None),
        }
    }

    fn timers_of(&self, instance: InstanceId) -> Result<Vec<TimerRecord>> {
        let prefix = Key::new(kind::TIMER).id(instance).into_bytes();
        self.through_index(&prefix, kind::TIMER_BY_DUE, "timer")
    }

    fn job(&self, instance: InstanceId, job: u64) -> Result<Option<JobRecord>> {
        let key = Key::new(kind::JOB).id(instance).u64(job).into_bytes();
        if let Some(found) = self.by_id(&key, kind::JOB_BY_DUE, "job")? {
            return Ok(Some(found));
        }
        let key = Key::new(kind::EXTERNAL_JOB)
            .id(instance)
            .u64(job)
            .into_bytes();
        self.by_id(&key, kind::EXTERNAL_JOB_BY_TYPE, "external job")
    }

    fn due_jobs(&self, now: Timestamp, limit: usize) -> Result<Vec<JobRecord>> {
        self.due(kind::JOB_BY_DUE, now, limit, "job", |job: &JobRecord| {
            job.is_free_at(now)
        })
    }

    fn jobs_of(&self, instance: InstanceId) -> Result<Vec<JobRecord>> {
        let prefix = Key::new(kind::JOB).id(instance).into_bytes();
        let mut jobs: Vec<JobRecord> = self.through_index(&prefix, kind::JOB_BY_DUE, "job")?;
        let prefix = Key::new(kind::EXTERNAL_JOB).id(instance).into_bytes();
        let external: Vec<JobRecord> =
            self.through_index(&prefix, kind::EXTERNAL_JOB_BY_TYPE, "external job")?;
        jobs.extend(external);
        jobs.sort_by_key(|j| j.job);
        Ok(jobs)
    }

    fn due_external_jobs(
        &self,
        job_type: &str,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        // Keys are `X + type + 16 time bytes + id`: stop at the first one due later.
        let prefix = Key::new(kind::EXTERNAL_JOB_BY_TYPE)
            .str(job_type)
            .into_bytes();
        let until = time_bytes(now);
        let _gate = self.read_gate();
        let mut found = Vec::new();
        for entry in self.db.scan_prefix(&prefix) {
            if found.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(from_sled)?;
            let time = key.get(prefix.len()..prefix.len() + 16).ok_or_else(|| {
                StoreError::Corrupt(format!("external job key too short: {}", show(&key)))
            })?;
            if time > &until[..] {
                break;
            }
            let job: JobRecord = decode("external job", &key, &value)?;
            if job.is_free_at(now) {
                found.push(job);
            }
        }
        Ok(found)
    }

    fn external_jobs(&self, limit: usize) -> Result<Vec<JobRecord>> {
        let _gate = self.read_gate();
        self.db
            .scan_prefix([kind::EXTERNAL_JOB_BY_TYPE])
            .take(limit)
            .map(|entry| {
                let (key, value) = entry.map_err(from_sled)?;
                decode("external job", &key, &value)
            })
            .collect()
    }

    fn task(&self, instance: InstanceId, task: u64) -> Result<Option<TaskRecord>> {
        let key = Key::new(kind::TASK).id(instance).u64(task).into_bytes();
        self.by_id(&key, kind::TASK_BY_CREATION, "task")
    }

    fn tasks(&self, limit: usize) -> Result<Vec<TaskRecord>> {
        let _gate = self.read_gate();
        self.db
            .scan_prefix([kind::TASK_BY_CREATION])
            .take(limit)
            .map(|entry| {
                let (key, value) = entry.map_err(from_sled)?;
                decode("task", &key, &value)
            })
            .collect()
    }

    fn subscriptions(&self, name: &str, key: &str) -> Result<Vec<SubscriptionRecord>> {
        let prefix = Key::new(kind::SUBSCRIPTION_BY_TOPIC)
            .raw(&topic(name, key))
            .into_bytes();
        self.scan(&prefix, "subscription")
    }

    fn messages(&self, name: &str, key: &str) -> Result<Vec<MessageRecord>> {
        let prefix = Key::new(kind::MESSAGE_BY_TOPIC)
            .raw(&topic(name, key))
            .into_bytes();
        self.scan(&prefix, "message")
    }

    fn message_id_seen(&self, id: &str, now: Timestamp) -> Result<bool> {
        let key = Key::new(kind::MESSAGE_ID).raw(id.as_bytes()).into_bytes();
        match self.get(&key)? {
            Some(until) => Ok(now < read_time(&until, "a message id's expiry")?),
            None => Ok(false),
        }
    }

    fn incidents(&self) -> Result<Vec<IncidentRecord>> {
        self.scan(&[kind::INCIDENT], "incident")
    }

    fn incidents_of(&self, instance: InstanceId) -> Result<Vec<IncidentRecord>> {
        self.scan(
            &Key::new(kind::INCIDENT).id(instance).into_bytes(),
            "incident",
        )
    }

    fn history(&self, instance: InstanceId) -> Result<Vec<HistoryRecord>> {
        let _gate = self.read_gate();
        let mut lines = Vec::new();
        for entry in self
            .db
            .scan_prefix(Key::new(kind::HISTORY).id(instance).into_bytes())
        {
            let (key, value) = entry.map_err(from_sled)?;
            decode_history(&key, &value, &mut lines)?;
        }
        // Groups are keyed by their first line; lines of different groups could interleave
        // only if a caller numbered them so, and the order is by number all the same.
        lines.sort_by_key(|h: &HistoryRecord| h.seq);
        Ok(lines)
    }

    fn request_key(&self, key: &str) -> Result<Option<InstanceId>> {
        let key = Key::new(kind::REQUEST_KEY).raw(key.as_bytes()).into_bytes();
        match self.get(&key)? {
            Some(bytes) => Uuid::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("request key {}: {e}", show(&key)))),
            None => Ok(None),
        }
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let key = Key::new(kind::USER).str(name).into_bytes();
        self.get(&key)?
            .map(|v| decode("user", &key, &v))
            .transpose()
    }

    fn users(&self) -> Result<Vec<UserRecord>> {
        self.scan(&[kind::USER], "user")
    }

    fn token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let key = Key::new(kind::TOKEN).str(hash).into_bytes();
        self.by_id(&key, kind::TOKEN_BY_CREATION, "token")
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.scan(&[kind::TOKEN_BY_CREATION], "token")
    }

    fn session(&self, hash: &str) -> Result<Option<SessionRecord>> {
        let key = Key::new(kind::SESSION).str(hash).into_bytes();
        self.get(&key)?
            .map(|v| decode("session", &key, &v))
            .transpose()
    }

    fn sessions(&self) -> Result<Vec<SessionRecord>> {
        self.scan(&[kind::SESSION], "session")
    }

    fn link(&self, hash: &str) -> Result<Option<LinkRecord>> {
        let key = Key::new(kind::LINK).str(hash).into_bytes();
        self.get(&key)?
            .map(|v| decode("link", &key, &v))
            .transpose()
    }

    fn rotation(&self, name: &str) -> Result<Option<RotationRecord>> {
        let key = Key::new(kind::ROTATION).str(name).into_bytes();
        self.get(&key)?
            .map(|v| decode("rotation", &key, &v))
            .transpose()
    }
}

impl SledStore {
    /// Records in the time index `by` due at or before `until`, earliest first, that pass
    /// `keep`, at most `limit`.
    fn due<T: Stored>(
        &self,
        by: u8,
        until: Timestamp,
        limit: usize,
        what: &str,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>> {
        // Every key of a time index is `by + 16 time bytes + ...`: stop at the first later.
        let until = time_bytes(until);
        let _gate = self.read_gate();
        let mut found = Vec::new();
        for entry in self.db.scan_prefix([by]) {
            if found.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(from_sled)?;
            let time = key.get(1..17).ok_or_else(|| {
                StoreError::Corrupt(format!("{what} index key too short: {}", show(&key)))
            })?;
            if time > &until[..] {
                break;
            }
            let record: T = decode(what, &key, &value)?;
            if keep(&record) {
                found.push(record);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{self, Fixture, at, commit, conformance_tests, id};

    fn sled() -> Fixture {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = SledStore::open(SledOptions::new(dir.path())).expect("open");
        Fixture {
            store: Box::new(store),
            keep: Some(Box::new(dir)),
        }
    }

    conformance_tests!(sled);

    fn open(path: &std::path::Path) -> Result<Box<dyn Store>> {
        Ok(Box::new(SledStore::open(SledOptions::new(path))?))
    }

    #[test]
    fn reopening_keeps_everything() {
        conformance::reopening_keeps_everything(&open);
    }

    #[test]
    fn concurrent_commits_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledOptions::new(dir.path())).unwrap();
        conformance::concurrent_commits_share_flushes(&store, || store.stats());
    }

    #[test]
    fn a_folder_in_use_is_locked() {
        conformance::a_folder_in_use_is_locked(&open);
    }

    #[test]
    fn bad_records_are_corrupt_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(SledOptions::new(dir.path())).unwrap();
        let i = id(7);
        commit(
            &store,
            vec![
                Op::PutTimer(conformance::timer(i, 1, at(5))),
                Op::PutMessageId {
                    id: "m".into(),
                    until: at(5),
                },
            ],
        );
        // Damage records behind the committer's back, as a disk fault or a bug would.
        let garbage = [0xFFu8; 3];
        let put = |key: Vec<u8>, value: &[u8]| {
            store.db.insert(key, value).unwrap();
        };
        put(Key::new(kind::INSTANCE).id(i).into_bytes(), &garbage);
        put(Key::new(kind::HISTORY).id(i).u64(1).into_bytes(), &garbage);
        put(Key::new(kind::REQUEST_KEY).raw(b"k").into_bytes(), &garbage);
        put(Key::new(kind::MESSAGE_ID).raw(b"m").into_bytes(), &garbage);
        put(Key::new(kind::JOB).id(i).u64(1).into_bytes(), &[0; 16]);
        let timer_id = Key::new(kind::TIMER).id(i).u64(1).into_bytes();
        let timer_key = ordered_key(kind::TIMER_BY_DUE, &time_bytes(at(5)), &timer_id);
        put(timer_key, &garbage);
        put(Key::new(kind::USER).str("anna").into_bytes(), &garbage);
        put(Key::new(kind::TOKEN).str("ab").into_bytes(), &[0; 16]);
        let token_id = Key::new(kind::TOKEN).str("cd").into_bytes();
        put(
            ordered_key(kind::TOKEN_BY_CREATION, &time_bytes(at(5)), &token_id),
            &garbage,
        );

        let corrupt = |result: Result<()>, what: &str| match result {
            Err(StoreError::Corrupt(message)) => assert!(message.contains(what), "{message}"),
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        };
        corrupt(store.instance(i).map(drop), "instance");
        corrupt(
            store.instances(&InstanceFilter::default()).map(drop),
            "instance",
        );
        corrupt(store.history(i).map(drop), "history line");
        corrupt(store.request_key("k").map(drop), "request key");
        corrupt(store.message_id_seen("m", at(0)).map(drop), "message id");
        corrupt(store.job(i, 1).map(drop), "has no index entry");
        corrupt(store.due_timers(at(10), 10).map(drop), "timer");
        corrupt(store.next_timer().map(drop), "timer");
        corrupt(store.timers_of(i).map(drop), "timer");
        corrupt(store.user("anna").map(drop), "user");
        corrupt(store.users().map(drop), "user");
        corrupt(store.token("ab").map(drop), "has no index entry");
        corrupt(store.tokens().map(drop), "token");
        corrupt(store.remove_finished(at(10)).map(drop), "instance");
    }

    #[test]
    fn acknowledged_commits_survive_sigkill() {
        conformance::acknowledged_commits_survive_sigkill(
            "store::sled::tests::acknowledged_commits_survive_sigkill",
            &open,
        );
    }
}
