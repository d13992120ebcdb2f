//! `RedbStore`: the embedded, durable store in one redb file (`ciclo.redb`) of a data folder.
//!
//! **Why redb next to sled.** sled 0.34 costs 100-200 µs per applied batch, so the durable
//! engine reached only about 2,500 commits/s with 64 concurrent committers, against a target
//! of 10,000/s. redb applies a commit in about 13 µs and makes a whole group durable with one
//! write transaction and one `fsync` (about 2 ms), which reached about 14,500 commits/s in a
//! probe. It is also ACID with a real `fdatasync` per durable commit, where sled's flush
//! survives a killed process but needs an extra `sync_data` to survive a power cut. Both
//! stores keep the same records under the same order-preserving keys (`keys`) and codec
//! (`codec`), and pass the same conformance suite.
//!
//! **Layout.** One table per kind of record (see `Kind`), each with byte-string keys built by
//! the shared `Key` builder, so a range scan returns records in the order the trait promises.
//! Where a record is listed in one order and found in another (timers, jobs and tasks by time;
//! a subscription or a message by name and key but deleted by its id), an id table maps the
//! id to the ordering bytes, and the ordered table holds the record under `order + id`; both
//! are written in the same transaction.
//!
//! **Writes.** One committer thread owns every write. `commit` sends its batch over a channel
//! and waits; the committer takes every batch waiting and applies them all, in order, in ONE
//! write transaction committed with `Durability::Immediate` (one `fsync` for the group), then
//! answers every waiter. Each batch's writes are first built in memory (reading what they must
//! through the transaction, so a batch sees the batches before it in the group), and only
//! applied once the whole batch encoded: a batch that fails is answered with its error and
//! leaves nothing behind, while the others of its group go on.
//!
//! **Reads** use redb read transactions: MVCC snapshots that never block the committer and
//! always see whole committed groups. Since a group becomes visible only when its durable
//! commit returns, a reader never sees a write that a crash could still take back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use jiff::Timestamp;
use redb::{
    Database, DatabaseError, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase,
    ReadableTable, Table, TableDefinition, WriteTransaction,
};
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

/// The database file inside the data folder.
const FILE: &str = "ciclo.redb";

/// The most requests one group takes, so waiters at the front are not held up behind an
/// endless stream.
const MAX_GROUP: usize = 4096;

/// Instances removed per transaction in `remove_finished`: each instance goes all at once,
/// and a long removal neither builds one huge transaction nor holds commits up for long.
const REMOVAL_CHUNK: usize = 1024;

/// The key of the next message sequence in the `Meta` table.
const NEXT_MESSAGE_SEQ: &[u8] = b"next-message-seq";

/// Every table maps byte strings to byte strings: keys from `Key`, values from the codec.
type Bytes = &'static [u8];

/// The tables, one per kind of record. The comment says key -> value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// `(process, version)` -> `DefinitionRecord`.
    Definitions,
    /// `instance` -> `InstanceRecord`.
    Instances,
    /// `(instance, timer)` -> due time (16 bytes, as in the key below).
    Timers,
    /// `(due, instance, timer)` -> `TimerRecord`.
    TimersByDue,
    /// `(instance, job)` -> due time.
    Jobs,
    /// `(due, instance, job)` -> `JobRecord`.
    JobsByDue,
    /// `(instance, task)` -> creation time.
    Tasks,
    /// `(created_at, instance, task)` -> `TaskRecord`.
    TasksByCreation,
    /// `(instance, subscription)` -> the `(name, key)` part of the key below.
    Subscriptions,
    /// `(name, key, instance, subscription)` -> `SubscriptionRecord`.
    SubscriptionsByTopic,
    /// `seq` -> the `(name, key)` part of the key below.
    Messages,
    /// `(name, key, seq)` -> `MessageRecord`.
    MessagesByTopic,
    /// message id (raw) -> until (16 bytes).
    MessageIds,
    /// `(instance, incident)` -> `IncidentRecord`.
    Incidents,
    /// `(instance, first seq)` -> the history lines one batch wrote (`encode_history`).
    History,
    /// request key (raw) -> instance id (16 bytes).
    RequestKeys,
    /// Store bookkeeping: `NEXT_MESSAGE_SEQ` -> u64.
    Meta,
    /// user name -> `UserRecord`.
    Users,
    /// token hash -> creation time (16 bytes, as in the key below).
    Tokens,
    /// `(created_at, hash)` -> `TokenRecord`.
    TokensByCreation,
    /// `(instance, job)` of an external job -> `(type, due)`, as in the key below.
    ExternalJobs,
    /// `(type, due, instance, job)` -> `JobRecord` of an external job (not in `JobsByDue`).
    ExternalJobsByType,
    /// session hash -> `SessionRecord`.
    Sessions,
    /// link hash -> `LinkRecord`.
    Links,
    /// rotation name -> `RotationRecord`.
    Rotations,
}

impl Kind {
    /// Every kind, in declaration order, so `ALL[kind as usize] == kind`.
    const ALL: [Kind; 25] = [
        Kind::Definitions,
        Kind::Instances,
        Kind::Timers,
        Kind::TimersByDue,
        Kind::Jobs,
        Kind::JobsByDue,
        Kind::Tasks,
        Kind::TasksByCreation,
        Kind::Subscriptions,
        Kind::SubscriptionsByTopic,
        Kind::Messages,
        Kind::MessagesByTopic,
        Kind::MessageIds,
        Kind::Incidents,
        Kind::History,
        Kind::RequestKeys,
        Kind::Meta,
        Kind::Users,
        Kind::Tokens,
        Kind::TokensByCreation,
        Kind::ExternalJobs,
        Kind::ExternalJobsByType,
        Kind::Sessions,
        Kind::Links,
        Kind::Rotations,
    ];

