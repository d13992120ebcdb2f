//! The engine core: loads state from the store, runs the state machine, turns its commands
//! into store changes, and commits them as one atomic, durable batch.
//!
//! Every public call is one transaction (`Tx`): an event and everything it causes — a child
//! instance started by a call activity, a buffered message delivered to a new subscription, a
//! parent woken by its child — are written together or not at all, and the call returns only
//! once that write is durable. Calls are blocking; the async `Runtime` runs them on tokio's
//! blocking threads.
//!
//! Concurrency: each instance is guarded by one of a fixed set of striped locks, held from load
//! to durable commit, so two events of one instance never interleave while different
//! instances proceed in parallel and share the store's group commit. Message correlation and
//! subscribing take one more lock (`correlation`), always before instance locks, so a message
//! and a new subscription for it cannot miss each other.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::auth::{self, hash_secret};
use crate::diagnostics::Problem;
use crate::machine::{
    self, Applied, ChildOutcome, Command, Event, InstanceState, MachineError, ParentLink,
    StartRequest,
};
use crate::model::{Definition, StartTrigger};
use crate::parse::{self, Catalog};
use crate::store::{
    Batch, DefinitionRecord, HistoryRecord, IncidentRecord, InstanceId, InstanceRecord,
    InstanceStatus, JobRecord, LinkRecord, LinkUse, MessageRecord, Op, Role, SessionRecord, Store,
    StoreError, SubscriptionRecord, TaskRecord, TimerRecord, TokenRecord, UserRecord,
};
use crate::value::{Value, Vars};

use super::Clock;

mod external;
mod identity;
mod rotation;
pub use external::{ExternalAnswer, LockedJob, MAX_FETCH, MAX_LEASE};
pub use identity::Arrival;
pub use rotation::ASSIGN_CONNECTOR;

/// What a caller of the engine did wrong, or what failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the definition has problems:\n{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    #[error("no process `{0}` is deployed")]
    UnknownProcess(String),
    #[error("process `{process}` has no version {version}")]
    UnknownVersion { process: String, version: u32 },
    #[error("no instance {0}")]
    UnknownInstance(InstanceId),
    #[error("instance {instance} has no open task {task}")]
    UnknownTask { instance: InstanceId, task: u64 },
    #[error("task {task} of instance {instance} is already claimed by {assignee}")]
    TaskTaken {
        instance: InstanceId,
        task: u64,
        assignee: String,
    },
    #[error("instance {instance} has no open incident {incident}")]
    UnknownIncident { instance: InstanceId, incident: u64 },
    #[error(
        "process `{0}` has no start that a person or the API can trigger (it starts on a message or a timer)"
    )]
    NoPlainStart(String),
    #[error(
        "the request key `{key}` was used for another start (instance {instance}): use a new key for a new start"
    )]
    RequestKeyReused { key: String, instance: InstanceId },
    #[error("{0}")]
    BadInput(String),
    #[error("the message cannot be taken: {0}")]
    BadMessage(String),
    #[error(transparent)]
    Refused(#[from] MachineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored state of instance {0} cannot be read: {1}")]
    Corrupt(InstanceId, String),
    #[error("bad user: {0}")]
    BadUser(String),
    #[error("no external job {job} of instance {instance}")]
    JobNotFound { instance: InstanceId, job: u64 },
    #[error(
        "the lease on job {job} of instance {instance} ran out: the job may go to another worker"
    )]
    LeaseExpired { instance: InstanceId, job: u64 },
    #[error("job {job} of instance {instance}: {reason}")]
    LeaseNotHeld {
        instance: InstanceId,
        job: u64,
        reason: String,
    },
    /// The operating system could not give random bytes for a token's secret.
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Named points where a test can stop the engine (crash tests): the hook is called with the
/// point's name and may block or abort.
pub type Failpoint = Arc<dyn Fn(&str) + Send + Sync>;

/// The result of deploying a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployed {
    pub process: String,
    pub version: u32,
    /// True when the same text was already the latest version: nothing new was stored.
    pub unchanged: bool,
}

/// Options of a start.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    pub vars: Vars,
    pub business_key: Option<String>,
    /// A start with a request key seen before returns the instance it created then.
    pub request_key: Option<String>,
    pub actor: Option<String>,
    /// A specific version (default: the latest).
    pub version: Option<u32>,
}

/// A message to correlate.
#[derive(Clone, Debug, Default)]
pub struct Message {
    pub name: String,
    pub key: String,
    pub vars: Vars,
    /// A message id seen before (and still remembered) is ignored.
    pub id: Option<String>,
    /// How long the message waits for a subscriber when none waits yet (none: not buffered).
    pub ttl: Option<SignedDuration>,
}

/// What happened to a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Correlation {
    /// Delivered to these waiting instances.
    Delivered(Vec<InstanceId>),
    /// Started an instance of a process with a message start event.
    Started(InstanceId),
    /// Nobody waits yet: kept until its time to live runs out.
    Buffered,
    /// Its id was seen before: ignored.
    Duplicate,
    /// Nobody waits and it has no time to live left: dropped.
    Dropped,
}

/// What a connector answered for one attempt of a job.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    Done(Vars),
    /// A technical failure (retried while retries are left).
    Failed(String),
    /// A business answer the process can catch with an error boundary event.
    BusinessError {
        code: String,
        message: String,
    },
}

/// What `Engine::complete_task_by_link` did.
#[derive(Clone, Debug, PartialEq)]
pub enum LinkOutcome {
    /// The task was completed; the link and its siblings are now used.
    Done(LinkUse),
    /// No link has this hash.
    Unknown,
    /// The link (or a sibling) was used before: nothing changed.
    Used(LinkUse),
    /// The link expired: nothing changed.
    Expired,
    /// The task is no longer open (decided another way): nothing changed.
    TaskClosed,
}

/// How long message ids are remembered for de-duplication, at least.
const MESSAGE_ID_MEMORY: SignedDuration = SignedDuration::from_hours(24 * 7);

/// The system connector that carries work between instances (waking a parent, cancelling a
/// child) through the durable job queue when the other instance is not in the same write.
pub const SYSTEM_CONNECTOR: &str = "ciclo";

#[derive(Default)]
struct Definitions {
    by_version: HashMap<(String, u32), Arc<Definition>>,
    latest: HashMap<String, u32>,
    /// Table library files, by file name: their latest text.
    table_files: HashMap<String, String>,
    /// Data files, by `data/<file name>`: their latest text.
    data_files: HashMap<String, String>,
    /// Processes with message start events, by message name.
    message_starts: HashMap<String, Vec<(String, usize)>>,
}

/// The engine: definitions, the store and the transaction logic.
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    catalog: Catalog,
    defs: RwLock<Definitions>,
    locks: Box<[Mutex<()>]>,
    /// Guards starts with a request key (separate from `locks`: a start holds both).
    key_locks: Box<[Mutex<()>]>,
    correlation: Mutex<()>,
    /// Held by a round-robin pick from reading the rotation to the durable write of the job
    /// answer that moves it (`rotation.rs`), so two picks never take the same turn. Taken
    /// before any other lock.
    rotation: Mutex<()>,
    deploy_lock: Mutex<()>,
    failpoint: Option<Failpoint>,
    /// Woken when a timer or job is written, so the runtime's loops look again.
    pub(crate) wake: tokio::sync::Notify,
    /// Woken when an external job is written (created, retried or released), so that
    /// long-polling workers look again.
    external: tokio::sync::Notify,
}

