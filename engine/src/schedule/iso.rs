//! ISO 8601 parsing for timers: durations (`P1DT2H`), date-times (`2027-01-01T09:00`) and
//! repeating intervals (`R3/PT10H`, `R5/2027-01-01T09:00/P1D`).
//!
//! The parser is written by hand rather than delegated to jiff because a process author needs
//! to be told *where* an expression is wrong: every error carries the byte offset, within the
//! whole timer expression, of the part that failed and says what was expected there.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone};
use jiff::{Span, Timestamp};

use super::ScheduleError;

/// Examples quoted in error messages, so every message shows the accepted shapes.
const DURATION_EXAMPLES: &str = "P3D, PT10M, P1DT2H";
const DATE_EXAMPLES: &str = "2027-01-01, 2027-01-01T09:00, 2027-01-01T09:00:00Z";
const CYCLE_EXAMPLES: &str = "R3/PT10H, R/P1D, R5/2027-01-01T09:00/P1D";

/// A parsed repeating interval.
#[derive(Clone, Debug)]
pub(super) struct Cycle {
    /// `None` for `R/...`: repeats without end.
    pub count: Option<u32>,
    /// The first fire instant; `None` counts from when the timer is armed.
    pub start: Option<Timestamp>,
    pub interval: Span,
    /// Offsets of the count and of the interval, so that `check_can_fire` can point at them.
    pub count_offset: usize,
    pub interval_offset: usize,
}