    /// The table's name in the file: part of the disk format, never renamed.
    fn name(self) -> &'static str {
        match self {
            Kind::Definitions => "definitions",
            Kind::Instances => "instances",
            Kind::Timers => "timers",
            Kind::TimersByDue => "timers-by-due",
            Kind::Jobs => "jobs",
            Kind::JobsByDue => "jobs-by-due",
            Kind::Tasks => "tasks",
            Kind::TasksByCreation => "tasks-by-creation",
            Kind::Subscriptions => "subscriptions",
            Kind::SubscriptionsByTopic => "subscriptions-by-topic",
            Kind::Messages => "messages",
            Kind::MessagesByTopic => "messages-by-topic",
            Kind::MessageIds => "message-ids",
            Kind::Incidents => "incidents",
            Kind::History => "history",
            Kind::RequestKeys => "request-keys",
            Kind::Meta => "meta",
            Kind::Users => "users",
            Kind::Tokens => "tokens",
            Kind::TokensByCreation => "tokens-by-creation",
            Kind::ExternalJobs => "external-jobs",
            Kind::ExternalJobsByType => "external-jobs-by-type",
            Kind::Sessions => "sessions",
            Kind::Links => "links",
            Kind::Rotations => "rotations",
        }
    }

    fn table(self) -> TableDefinition<'static, Bytes, Bytes> {
        TableDefinition::new(self.name())
    }
}

/// A record kept in an id table and an ordered table (see the module comment).
#[derive(Clone, Copy)]
struct Index {
    ids: Kind,
    by: Kind,
}

const TIMERS: Index = Index {
    ids: Kind::Timers,
    by: Kind::TimersByDue,
};
const JOBS: Index = Index {
    ids: Kind::Jobs,
    by: Kind::JobsByDue,
};
const EXTERNAL_JOBS: Index = Index {
    ids: Kind::ExternalJobs,
    by: Kind::ExternalJobsByType,
};
const TASKS: Index = Index {
    ids: Kind::Tasks,
    by: Kind::TasksByCreation,
};
const SUBSCRIPTIONS: Index = Index {
    ids: Kind::Subscriptions,
    by: Kind::SubscriptionsByTopic,
};
const MESSAGES: Index = Index {
    ids: Kind::Messages,
    by: Kind::MessagesByTopic,
};
const TOKENS: Index = Index {
    ids: Kind::Tokens,
    by: Kind::TokensByCreation,
};

/// `order + id`: the key in the ordered table of the record whose id key is `id`.
fn ordered(order: &[u8], id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(order.len() + id.len());
    key.extend_from_slice(order);
    key.extend_from_slice(id);
    key
}

/// How to open a `RedbStore`.
#[derive(Clone, Debug)]
pub struct RedbOptions {
    /// The data folder; created if missing. The database is the file `ciclo.redb` in it.
    pub path: PathBuf,
    /// Bytes of redb's page cache.
    pub cache_size: usize,
}

impl RedbOptions {
    /// Default cache: 64 MiB, as for sled: the working set of many thousands of waiting
    /// instances while keeping the server's memory modest.
    pub const DEFAULT_CACHE_SIZE: usize = 64 * 1024 * 1024;

    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache_size: Self::DEFAULT_CACHE_SIZE,
        }
    }
}

/// Every redb error as a store error: redb's own corruption reports are `Corrupt`, the rest
/// is I/O (the disk, or the store's use of redb).
fn from_redb(error: impl Into<redb::Error>) -> StoreError {
    match error.into() {
        redb::Error::Corrupted(message) => StoreError::Corrupt(message),
        other => io(other),
    }
}

type Reply = mpsc::SyncSender<Result<usize>>;

/// A request to the committer, with where to send the answer.
enum Request {
    Commit(Batch, Reply),
    RemoveFinished(Timestamp, Reply),
}

/// The durable store in a redb file of a data folder. Dropping it drains and stops the
/// committer.
pub struct RedbStore {
    db: Arc<Database>,
    requests: Option<mpsc::Sender<Request>>,
    committer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish()
    }
}

