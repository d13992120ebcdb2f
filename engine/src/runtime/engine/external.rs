//! External workers: programs that take jobs of a named type (`call: external.<type>`) and
//! answer them, as Camunda 7's external tasks. The runtime never runs these jobs; a worker
//! fetches and locks some with a lease, may extend it, and completes, fails or raises a
//! business error with the lease token the fetch gave it.
//!
//! Every lock and every answer happens under the instance's striped lock and is durable before
//! the call returns, so two workers racing for one job cannot both get it, and an answer moves
//! the instance at most once: the first answer deletes the job (or writes its next attempt
//! with no lease), so any later one finds no lease it holds. A refused call changes nothing.
//!
//! While a job is locked its `due` is the lease's end, so the store's index by type and due
//! time skips it until the lease runs out, without looking at it. A lease that runs out does
//! not use up a retry: the next fetch takes the same attempt again.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::{Engine, EngineError, JobOutcome, Result, Tx, check_text, decode_state, lock};
use crate::machine::{Applied, Event, Wait};
use crate::store::{Batch, InstanceId, JobRecord, Op};
use crate::value::Vars;

/// The longest lease a worker may ask for (a day): a dead worker's job comes back by then.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);

/// The most jobs one fetch may lock.
pub const MAX_FETCH: usize = 100;

/// A job locked for a worker by `fetch_and_lock`.
#[derive(Clone, Debug, PartialEq)]
pub struct LockedJob {
    /// The job as locked: `operation` is its type, `lease_token` the secret to answer with,
    /// `locked_until` when the lease runs out, `input` its variables.
    pub job: JobRecord,
    pub process: String,
    pub step: String,
    pub business_key: Option<String>,
    /// Retries left after this attempt by the step's policy.
    pub retries_left: u32,
}

/// How a worker answers a job it holds.
#[derive(Clone, Debug)]
pub enum ExternalAnswer {
    Complete(Vars),
    Fail {
        message: String,
        /// `None`: the step's retry policy decides; `Some(0)`: an incident now.
        retries_left: Option<u32>,
        /// `None`: the step's backoff.
        retry_in: Option<Duration>,
    },
    Error {
        code: String,
        message: String,
        vars: Vars,
    },
}

fn lease_span(lease: Duration) -> Result<SignedDuration> {
    if lease.is_zero() || lease > MAX_LEASE {
        return Err(EngineError::BadInput(format!(
            "a lease must be longer than 0 and at most {} hours",
            MAX_LEASE.as_secs() / 3600
        )));
    }
    SignedDuration::try_from(lease).map_err(|e| EngineError::BadInput(e.to_string()))
}

fn check_worker(worker: &str) -> Result<()> {
    if worker.trim().is_empty() {
        return Err(EngineError::BadInput("the worker name is empty".into()));
    }
    check_text("the worker name", worker, 200)
}

