//! Timer schedules: ISO 8601 durations, dates and cycles, and cron, in an IANA time zone.
//!
//! A [`Schedule`] answers one question for the runtime: given when a timer was armed and how
//! often it has fired, when does it fire next? Time is always an input, never read here.
//!
//! Daylight saving follows RFC 5545: a local time that does not exist (the spring gap) runs
//! with the offset from before the jump, so 02:30 on the spring-forward day in Europe/Rome
//! runs at 03:30 CEST; a local time that occurs twice (the autumn fold) runs once, at its first
//! occurrence. That is jiff's "compatible" disambiguation, used for every local time here.
//! Calendar units (`P1D`, `P1M`) are added to the local date, so `P1D` is the same local time
//! the next day (23 hours across the spring change), while `PT24H` is always 24 hours.
//!
//! After downtime an overdue timer fires once, not once per missed period: the runtime fires
//! it late, then asks [`Schedule::next_after`] for the first occurrence after *now*, which
//! skips the missed ones.

mod cron;
mod iso;
#[cfg(test)]
mod tests;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use crate::expr::display_value_within;
use crate::value::Value;

/// A schedule problem: what, and where in the expression's text (byte offset).
///
/// A problem with the time zone rather than the expression has offset 0 and names the zone.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ScheduleError {
    pub message: String,
    pub offset: usize,
}

impl ScheduleError {
    fn new(message: impl Into<String>, offset: usize) -> ScheduleError {
        ScheduleError {
            message: message.into(),
            offset,
        }
    }
}

/// What kind of timer an expression describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// An ISO 8601 duration (`P3D`): fires once, that long after being armed.
    Duration,
    /// An ISO 8601 date or date-time (`2027-01-01T09:00`): fires once, then.
    Date,
    /// An ISO 8601 repeating interval (`R3/PT10H`, `R/2027-01-01T09:00/P1D`).
    Cycle,
    /// A cron expression (`0 9 * * MON-FRI`).
    Cron,
}

/// A parsed timer expression with its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    source: String,
    zone_name: String,
    zone: TimeZone,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Duration(Span),
    Date(Timestamp),
    Cycle(iso::Cycle),
    /// Boxed because croner's parsed pattern is several hundred bytes, and schedules sit
    /// inline in the model's enums.
    Cron(Box<cron::CronSpec>),
}

impl Schedule {
    /// Parses a cron expression (5 or 6 fields), an ISO 8601 duration (`P3D`), date-time
    /// (`2027-01-01T09:00:00Z` or local `2027-01-01T09:00` read in `zone`) or cycle (`R3/PT10H`,
    /// `R/2027-01-01T09:00/P1D`). `zone` is an IANA name; `None` is UTC.
    ///
    /// Cron follows POSIX: 5 fields start with the minute, 6 with the second; names (`MON`,
    /// `JAN`), ranges, steps, lists, `L`, `W`, `#` and `@daily`-style nicknames are accepted;
    /// when both day-of-month and day-of-week are restricted, either matching is enough.
    /// Errors carry the byte offset of the offending part of `source`.
    pub fn parse(source: &str, zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let zone_name = zone.unwrap_or("UTC");
        let tz = TimeZone::get(zone_name).map_err(|_| {
            ScheduleError::new(
                format!(
                    "unknown time zone `{zone_name}`: expected an IANA name such as Europe/Rome"
                ),
                0,
            )
        })?;
        Schedule::parse_in(source, zone_name, tz)
    }