impl RedbStore {
    /// Opens (or creates) the store in the folder `options.path` and starts its committer.
    ///
    /// Fails with `StoreError::Locked` if another process (or another `RedbStore` in this
    /// one) has the file open.
    pub fn open(options: RedbOptions) -> Result<Self> {
        let path = options.path;
        std::fs::create_dir_all(&path)
            .map_err(|e| io(format!("cannot create folder {}: {e}", path.display())))?;
        let db = Database::builder()
            .set_cache_size(options.cache_size)
            .create(path.join(FILE))
            .map_err(|error| match error {
                // redb holds an exclusive lock on the file while it is open.
                DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::Locked(path.display().to_string())
                }
                other => from_redb(other),
            })?;
        // A new folder's entries (the database file itself) must be durable too.
        std::fs::File::open(&path)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io(format!("cannot sync folder {}: {e}", path.display())))?;
        // Every table exists from the start, so readers never meet a missing one.
        let txn = db.begin_write().map_err(from_redb)?;
        for kind in Kind::ALL {
            txn.open_table(kind.table()).map_err(from_redb)?;
        }
        txn.commit().map_err(from_redb)?;

        let db = Arc::new(db);
        let next_message_seq = next_message_seq(&Snapshot(db.begin_read().map_err(from_redb)?))?;
        let counters = Arc::new(Counters::default());
        let (requests, inbox) = mpsc::channel();
        let committer = Committer {
            db: db.clone(),
            counters: counters.clone(),
            next_message_seq,
        };
        let committer = std::thread::Builder::new()
            .name("ciclo-store-committer".into())
            .spawn(move || committer.run(inbox))
            .map_err(|e| io(format!("cannot start the committer thread: {e}")))?;
        Ok(Self {
            db,
            requests: Some(requests),
            committer: Some(committer),
            counters,
            path,
        })
    }

    /// Commits and group flushes (durable transactions) so far.
    pub fn stats(&self) -> StoreStats {
        self.counters.stats()
    }

    /// Stops the committer after it answered every pending request. Every answered commit is
    /// already durable, so there is nothing left to flush; this only reports a committer that
    /// died.
    pub fn close(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        // Closing the channel ends the committer's loop once the queue is empty.
        drop(self.requests.take());
        match self.committer.take() {
            Some(handle) => handle
                .join()
                .map_err(|_| io("the committer thread panicked")),
            None => Ok(()),
        }
    }

    fn ask(&self, request: impl FnOnce(Reply) -> Request) -> Result<usize> {
        let (reply, answer) = mpsc::sync_channel(1);
        let stopped = || io("the store is closed: its committer stopped");
        self.requests
            .as_ref()
            .ok_or_else(stopped)?
            .send(request(reply))
            .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }

    /// A snapshot of the last committed group.
    fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot(self.db.begin_read().map_err(from_redb)?))
    }

    /// One value, in its own snapshot.
    fn get(&self, kind: Kind, key: &[u8]) -> Result<Option<Vec<u8>>> {
        get(&self.snapshot()?.table(kind)?, key)
    }

    /// Decodes every record under `prefix` in one table, in key order.
    fn scan<T: Stored>(&self, kind: Kind, prefix: &[u8], what: &str) -> Result<Vec<T>> {
        let mut found = Vec::new();
        scan_prefix(&self.snapshot()?.table(kind)?, prefix, |key, value| {
            found.push(decode(what, key, value)?);
            Ok(true)
        })?;
        Ok(found)
    }

    /// Records listed through an index: every id under `prefix` in `index.ids`, each
    /// pointing at its record in `index.by`.
    fn through_index<T: Stored>(&self, index: Index, prefix: &[u8], what: &str) -> Result<Vec<T>> {
        let snapshot = self.snapshot()?;
        let (ids, by) = (snapshot.table(index.ids)?, snapshot.table(index.by)?);
        let mut found = Vec::new();
        scan_prefix(&ids, prefix, |id, order| {
            found.push(indexed(&by, id, order, what)?);
            Ok(true)
        })?;
        Ok(found)
    }

    /// One record found by id through its index.
    fn by_id<T: Stored>(&self, index: Index, id: &[u8], what: &str) -> Result<Option<T>> {
        let snapshot = self.snapshot()?;
        match get(&snapshot.table(index.ids)?, id)? {
            Some(order) => indexed(&snapshot.table(index.by)?, id, &order, what).map(Some),
            None => Ok(None),
        }
    }

    /// Records in the time-ordered table `by` due at or before `until`, earliest first,
    /// that pass `keep`, at most `limit`.
    fn due<T: Stored>(
        &self,
        by: Kind,
        until: Timestamp,
        limit: usize,
        what: &str,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>> {
        // Every key of a time-ordered table is `16 time bytes + id`: stop at the first later.
        let until = time_bytes(until);
        let mut found = Vec::new();
        scan_prefix(&self.snapshot()?.table(by)?, &[], |key, value| {
            if found.len() >= limit {
                return Ok(false);
            }
            let time = key.get(..16).ok_or_else(|| {
                StoreError::Corrupt(format!("{what} index key too short: {}", show(key)))
            })?;
            if time > &until[..] {
                return Ok(false);
            }
            let record: T = decode(what, key, value)?;
            if keep(&record) {
                found.push(record);
            }
            Ok(true)
        })?;
        Ok(found)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::error!(%error, path = %self.path.display(), "closing the store failed");
        }
    }
}

/// A read transaction: everything read through one snapshot is from the same committed group.
struct Snapshot(ReadTransaction);

impl Snapshot {
    fn table(&self, kind: Kind) -> Result<ReadOnlyTable<Bytes, Bytes>> {
        self.0.open_table(kind.table()).map_err(from_redb)
    }
}

fn get(table: &impl ReadableTable<Bytes, Bytes>, key: &[u8]) -> Result<Option<Vec<u8>>> {
    Ok(table
        .get(key)
        .map_err(from_redb)?
        .map(|value| value.value().to_vec()))
}

/// Calls `each(key, value)` for every entry whose key starts with `prefix`, in key order,
/// until it returns `false` or fails.
fn scan_prefix(
    table: &impl ReadableTable<Bytes, Bytes>,
    prefix: &[u8],
    mut each: impl FnMut(&[u8], &[u8]) -> Result<bool>,
) -> Result<()> {
    for entry in table.range(prefix..).map_err(from_redb)? {
        let (key, value) = entry.map_err(from_redb)?;
        let key = key.value();
        if !key.starts_with(prefix) || !each(key, value.value())? {
            break;
        }
    }
    Ok(())
}