impl Engine {
    /// Locks up to `max` due jobs of the given types for `worker`, each with a fresh lease
    /// token valid for `lease` from `now`, earliest due first. Jobs another worker locked
    /// meanwhile are skipped, so the answer may hold fewer than are waiting.
    pub fn fetch_and_lock(
        &self,
        worker: &str,
        types: &[String],
        max: usize,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<LockedJob>> {
        check_worker(worker)?;
        let lease = lease_span(lease)?;
        if types.is_empty() {
            return Err(EngineError::BadInput("name at least one job type".into()));
        }
        for job_type in types {
            crate::validate::external_job_type(job_type).map_err(EngineError::BadInput)?;
        }
        let max = max.clamp(1, MAX_FETCH);
        let mut candidates = Vec::new();
        for job_type in types {
            // A few more than asked: some may be taken by a racing worker before we lock them.
            candidates.extend(self.store.due_external_jobs(job_type, now, max + 16)?);
        }
        candidates.sort_by_key(|j| (j.due, j.instance, j.job));
        candidates.dedup_by_key(|j| (j.instance, j.job));
        let mut locked = Vec::new();
        for candidate in candidates {
            if locked.len() >= max {
                break;
            }
            if let Some(job) = self.lock_one(&candidate, worker, lease, now)? {
                locked.push(job);
            }
        }
        if !locked.is_empty() {
            super::super::metrics::external_fetched(locked.len());
        }
        Ok(locked)
    }

    /// Locks one job if it is still due and free, under its instance's lock.
    fn lock_one(
        &self,
        candidate: &JobRecord,
        worker: &str,
        lease: SignedDuration,
        now: Timestamp,
    ) -> Result<Option<LockedJob>> {
        let _guard = lock(self.stripe(candidate.instance));
        let Some(mut job) = self.store.job(candidate.instance, candidate.job)? else {
            return Ok(None);
        };
        if !job.is_external() || job.due > now || !job.is_free_at(now) {
            return Ok(None);
        }
        let Some(record) = self.store.instance(job.instance)? else {
            return Ok(None);
        };
        let state = decode_state(&record)?;
        let Some((step, retries_left)) = state.tokens.iter().find_map(|t| match t.wait {
            Wait::Job {
                job: j,
                attempt,
                retries_left,
            } if j == job.job && attempt == job.attempt => Some((t.step, retries_left)),
            _ => None,
        }) else {
            // No token waits for this attempt (a record left behind): not a worker's business.
            return Ok(None);
        };
        let step = self
            .definition_version(&state.process, state.version)
            .and_then(|def| def.steps.get(step as usize).map(|s| s.name.clone()))
            .unwrap_or_default();
        if job.locked_until.is_some() {
            // Locked before, and the lease ran out without an answer.
            super::super::metrics::external_lease_expired();
        }
        let token =
            crate::auth::new_lease_token().map_err(|e| EngineError::Random(e.to_string()))?;
        let until = now.checked_add(lease).unwrap_or(Timestamp::MAX);
        job.locked_until = Some(until);
        job.locked_by = Some(worker.to_string());
        job.lease_token = Some(token);
        job.due = until;
        self.store.commit(Batch {
            ops: vec![Op::PutJob(job.clone())],
        })?;
        Ok(Some(LockedJob {
            job,
            process: state.process,
            step,
            business_key: state.business_key,
            retries_left,
        }))
    }

    /// Extends the lease of a job `worker` holds with `lease_token` to `lease` from now.
    /// Returns when the new lease runs out.
    pub fn extend_lease(
        &self,
        instance: InstanceId,
        job: u64,
        worker: &str,
        lease_token: &str,
        lease: Duration,
    ) -> Result<Timestamp> {
        let lease = lease_span(lease)?;
        let _guard = lock(self.stripe(instance));
        let now = self.clock.now();
        let mut record = self.held(instance, job, worker, lease_token, now)?;
        let until = now.checked_add(lease).unwrap_or(Timestamp::MAX);
        record.locked_until = Some(until);
        record.due = until;
        self.store.commit(Batch {
            ops: vec![Op::PutJob(record)],
        })?;
        Ok(until)
    }

    /// Answers a job `worker` holds with `lease_token`: the instance moves on (or retries, or
    /// takes its error path) in one durable transaction. Refused, with nothing changed, when
    /// the lease is not held or ran out.
    pub fn answer_external(
        &self,
        instance: InstanceId,
        job: u64,
        worker: &str,
        lease_token: &str,
        answer: ExternalAnswer,
    ) -> Result<()> {
        if let ExternalAnswer::Error { code, .. } = &answer
            && code.trim().is_empty()
        {
            return Err(EngineError::BadInput("the error code is empty".into()));
        }
        let outcome = JobOutcome::from(&answer);
        let answered = self.transact(Some(instance), |tx| {
            let record = tx.engine.held(instance, job, worker, lease_token, tx.now)?;
            if tx.load(instance)?.is_none() {
                return Err(EngineError::JobNotFound { instance, job });
            }
            let (event, failure, retry_in) = match answer.clone() {
                ExternalAnswer::Complete(output) => (
                    Event::JobSucceeded {
                        job,
                        attempt: record.attempt,
                        output,
                    },
                    None,
                    None,
                ),
                ExternalAnswer::Fail {
                    message,
                    retries_left,
                    retry_in,
                } => (
                    Event::JobFailed {
                        job,
                        attempt: record.attempt,
                        error: message.clone(),
                        retries_left,
                    },
                    Some(message),
                    retry_in,
                ),
                ExternalAnswer::Error {
                    code,
                    message,
                    vars,
                } => (
                    Event::JobBusinessError {
                        job,
                        attempt: record.attempt,
                        code,
                        message,
                        vars,
                    },
                    None,
                    None,
                ),
            };
            tx.answer_job(&record, event, failure)?;
            let answered = record.clone();
            if let Some(retry_in) = retry_in {
                let due = SignedDuration::try_from(retry_in)
                    .ok()
                    .and_then(|d| tx.now.checked_add(d).ok())
                    .unwrap_or(Timestamp::MAX);
                for op in &mut tx.batch.ops {
                    if let Op::PutJob(next) = op
                        && next.instance == instance
                        && next.job == job
                    {
                        next.due = due;
                    }
                }
            }
            Ok(answered)
        })?;
        super::super::metrics::job_answered(&answered, &outcome);
        Ok(())
    }

    /// Completes a job `worker` holds: its variables go through the step's `output`.
    pub fn complete_external(
        &self,
        instance: InstanceId,
        job: u64,
        worker: &str,
        lease_token: &str,
        vars: Vars,
    ) -> Result<()> {
        self.answer_external(
            instance,
            job,
            worker,
            lease_token,
            ExternalAnswer::Complete(vars),
        )
    }

    /// Fails a job `worker` holds: retried after `retry_in` (else the step's backoff) while
    /// `retries_left` (else the step's policy) allows, an incident when none is left.
    #[allow(clippy::too_many_arguments)]
    pub fn fail_external(
        &self,
        instance: InstanceId,
        job: u64,
        worker: &str,
        lease_token: &str,
        message: &str,
        retries_left: Option<u32>,
        retry_in: Option<Duration>,
    ) -> Result<()> {
        let answer = ExternalAnswer::Fail {
            message: message.to_string(),
            retries_left,
            retry_in,
        };
        self.answer_external(instance, job, worker, lease_token, answer)
    }

    /// Raises a business error for a job `worker` holds: caught by the step's
    /// `on: - error: CODE`, with `vars` set first.
    #[allow(clippy::too_many_arguments)]
    pub fn error_external(
        &self,
        instance: InstanceId,
        job: u64,
        worker: &str,
        lease_token: &str,
        code: &str,
        message: &str,
        vars: Vars,
    ) -> Result<()> {
        let answer = ExternalAnswer::Error {
            code: code.to_string(),
            message: message.to_string(),
            vars,
        };
        self.answer_external(instance, job, worker, lease_token, answer)
    }

    /// The job record if `worker` holds its lease with `lease_token` at `now`; otherwise why
    /// not. Call it holding the instance's lock.
    fn held(
        &self,
        instance: InstanceId,
        job: u64,
        worker: &str,
        lease_token: &str,
        now: Timestamp,
    ) -> Result<JobRecord> {
        let Some(record) = self.store.job(instance, job)? else {
            // Answered, cancelled or never there: a job that existed leaves its number used.
            let issued = match self.store.instance(instance)? {
                Some(record) => decode_state(&record)?.next_id >= job,
                None => false,
            };
            return Err(if issued {
                EngineError::LeaseNotHeld {
                    instance,
                    job,
                    reason: "the job is no longer open (answered, cancelled, or its step ended)"
                        .into(),
                }
            } else {
                EngineError::JobNotFound { instance, job }
            });
        };
        if !record.is_external() {
            return Err(EngineError::JobNotFound { instance, job });
        }
        let token_matches = record.lease_token.as_deref() == Some(lease_token)
            && record.locked_by.as_deref() == Some(worker);
        if !token_matches {
            return Err(EngineError::LeaseNotHeld {
                instance,
                job,
                reason: "this worker and lease token do not hold the job's current lease".into(),
            });
        }
        if record.locked_until.is_none_or(|until| until <= now) {
            return Err(EngineError::LeaseExpired { instance, job });
        }
        Ok(record)
    }
}

impl Tx<'_> {
    /// Records the answer to one attempt of `job` as `event` (the instance is loaded): the
    /// answered attempt's record goes, and a retry writes a new one carrying `failure`.
    pub(super) fn answer_job(
        &mut self,
        job: &JobRecord,
        event: Event,
        failure: Option<String>,
    ) -> Result<Applied> {
        let instance = job.instance;
        self.batch.push(Op::DeleteJob {
            instance,
            job: job.job,
        });
        let applied = self.apply(instance, event)?;
        if applied == Applied::Ignored("no job waiting with this id and attempt") {
            // A stale attempt: keep whatever record the current attempt has.
            self.batch
                .ops
                .retain(|op| !matches!(op, Op::DeleteJob { job: j, .. } if *j == job.job));
        } else if let Some(error) = failure {
            // The retry's record carries why the attempt before it failed, for operators.
            for op in &mut self.batch.ops {
                if let Op::PutJob(next) = op
                    && next.instance == instance
                    && next.job == job.job
                {
                    next.last_error = Some(error.clone());
                }
            }
        }
        Ok(applied)
    }
}

/// The outcome a connector would have given, for metrics and logs.
impl From<&ExternalAnswer> for JobOutcome {
    fn from(answer: &ExternalAnswer) -> JobOutcome {
        match answer {
            ExternalAnswer::Complete(vars) => JobOutcome::Done(vars.clone()),
            ExternalAnswer::Fail { message, .. } => JobOutcome::Failed(message.clone()),
            ExternalAnswer::Error { code, message, .. } => JobOutcome::BusinessError {
                code: code.clone(),
                message: message.clone(),
            },
        }
    }
}