const LOCK_STRIPES: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a stripe cannot leave half-written state behind (the state is
    // written only through the store's atomic commit), so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// Opens an engine over a store, loading every deployed definition.
    pub fn open(store: Arc<dyn Store>, clock: Arc<dyn Clock>, catalog: Catalog) -> Result<Engine> {
        let engine = Engine {
            store,
            clock,
            catalog,
            defs: RwLock::new(Definitions::default()),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            key_locks: (0..64).map(|_| Mutex::new(())).collect(),
            correlation: Mutex::new(()),
            rotation: Mutex::new(()),
            deploy_lock: Mutex::new(()),
            failpoint: None,
            wake: tokio::sync::Notify::new(),
            external: tokio::sync::Notify::new(),
        };
        let mut records = engine.store.definitions()?;
        // In the order they were deployed, so that each version loads with the table
        // libraries and data files it was deployed with; at the same instant, libraries and
        // data first (processes use them).
        records.sort_by_key(|r| {
            (
                r.deployed_at,
                !(r.process.starts_with(TABLES_PREFIX) || r.process.starts_with(DATA_PREFIX)),
                r.process.clone(),
                r.version,
            )
        });
        for record in records {
            engine.install(&record).map_err(|problems| {
                EngineError::Store(StoreError::Corrupt(format!(
                    "deployed definition {} v{} no longer loads: {}",
                    record.process,
                    record.version,
                    problems
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )))
            })?;
        }
        Ok(engine)
    }

    /// Sets a hook called at named points (`job-returned`, `timer-firing`), for crash tests
    /// and tests that hold a firing in flight.
    pub fn with_failpoint(mut self, failpoint: Failpoint) -> Engine {
        self.failpoint = Some(failpoint);
        self
    }

    /// Wakes the runtime's loops to look for due timers and jobs now (for example after a
    /// manual clock moved).
    pub fn nudge(&self) {
        self.wake.notify_waiters();
    }

    /// Notified whenever an external job is written, for workers that wait for jobs (long
    /// polling). A lease that runs out or a backoff that ends notifies nothing: waiters look
    /// again now and then as well.
    pub fn external_jobs_written(&self) -> &tokio::sync::Notify {
        &self.external
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    fn failpoint(&self, name: &str) {
        if let Some(f) = &self.failpoint {
            f(name);
        }
    }

    fn stripe(&self, id: InstanceId) -> &Mutex<()> {
        let bytes = id.as_bytes();
        // v7 ids start with a timestamp; the random tail spreads them over the stripes.
        let h = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or([0; 8]));
        &self.locks[(h % LOCK_STRIPES as u64) as usize]
    }

    // ----- definitions ------------------------------------------------------------------

    /// The latest version of a process.
    pub fn definition(&self, process: &str) -> Option<(u32, Arc<Definition>)> {
        let defs = self.defs.read().unwrap_or_else(|e| e.into_inner());
        let version = *defs.latest.get(process)?;
        defs.by_version
            .get(&(process.to_string(), version))
            .map(|d| (version, d.clone()))
    }

    pub fn definition_version(&self, process: &str, version: u32) -> Option<Arc<Definition>> {
        let defs = self.defs.read().unwrap_or_else(|e| e.into_inner());
        defs.by_version
            .get(&(process.to_string(), version))
            .cloned()
    }

    /// Every deployed process with its latest version.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let defs = self.defs.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = defs.latest.iter().map(|(k, v)| (k.clone(), *v)).collect();
        out.sort();
        out
    }

    fn table_sources(&self) -> Vec<(String, String)> {
        let defs = self.defs.read().unwrap_or_else(|e| e.into_inner());
        let mut files: Vec<_> = defs
            .table_files
            .iter()
            .chain(defs.data_files.iter())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        files.sort();
        files
    }

    /// Parses a file together with the deployed table libraries.
    fn parse(&self, file: &str, source: &str) -> std::result::Result<parse::Library, Vec<Problem>> {
        let mut files = self.table_sources();
        // A table library is known by its file's name, wherever it was deployed from
        // (`examples/lead-tables.yaml` at start, `processes/examples/lead-tables.yaml` from a
        // terminal): deploying it again replaces it instead of declaring its tables twice.
        files.retain(|(f, _)| library_key(f) != library_key(file));
        files.push((file.to_string(), source.to_string()));
        let library = parse::load(&files, &self.catalog);
        let own: Vec<Problem> = library
            .problems
            .iter()
            .filter(|p| p.file == file)
            .cloned()
            .collect();
        if !own.is_empty() {
            return Err(own);
        }
        Ok(library)
    }

    /// Installs a stored definition record in memory.
    fn install(&self, record: &DefinitionRecord) -> std::result::Result<(), Vec<Problem>> {
        if record.process.starts_with(DATA_PREFIX) {
            let mut defs = self.defs.write().unwrap_or_else(|e| e.into_inner());
            defs.data_files
                .insert(library_key(&record.file), record.source.clone());
            return Ok(());
        }
        if record.process.starts_with(TABLES_PREFIX) {
            let mut defs = self.defs.write().unwrap_or_else(|e| e.into_inner());
            // By file name (see `parse`): a later version deployed from another path replaces it.
            defs.table_files
                .insert(base_name(&record.file).to_string(), record.source.clone());
            return Ok(());
        }
        let library = self.parse(&record.file, &record.source)?;
        let Some(mut def) = library
            .definitions
            .into_iter()
            .find(|d| d.id == record.process)
        else {
            return Err(vec![]);
        };
        attach_tables(&mut def, &library.tables);
        let mut defs = self.defs.write().unwrap_or_else(|e| e.into_inner());
        for (i, start) in def.starts.iter().enumerate() {
            if let StartTrigger::Message { name } = &start.trigger {
                let list = defs.message_starts.entry(name.clone()).or_default();
                list.retain(|(p, _)| p != &def.id);
                list.push((def.id.clone(), i));
            }
        }
        let latest = defs.latest.entry(record.process.clone()).or_insert(0);
        *latest = (*latest).max(record.version);
        defs.by_version
            .insert((record.process.clone(), record.version), Arc::new(def));
        Ok(())
    }

    /// Deploys a process file (or a file of decision tables). Every version is kept; an
    /// instance stays on the version it started with. Deploying the text of the latest version
    /// again changes nothing.
    pub fn deploy(&self, file: &str, source: &str) -> Result<Vec<Deployed>> {
        let _guard = lock(&self.deploy_lock);
        let library = self.parse(file, source).map_err(EngineError::Invalid)?;
        let now = self.clock.now();
        let mut deployed = Vec::new();
        let mut batch = Batch::default();
        let mut records = Vec::new();
        let data_file = parse::data_name(file);
        if library.definitions.is_empty() {
            let prefix = if data_file.is_some() {
                DATA_PREFIX
            } else {
                TABLES_PREFIX
            };
            let process = format!("{prefix}{}", base_name(file));
            let (version, unchanged) = self.next_version(&process, source)?;
            deployed.push(Deployed {
                process: process.clone(),
                version,
                unchanged,
            });
            if !unchanged {
                records.push(DefinitionRecord {
                    process,
                    version,
                    source: source.to_string(),
                    file: file.to_string(),
                    deployed_at: now,
                });
            }
        }
        for def in &library.definitions {
            let (version, unchanged) = self.next_version(&def.id, source)?;
            deployed.push(Deployed {
                process: def.id.clone(),
                version,
                unchanged,
            });
            if !unchanged {
                records.push(DefinitionRecord {
                    process: def.id.clone(),
                    version,
                    source: source.to_string(),
                    file: file.to_string(),
                    deployed_at: now,
                });
            }
        }
        if let Some(name) = &data_file
            && records.iter().any(|r| r.process.starts_with(DATA_PREFIX))
        {
            // A data file is versioned with the processes that read it: each gets a new
            // version that loads with the new data, while running instances keep theirs.
            for (process, version) in self.processes() {
                let Some(def) = self.definition_version(&process, version) else {
                    continue;
                };
                let reads = matches!(&def.data, Value::Map(files) if files.contains_key(name));
                if !reads {
                    continue;
                }
                let Some(latest) = self.store.definition(&process, version)? else {
                    continue;
                };
                deployed.push(Deployed {
                    process: process.clone(),
                    version: version + 1,
                    unchanged: false,
                });
                records.push(DefinitionRecord {
                    process,
                    version: version + 1,
                    source: latest.source,
                    file: latest.file,
                    deployed_at: now,
                });
            }
        }
        for r in &records {
            batch.push(Op::PutDefinition(r.clone()));
        }
        if !batch.is_empty() {
            self.store.commit(batch)?;
        }
        for r in &records {
            self.install(r).map_err(EngineError::Invalid)?;
        }
        Ok(deployed)
    }

    fn next_version(&self, process: &str, source: &str) -> Result<(u32, bool)> {
        let latest = {
            let defs = self.defs.read().unwrap_or_else(|e| e.into_inner());
            if process.starts_with(TABLES_PREFIX) || process.starts_with(DATA_PREFIX) {
                self.store
                    .definitions()?
                    .into_iter()
                    .filter(|d| d.process == process)
                    .map(|d| d.version)
                    .max()
            } else {
                defs.latest.get(process).copied()
            }
        };
        match latest {
            None => Ok((1, false)),
            Some(v) => {
                let same = self
                    .store
                    .definition(process, v)?
                    .is_some_and(|r| r.source == source);
                Ok(if same { (v, true) } else { (v + 1, false) })
            }
        }
    }

    // ----- instances --------------------------------------------------------------------

    /// Starts an instance of the latest (or a given) version of a process at its plain start.
    pub fn start(&self, process: &str, options: StartOptions) -> Result<InstanceId> {
        let (version, def) = match options.version {
            Some(v) => (
                v,
                self.definition_version(process, v)
                    .ok_or_else(|| EngineError::UnknownVersion {
                        process: process.into(),
                        version: v,
                    })?,
            ),
            None => self
                .definition(process)
                .ok_or_else(|| EngineError::UnknownProcess(process.into()))?,
        };
        let start = def
            .starts
            .iter()
            .position(|s| matches!(s.trigger, StartTrigger::None))
            .ok_or_else(|| EngineError::NoPlainStart(process.into()))?;
        self.start_at(def, version, start, options)
    }

    fn start_at(
        &self,
        def: Arc<Definition>,
        version: u32,
        start: usize,
        options: StartOptions,
    ) -> Result<InstanceId> {
        if let Some(key) = &options.business_key {
            check_text("the business key", key, 200)?;
        }
        if let Some(key) = &options.request_key {
            check_text("the idempotency key", key, 300)?;
        }
        // A request key makes a retried start return the first one's instance.
        let _key_guard = options.request_key.as_ref().map(|k| {
            let h = k.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
            lock(&self.key_locks[(h % 64) as usize])
        });
        if let Some(key) = &options.request_key
            && let Some(existing) = self.store.request_key(key)?
        {
            // A retry of the same start gets the same instance; the same key on a different
            // start is a client's mistake, not a retry, and must not pass for a success.
            if let Some(record) = self.store.instance(existing)?
                && (record.process != def.id || record.business_key != options.business_key)
            {
                return Err(EngineError::RequestKeyReused {
                    key: key.clone(),
                    instance: existing,
                });
            }
            return Ok(existing);
        }
        let id = Uuid::now_v7();
        self.transact(Some(id), |tx| {
            tx.start_instance(
                def.clone(),
                StartRequest {
                    id,
                    version,
                    start,
                    vars: options.vars.clone(),
                    business_key: options.business_key.clone(),
                    actor: options.actor.clone().unwrap_or_else(|| "api".into()),
                    parent: None,
                },
            )?;
            if let Some(key) = &options.request_key {
                tx.batch.push(Op::PutRequestKey {
                    key: key.clone(),
                    instance: id,
                });
            }
            Ok(id)
        })
    }

    /// Loads an instance's state.
    pub fn instance(&self, id: InstanceId) -> Result<Option<(InstanceRecord, InstanceState)>> {
        let Some(record) = self.store.instance(id)? else {
            return Ok(None);
        };
        let state = decode_state(&record)?;
        Ok(Some((record, state)))
    }

    /// Completes a user task with form values.
    pub fn complete_task(
        &self,
        instance: InstanceId,
        task: u64,
        vars: Vars,
        actor: &str,
    ) -> Result<()> {
        self.transact(Some(instance), |tx| {
            let applied = tx.apply(
                instance,
                Event::TaskCompleted {
                    task,
                    vars: vars.clone(),
                    actor: actor.to_string(),
                },
            )?;
            match applied {
                Applied::Changed => Ok(()),
                Applied::Ignored(_) => Err(EngineError::UnknownTask { instance, task }),
            }
        })
    }

    /// Stores the e-mail links of a task, under the instance's lock. A link already stored
    /// (the same token, made again by a retried job) is kept as it is, so a retry never
    /// revives a used link.
    pub fn put_links(&self, instance: InstanceId, links: Vec<LinkRecord>) -> Result<()> {
        self.transact(Some(instance), |tx| {
            for link in &links {
                if tx.engine.store.link(&link.hash)?.is_none() {
                    tx.batch.push(Op::PutLink(link.clone()));
                }
            }
            Ok(())
        })
    }

    /// The e-mail link whose token hashes to `hash`.
    pub fn link(&self, hash: &str) -> Result<Option<LinkRecord>> {
        Ok(self.store.link(hash)?)
    }

    /// Completes a task through the e-mail link `hash` with `vars`, as `actor`, in one write
    /// with marking the link used and its siblings used by the same decision. Everything is
    /// checked again under the instance's lock, so of two requests racing with one link (or
    /// with two links of one task) only one decides; the other gets `Used` or `TaskClosed`.
    pub fn complete_task_by_link(
        &self,
        hash: &str,
        vars: Vars,
        actor: &str,
    ) -> Result<LinkOutcome> {
        let Some(first) = self.store.link(hash)? else {
            return Ok(LinkOutcome::Unknown);
        };
        self.transact(Some(first.instance), |tx| {
            let Some(link) = tx.engine.store.link(hash)? else {
                return Ok(LinkOutcome::Unknown);
            };
            if let Some(used) = &link.used {
                return Ok(LinkOutcome::Used(used.clone()));
            }
            if tx.now >= link.expires_at {
                return Ok(LinkOutcome::Expired);
            }
            let applied = tx.apply(
                link.instance,
                Event::TaskCompleted {
                    task: link.task,
                    vars: vars.clone(),
                    actor: actor.to_string(),
                },
            )?;
            if let Applied::Ignored(_) = applied {
                return Ok(LinkOutcome::TaskClosed);
            }
            let used = LinkUse {
                by: actor.to_string(),
                at: tx.now,
                decision: link.decision.clone(),
            };
            let mut this = link.clone();
            this.used = Some(used.clone());
            tx.batch.push(Op::PutLink(this));
            for sibling in &link.siblings {
                if let Some(mut other) = tx.engine.store.link(sibling)?
                    && other.used.is_none()
                {
                    other.used = Some(used.clone());
                    tx.batch.push(Op::PutLink(other));
                }
            }
            Ok(LinkOutcome::Done(used))
        })
    }

    /// Gives an open task to `assignee` (`None`: back to its candidate groups), as `actor`.
    /// With `only_if_free`, refuses when someone else holds it (a claim); otherwise it is a
    /// reassignment. The change is written to the instance's history.
    pub fn assign_task(
        &self,
        instance: InstanceId,
        task: u64,
        assignee: Option<&str>,
        actor: &str,
        only_if_free: bool,
    ) -> Result<TaskRecord> {
        self.transact(Some(instance), |tx| {
            let Some(mut record) = tx.engine.store.task(instance, task)? else {
                return Err(EngineError::UnknownTask { instance, task });
            };
            if only_if_free
                && let Some(holder) = &record.assignee
                && Some(holder.as_str()) != assignee
            {
                return Err(EngineError::TaskTaken {
                    instance,
                    task,
                    assignee: holder.clone(),
                });
            }
            record.assignee = assignee.map(str::to_string);
            let Some(loaded) = tx.load(instance)? else {
                return Err(EngineError::UnknownInstance(instance));
            };
            loaded.state.history_len += 1;
            loaded.changed = true;
            let seq = loaded.state.history_len;
            let what = if only_if_free {
                "task claimed"
            } else {
                "task assigned"
            };
            tx.batch.push(Op::AppendHistory(HistoryRecord {
                instance,
                seq,
                at: tx.now,
                actor: actor.to_string(),
                what: what.into(),
                step: Some(record.step.clone()),
                detail: assignee
                    .map(|a| format!("to {a}"))
                    .unwrap_or_else(|| "to its groups".into()),
            }));
            tx.batch.push(Op::PutTask(record.clone()));
            Ok(record)
        })
    }

    /// The open tasks a person may see: assigned to them, or unassigned and offered to one of
    /// their groups. `everyone` (admins, operators) sees all. Oldest first, at most `limit`.
    pub fn tasks_for(
        &self,
        user: &str,
        groups: &[String],
        everyone: bool,
        limit: usize,
    ) -> Result<Vec<TaskRecord>> {
        let mut out = Vec::new();
        for task in self.store.tasks(usize::MAX)? {
            let mine = match &task.assignee {
                Some(a) => a == user,
                None => task.candidates.iter().any(|c| groups.contains(c)),
            };
            if everyone || mine {
                out.push(task);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The user task definition behind an open task (its form, for checking values and for
    /// showing the form).
    pub fn task_step(
        &self,
        task: &TaskRecord,
    ) -> Result<Option<(Arc<Definition>, crate::model::StepId)>> {
        let Some(record) = self.store.instance(task.instance)? else {
            return Ok(None);
        };
        let Some(def) = self.definition_version(&record.process, record.version) else {
            return Ok(None);
        };
        let id = def.index.get(&task.step).copied();
        Ok(id.map(|id| (def, id)))
    }

    /// Cancels an instance.
    pub fn cancel(&self, instance: InstanceId, actor: &str) -> Result<()> {
        self.transact(Some(instance), |tx| {
            tx.apply(
                instance,
                Event::Cancel {
                    actor: actor.to_string(),
                },
            )?;
            Ok(())
        })
    }

    /// Retries an incident.
    pub fn retry_incident(&self, instance: InstanceId, incident: u64, actor: &str) -> Result<()> {
        self.transact(Some(instance), |tx| {
            match tx.apply(
                instance,
                Event::RetryIncident {
                    incident,
                    actor: actor.to_string(),
                },
            )? {
                Applied::Changed => Ok(()),
                Applied::Ignored(_) => Err(EngineError::UnknownIncident { instance, incident }),
            }
        })
    }

    /// Fires the timers due at `now`, one after the other. Returns how many fired. (The
    /// runtime fires many at once with `fire_timer`, so that they share flushes.)
    pub fn fire_due_timers(&self, now: Timestamp, limit: usize) -> Result<usize> {
        let due = self.store.due_timers(now, limit)?;
        let mut fired = 0;
        for timer in due {
            fired += self.fire_timer(&timer, now)? as usize;
        }
        Ok(fired)
    }

    /// Fires one due timer. Returns whether it changed its instance (a timer whose step has
    /// moved on is only removed).
    pub fn fire_timer(&self, timer: &TimerRecord, now: Timestamp) -> Result<bool> {
        self.failpoint("timer-firing");
        if timer.instance == Uuid::nil() {
            return self.fire_start_timer(timer, now);
        }
        super::metrics::timer_fired(timer.due, now);
        let instance = timer.instance;
        self.transact_at(Some(instance), now, |tx| {
            // The timer record goes whatever the machine says: a stale one is garbage.
            tx.batch.push(Op::DeleteTimer {
                instance,
                timer: timer.timer,
            });
            if tx.load(instance)?.is_none() {
                return Ok(false);
            }
            Ok(tx.apply(instance, Event::TimerFired { timer: timer.timer })? == Applied::Changed)
        })
    }

    /// Timer start events are kept as timers of the nil instance, numbered by a hash of their
    /// process and start index, re-armed after each firing.
    fn fire_start_timer(&self, timer: &TimerRecord, now: Timestamp) -> Result<bool> {
        let Some((process, start)) = timer.label.split_once('#') else {
            self.store.commit(Batch {
                ops: vec![Op::DeleteTimer {
                    instance: timer.instance,
                    timer: timer.timer,
                }],
            })?;
            return Ok(false);
        };
        let start: usize = start.parse().unwrap_or(usize::MAX);
        let Some((version, def)) = self.definition(process) else {
            return Ok(false);
        };
        let Some(StartTrigger::Timer { schedule }) = def.starts.get(start).map(|s| &s.trigger)
        else {
            self.store.commit(Batch {
                ops: vec![Op::DeleteTimer {
                    instance: timer.instance,
                    timer: timer.timer,
                }],
            })?;
            return Ok(false);
        };
        let next = schedule.next_after(now.max(timer.due), timer.due, 1);
        let id = Uuid::now_v7();
        self.transact_at(Some(id), now, |tx| {
            tx.start_instance(
                def.clone(),
                StartRequest {
                    id,
                    version,
                    start,
                    vars: Vars::new(),
                    business_key: None,
                    actor: "timer".into(),
                    parent: None,
                },
            )?;
            tx.batch.push(Op::DeleteTimer {
                instance: timer.instance,
                timer: timer.timer,
            });
            if let Some(due) = next {
                tx.batch.push(Op::PutTimer(TimerRecord {
                    due,
                    ..timer.clone()
                }));
            }
            Ok(())
        })?;
        Ok(true)
    }

    /// Arms the timer start events of every deployed process (idempotent).
    pub fn arm_start_timers(&self) -> Result<()> {
        let now = self.clock.now();
        let existing = self.store.timers_of(Uuid::nil())?;
        let mut batch = Batch::default();
        for (process, version) in self.processes() {
            let Some(def) = self.definition_version(&process, version) else {
                continue;
            };
            for (i, start) in def.starts.iter().enumerate() {
                let StartTrigger::Timer { schedule } = &start.trigger else {
                    continue;
                };
                let label = format!("{process}#{i}");
                if existing.iter().any(|t| t.label == label) {
                    continue;
                }
                let Some(due) = schedule.first_due(now) else {
                    continue;
                };
                let timer = label.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
                });
                batch.push(Op::PutTimer(TimerRecord {
                    instance: Uuid::nil(),
                    timer,
                    due,
                    label,
                }));
            }
        }
        if !batch.is_empty() {
            self.store.commit(batch)?;
            self.wake.notify_waiters();
        }
        Ok(())
    }

    /// Records what a connector answered for one attempt of a job.
    pub fn job_result(&self, job: &JobRecord, outcome: JobOutcome) -> Result<()> {
        self.job_result_with(job, outcome, &[])
    }

    /// `job_result`, writing `extra` in the same batch when the answer is taken (the attempt
    /// is current and the instance exists): nothing of it is written for a stale attempt.
    fn job_result_with(&self, job: &JobRecord, outcome: JobOutcome, extra: &[Op]) -> Result<()> {
        super::metrics::job_answered(job, &outcome);
        self.failpoint("job-returned");
        let instance = job.instance;
        self.transact(Some(instance), |tx| {
            if tx.load(instance)?.is_none() {
                tx.batch.push(Op::DeleteJob {
                    instance,
                    job: job.job,
                });
                return Ok(());
            }
            let (event, failure) = match outcome.clone() {
                JobOutcome::Done(output) => (
                    Event::JobSucceeded {
                        job: job.job,
                        attempt: job.attempt,
                        output,
                    },
                    None,
                ),
                JobOutcome::Failed(error) => (
                    Event::JobFailed {
                        job: job.job,
                        attempt: job.attempt,
                        error: error.clone(),
                        retries_left: None,
                    },
                    Some(error),
                ),
                JobOutcome::BusinessError { code, message } => (
                    Event::JobBusinessError {
                        job: job.job,
                        attempt: job.attempt,
                        code,
                        message,
                        vars: Vars::new(),
                    },
                    None,
                ),
            };
            let applied = tx.answer_job(job, event, failure)?;
            if applied == Applied::Changed {
                tx.batch.ops.extend(extra.iter().cloned());
            }
            Ok(())
        })
    }

    /// Runs a job of the system connector (cross-instance work).
    pub fn run_system_job(&self, job: &JobRecord) -> Result<()> {
        let now = self.clock.now();
        match job.operation.as_str() {
            "notify-parent" => {
                let parent = job
                    .input
                    .get("parent")
                    .and_then(as_text)
                    .and_then(|s| s.parse::<Uuid>().ok());
                let token = job
                    .input
                    .get("token")
                    .and_then(as_text)
                    .and_then(|s| s.parse::<u64>().ok());
                let outcome = job
                    .input
                    .get("outcome")
                    .and_then(as_text)
                    .and_then(|s| serde_json::from_str::<ChildOutcome>(&s).ok());
                let vars = match job.input.get("vars") {
                    Some(Value::Map(m)) => m.clone(),
                    _ => Vars::new(),
                };
                if let (Some(parent), Some(token), Some(outcome)) = (parent, token, outcome) {
                    self.transact_at(Some(parent), now, |tx| {
                        tx.batch.push(Op::DeleteJob {
                            instance: job.instance,
                            job: job.job,
                        });
                        if tx.load(parent)?.is_some() {
                            tx.apply(
                                parent,
                                Event::ChildEnded {
                                    token,
                                    outcome: outcome.clone(),
                                    vars: vars.clone(),
                                },
                            )?;
                        }
                        Ok(())
                    })
                } else {
                    self.store.commit(Batch {
                        ops: vec![Op::DeleteJob {
                            instance: job.instance,
                            job: job.job,
                        }],
                    })?;
                    Ok(())
                }
            }
            "cancel" => {
                let target = job
                    .input
                    .get("instance")
                    .and_then(as_text)
                    .and_then(|s| s.parse::<Uuid>().ok());
                self.transact_at(target, now, |tx| {
                    tx.batch.push(Op::DeleteJob {
                        instance: job.instance,
                        job: job.job,
                    });
                    if let Some(target) = target
                        && tx.load(target)?.is_some()
                    {
                        tx.apply(
                            target,
                            Event::Cancel {
                                actor: "parent".into(),
                            },
                        )?;
                    }
                    Ok(())
                })
            }
            _ => {
                self.store.commit(Batch {
                    ops: vec![Op::DeleteJob {
                        instance: job.instance,
                        job: job.job,
                    }],
                })?;
                Ok(())
            }
        }
    }

    /// Correlates a message: to the instances waiting for it, else to a message start event,
    /// else buffered for its time to live.
    pub fn correlate(&self, message: Message) -> Result<Correlation> {
        check_text("the message name", &message.name, 200)?;
        check_text("the message key", &message.key, 500)?;
        if let Some(id) = &message.id {
            check_text("the message id", id, 300)?;
        }
        let now = self.clock.now();
        let _guard = lock(&self.correlation);
        self.correlate_locked(message, now, &[])
    }

    /// `correlate` for a caller that holds the correlation lock; `extra` operations are
    /// written with the message's first write.
    fn correlate_locked(
        &self,
        message: Message,
        now: Timestamp,
        extra: &[Op],
    ) -> Result<Correlation> {
        if let Some(id) = &message.id
            && self.store.message_id_seen(id, now)?
        {
            return Ok(Correlation::Duplicate);
        }
        let remember = |batch: &mut Batch| {
            for op in extra {
                batch.push(op.clone());
            }
            if let Some(id) = &message.id {
                let keep = message
                    .ttl
                    .unwrap_or(SignedDuration::ZERO)
                    .max(MESSAGE_ID_MEMORY);
                batch.push(Op::PutMessageId {
                    id: id.clone(),
                    until: now.checked_add(keep).unwrap_or(Timestamp::MAX),
                });
            }
        };
        let subs = self.store.subscriptions(&message.name, &message.key)?;
        if !subs.is_empty() {
            // One write per instance; the message id is remembered with the first.
            let mut delivered = Vec::new();
            let mut by_instance: Vec<(InstanceId, u64)> = Vec::new();
            for s in &subs {
                if !by_instance.iter().any(|(i, _)| *i == s.instance) {
                    by_instance.push((s.instance, s.subscription));
                }
            }
            for (i, (instance, subscription)) in by_instance.into_iter().enumerate() {
                let changed = self.transact_locked(Some(instance), now, true, |tx| {
                    if i == 0 {
                        remember(&mut tx.batch);
                    }
                    if tx.load(instance)?.is_none() {
                        return Ok(false);
                    }
                    Ok(tx.apply(
                        instance,
                        Event::MessageReceived {
                            subscription,
                            vars: message.vars.clone(),
                        },
                    )? == Applied::Changed)
                })?;
                if changed {
                    delivered.push(instance);
                }
            }
            if !delivered.is_empty() {
                return Ok(Correlation::Delivered(delivered));
            }
        }
        let start = {
            let defs = self.defs.read().unwrap_or_else(|e| e.into_inner());
            defs.message_starts
                .get(&message.name)
                .and_then(|v| v.first().cloned())
        };
        if let Some((process, start)) = start
            && let Some((version, def)) = self.definition(&process)
        {
            let id = Uuid::now_v7();
            self.transact_locked(Some(id), now, true, |tx| {
                remember(&mut tx.batch);
                tx.start_instance(
                    def.clone(),
                    StartRequest {
                        id,
                        version,
                        start,
                        vars: message.vars.clone(),
                        business_key: Some(message.key.clone()).filter(|k| !k.is_empty()),
                        actor: format!("message {}", message.name),
                        parent: None,
                    },
                )
            })?;
            return Ok(Correlation::Started(id));
        }
        match message.ttl {
            Some(ttl) if ttl > SignedDuration::ZERO => {
                let Some(expires_at) = now.checked_add(ttl).ok() else {
                    return Err(EngineError::BadMessage(format!(
                        "time to live {ttl:#} reaches past the year 9999; give a shorter one"
                    )));
                };
                let mut batch = Batch::default();
                remember(&mut batch);
                batch.push(Op::PutMessage(MessageRecord {
                    seq: 0,
                    id: message.id.clone(),
                    name: message.name.clone(),
                    key: message.key.clone(),
                    vars: message.vars.clone(),
                    received_at: now,
                    expires_at,
                }));
                self.store.commit(batch)?;
                Ok(Correlation::Buffered)
            }
            _ => {
                let mut batch = Batch::default();
                remember(&mut batch);
                if !batch.is_empty() {
                    self.store.commit(batch)?;
                }
                Ok(Correlation::Dropped)
            }
        }
    }

    /// Removes finished instances that ended more than `retention` ago. Returns how many.
    pub fn remove_finished(&self, retention: SignedDuration) -> Result<usize> {
        Ok(self.store.remove_finished(self.clock.now() - retention)?)
    }

    // ----- users and API tokens ---------------------------------------------------------

    /// Creates a token for `role`, acting for `user` (who must exist) if given, and returns
    /// its secret. The secret is shown this once: the store keeps only its hash.
    pub fn create_token(
        &self,
        role: Role,
        user: Option<&str>,
        label: Option<&str>,
    ) -> Result<String> {
        let _accounts = lock(&auth::ACCOUNTS);
        if let Some(name) = user
            && self.store.user(name)?.is_none()
        {
            return Err(EngineError::BadUser(format!(
                "no user {name:?}: a token can act only for an existing user"
            )));
        }
        let secret = auth::new_secret().map_err(|e| EngineError::Random(e.to_string()))?;
        let token = TokenRecord {
            hash: hash_secret(&secret),
            role,
            user: user.map(str::to_string),
            label: label.map(str::to_string),
            created_at: self.clock.now(),
        };
        self.store.commit(Batch {
            ops: vec![Op::PutToken(token)],
        })?;
        Ok(secret)
    }

    /// The token a presented secret belongs to, if any. The lookup is by the secret's hash,
    /// so no comparison of secrets can leak timing.
    pub fn authenticate(&self, secret: &str) -> Result<Option<TokenRecord>> {
        Ok(self.store.token(&hash_secret(secret))?)
    }

    /// Deletes the token with this hash. Returns whether there was one.
    pub fn revoke_token(&self, hash: &str) -> Result<bool> {
        let _accounts = lock(&auth::ACCOUNTS);
        if self.store.token(hash)?.is_none() {
            return Ok(false);
        }
        self.store.commit(Batch {
            ops: vec![Op::DeleteToken { hash: hash.into() }],
        })?;
        Ok(true)
    }

    /// Creates or replaces a user, after checking its name and its groups' names.
    pub fn put_user(&self, user: UserRecord) -> Result<()> {
        auth::check_name("user name", &user.name).map_err(EngineError::BadUser)?;
        for group in &user.groups {
            auth::check_name("group name", group)
                .map_err(|e| EngineError::BadUser(format!("user {:?}: {e}", user.name)))?;
        }
        self.store.commit(Batch {
            ops: vec![Op::PutUser(user)],
        })?;
        Ok(())
    }

    pub fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        Ok(self.store.user(name)?)
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<UserRecord>> {
        Ok(self.store.users()?)
    }

    /// Sets (or with `None` removes) a user's password hash (an argon2 PHC string made by the
    /// caller: hashing is slow on purpose and belongs on the caller's thread). Removing it, or
    /// changing it, also ends the user's web sessions. Returns whether the user exists.
    pub fn set_password_hash(&self, name: &str, hash: Option<String>) -> Result<bool> {
        let _accounts = lock(&auth::ACCOUNTS);
        let Some(mut user) = self.store.user(name)? else {
            return Ok(false);
        };
        user.password_hash = hash;
        let mut batch = Batch::default();
        batch.push(Op::PutUser(user));
        for session in self.store.sessions()? {
            if session.user == name {
                batch.push(Op::DeleteSession { hash: session.hash });
            }
        }
        self.store.commit(batch)?;
        Ok(true)
    }

    /// Stores a web session (new, or seen again).
    pub fn put_session(&self, session: SessionRecord) -> Result<()> {
        self.store.commit(Batch {
            ops: vec![Op::PutSession(session)],
        })?;
        Ok(())
    }

    /// The web session whose id hashes to `hash`.
    pub fn session(&self, hash: &str) -> Result<Option<SessionRecord>> {
        Ok(self.store.session(hash)?)
    }

    /// Ends a web session, and any session last seen before `stale_before` (so sessions left
    /// without a sign-out do not pile up).
    pub fn delete_session(&self, hash: &str, stale_before: Timestamp) -> Result<()> {
        let mut batch = Batch::default();
        batch.push(Op::DeleteSession { hash: hash.into() });
        for session in self.store.sessions()? {
            if session.last_seen < stale_before && session.hash != hash {
                batch.push(Op::DeleteSession { hash: session.hash });
            }
        }
        self.store.commit(batch)?;
        Ok(())
    }

    /// Deletes a user and, in the same write, every token acting for them: a user created
    /// later under the same name must not inherit them. Returns whether there was a user.
    pub fn delete_user(&self, name: &str) -> Result<bool> {
        let _accounts = lock(&auth::ACCOUNTS);
        if self.store.user(name)?.is_none() {
            return Ok(false);
        }
        let mut batch = Batch::default();
        batch.push(Op::DeleteUser { name: name.into() });
        for token in self.store.tokens()? {
            if token.user.as_deref() == Some(name) {
                batch.push(Op::DeleteToken { hash: token.hash });
            }
        }
        for session in self.store.sessions()? {
            if session.user == name {
                batch.push(Op::DeleteSession { hash: session.hash });
            }
        }
        self.store.commit(batch)?;
        Ok(true)
    }

    // ----- transactions -----------------------------------------------------------------

    fn transact<T>(
        &self,
        instance: Option<InstanceId>,
        f: impl FnMut(&mut Tx) -> Result<T>,
    ) -> Result<T> {
        self.transact_at(instance, self.clock.now(), f)
    }

    fn transact_at<T>(
        &self,
        instance: Option<InstanceId>,
        now: Timestamp,
        mut f: impl FnMut(&mut Tx) -> Result<T>,
    ) -> Result<T> {
        // First without the correlation lock; a transaction that turns out to subscribe to a
        // message is computed again holding it (lock order: correlation, then instance).
        {
            let _guard = instance.map(|i| lock(self.stripe(i)));
            let mut tx = Tx::new(self, now, false);
            let value = f(&mut tx)?;
            if !tx.needs_correlation {
                tx.commit()?;
                return Ok(value);
            }
        }
        let _correlation = lock(&self.correlation);
        self.transact_locked(instance, now, true, f)
    }

    fn transact_locked<T>(
        &self,
        instance: Option<InstanceId>,
        now: Timestamp,
        holds_correlation: bool,
        mut f: impl FnMut(&mut Tx) -> Result<T>,
    ) -> Result<T> {
        let _guard = instance.map(|i| lock(self.stripe(i)));
        let mut tx = Tx::new(self, now, holds_correlation);
        let value = f(&mut tx)?;
        tx.commit()?;
        Ok(value)
    }
}

/// Refuses a text given from outside that would be stored and shown later: control characters
/// (a line break could fake a line in a terminal or a log) and bidirectional overrides (they
/// reverse how the text reads), and texts longer than `max` characters.
fn check_text(what: &str, text: &str, max: usize) -> Result<()> {
    if text.chars().count() > max {
        return Err(EngineError::BadInput(format!(
            "{what} is longer than {max} characters"
        )));
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() || matches!(*c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
    {
        return Err(EngineError::BadInput(format!(
            "{what} contains the control character U+{:04X}: use printable text",
            c as u32
        )));
    }
    Ok(())
}

/// File-name prefix of the records that hold table libraries.
const TABLES_PREFIX: &str = "@tables/";
/// File-name prefix of the records that hold data files.
const DATA_PREFIX: &str = "@data/";

/// What identifies a library file across deploys from different paths: its file name, and
/// for a data file `data/` before it (a data file and a table library may share a name).
fn library_key(file: &str) -> String {
    if parse::data_name(file).is_some() {
        format!("data/{}", base_name(file))
    } else {
        base_name(file).to_string()
    }
}

/// The last component of a file name as the API or the command line gave it.
fn base_name(file: &str) -> &str {
    file.rsplit(['/', '\\']).next().unwrap_or(file)
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Copies the tables a definition uses from other files into it, so that a version keeps the
/// tables it was deployed with.
fn attach_tables(def: &mut Definition, tables: &[crate::model::DecisionTable]) {
    let used: Vec<String> = def
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            crate::model::StepKind::Rules { table, .. } => Some(table.clone()),
            _ => None,
        })
        .collect();
    for name in used {
        if def.table(&name).is_none()
            && let Some(t) = tables.iter().find(|t| t.name == name)
        {
            def.tables.push(t.clone());
        }
    }
}

pub(crate) fn decode_state(record: &InstanceRecord) -> Result<InstanceState> {
    postcard::from_bytes(&record.state).map_err(|e| EngineError::Corrupt(record.id, e.to_string()))
}

fn encode_state(state: &InstanceState) -> Vec<u8> {
    // Encoding our own types into a Vec cannot fail.
    postcard::to_stdvec(state).unwrap_or_default()
}

struct Loaded {
    def: Arc<Definition>,
    state: InstanceState,
    changed: bool,
}

/// One transaction: the instances it touched, and the batch it will commit.
struct Tx<'e> {
    engine: &'e Engine,
    now: Timestamp,
    batch: Batch,
    work: HashMap<InstanceId, Loaded>,
    order: Vec<InstanceId>,
    holds_correlation: bool,
    needs_correlation: bool,
    events: VecDeque<(InstanceId, Event)>,
    consumed_messages: Vec<u64>,
}

impl<'e> Tx<'e> {
    fn new(engine: &'e Engine, now: Timestamp, holds_correlation: bool) -> Tx<'e> {
        Tx {
            engine,
            now,
            batch: Batch::default(),
            work: HashMap::new(),
            order: Vec::new(),
            holds_correlation,
            needs_correlation: false,
            events: VecDeque::new(),
            consumed_messages: Vec::new(),
        }
    }

    /// Loads an instance into the transaction (once). `None` when it does not exist.
    fn load(&mut self, id: InstanceId) -> Result<Option<&mut Loaded>> {
        if !self.work.contains_key(&id) {
            let Some(record) = self.engine.store.instance(id)? else {
                return Ok(None);
            };
            let state = decode_state(&record)?;
            let def = self
                .engine
                .definition_version(&state.process, state.version)
                .ok_or_else(|| EngineError::UnknownVersion {
                    process: state.process.clone(),
                    version: state.version,
                })?;
            self.work.insert(
                id,
                Loaded {
                    def,
                    state,
                    changed: false,
                },
            );
            self.order.push(id);
        }
        Ok(self.work.get_mut(&id))
    }

    fn start_instance(&mut self, def: Arc<Definition>, request: StartRequest) -> Result<()> {
        let id = request.id;
        let mut out = Vec::new();
        let state = machine::start(&def, request, self.now, &mut out)?;
        self.work.insert(
            id,
            Loaded {
                def,
                state,
                changed: true,
            },
        );
        self.order.push(id);
        self.commands(id, out)?;
        self.drain()
    }

    /// Applies an event to an instance and everything it causes.
    fn apply(&mut self, id: InstanceId, event: Event) -> Result<Applied> {
        let applied = self.apply_one(id, event)?;
        self.drain()?;
        Ok(applied)
    }

    fn apply_one(&mut self, id: InstanceId, event: Event) -> Result<Applied> {
        if self.load(id)?.is_none() {
            return Err(EngineError::UnknownInstance(id));
        }
        let now = self.now;
        let mut out = Vec::new();
        let applied = {
            let Some(loaded) = self.work.get_mut(&id) else {
                return Err(EngineError::UnknownInstance(id));
            };
            let applied = machine::apply(&loaded.def, &mut loaded.state, event, now, &mut out)?;
            if applied == Applied::Changed {
                loaded.changed = true;
            }
            applied
        };
        self.commands(id, out)?;
        Ok(applied)
    }

    fn drain(&mut self) -> Result<()> {
        while let Some((id, event)) = self.events.pop_front() {
            self.apply_one(id, event)?;
        }
        Ok(())
    }

    /// Turns the machine's commands into store changes and follow-up events.
    fn commands(&mut self, id: InstanceId, commands: Vec<Command>) -> Result<()> {
        let now = self.now;
        for command in commands {
            match command {
                Command::ScheduleTimer { timer, due, label } => {
                    self.batch.push(Op::PutTimer(TimerRecord {
                        instance: id,
                        timer,
                        due,
                        label,
                    }));
                }
                Command::CancelTimer { timer } => self.batch.push(Op::DeleteTimer {
                    instance: id,
                    timer,
                }),
                Command::OpenTask {
                    task,
                    step,
                    title,
                    assignee,
                    candidates,
                    due,
                } => {
                    let process = self
                        .work
                        .get(&id)
                        .map(|l| l.state.process.clone())
                        .unwrap_or_default();
                    self.batch.push(Op::PutTask(TaskRecord {
                        instance: id,
                        task,
                        process,
                        step,
                        title,
                        assignee,
                        candidates,
                        created_at: now,
                        due,
                    }));
                }
                Command::CancelTask { task } => {
                    self.batch.push(Op::DeleteTask { instance: id, task })
                }
                Command::EnqueueJob {
                    job,
                    attempt,
                    connector,
                    operation,
                    key,
                    input,
                    due,
                    ..
                } => {
                    self.batch.push(Op::PutJob(JobRecord {
                        instance: id,
                        job,
                        attempt,
                        connector,
                        operation,
                        key,
                        input,
                        due,
                        locked_until: None,
                        locked_by: None,
                        lease_token: None,
                        last_error: None,
                    }));
                }
                Command::CancelJob { job } => self.batch.push(Op::DeleteJob { instance: id, job }),
                Command::Subscribe {
                    subscription,
                    name,
                    key,
                } => {
                    self.batch.push(Op::PutSubscription(SubscriptionRecord {
                        name: name.clone(),
                        key: key.clone(),
                        instance: id,
                        subscription,
                        created_at: now,
                    }));
                    if !self.holds_correlation {
                        // Computed again under the correlation lock; see `transact_at`.
                        self.needs_correlation = true;
                        continue;
                    }
                    let buffered = self.engine.store.messages(&name, &key)?;
                    if let Some(message) = buffered
                        .into_iter()
                        .find(|m| m.expires_at > now && !self.consumed_messages.contains(&m.seq))
                    {
                        self.consumed_messages.push(message.seq);
                        self.batch.push(Op::DeleteMessage { seq: message.seq });
                        self.events.push_back((
                            id,
                            Event::MessageReceived {
                                subscription,
                                vars: message.vars,
                            },
                        ));
                    }
                }
                Command::Unsubscribe { subscription } => self.batch.push(Op::DeleteSubscription {
                    instance: id,
                    subscription,
                }),
                Command::StartChild {
                    token,
                    process,
                    vars,
                } => {
                    let Some((version, def)) = self.engine.definition(&process) else {
                        self.events.push_back((
                            id,
                            Event::ChildEnded {
                                token,
                                outcome: ChildOutcome::Failed {
                                    reason: format!("no process `{process}` is deployed"),
                                },
                                vars: Vars::new(),
                            },
                        ));
                        continue;
                    };
                    let child = Uuid::now_v7();
                    let start = def
                        .starts
                        .iter()
                        .position(|s| matches!(s.trigger, StartTrigger::None))
                        .unwrap_or(0);
                    self.events
                        .push_back((id, Event::ChildStarted { token, child }));
                    let business_key = self
                        .work
                        .get(&id)
                        .and_then(|l| l.state.business_key.clone());
                    self.start_instance(
                        def,
                        StartRequest {
                            id: child,
                            version,
                            start,
                            vars,
                            business_key,
                            actor: "parent".into(),
                            parent: Some(ParentLink {
                                instance: id,
                                token,
                            }),
                        },
                    )?;
                }
                Command::CancelChild { instance } => {
                    if self.work.contains_key(&instance) {
                        self.events.push_back((
                            instance,
                            Event::Cancel {
                                actor: "parent".into(),
                            },
                        ));
                    } else {
                        let mut input = Vars::new();
                        input.insert("instance".into(), Value::String(instance.to_string()));
                        self.system_job(id, "cancel", input);
                    }
                }
                Command::NotifyParent {
                    parent,
                    outcome,
                    vars,
                } => {
                    if self.work.contains_key(&parent.instance) {
                        self.events.push_back((
                            parent.instance,
                            Event::ChildEnded {
                                token: parent.token,
                                outcome,
                                vars,
                            },
                        ));
                    } else {
                        let mut input = Vars::new();
                        input.insert("parent".into(), Value::String(parent.instance.to_string()));
                        input.insert("token".into(), Value::String(parent.token.to_string()));
                        input.insert(
                            "outcome".into(),
                            Value::String(serde_json::to_string(&outcome).unwrap_or_default()),
                        );
                        input.insert("vars".into(), Value::Map(vars));
                        self.system_job(id, "notify-parent", input);
                    }
                }
                Command::RaiseIncident {
                    incident,
                    step,
                    job,
                    error,
                } => {
                    self.batch.push(Op::PutIncident(IncidentRecord {
                        instance: id,
                        incident,
                        step,
                        job,
                        error,
                        created_at: now,
                    }));
                }
                Command::ResolveIncident { incident } => self.batch.push(Op::DeleteIncident {
                    instance: id,
                    incident,
                }),
                Command::History {
                    actor,
                    what,
                    step,
                    detail,
                } => {
                    let Some(loaded) = self.work.get_mut(&id) else {
                        continue;
                    };
                    loaded.state.history_len += 1;
                    self.batch.push(Op::AppendHistory(HistoryRecord {
                        instance: id,
                        seq: loaded.state.history_len,
                        at: now,
                        actor,
                        what,
                        step,
                        detail,
                    }));
                }
            }
        }
        Ok(())
    }

    fn system_job(&mut self, id: InstanceId, operation: &str, input: Vars) {
        let job = match self.work.get_mut(&id) {
            Some(l) => {
                l.state.next_id += 1;
                l.changed = true;
                l.state.next_id
            }
            None => 0,
        };
        self.batch.push(Op::PutJob(JobRecord {
            instance: id,
            job,
            attempt: 1,
            connector: SYSTEM_CONNECTOR.into(),
            operation: operation.into(),
            key: format!("{id}-{job}"),
            input,
            due: self.now,
            locked_until: None,
            locked_by: None,
            lease_token: None,
            last_error: None,
        }));
    }

    fn commit(mut self) -> Result<()> {
        let mut wake = false;
        let mut external = false;
        for id in &self.order {
            let Some(loaded) = self.work.get(id) else {
                continue;
            };
            if !loaded.changed {
                continue;
            }
            let s = &loaded.state;
            self.batch.push(Op::PutInstance(InstanceRecord {
                id: *id,
                process: s.process.clone(),
                version: s.version,
                business_key: s.business_key.clone(),
                status: s.status,
                started_at: s.started_at,
                ended_at: s.ended_at,
                state: encode_state(s),
            }));
        }
        for op in &self.batch.ops {
            if matches!(op, Op::PutTimer(_) | Op::PutJob(_)) {
                wake = true;
            }
            if matches!(op, Op::PutJob(job) if job.is_external()) {
                external = true;
            }
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let figures = super::metrics::Figures::of(&batch);
        self.engine.store.commit(batch)?;
        figures.committed();
        if wake {
            self.engine.wake.notify_waiters();
        }
        if external {
            self.engine.external.notify_waiters();
        }
        Ok(())
    }
}

/// Whether an instance status means it has ended.
pub fn is_finished(status: InstanceStatus) -> bool {
    status.is_finished()
}