/// The record that the id key `id`, whose value is `order`, points to in the ordered table.
fn indexed<T: Stored>(
    by: &impl ReadableTable<Bytes, Bytes>,
    id: &[u8],
    order: &[u8],
    what: &str,
) -> Result<T> {
    let key = ordered(order, id);
    match get(by, &key)? {
        Some(value) => decode(what, &key, &value),
        None => Err(StoreError::Corrupt(format!(
            "{what} {} has no index entry {}",
            show(id),
            show(&key)
        ))),
    }
}

/// The next message sequence: one past both the recorded counter and the highest stored
/// message, so a sequence is never given twice.
fn next_message_seq(snapshot: &Snapshot) -> Result<u64> {
    let recorded = match get(&snapshot.table(Kind::Meta)?, NEXT_MESSAGE_SEQ)? {
        Some(bytes) => read_u64(&bytes, "the next message sequence")?,
        None => 1,
    };
    let highest = match snapshot.table(Kind::Messages)?.last().map_err(from_redb)? {
        Some((key, _)) => read_u64(key.value(), "a message sequence")? + 1,
        None => 1,
    };
    Ok(recorded.max(highest))
}

// ---------------------------------------------------------------------------------------------
// The committer

struct Committer {
    db: Arc<Database>,
    counters: Arc<Counters>,
    next_message_seq: u64,
}

/// Writes waiting to be applied, in key order: a value to put, or `None` to delete.
type Pending = BTreeMap<(Kind, Vec<u8>), Option<Vec<u8>>>;

/// Every table, open for writing in one transaction, indexed by `Kind as usize`.
struct Tables<'txn>(Vec<Table<'txn, Bytes, Bytes>>);

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        Kind::ALL
            .iter()
            .map(|kind| txn.open_table(kind.table()).map_err(from_redb))
            .collect::<Result<_>>()
            .map(Tables)
    }

    fn get(&self, kind: Kind) -> &Table<'txn, Bytes, Bytes> {
        &self.0[kind as usize]
    }

    /// Writes a batch built by `Writes`, in key order.
    fn apply(&mut self, pending: Pending) -> Result<()> {
        for ((kind, key), value) in pending {
            let table = &mut self.0[kind as usize];
            match value {
                Some(value) => drop(table.insert(&key[..], &value[..]).map_err(from_redb)?),
                None => drop(table.remove(&key[..]).map_err(from_redb)?),
            }
        }
        Ok(())
    }
}

/// Opens a write transaction whose commit is durable when it returns.
fn begin_durable(db: &Database) -> Result<WriteTransaction> {
    let mut txn = db.begin_write().map_err(from_redb)?;
    txn.set_durability(Durability::Immediate)
        .map_err(from_redb)?;
    Ok(txn)
}