    /// [`Schedule::parse`] with the zone already looked up.
    fn parse_in(source: &str, zone_name: &str, tz: TimeZone) -> Result<Schedule, ScheduleError> {
        let text = source.trim();
        let base = source.len() - source.trim_start().len();
        let bytes = text.as_bytes();
        let kind = match bytes.first() {
            None => {
                return Err(ScheduleError::new(
                    "empty timer expression: expected a duration (P3D), a date-time \
                     (2027-01-01T09:00), a cycle (R3/PT10H) or a cron expression (0 9 * * MON)",
                    0,
                ));
            }
            Some(b'P' | b'p') => Kind::Duration(iso::parse_duration(text, base)?),
            Some(b'R' | b'r') => Kind::Cycle(iso::parse_cycle(text, base, &tz)?),
            // Four digits and a dash cannot start a valid cron expression, so this is a date.
            _ if bytes.len() >= 5
                && bytes[..4].iter().all(u8::is_ascii_digit)
                && bytes[4] == b'-' =>
            {
                Kind::Date(iso::parse_date_time(text, base, &tz)?)
            }
            _ => Kind::Cron(Box::new(cron::parse(text, base)?)),
        };
        Ok(Schedule {
            source: source.to_string(),
            zone_name: zone_name.to_string(),
            zone: tz,
            kind,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The IANA name of the zone the schedule is read in (`UTC` when none was given).
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    pub fn kind(&self) -> ScheduleKind {
        match self.kind {
            Kind::Duration(_) => ScheduleKind::Duration,
            Kind::Date(_) => ScheduleKind::Date,
            Kind::Cycle(_) => ScheduleKind::Cycle,
            Kind::Cron(_) => ScheduleKind::Cron,
        }
    }

    /// True for an ISO 8601 duration such as a user task's `due: P2D`.
    pub fn is_duration(&self) -> bool {
        matches!(self.kind, Kind::Duration(_))
    }

    /// `Err` with the reason when this schedule can never fire (`0 0 31 4 *`, `R0/PT1H`, a
    /// cycle with a zero interval). Decided without searching, so it answers at once.
    ///
    /// A zero duration (`PT0S`) can fire: at once. A date in the past can fire too: the
    /// runtime fires an overdue date as soon as it is armed.
    pub fn check_can_fire(&self) -> Result<(), ScheduleError> {
        match &self.kind {
            Kind::Duration(_) | Kind::Date(_) => Ok(()),
            Kind::Cron(spec) => spec.check_can_fire(),
            Kind::Cycle(cycle) => {
                if cycle.count == Some(0) {
                    return Err(ScheduleError::new(
                        "this cycle never fires: R0 repeats zero times",
                        cycle.count_offset,
                    ));
                }
                if cycle.interval.is_zero() {
                    return Err(ScheduleError::new(
                        "this cycle's interval is zero: it would fire endlessly at one instant",
                        cycle.interval_offset,
                    ));
                }
                Ok(())
            }
        }
    }

    /// The next fire instant strictly after `after`. `armed` is when the timer was armed
    /// (durations and cycles count from it), `fired` how many times it has fired so far.
    ///
    /// - Duration: `armed + duration` (calendar units in the zone) while `fired == 0` and that
    ///   instant is after `after`; then `None`.
    /// - Date: the date while `fired == 0` and the date is after `after`; then `None`. An
    ///   overdue date is therefore *not* returned here: use [`Schedule::first_due`] when arming.
    /// - Cycle without a start (`R3/PT10H`): the points `armed + k * interval`, k >= 1; the
    ///   first point after `after`, while `fired` is below the count. Missed points are skipped,
    ///   not counted: after downtime, `R3/PT10H` asked at armed+35h with one fire gives
    ///   armed+40h.
    /// - Cycle with a start (`R5/2027-01-01T09:00/P1D`): the points `start + k * interval`,
    ///   0 <= k < count, fixed in the calendar; the first after `after`, while `fired` is
    ///   below the count.
    /// - Cron: the first matching local time that resolves strictly after `after`.
    ///
    /// `None` also when the schedule can never fire. Every search is bounded.
    pub fn next_after(&self, after: Timestamp, armed: Timestamp, fired: u32) -> Option<Timestamp> {
        match &self.kind {
            Kind::Duration(span) => {
                let due = self.add(armed, *span)?;
                (fired == 0 && due > after).then_some(due)
            }
            Kind::Date(date) => (fired == 0 && *date > after).then_some(*date),
            Kind::Cron(spec) => {
                spec.check_can_fire().ok()?;
                spec.next_after(&self.zone, after)
            }
            Kind::Cycle(cycle) => {
                self.check_can_fire().ok()?;
                if cycle.count.is_some_and(|count| fired >= count) {
                    return None;
                }
                match cycle.start {
                    None => {
                        let base = armed.to_zoned(self.zone.clone());
                        let index = first_point_after(&base, cycle.interval, 1, after)?;
                        point(&base, cycle.interval, index)
                    }
                    Some(start) => self.anchored_point_after(cycle, start, after),
                }
            }
        }
    }

    /// The first fire instant of a timer armed at `armed`, whether or not it is already past:
    /// what the runtime schedules when it arms the timer.
    ///
    /// - Duration: `armed + duration` (equal to `armed` for `PT0S`).
    /// - Date: the date, even when it is at or before `armed` (an overdue date fires at once).
    /// - Cycle without a start: `armed + interval`.
    /// - Cycle with a start: the first of its points at or after `armed` (the start itself when
    ///   it is still ahead); `None` when all of them are past.
    /// - Cron: the first match strictly after `armed`.
    ///
    /// `None` when the schedule can never fire.
    pub fn first_due(&self, armed: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Duration(span) => self.add(armed, *span),
            Kind::Date(date) => Some(*date),
            Kind::Cron(_) => self.next_after(armed, armed, 0),
            Kind::Cycle(cycle) => {
                self.check_can_fire().ok()?;
                match cycle.start {
                    None => point(&armed.to_zoned(self.zone.clone()), cycle.interval, 1),
                    Some(start) => {
                        let just_before = armed
                            .checked_sub(jiff::SignedDuration::from_nanos(1))
                            .ok()?;
                        self.anchored_point_after(cycle, start, just_before)
                    }
                }
            }
        }
    }

    /// True when the schedule fires more than once (a cycle or a cron expression).
    pub fn repeats(&self) -> bool {
        match &self.kind {
            Kind::Duration(_) | Kind::Date(_) => false,
            Kind::Cycle(cycle) => cycle.count.is_none_or(|count| count > 1),
            Kind::Cron(_) => true,
        }
    }

    /// `instant + span`, with calendar units added to the local date in the zone.
    fn add(&self, instant: Timestamp, span: Span) -> Option<Timestamp> {
        instant
            .to_zoned(self.zone.clone())
            .checked_add(span)
            .ok()
            .map(|zoned| zoned.timestamp())
    }

    /// The first point of a cycle with a start that lies strictly after `after`.
    fn anchored_point_after(
        &self,
        cycle: &iso::Cycle,
        start: Timestamp,
        after: Timestamp,
    ) -> Option<Timestamp> {
        let base = start.to_zoned(self.zone.clone());
        let index = first_point_after(&base, cycle.interval, 0, after)?;
        if cycle.count.is_some_and(|count| index >= i64::from(count)) {
            return None;
        }
        point(&base, cycle.interval, index)
    }
}

/// What a computed timer (`wait: "{{ quote.valid_until }}"`) may be: the value of its template
/// at the moment it is armed.
const COMPUTED_EXPECTED: &str = "expected a date, an instant or a duration, or a text of one \
     (2027-02-03, 2027-02-03T09:00, 2027-02-03T09:00:00Z, P30D)";

/// When a computed timer armed at `armed` fires, from the value its template gave:
///
/// - a date: at the start of that day in `zone` (so a quote valid *until* a date expires at
///   `add_days(valid_until, 1)`);
/// - an instant: then;
/// - a duration: that long after `armed`, calendar units added to the local date in `zone`;
/// - a text: read exactly as the same timer written out in the file (`2027-02-03`, a local
///   `2027-02-03T09:00` in `zone`, `2027-02-03T09:00:00Z`, `P30D`), but never a cycle or cron:
///   a computed timer fires once.
///
/// A time already past is returned as it is: the runtime fires an overdue timer at once.
/// `Err` says what the value was and why it cannot be a timer, worded to follow "the timer
/// `...` of step `...`".
pub fn computed_due(
    value: &Value,
    armed: Timestamp,
    zone_name: &str,
    zone: &TimeZone,
) -> Result<Timestamp, String> {
    let shown = || match value {
        Value::String(text) => format!("the text \"{text}\""),
        Value::Null => "null".to_string(),
        other => format!(
            "a {} ({})",
            other.type_name(),
            display_value_within(other, 80).unwrap_or_else(|| "...".into())
        ),
    };
    let out_of_range = || format!("gave {}, which is out of the supported range", shown());
    match value {
        Value::Date(date) => date
            .to_zoned(zone.clone())
            .map(|start| start.timestamp())
            .map_err(|_| out_of_range()),
        Value::Instant(instant) => Ok(*instant),
        Value::Duration(span) => armed
            .to_zoned(zone.clone())
            .checked_add(*span)
            .map(|zoned| zoned.timestamp())
            .map_err(|_| out_of_range()),
        Value::String(text) => {
            let trimmed = text.trim();
            let bytes = trimmed.as_bytes();
            // The shapes of a duration and of a date; anything else would be read as cron.
            let once = matches!(bytes.first(), Some(b'P' | b'p'))
                || (bytes.len() >= 5
                    && bytes[..4].iter().all(u8::is_ascii_digit)
                    && bytes[4] == b'-');
            if !once {
                return Err(format!("gave {}; {COMPUTED_EXPECTED}", shown()));
            }
            let schedule = Schedule::parse_in(trimmed, zone_name, zone.clone())
                .map_err(|error| format!("gave {}: {}", shown(), error.message))?;
            schedule.first_due(armed).ok_or_else(out_of_range)
        }
        _ => Err(format!("gave {}; {COMPUTED_EXPECTED}", shown())),
    }
}

/// The `index`-th point of a cycle: `base + index * interval`, computed from the base each
/// time (not by repeated addition) so that `P1M` from January 31 gives February 28, then
/// March 31, without drifting.
fn point(base: &jiff::Zoned, interval: Span, index: i64) -> Option<Timestamp> {
    let offset = interval.checked_mul(index).ok()?;
    base.checked_add(offset).ok().map(|zoned| zoned.timestamp())
}

/// The smallest index `>= lowest` whose point lies strictly after `after`, found by doubling
/// then bisecting, so a timer overdue by years costs a few dozen additions rather than one
/// per missed period. Points grow with the index because the interval is positive; an index
/// whose point overflows the supported range counts as "after" and yields `None` if chosen.
fn first_point_after(
    base: &jiff::Zoned,
    interval: Span,
    lowest: i64,
    after: Timestamp,
) -> Option<i64> {
    let is_after = |index: i64| point(base, interval, index).is_none_or(|instant| instant > after);
    if is_after(lowest) {
        return point(base, interval, lowest).map(|_| lowest);
    }
    // Invariant: the point at `low` is at or before `after`; the one at `high` is after it.
    let mut low = lowest;
    let mut step: i64 = 1;
    let mut high = loop {
        let candidate = low.checked_add(step)?;
        if is_after(candidate) {
            break candidate;
        }
        low = candidate;
        step = step.checked_mul(2)?;
    };
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if is_after(middle) {
            high = middle;
        } else {
            low = middle;
        }
    }
    point(base, interval, high).map(|_| high)
}

/// The fire instants of `expr` at or after `from`, in order, as a timer armed at `from` would
/// fire (lazily: a caller may stop at any time). Checks first that the expression parses and
/// can fire at all.
pub fn occurrences(
    expr: &str,
    zone: Option<&str>,
    from: Timestamp,
) -> Result<impl Iterator<Item = Timestamp>, ScheduleError> {
    let schedule = Schedule::parse(expr, zone)?;
    schedule.check_can_fire()?;
    let mut next = schedule.first_due(from).filter(|first| *first >= from);
    let mut fired: u32 = 0;
    Ok(std::iter::from_fn(move || {
        let instant = next?;
        fired = fired.saturating_add(1);
        next = schedule.next_after(instant, from, fired);
        Some(instant)
    }))
}

/// Up to `count` fire instants of `expr` at or after `from` (see `occurrences`).
pub fn preview(
    expr: &str,
    zone: Option<&str>,
    from: Timestamp,
    count: usize,
) -> Result<Vec<Timestamp>, ScheduleError> {
    Ok(occurrences(expr, zone, from)?.take(count).collect())
}
