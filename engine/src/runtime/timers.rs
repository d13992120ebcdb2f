//! The timer loop: fires due timers continuously, a bounded number at once.
//!
//! Each firing is its own durable transaction (the timer's deletion and the instance's move
//! commit together), so firings in flight share the store's group commit. The loop keeps up
//! to `RuntimeOptions::timer_firings` of them in flight. A look reads up to 512 due timers
//! into a queue, and firings start from the queue as slots free; the store is read again when
//! the queue is empty (at once when the page was full, as soon as a quarter of the slots are
//! free). It does not work in rounds: nothing waits for a batch to be committed; a timer that
//! falls due while a queue is being worked waits for the queue's last timer to start.
//!
//! A timer is never fired twice at once. Only this loop starts firings, and it remembers the
//! timers in flight: they stay in the store until their firing commits, so every look lists
//! them again, and the loop skips them. A finished firing is taken off that set only between
//! looks, never while a look is reading the store: a firing collected before a look began
//! committed before it, so the look cannot list its timer any more; one that finishes during
//! the look is still in the set when the look's list is filtered.
//!
//! A firing that fails leaves its timer in the store, to be fired again; the loop skips it
//! for one `poll` so that a timer that cannot be fired does not take the loop round in a
//! tight circle. Crash safety is the transaction's: a timer is gone from the store exactly
//! when its firing is durable.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Engine, RuntimeOptions};
use crate::store::{InstanceId, TimerRecord};

/// A timer's identity: its instance (nil for timer start events) and its number there.
type TimerKey = (InstanceId, u64);

/// What a firing task reports: which timer, and whether its firing committed.
type Fired = (TimerKey, bool);

/// How many due timers one look reads (besides those in flight or failed, which it skips).
const PAGE: usize = 512;

pub(super) async fn timer_loop(
    engine: Arc<Engine>,
    options: RuntimeOptions,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let e = engine.clone();
    match tokio::task::spawn_blocking(move || e.arm_start_timers()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "arming timer start events failed"),
        Err(e) => tracing::error!(error = %e, "arming timer start events panicked"),
    }
    let most = options.timer_firings.max(1);
    // While timers wait for a slot, look again once this many slots are free: a look for
    // each finished firing would read the timers in flight again every time.
    let refill = (most / 4).max(1);
    let mut firing: JoinSet<Fired> = JoinSet::new();
    let mut in_flight: HashSet<TimerKey> = HashSet::new();
    let mut failed: HashMap<TimerKey, Instant> = HashMap::new();
    // The last look read a full page of due timers: more may be due behind it.
    let mut backlog = false;
    // Due timers read by the last look and not started yet: firings start from here as slots
    // free, and the store is read again only when it is empty. Reading the store every few
    // free slots cost more than the firings themselves under a backlog (6,000 firings/s
    // against 9,400/s for the round loop before it, on the timers bench).
    let mut queue: VecDeque<TimerRecord> = VecDeque::new();
    let mut queued_at = Timestamp::UNIX_EPOCH;
    // When to look next when there is no backlog: the next due time, at most `poll` away.
    let mut look_at = Instant::now();
    let mut wake: Pin<Box<tokio::sync::futures::Notified<'_>>> = Box::pin(engine.wake.notified());
    loop {
        while let Some(done) = firing.try_join_next() {
            collect(done, &mut in_flight, &mut failed, options.poll);
        }
        if *stopped.borrow() {
            break;
        }
        while firing.len() < most {
            let Some(timer) = queue.pop_front() else {
                break;
            };
            let key = (timer.instance, timer.timer);
            if in_flight.contains(&key) || failed.contains_key(&key) {
                continue;
            }
            in_flight.insert(key);
            spawn_firing(&mut firing, &engine, timer, queued_at);
        }
        let room = most - firing.len();
        let look = if !queue.is_empty() {
            false
        } else if backlog {
            room >= refill
        } else {
            room > 0 && Instant::now() >= look_at
        };
        if look {
            // A wake-up from here on means something changed after this look began.
            wake = Box::pin(engine.wake.notified());
            let now = engine.clock().now();
            failed.retain(|_, until| *until > Instant::now());
            // Enough to see past the timers in flight and skipped to `room` new ones and
            // one more (whether more are due); up to `poll` ahead to know when to look next.
            let limit = in_flight.len() + failed.len() + PAGE;
            let horizon = now
                .checked_add(jiff::SignedDuration::try_from(options.poll).unwrap_or_default())
                .unwrap_or(Timestamp::MAX);
            let e = engine.clone();
            let listed =
                tokio::task::spawn_blocking(move || e.store().due_timers(horizon, limit)).await;
            match listed {
                Ok(Ok(listed)) => {
                    let mut next = None;
                    backlog = listed.len() == limit;
                    queue.clear();
                    queued_at = now;
                    for timer in listed {
                        let key = (timer.instance, timer.timer);
                        if in_flight.contains(&key) || failed.contains_key(&key) {
                            continue;
                        }
                        if timer.due > now {
                            next = Some(timer.due);
                            backlog = false;
                            break;
                        }
                        queue.push_back(timer);
                    }
                    if !backlog {
                        look_at = Instant::now() + pause_until(next, now, options.poll);
                    }
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, "reading due timers failed");
                    backlog = false;
                    look_at = Instant::now() + options.poll;
                }
                Err(error) => {
                    tracing::error!(%error, "reading due timers panicked");
                    backlog = false;
                    look_at = Instant::now() + options.poll;
                }
            }
            continue;
        }
        tokio::select! {
            Some(done) = firing.join_next(), if !firing.is_empty() => {
                collect(done, &mut in_flight, &mut failed, options.poll);
            }
            _ = tokio::time::sleep_until(look_at), if !backlog && queue.is_empty() => {}
            _ = &mut wake => {
                look_at = Instant::now();
                wake = Box::pin(engine.wake.notified());
            }
            _ = stopped.changed() => break,
        }
    }
    // Stopping: nothing new starts; the firings in flight are transactions already running,
    // and finish.
    while firing.join_next().await.is_some() {}
}