impl Committer {
    fn run(mut self, inbox: mpsc::Receiver<Request>) {
        while let Ok(first) = inbox.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match inbox.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            // Commits share a transaction; a removal runs alone, after the commits before it
            // and before those after it, in transactions of its own.
            let mut commits = Vec::new();
            for request in group {
                match request {
                    Request::Commit(batch, reply) => commits.push((batch, reply)),
                    Request::RemoveFinished(before, reply) => {
                        self.commit_group(std::mem::take(&mut commits));
                        // A waiter that went away needs no answer.
                        let _ = reply.send(self.remove_finished(before));
                    }
                }
            }
            self.commit_group(commits);
        }
    }

    /// Applies every batch of `group` in one durable transaction, then answers each waiter.
    fn commit_group(&mut self, group: Vec<(Batch, Reply)>) {
        if group.is_empty() {
            return;
        }
        let (batches, replies): (Vec<Batch>, Vec<Reply>) = group.into_iter().unzip();
        let commits = batches.len() as u64;
        let applying = Instant::now();
        let mut flushing = None;
        let outcome = self.write_group(batches, &mut flushing);
        let committed = Instant::now();
        let flushing = flushing.unwrap_or(committed);
        self.counters
            .apply_micros
            .fetch_add((flushing - applying).as_micros() as u64, Ordering::Relaxed);
        self.counters
            .flush_micros
            .fetch_add((committed - flushing).as_micros() as u64, Ordering::Relaxed);
        self.counters.commits.fetch_add(commits, Ordering::Relaxed);
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer.map(|()| 0));
                }
            }
            // The transaction was not committed: nothing of the group happened.
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// The group's transaction: each batch's own outcome, or the error that sank the group.
    /// `flushing` is set when the durable commit starts, for the statistics.
    fn write_group(
        &mut self,
        batches: Vec<Batch>,
        flushing: &mut Option<Instant>,
    ) -> Result<Vec<Result<()>>> {
        let txn = begin_durable(&self.db)?;
        let answers = {
            let mut tables = Tables::open(&txn)?;
            // Sequences given to a batch that then fails are not taken back: a gap is
            // harmless, a sequence given twice is not.
            let seq_before = self.next_message_seq;
            let mut answers = Vec::with_capacity(batches.len());
            for batch in batches {
                match self.build(&tables, batch) {
                    Ok(pending) => {
                        // A failure here leaves part of a batch in the transaction, so the
                        // whole group fails and the transaction is dropped (aborted).
                        tables.apply(pending)?;
                        answers.push(Ok(()));
                    }
                    Err(error) => answers.push(Err(error)),
                }
            }
            if self.next_message_seq != seq_before {
                let next = self.next_message_seq.to_be_bytes();
                tables.0[Kind::Meta as usize]
                    .insert(NEXT_MESSAGE_SEQ, &next[..])
                    .map_err(from_redb)?;
            }
            answers
        };
        *flushing = Some(Instant::now());
        txn.commit().map_err(from_redb)?;
        Ok(answers)
    }

    /// The writes of one batch, built without touching the transaction.
    fn build(&mut self, tables: &Tables<'_>, batch: Batch) -> Result<Pending> {
        let mut writes = Writes {
            tables,
            pending: BTreeMap::new(),
        };
        // History lines of one batch go under one key per instance: redb's cost is per key
        // written too, and a step of an instance typically writes several lines at once.
        let mut history: Vec<(InstanceId, Vec<HistoryRecord>)> = Vec::new();
        for op in batch.ops {
            self.op(&mut writes, &mut history, op)?;
        }
        for (instance, mut lines) in history {
            lines.sort_by_key(|h| h.seq);
            let first = lines.first().map(|h| h.seq).unwrap_or_default();
            let key = Key::empty().id(instance).u64(first).into_bytes();
            writes.put(Kind::History, key, encode_history(&lines)?);
        }
        Ok(writes.pending)
    }

    fn op(
        &mut self,
        w: &mut Writes<'_, '_>,
        history: &mut Vec<(InstanceId, Vec<HistoryRecord>)>,
        op: Op,
    ) -> Result<()> {
        match op {
            Op::PutDefinition(d) => {
                let key = Key::empty().str(&d.process).u32(d.version).into_bytes();
                w.put(Kind::Definitions, key, encode("definition", &d)?);
            }
            Op::PutInstance(i) => {
                let key = Key::empty().id(i.id).into_bytes();
                w.put(Kind::Instances, key, encode("instance", &i)?);
            }
            Op::PutTimer(t) => {
                let id = Key::empty().id(t.instance).u64(t.timer).into_bytes();
                let record = encode("timer", &t)?;
                w.put_ordered(TIMERS, id, &time_bytes(t.due), record)?;
            }
            Op::DeleteTimer { instance, timer } => {
                let id = Key::empty().id(instance).u64(timer).into_bytes();
                w.delete_ordered(TIMERS, id)?;
            }
            Op::PutJob(j) => {
                // A job's connector never changes, so it stays in the same pair of tables.
                let id = Key::empty().id(j.instance).u64(j.job).into_bytes();
                let record = encode("job", &j)?;
                if j.is_external() {
                    let order = Key::empty().str(&j.operation).raw(&time_bytes(j.due));
                    w.put_ordered(EXTERNAL_JOBS, id, &order.into_bytes(), record)?;
                } else {
                    w.put_ordered(JOBS, id, &time_bytes(j.due), record)?;
                }
            }
            Op::DeleteJob { instance, job } => {
                let id = Key::empty().id(instance).u64(job).into_bytes();
                w.delete_ordered(JOBS, id.clone())?;
                w.delete_ordered(EXTERNAL_JOBS, id)?;
            }
            Op::PutTask(t) => {
                let id = Key::empty().id(t.instance).u64(t.task).into_bytes();
                let order = time_bytes(t.created_at);
                w.put_ordered(TASKS, id, &order, encode("task", &t)?)?;
            }
            Op::DeleteTask { instance, task } => {
                let id = Key::empty().id(instance).u64(task).into_bytes();
                w.delete_ordered(TASKS, id)?;
            }
            Op::PutSubscription(s) => {
                let id = Key::empty().id(s.instance).u64(s.subscription).into_bytes();
                let order = topic(&s.name, &s.key);
                let record = encode("subscription", &s)?;
                w.put_ordered(SUBSCRIPTIONS, id, &order, record)?;
            }
            Op::DeleteSubscription {
                instance,
                subscription,
            } => {
                let id = Key::empty().id(instance).u64(subscription).into_bytes();
                w.delete_ordered(SUBSCRIPTIONS, id)?;
            }
            Op::PutMessage(mut m) => {
                m.seq = self.next_message_seq;
                self.next_message_seq += 1;
                // The ordered key is `(name, key, seq)`: the id key is exactly the sequence.
                let id = Key::empty().u64(m.seq).into_bytes();
                let order = topic(&m.name, &m.key);
                let record = encode("message", &m)?;
                w.put_ordered(MESSAGES, id, &order, record)?;
            }
            Op::DeleteMessage { seq } => {
                let id = Key::empty().u64(seq).into_bytes();
                w.delete_ordered(MESSAGES, id)?;
            }
            Op::PutMessageId { id, until } => {
                let until = time_bytes(until).to_vec();
                w.put(Kind::MessageIds, id.into_bytes(), until);
            }
            Op::PutIncident(i) => {
                let key = Key::empty().id(i.instance).u64(i.incident).into_bytes();
                w.put(Kind::Incidents, key, encode("incident", &i)?);
            }
            Op::DeleteIncident { instance, incident } => {
                let key = Key::empty().id(instance).u64(incident).into_bytes();
                w.delete(Kind::Incidents, key);
            }
            Op::AppendHistory(h) => match history.iter_mut().find(|(i, _)| *i == h.instance) {
                Some((_, lines)) => lines.push(h),
                None => history.push((h.instance, vec![h])),
            },
            Op::PutRequestKey { key, instance } => {
                let value = instance.as_bytes().to_vec();
                w.put(Kind::RequestKeys, key.into_bytes(), value);
            }
            Op::PutUser(u) => {
                let key = Key::empty().str(&u.name).into_bytes();
                w.put(Kind::Users, key, encode("user", &u)?);
            }
            Op::DeleteUser { name } => {
                w.delete(Kind::Users, Key::empty().str(&name).into_bytes());
            }
            Op::PutToken(t) => {
                let id = Key::empty().str(&t.hash).into_bytes();
                let order = time_bytes(t.created_at);
                w.put_ordered(TOKENS, id, &order, encode("token", &t)?)?;
            }
            Op::DeleteToken { hash } => {
                let id = Key::empty().str(&hash).into_bytes();
                w.delete_ordered(TOKENS, id)?;
            }
            Op::PutLink(link) => {
                let key = Key::empty().str(&link.hash).into_bytes();
                w.put(Kind::Links, key, encode("link", &link)?);
            }
            Op::PutRotation(rotation) => {
                let key = Key::empty().str(&rotation.name).into_bytes();
                w.put(Kind::Rotations, key, encode("rotation", &rotation)?);
            }
            Op::PutSession(session) => {
                let key = Key::empty().str(&session.hash).into_bytes();
                w.put(Kind::Sessions, key, encode("session", &session)?);
            }
            Op::DeleteSession { hash } => {
                w.delete(Kind::Sessions, Key::empty().str(&hash).into_bytes());
            }
        }
        Ok(())
    }

    /// Removes finished instances that ended before `before`, with everything they own, in
    /// durable transactions of `REMOVAL_CHUNK` instances.
    fn remove_finished(&mut self, before: Timestamp) -> Result<usize> {
        // Only the committer writes, so what this snapshot shows stays true while it removes.
        let mut doomed = Vec::new();
        {
            let snapshot = Snapshot(self.db.begin_read().map_err(from_redb)?);
            scan_prefix(&snapshot.table(Kind::Instances)?, &[], |key, value| {
                let instance: InstanceRecord = decode("instance", key, value)?;
                if instance.finished_before(before) {
                    doomed.push(instance.id);
                }
                Ok(true)
            })?;
        }
        for chunk in doomed.chunks(REMOVAL_CHUNK) {
            let started = Instant::now();
            let txn = begin_durable(&self.db)?;
            {
                let mut tables = Tables::open(&txn)?;
                for &instance in chunk {
                    remove_instance(&mut tables, instance)?;
                }
            }
            txn.commit().map_err(from_redb)?;
            self.counters
                .flush_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(doomed.len())
    }
}

