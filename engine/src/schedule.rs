//! Timer schedules: ISO 8601 durations, dates and cycles, and cron, in an IANA time zone.
//!
//! PLACEHOLDER SIGNATURES ONLY: the schedule helper replaces this file.

use jiff::Timestamp;

/// A schedule problem: what, and where in the expression's text (byte offset).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ScheduleError {
    pub message: String,
    pub offset: usize,
}

/// A parsed timer expression with its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    source: String,
}

impl Schedule {
    /// Parses a cron expression (5 or 6 fields), an ISO 8601 duration (`P3D`), date-time
    /// (`2027-01-01T09:00:00Z` or local `2027-01-01T09:00` read in `zone`) or cycle (`R3/PT10H`,
    /// `R/2027-01-01T09:00/P1D`). `zone` is an IANA name; `None` is UTC.
    pub fn parse(source: &str, zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let _ = zone;
        Ok(Schedule {
            source: source.to_string(),
        })
    }
    pub fn source(&self) -> &str {
        &self.source
    }
    /// `Err` with the reason when this schedule can never fire (`0 0 31 4 *`, `R0/PT1H`).
    pub fn check_can_fire(&self) -> Result<(), ScheduleError> {
        Ok(())
    }
    /// The next fire instant strictly after `after`. `armed` is when the timer was armed
    /// (durations and cycles count from it), `fired` how many times it has fired so far.
    pub fn next_after(&self, after: Timestamp, armed: Timestamp, fired: u32) -> Option<Timestamp> {
        let _ = (after, armed, fired);
        None
    }
    /// True when the schedule fires more than once (a cycle or a cron expression).
    pub fn repeats(&self) -> bool {
        false
    }
}