/// Starts one firing on a blocking thread. `looked` is the time of the look that found the
/// timer due; the firing runs at the clock's time then, which is not earlier.
fn spawn_firing(
    firing: &mut JoinSet<Fired>,
    engine: &Arc<Engine>,
    timer: TimerRecord,
    looked: Timestamp,
) {
    let e = engine.clone();
    firing.spawn_blocking(move || {
        let key = (timer.instance, timer.timer);
        let now = e.clock().now().max(looked);
        // A panic is caught here rather than by the join, so that the loop always learns
        // which timer's firing ended and can take it off the set in flight.
        let fired =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.fire_timer(&timer, now)));
        match fired {
            Ok(Ok(_)) => (key, true),
            Ok(Err(error)) => {
                tracing::error!(%error, instance = %timer.instance, timer = timer.timer, "firing a timer failed");
                (key, false)
            }
            Err(_) => {
                tracing::error!(instance = %timer.instance, timer = timer.timer, "firing a timer panicked");
                (key, false)
            }
        }
    });
}

/// Takes a finished firing off the set in flight; a failed one is skipped for `poll`.
fn collect(
    done: Result<Fired, tokio::task::JoinError>,
    in_flight: &mut HashSet<TimerKey>,
    failed: &mut HashMap<TimerKey, Instant>,
    poll: Duration,
) {
    match done {
        Ok((key, committed)) => {
            in_flight.remove(&key);
            if !committed {
                failed.insert(key, Instant::now() + poll);
            }
        }
        // Only cancellation is left (panics are caught in the task), which happens when the
        // tokio runtime itself shuts down.
        Err(error) => tracing::error!(%error, "a timer firing task was cancelled"),
    }
}

/// How long to wait before the next look: until `next` is due by the engine's clock, at
/// most `poll` (a clock that runs fast, or a timer added meanwhile without a wake-up).
fn pause_until(next: Option<Timestamp>, now: Timestamp, poll: Duration) -> Duration {
    match next {
        Some(next) => {
            let wait = next.duration_since(now);
            if wait.is_negative() || wait.is_zero() {
                Duration::ZERO
            } else {
                Duration::try_from(wait).unwrap_or(poll).min(poll)
            }
        }
        None => poll,
    }
}