/// Deletes an instance and everything it owns from the open tables.
fn remove_instance(tables: &mut Tables<'_>, instance: InstanceId) -> Result<()> {
    let prefix = Key::empty().id(instance).into_bytes();
    let mut pending = BTreeMap::new();
    pending.insert((Kind::Instances, prefix.clone()), None);
    for own in [Kind::History, Kind::Incidents] {
        scan_prefix(tables.get(own), &prefix, |key, _| {
            pending.insert((own, key.to_vec()), None);
            Ok(true)
        })?;
    }
    for index in [TIMERS, JOBS, EXTERNAL_JOBS, TASKS, SUBSCRIPTIONS] {
        scan_prefix(tables.get(index.ids), &prefix, |id, order| {
            pending.insert((index.by, ordered(order, id)), None);
            pending.insert((index.ids, id.to_vec()), None);
            Ok(true)
        })?;
    }
    tables.apply(pending)
}

/// The writes of one batch being built: later ops read what earlier ops of the same batch
/// wrote (a timer put then deleted), and what earlier batches of the group applied.
struct Writes<'a, 'txn> {
    tables: &'a Tables<'txn>,
    pending: Pending,
}

impl Writes<'_, '_> {
    fn get(&self, kind: Kind, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.pending.get(&(kind, key.to_vec())) {
            Some(pending) => Ok(pending.clone()),
            None => get(self.tables.get(kind), key),
        }
    }

    fn put(&mut self, kind: Kind, key: Vec<u8>, value: Vec<u8>) {
        self.pending.insert((kind, key), Some(value));
    }

    fn delete(&mut self, kind: Kind, key: Vec<u8>) {
        self.pending.insert((kind, key), None);
    }

    /// Puts a record listed in `index` under `order`: drops its old ordered entry if it
    /// moved, and points its id at the new one.
    fn put_ordered(
        &mut self,
        index: Index,
        id: Vec<u8>,
        order: &[u8],
        record: Vec<u8>,
    ) -> Result<()> {
        if let Some(old) = self.get(index.ids, &id)?
            && old != order
        {
            self.delete(index.by, ordered(&old, &id));
        }
        self.put(index.by, ordered(order, &id), record);
        self.put(index.ids, id, order.to_vec());
        Ok(())
    }