/// Reads `text`, which starts at byte `base` of the whole expression.
struct Reader<'a> {
    text: &'a str,
    base: usize,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str, base: usize) -> Reader<'a> {
        Reader { text, base, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    /// The offset in the whole expression of the reader's position.
    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn error(&self, message: impl Into<String>) -> ScheduleError {
        ScheduleError::new(message, self.offset())
    }

    /// Describes the character at the position, for "found ..." in messages.
    fn found(&self) -> String {
        match self.text[self.pos..].chars().next() {
            Some(c) => format!("`{c}`"),
            None => "the end".to_string(),
        }
    }

    fn eat(&mut self, expected: u8) -> bool {
        if self.peek().map(|b| b.to_ascii_uppercase()) == Some(expected) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Reads a run of ASCII digits (possibly empty) and returns it.
    fn digits(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    /// Reads exactly `count` digits as a number, or explains what was expected.
    fn fixed_digits(&mut self, count: usize, what: &str) -> Result<(i64, usize), ScheduleError> {
        let offset = self.offset();
        let start = self.pos;
        let run = self.digits();
        if run.len() != count {
            self.pos = start;
            return Err(ScheduleError::new(
                format!("expected {what} ({count} digits), found {}", self.found()),
                offset,
            ));
        }
        // At most four ASCII digits, so the parse cannot fail; map the impossible case anyway
        // rather than panic on user input.
        let value = run
            .parse::<i64>()
            .map_err(|_| ScheduleError::new(format!("expected {what}"), offset))?;
        Ok((value, offset))
    }
}

/// Parses an ISO 8601 duration such as `P1DT2H` or `PT0.5S`. Only seconds may carry a fraction,
/// and there is no sign: a timer cannot wait a negative time.
pub(super) fn parse_duration(text: &str, base: usize) -> Result<Span, ScheduleError> {
    let mut reader = Reader::new(text, base);
    match reader.peek() {
        Some(b'P' | b'p') => reader.pos += 1,
        Some(b'-' | b'+') => {
            return Err(reader.error(format!(
                "a duration has no sign: expected `P` followed by numbers and units ({DURATION_EXAMPLES})"
            )))
        }
        _ => {
            return Err(reader.error(format!(
                "expected an ISO 8601 duration starting with `P` ({DURATION_EXAMPLES}), found {}",
                reader.found()
            )))
        }
    }

    let mut span = Span::new();
    let mut in_time = false;
    let mut time_offset = 0;
    let mut any_component = false;
    let mut any_time_component = false;
    // Units must come in the order Y, M, W, D, (T) H, M, S, each at most once: the rank of the
    // last unit read enforces it.
    let mut last_rank: Option<u8> = None;

    while !reader.at_end() {
        if reader.peek().map(|b| b.to_ascii_uppercase()) == Some(b'T') {
            if in_time {
                return Err(reader.error("a duration has only one `T` (PT10M, P1DT2H)"));
            }
            time_offset = reader.offset();
            reader.pos += 1;
            in_time = true;
            continue;
        }

        let number_offset = reader.offset();
        let whole = reader.digits();
        if whole.is_empty() {
            return Err(reader.error(format!(
                "expected a number followed by a unit ({}), found {}",
                if in_time {
                    "H, M or S after `T`"
                } else {
                    "Y, M, W or D, or `T` then H, M or S"
                },
                reader.found()
            )));
        }
        let mut fraction: Option<(&str, usize)> = None;
        if matches!(reader.peek(), Some(b'.' | b',')) {
            let fraction_offset = reader.offset();
            reader.pos += 1;
            let digits = reader.digits();
            if digits.is_empty() {
                return Err(reader.error("expected digits after the decimal mark (PT0.5S)"));
            }
            if digits.len() > 9 {
                return Err(ScheduleError::new(
                    "at most 9 decimal places (nanoseconds) are supported",
                    fraction_offset,
                ));
            }
            fraction = Some((digits, fraction_offset));
        }

        let unit_offset = reader.offset();
        let Some(unit) = reader.peek().map(|b| b.to_ascii_uppercase()) else {
            return Err(reader.error(format!(
                "expected a unit after the number ({}), found the end",
                if in_time { "H, M or S" } else { "Y, M, W or D" }
            )));
        };
        reader.pos += 1;
        let rank = match (in_time, unit) {
            (false, b'Y') => 0,
            (false, b'M') => 1,
            (false, b'W') => 2,
            (false, b'D') => 3,
            (true, b'H') => 4,
            (true, b'M') => 5,
            (true, b'S') => 6,
            (false, b'H' | b'S') => {
                return Err(ScheduleError::new(
                    "hours and seconds come after `T` (PT2H, P1DT30S)",
                    unit_offset,
                ));
            }
            (true, b'Y' | b'W' | b'D') => {
                return Err(ScheduleError::new(
                    "years, weeks and days come before `T` (P1DT2H)",
                    unit_offset,
                ));
            }
            _ => {
                reader.pos -= 1;
                return Err(reader.error(format!(
                    "expected a unit ({}), found {}",
                    if in_time { "H, M or S" } else { "Y, M, W or D" },
                    reader.found()
                )));
            }
        };
        if last_rank.is_some_and(|last| rank <= last) {
            return Err(ScheduleError::new(
                "units must appear once each, in the order Y, M, W, D, T, H, M, S",
                unit_offset,
            ));
        }
        last_rank = Some(rank);
        if let Some((_, fraction_offset)) = fraction
            && rank != 6
        {
            return Err(ScheduleError::new(
                "only seconds may have a fraction (PT0.5S); use a smaller unit instead",
                fraction_offset,
            ));
        }

        let too_large = || {
            ScheduleError::new(
                format!("the number {whole} is too large for a duration"),
                number_offset,
            )
        };
        let value = whole.parse::<i64>().map_err(|_| too_large())?;
        span = match rank {
            0 => span.try_years(value),
            1 => span.try_months(value),
            2 => span.try_weeks(value),
            3 => span.try_days(value),
            4 => span.try_hours(value),
            5 => span.try_minutes(value),
            _ => span.try_seconds(value),
        }
        .map_err(|_| too_large())?;
        if let Some((digits, fraction_offset)) = fraction {
            let nanos = format!("{digits:0<9}").parse::<i64>().map_err(|_| {
                ScheduleError::new("expected digits after the decimal mark", fraction_offset)
            })?;
            span = span
                .try_milliseconds(nanos / 1_000_000)
                .and_then(|s| s.try_microseconds(nanos / 1_000 % 1_000))
                .and_then(|s| s.try_nanoseconds(nanos % 1_000))
                .map_err(|_| too_large())?;
        }
        any_component = true;
        any_time_component |= in_time;
    }

    if in_time && !any_time_component {
        return Err(ScheduleError::new(
            "expected hours, minutes or seconds after `T` (PT10M)",
            time_offset + 1,
        ));
    }
    if !any_component {
        return Err(reader.error(format!(
            "expected at least one number and unit after `P` ({DURATION_EXAMPLES})"
        )));
    }
    Ok(span)
}

/// Parses an ISO 8601 date or date-time. A date alone is midnight in `zone`; a date-time
/// without `Z` or an offset is a local time in `zone`, where a time that does not exist (in
/// the spring gap) or exists twice (in the autumn fold) is resolved by jiff's "compatible"
/// rule: the offset from before the change, and the first occurrence, as RFC 5545 says.
pub(super) fn parse_date_time(
    text: &str,
    base: usize,
    zone: &TimeZone,
) -> Result<Timestamp, ScheduleError> {
    let mut reader = Reader::new(text, base);
    let (year, _) = reader.fixed_digits(4, "a year")?;
    expect_separator(&mut reader, b'-', "between year and month (2027-01-01)")?;
    let (month, month_offset) = reader.fixed_digits(2, "a month")?;
    expect_separator(&mut reader, b'-', "between month and day (2027-01-01)")?;
    let (day, day_offset) = reader.fixed_digits(2, "a day")?;

    if !(1..=12).contains(&month) {
        return Err(ScheduleError::new(
            format!("there is no month {month}: expected 01 to 12"),
            month_offset,
        ));
    }
    // The year has exactly four digits and the month is checked, so only the day can be wrong.
    let date = Date::new(year as i16, month as i8, day as i8).map_err(|_| {
        ScheduleError::new(
            format!("{} {year} has no day {day}", month_name(month as u8)),
            day_offset,
        )
    })?;

    if reader.at_end() {
        return resolve_local(date.to_datetime(Time::midnight()), zone, base);
    }
    match reader.peek() {
        Some(b'T' | b't' | b' ') => reader.pos += 1,
        _ => {
            return Err(reader.error(format!(
                "expected `T` and a time after the date ({DATE_EXAMPLES}), found {}",
                reader.found()
            )));
        }
    }

    let (hour, hour_offset) = reader.fixed_digits(2, "an hour")?;
    expect_separator(&mut reader, b':', "between hour and minute (09:00)")?;
    let (minute, minute_offset) = reader.fixed_digits(2, "a minute")?;
    let (mut second, mut second_offset) = (0, 0);
    let mut nanos = 0;
    if reader.peek() == Some(b':') {
        reader.pos += 1;
        (second, second_offset) = reader.fixed_digits(2, "a second")?;
        if matches!(reader.peek(), Some(b'.' | b',')) {
            reader.pos += 1;
            let fraction_offset = reader.offset();
            let digits = reader.digits();
            if digits.is_empty() || digits.len() > 9 {
                return Err(ScheduleError::new(
                    "expected 1 to 9 digits of fractional seconds",
                    fraction_offset,
                ));
            }
            nanos = format!("{digits:0<9}").parse::<i32>().map_err(|_| {
                ScheduleError::new("expected digits of fractional seconds", fraction_offset)
            })?;
        }
    }
    for (value, max, what, offset) in [
        (hour, 23, "hour", hour_offset),
        (minute, 59, "minute", minute_offset),
        (second, 59, "second", second_offset),
    ] {
        if value > max {
            return Err(ScheduleError::new(
                format!("there is no {what} {value}: expected 00 to {max}"),
                offset,
            ));
        }
    }
    let time = Time::new(hour as i8, minute as i8, second as i8, nanos)
        .map_err(|_| ScheduleError::new("this time of day does not exist", hour_offset))?;
    let datetime = date.to_datetime(time);

    if reader.at_end() {
        return resolve_local(datetime, zone, base);
    }
    let offset_at = reader.offset();
    let offset = match reader.peek() {
        Some(b'Z' | b'z') => {
            reader.pos += 1;
            Offset::UTC
        }
        Some(sign @ (b'+' | b'-')) => {
            reader.pos += 1;
            let (hours, hours_offset) = reader.fixed_digits(2, "offset hours")?;
            let minutes = if reader.at_end() {
                0
            } else {
                if reader.peek() == Some(b':') {
                    reader.pos += 1;
                }
                reader.fixed_digits(2, "offset minutes")?.0
            };
            if hours > 23 || minutes > 59 {
                return Err(ScheduleError::new(
                    "an offset is at most +23:59 (+01:00, -05:00)",
                    hours_offset,
                ));
            }
            let seconds = (hours * 3600 + minutes * 60) as i32;
            let seconds = if sign == b'-' { -seconds } else { seconds };
            Offset::from_seconds(seconds).map_err(|_| {
                ScheduleError::new("an offset is at most +23:59 (+01:00, -05:00)", hours_offset)
            })?
        }
        _ => {
            return Err(reader.error(format!(
                "expected the end, `Z` or an offset such as +01:00 after the time, found {}",
                reader.found()
            )));
        }
    };
    if !reader.at_end() {
        return Err(reader.error(format!(
            "expected the end after the offset, found {}",
            reader.found()
        )));
    }
    offset
        .to_timestamp(datetime)
        .map_err(|_| ScheduleError::new("this date-time is outside the supported range", offset_at))
}

/// Parses a repeating interval: `R[n]/duration` counts from when the timer is armed, and
/// `R[n]/start/duration` from a fixed start. ISO's other shapes (`start/end`,
/// `duration/end`) are refused with a message, not guessed at.
pub(super) fn parse_cycle(
    text: &str,
    base: usize,
    zone: &TimeZone,
) -> Result<Cycle, ScheduleError> {
    let mut reader = Reader::new(text, base);
    if !reader.eat(b'R') {
        return Err(reader.error(format!("expected `R` to start a cycle ({CYCLE_EXAMPLES})")));
    }
    let count_offset = reader.offset();
    let digits = reader.digits();
    let count = if digits.is_empty() {
        None
    } else {
        Some(digits.parse::<u32>().map_err(|_| {
            ScheduleError::new(
                format!(
                    "the repetition count {digits} is too large (at most {})",
                    u32::MAX
                ),
                count_offset,
            )
        })?)
    };
    if reader.peek() != Some(b'/') {
        return Err(reader.error(format!(
            "expected `/` after `R` and the optional repetition count ({CYCLE_EXAMPLES}), found {}",
            reader.found()
        )));
    }
    reader.pos += 1;

    // Split the rest on `/`, remembering where each part begins in the whole expression.
    let rest = &text[reader.pos..];
    let rest_base = reader.offset();
    let mut parts: Vec<(&str, usize)> = Vec::new();
    let mut part_start = 0;
    for (index, byte) in rest.bytes().enumerate() {
        if byte == b'/' {
            parts.push((&rest[part_start..index], rest_base + part_start));
            part_start = index + 1;
        }
    }
    parts.push((&rest[part_start..], rest_base + part_start));

    let is_duration = |part: &str| matches!(part.as_bytes().first(), Some(b'P' | b'p'));
    match parts.as_slice() {
        [(interval, interval_offset)] => {
            if !is_duration(interval) {
                return Err(ScheduleError::new(
                    format!("expected a duration after `R/` ({CYCLE_EXAMPLES})"),
                    *interval_offset,
                ));
            }
            Ok(Cycle {
                count,
                start: None,
                interval: parse_duration(interval, *interval_offset)?,
                count_offset,
                interval_offset: *interval_offset,
            })
        }
        [(first, first_offset), (second, second_offset)] => {
            if is_duration(first) {
                return Err(ScheduleError::new(
                    "a cycle that ends at a date (R/P1D/2027-12-31) is not supported: \
                     give a start and a duration (R5/2027-01-01T09:00/P1D)",
                    *first_offset,
                ));
            }
            let start = parse_date_time(first, *first_offset, zone)?;
            if !is_duration(second) {
                return Err(ScheduleError::new(
                    "expected a duration after the start (R5/2027-01-01T09:00/P1D); \
                     a start and an end date is not supported",
                    *second_offset,
                ));
            }
            Ok(Cycle {
                count,
                start: Some(start),
                interval: parse_duration(second, *second_offset)?,
                count_offset,
                interval_offset: *second_offset,
            })
        }
        [_, _, (_, third_offset), ..] => Err(ScheduleError::new(
            format!("a cycle has at most a start and a duration after `R/` ({CYCLE_EXAMPLES})"),
            third_offset - 1,
        )),
        // `parts` always holds at least one element; keep the match total without a panic.
        [] => Err(reader.error(format!("expected a duration after `R/` ({CYCLE_EXAMPLES})"))),
    }
}

fn expect_separator(
    reader: &mut Reader<'_>,
    separator: u8,
    what: &str,
) -> Result<(), ScheduleError> {
    if reader.peek() == Some(separator) {
        reader.pos += 1;
        Ok(())
    } else {
        Err(reader.error(format!(
            "expected `{}` {what}, found {}",
            separator as char,
            reader.found()
        )))
    }
}

/// Resolves a local date-time in `zone` with the RFC 5545 rule (jiff's "compatible").
fn resolve_local(
    datetime: DateTime,
    zone: &TimeZone,
    offset: usize,
) -> Result<Timestamp, ScheduleError> {
    zone.to_ambiguous_timestamp(datetime)
        .compatible()
        .map_err(|_| ScheduleError::new("this date-time is outside the supported range", offset))
}

/// English month names for messages ("April has no day 31").
pub(super) fn month_name(month: u8) -> &'static str {
    const NAMES: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    NAMES
        .get(usize::from(month).wrapping_sub(1))
        .copied()
        .unwrap_or("that month")
}