    fn delete_ordered(&mut self, index: Index, id: Vec<u8>) -> Result<()> {
        if let Some(old) = self.get(index.ids, &id)? {
            self.delete(index.by, ordered(&old, &id));
            self.delete(index.ids, id);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The trait

impl Store for RedbStore {
    fn commit(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.ask(|reply| Request::Commit(batch, reply)).map(|_| ())
    }

    fn definitions(&self) -> Result<Vec<DefinitionRecord>> {
        self.scan(Kind::Definitions, &[], "definition")
    }

    fn definition(&self, process: &str, version: u32) -> Result<Option<DefinitionRecord>> {
        let key = Key::empty().str(process).u32(version).into_bytes();
        self.get(Kind::Definitions, &key)?
            .map(|v| decode("definition", &key, &v))
            .transpose()
    }

    fn instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>> {
        let key = Key::empty().id(id).into_bytes();
        self.get(Kind::Instances, &key)?
            .map(|v| decode("instance", &key, &v))
            .transpose()
    }

    fn instances(&self, filter: &InstanceFilter) -> Result<Vec<InstanceRecord>> {
        let after = filter
            .after
            .map(|after| Key::empty().id(after).into_bytes());
        let limit = filter.effective_limit();
        let snapshot = self.snapshot()?;
        let table = snapshot.table(Kind::Instances)?;
        let mut found = Vec::new();
        // Ids are fixed-width, so starting at `after` and skipping it is "after `after`".
        let start = after.as_deref().unwrap_or_default();
        for entry in table.range(start..).map_err(from_redb)? {
            if found.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(from_redb)?;
            if Some(key.value()) == after.as_deref() {
                continue;
            }
            let instance: InstanceRecord = decode("instance", key.value(), value.value())?;
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
        self.due(Kind::TimersByDue, until, limit, "timer", |_| true)
    }

    fn next_timer(&self) -> Result<Option<TimerRecord>> {
        let table = self.snapshot()?.table(Kind::TimersByDue)?;
        match table.first().map_err(from_redb)? {
            Some((key, value)) => decode("timer", key.value(), value.value()).map(Some),
            None => Ok(None),
        }
    }

    fn timers_of(&self, instance: InstanceId) -> Result<Vec<TimerRecord>> {
        let prefix = Key::empty().id(instance).into_bytes();
        self.through_index(TIMERS, &prefix, "timer")
    }

    fn job(&self, instance: InstanceId, job: u64) -> Result<Option<JobRecord>> {
        let id = Key::empty().id(instance).u64(job).into_bytes();
        match self.by_id(JOBS, &id, "job")? {
            Some(found) => Ok(Some(found)),
            None => self.by_id(EXTERNAL_JOBS, &id, "external job"),
        }
    }

    fn due_jobs(&self, now: Timestamp, limit: usize) -> Result<Vec<JobRecord>> {
        self.due(Kind::JobsByDue, now, limit, "job", |job: &JobRecord| {
            job.is_free_at(now)
        })
    }

    fn jobs_of(&self, instance: InstanceId) -> Result<Vec<JobRecord>> {
        let prefix = Key::empty().id(instance).into_bytes();
        let mut jobs: Vec<JobRecord> = self.through_index(JOBS, &prefix, "job")?;
        let external: Vec<JobRecord> =
            self.through_index(EXTERNAL_JOBS, &prefix, "external job")?;
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
        // Keys are `type + 16 time bytes + id`: stop at the first one due later.
        let prefix = Key::empty().str(job_type).into_bytes();
        let until = time_bytes(now);
        let mut found = Vec::new();
        let snapshot = self.snapshot()?;
        scan_prefix(
            &snapshot.table(Kind::ExternalJobsByType)?,
            &prefix,
            |key, value| {
                if found.len() >= limit {
                    return Ok(false);
                }
                let time = key.get(prefix.len()..prefix.len() + 16).ok_or_else(|| {
                    StoreError::Corrupt(format!("external job key too short: {}", show(key)))
                })?;
                if time > &until[..] {
                    return Ok(false);
                }
                let job: JobRecord = decode("external job", key, value)?;
                if job.is_free_at(now) {
                    found.push(job);
                }
                Ok(true)
            },
        )?;
        Ok(found)
    }

    fn external_jobs(&self, limit: usize) -> Result<Vec<JobRecord>> {
        let mut found = Vec::new();
        let snapshot = self.snapshot()?;
        scan_prefix(
            &snapshot.table(Kind::ExternalJobsByType)?,
            &[],
            |key, value| {
                if found.len() >= limit {
                    return Ok(false);
                }
                found.push(decode("external job", key, value)?);
                Ok(true)
            },
        )?;
        Ok(found)
    }

    fn task(&self, instance: InstanceId, task: u64) -> Result<Option<TaskRecord>> {
        let id = Key::empty().id(instance).u64(task).into_bytes();
        self.by_id(TASKS, &id, "task")
    }

    fn tasks(&self, limit: usize) -> Result<Vec<TaskRecord>> {
        let mut found = Vec::new();
        scan_prefix(
            &self.snapshot()?.table(Kind::TasksByCreation)?,
            &[],
            |key, value| {
                if found.len() >= limit {
                    return Ok(false);
                }
                found.push(decode("task", key, value)?);
                Ok(true)
            },
        )?;
        Ok(found)
    }

    fn subscriptions(&self, name: &str, key: &str) -> Result<Vec<SubscriptionRecord>> {
        self.scan(
            Kind::SubscriptionsByTopic,
            &topic(name, key),
            "subscription",
        )
    }

    fn messages(&self, name: &str, key: &str) -> Result<Vec<MessageRecord>> {
        self.scan(Kind::MessagesByTopic, &topic(name, key), "message")
    }

    fn message_id_seen(&self, id: &str, now: Timestamp) -> Result<bool> {
        match self.get(Kind::MessageIds, id.as_bytes())? {
            Some(until) => Ok(now < read_time(&until, "a message id's expiry")?),
            None => Ok(false),
        }
    }

    fn incidents(&self) -> Result<Vec<IncidentRecord>> {
        self.scan(Kind::Incidents, &[], "incident")
    }

    fn incidents_of(&self, instance: InstanceId) -> Result<Vec<IncidentRecord>> {
        let prefix = Key::empty().id(instance).into_bytes();
        self.scan(Kind::Incidents, &prefix, "incident")
    }

    fn history(&self, instance: InstanceId) -> Result<Vec<HistoryRecord>> {
        let prefix = Key::empty().id(instance).into_bytes();
        let mut lines = Vec::new();
        scan_prefix(
            &self.snapshot()?.table(Kind::History)?,
            &prefix,
            |key, value| {
                decode_history(key, value, &mut lines)?;
                Ok(true)
            },
        )?;
        // Groups are keyed by their first line; lines of different groups could interleave
        // only if a caller numbered them so, and the order is by number all the same.
        lines.sort_by_key(|h: &HistoryRecord| h.seq);
        Ok(lines)
    }

    fn request_key(&self, key: &str) -> Result<Option<InstanceId>> {
        match self.get(Kind::RequestKeys, key.as_bytes())? {
            Some(bytes) => Uuid::from_slice(&bytes).map(Some).map_err(|e| {
                StoreError::Corrupt(format!("request key {}: {e}", show(key.as_bytes())))
            }),
            None => Ok(None),
        }
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let key = Key::empty().str(name).into_bytes();
        self.get(Kind::Users, &key)?
            .map(|v| decode("user", &key, &v))
            .transpose()
    }

    fn users(&self) -> Result<Vec<UserRecord>> {
        self.scan(Kind::Users, &[], "user")
    }

    fn token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let id = Key::empty().str(hash).into_bytes();
        self.by_id(TOKENS, &id, "token")
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.scan(Kind::TokensByCreation, &[], "token")
    }

    fn session(&self, hash: &str) -> Result<Option<SessionRecord>> {
        let key = Key::empty().str(hash).into_bytes();
        self.get(Kind::Sessions, &key)?
            .map(|v| decode("session", &key, &v))
            .transpose()
    }

    fn sessions(&self) -> Result<Vec<SessionRecord>> {
        self.scan(Kind::Sessions, &[], "session")
    }

    fn link(&self, hash: &str) -> Result<Option<LinkRecord>> {
        let key = Key::empty().str(hash).into_bytes();
        self.get(Kind::Links, &key)?
            .map(|v| decode("link", &key, &v))
            .transpose()
    }

    fn rotation(&self, name: &str) -> Result<Option<RotationRecord>> {
        let key = Key::empty().str(name).into_bytes();
        self.get(Kind::Rotations, &key)?
            .map(|v| decode("rotation", &key, &v))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{self, Fixture, at, commit, conformance_tests, id};

    fn redb() -> Fixture {
        let dir = tempfile::tempdir().expect("temporary folder");
        let store = RedbStore::open(RedbOptions::new(dir.path())).expect("open");
        Fixture {
            store: Box::new(store),
            keep: Some(Box::new(dir)),
        }
    }

    conformance_tests!(redb);

    fn open(path: &std::path::Path) -> Result<Box<dyn Store>> {
        Ok(Box::new(RedbStore::open(RedbOptions::new(path))?))
    }

    #[test]
    fn reopening_keeps_everything() {
        conformance::reopening_keeps_everything(&open);
    }

    #[test]
    fn a_folder_in_use_is_locked() {
        conformance::a_folder_in_use_is_locked(&open);
    }

    #[test]
    fn acknowledged_commits_survive_sigkill() {
        conformance::acknowledged_commits_survive_sigkill(
            "store::redb::tests::acknowledged_commits_survive_sigkill",
            &open,
        );
    }

    #[test]
    fn the_data_folder_is_created_and_holds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("nested");
        let store = RedbStore::open(RedbOptions::new(&path)).unwrap();
        store.close().unwrap();
        assert!(path.join(FILE).is_file());
    }

    #[test]
    fn concurrent_commits_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(RedbOptions::new(dir.path())).unwrap();
        conformance::concurrent_commits_share_flushes(&store, || store.stats());
    }

    /// Writes `value` under `key` in `kind` behind the committer's back, as a disk fault or
    /// a bug would.
    fn damage(store: &RedbStore, kind: Kind, key: Vec<u8>, value: &[u8]) {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(kind.table())
            .unwrap()
            .insert(&key[..], value)
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn bad_records_are_corrupt_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(RedbOptions::new(dir.path())).unwrap();
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
        let garbage = [0xFFu8; 3];
        let instance_key = Key::empty().id(i).into_bytes();
        damage(&store, Kind::Instances, instance_key.clone(), &garbage);
        let history_key = Key::empty().id(i).u64(1).into_bytes();
        damage(&store, Kind::History, history_key, &garbage);
        damage(&store, Kind::RequestKeys, b"k".to_vec(), &garbage);
        damage(&store, Kind::MessageIds, b"m".to_vec(), &garbage);
        damage(
            &store,
            Kind::Jobs,
            Key::empty().id(i).u64(1).into_bytes(),
            &[0; 16],
        );
        let timer_id = Key::empty().id(i).u64(1).into_bytes();
        let timer_key = ordered(&time_bytes(at(5)), &timer_id);
        damage(&store, Kind::TimersByDue, timer_key, &garbage);
        damage(
            &store,
            Kind::Users,
            Key::empty().str("anna").into_bytes(),
            &garbage,
        );
        damage(
            &store,
            Kind::Tokens,
            Key::empty().str("ab").into_bytes(),
            &[0; 16],
        );
        let token_id = Key::empty().str("cd").into_bytes();
        let token_key = ordered(&time_bytes(at(5)), &token_id);
        damage(&store, Kind::TokensByCreation, token_key, &garbage);

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
        // A damaged message counter is reported when the store opens, not trusted.
        damage(&store, Kind::Meta, NEXT_MESSAGE_SEQ.to_vec(), &garbage);
        store.close().unwrap();
        match RedbStore::open(RedbOptions::new(dir.path())) {
            Err(StoreError::Corrupt(message)) => {
                assert!(message.contains("message sequence"), "{message}")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
