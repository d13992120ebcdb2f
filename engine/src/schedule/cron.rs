//! Cron expressions: POSIX fields parsed by croner, fire instants resolved by us with jiff.
//!
//! Croner is trusted for the pattern language (names, ranges, steps, lists, `L`, `W`, `#`) and
//! for finding the next matching *civil* date-time, which it does on a zone-less
//! `jiff::civil::DateTime`. It is not trusted with time zones: it puts a time in the spring gap
//! at the first valid minute (03:00) while our rule (RFC 5545) keeps the offset from before the
//! jump (02:30 becomes 03:30). So each civil match is resolved in the real zone here, with
//! jiff's "compatible" disambiguation, and matches that do not land strictly after the asked
//! instant are skipped, which is what makes the repeated autumn hour fire only once.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::ScheduleError;
use super::iso::month_name;

/// The bit croner sets for a plain value in a field (its `component::ALL_BIT`, which it does
/// not export). Only read through `CronComponent::is_bit_set`.
const PLAIN_VALUE_BIT: u8 = 1;
/// The bit croner sets for a `W` (closest weekday) day of month (`CLOSEST_WEEKDAY_BIT`).
const CLOSEST_WEEKDAY_BIT: u8 = 1 << 7;
/// The feature croner enables on the day-of-month field for `L` (`LAST_BIT`).
const LAST_DAY_FEATURE: u8 = 1 << 6;

/// A parsed cron expression and where its day-of-month field starts, for `check_can_fire`.
#[derive(Clone, Debug)]
pub(super) struct CronSpec {
    cron: Cron,
    day_of_month_offset: usize,
}

/// One field of the expression: its text, its byte offset and what it is.
struct Field<'a> {
    text: &'a str,
    offset: usize,
    kind: FieldKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl FieldKind {
    fn describe(self) -> &'static str {
        match self {
            FieldKind::Second => "second field: expected 0-59",
            FieldKind::Minute => "minute field: expected 0-59",
            FieldKind::Hour => "hour field: expected 0-23",
            FieldKind::DayOfMonth => {
                "day-of-month field: expected 1-31, `L` (last day) or `15W` (closest weekday)"
            }
            FieldKind::Month => "month field: expected 1-12 or JAN-DEC",
            FieldKind::DayOfWeek => {
                "day-of-week field: expected 0-7 (0 and 7 are Sunday) or SUN-SAT, `5L` (last Friday) or `MON#2` (second Monday)"
            }
        }
    }
}

/// Croner configured for POSIX cron: seconds optional (a sixth field comes first), no year
/// field, and day-of-month OR day-of-week when both are restricted.
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .dom_and_dow(false)
        .build()
}

/// Parses `text` (which starts at byte `base` of the whole expression).
pub(super) fn parse(text: &str, base: usize) -> Result<CronSpec, ScheduleError> {
    // Nicknames are expanded here rather than by croner so the field offsets below stay those
    // of the text the author wrote (they all point at the nickname).
    let (pattern, nickname) = match expand_nickname(text, base)? {
        Some(expanded) => (expanded, true),
        None => (text, false),
    };

    let mut fields: Vec<(&str, usize)> = Vec::new();
    let mut field_start: Option<usize> = None;
    for (index, c) in pattern.char_indices() {
        match (c.is_whitespace(), field_start) {
            (true, Some(start)) => {
                fields.push((&pattern[start..index], start));
                field_start = None;
            }
            (false, None) => field_start = Some(index),
            _ => {}
        }
    }
    if let Some(start) = field_start {
        fields.push((&pattern[start..], start));
    }
    let at = |offset: usize| if nickname { base } else { base + offset };

    let kinds: &[FieldKind] = match fields.len() {
        5 => &[
            FieldKind::Minute,
            FieldKind::Hour,
            FieldKind::DayOfMonth,
            FieldKind::Month,
            FieldKind::DayOfWeek,
        ],
        6 => &[
            FieldKind::Second,
            FieldKind::Minute,
            FieldKind::Hour,
            FieldKind::DayOfMonth,
            FieldKind::Month,
            FieldKind::DayOfWeek,
        ],
        count => {
            let offset = match fields.get(6) {
                Some((_, start)) => at(*start),
                None => base + text.len(),
            };
            return Err(ScheduleError::new(
                format!(
                    "expected a cron expression with 5 fields (minute hour day-of-month month \
                     day-of-week) or 6 (seconds first), found {count} field{}; a timer can also \
                     be an ISO 8601 duration (P3D), date-time (2027-01-01T09:00) or cycle \
                     (R3/PT10H)",
                    if count == 1 { "" } else { "s" }
                ),
                offset,
            ));
        }
    };
    let fields: Vec<Field<'_>> = fields
        .iter()
        .zip(kinds)
        .map(|(&(text, offset), &kind)| Field {
            text,
            offset: at(offset),
            kind,
        })
        .collect();

    for field in &fields {
        check_field(field)?;
    }
    let cron = parser().parse(pattern).map_err(|error| {
        // Every field parsed alone, so the problem lies in how they combine; point at the
        // start and pass croner's explanation on.
        ScheduleError::new(format!("invalid cron expression: {error}"), base)
    })?;
    let day_of_month_offset = fields
        .iter()
        .find(|field| field.kind == FieldKind::DayOfMonth)
        .map_or(base, |field| field.offset);
    Ok(CronSpec {
        cron,
        day_of_month_offset,
    })
}

/// Expands `@daily` and friends; `None` when `text` is not a nickname.
fn expand_nickname(text: &str, base: usize) -> Result<Option<&'static str>, ScheduleError> {
    if !text.starts_with('@') {
        return Ok(None);
    }
    let expanded = match text.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => {
            return Err(ScheduleError::new(
                format!(
                    "unknown cron nickname `{text}`: expected @yearly, @monthly, @weekly, \
                     @daily or @hourly"
                ),
                base,
            ));
        }
    };
    Ok(Some(expanded))
}

/// Checks one field on its own so an error can point at it. Names are checked here because
/// croner replaces them across the whole pattern (it would read `MON` in the hour field as 1),
/// and empty list items because croner silently accepts `1,,2`.
fn check_field(field: &Field<'_>) -> Result<(), ScheduleError> {
    let bytes = field.text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte.is_ascii_alphabetic() {
            let start = index;
            while index < bytes.len() && bytes[index].is_ascii_alphabetic() {
                index += 1;
            }
            let word = field.text[start..index].to_ascii_uppercase();
            let allowed = match field.kind {
                FieldKind::Month => MONTHS.contains(&word.as_str()),
                FieldKind::DayOfWeek => DAYS.contains(&word.as_str()) || word == "L",
                FieldKind::DayOfMonth => matches!(word.as_str(), "L" | "W" | "LW"),
                _ => false,
            };
            if !allowed {
                return Err(ScheduleError::new(
                    format!(
                        "`{}` is not allowed in the {}",
                        &field.text[start..index],
                        field.kind.describe()
                    ),
                    field.offset + start,
                ));
            }
            continue;
        }
        if byte == b',' && (index == 0 || index + 1 == bytes.len() || bytes[index + 1] == b',') {
            return Err(ScheduleError::new(
                format!("empty item in a list in the {}", field.kind.describe()),
                field.offset + index,
            ));
        }
        if byte == b'+' && field.kind == FieldKind::DayOfWeek {
            return Err(ScheduleError::new(
                "`+` (day-of-month AND day-of-week) is not supported: Ciclo's cron is POSIX, \
                 where a day runs when either day field matches",
                field.offset + index,
            ));
        }
        index += 1;
    }

    // Let croner judge the field alone, every other field being `*`.
    let mut probe = ["0", "*", "*", "*", "*", "*"];
    let position = match field.kind {
        FieldKind::Second => 0,
        FieldKind::Minute => 1,
        FieldKind::Hour => 2,
        FieldKind::DayOfMonth => 3,
        FieldKind::Month => 4,
        FieldKind::DayOfWeek => 5,
    };
    probe[position] = field.text;
    parser()
        .parse(&probe.join(" "))
        .map(|_| ())
        .map_err(|error| {
            let detail = match error {
                croner::errors::CronError::ComponentError(detail) => detail,
                croner::errors::CronError::IllegalCharacters(_) => "illegal character.".to_string(),
                other => other.to_string(),
            };
            ScheduleError::new(
                format!(
                    "`{}` in the {}, `*`, lists (1,15), ranges (1-5) and steps (*/10) ({})",
                    field.text,
                    field.kind.describe(),
                    detail.trim_end_matches('.').to_lowercase()
                ),
                field.offset,
            )
        })
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl CronSpec {
    /// Decides without searching whether the pattern can ever match. Only one combination can
    /// fail: day-of-week unrestricted and no listed day of month existing in any listed month
    /// (`0 0 31 4 *`). When day-of-week is restricted, POSIX OR means any weekday in any month
    /// suffices, and `L` always exists; February counts 29 days since leap years come.
    pub(super) fn check_can_fire(&self) -> Result<(), ScheduleError> {
        let pattern = &self.cron.pattern;
        if !pattern.is_dow_wildcard()
            || pattern.is_dom_wildcard()
            || pattern.days.is_feature_enabled(LAST_DAY_FEATURE)
        {
            return Ok(());
        }
        let is_set = |component: &croner::CronComponent, value: u16, bit: u8| {
            component.is_bit_set(value, bit).unwrap_or(false)
        };
        let days: Vec<u16> = (1..=31)
            .filter(|&day| {
                is_set(&pattern.days, day, PLAIN_VALUE_BIT)
                    || is_set(&pattern.days, day, CLOSEST_WEEKDAY_BIT)
            })
            .collect();
        let months: Vec<u8> = (1..=12u8)
            .filter(|&month| is_set(&pattern.months, u16::from(month), PLAIN_VALUE_BIT))
            .collect();
        let longest = |month: u8| match month {
            2 => 29,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if months
            .iter()
            .any(|&month| days.iter().any(|&day| day <= longest(month)))
        {
            return Ok(());
        }

        let day_list = join_or(days.iter().map(u16::to_string));
        let message = match months.as_slice() {
            [month] => format!(
                "this cron expression never fires: {} has no day {day_list}",
                month_name(*month)
            ),
            _ => format!(
                "this cron expression never fires: none of {} has a day {day_list}",
                join_or(months.iter().map(|&month| month_name(month).to_string()))
            ),
        };
        Err(ScheduleError::new(message, self.day_of_month_offset))
    }

    /// The first instant strictly after `after` whose local time in `zone` matches.
    ///
    /// The search runs on civil time from `after`'s local time. Two DST cases need more:
    /// - in the autumn fold, a civil match may resolve (to its first occurrence) at or before
    ///   `after`; the rest of the fold then does too, so the search jumps to the fold's end;
    /// - just after a spring jump, `after`'s local time is past the gap, yet gap times resolve
    ///   (with the offset from before the jump) to instants after the jump, possibly after
    ///   `after`; those are searched separately and the earlier answer wins.
    pub(super) fn next_after(&self, zone: &TimeZone, after: Timestamp) -> Option<Timestamp> {
        let in_gap = self.next_in_recent_gap(zone, after);
        let mut start = zone.to_datetime(after);
        // One jump per fold is enough; the bound only guards against a malformed zone.
        for _ in 0..8 {
            let civil = self.cron.find_next_occurrence(&start, false).ok()?;
            let instant = zone.to_ambiguous_timestamp(civil).compatible().ok()?;
            if instant > after {
                return Some(in_gap.map_or(instant, |gap| gap.min(instant)));
            }
            // `civil` lies in a fold and its first occurrence is already past: skip to the
            // fold's end, the civil time of the transition read with the offset before it.
            let transition = zone.following(instant).next()?;
            let before = zone.to_offset(
                transition
                    .timestamp()
                    .checked_sub(SignedDuration::from_nanos(1))
                    .ok()?,
            );
            let fold_end = before.to_datetime(transition.timestamp());
            start = fold_end
                .checked_sub(SignedDuration::from_secs(1))
                .ok()?
                .max(civil);
        }
        in_gap
    }

    /// A match inside a spring gap that resolves strictly after `after`, when `after` falls in
    /// the stretch of time right after the jump where that can happen.
    fn next_in_recent_gap(&self, zone: &TimeZone, after: Timestamp) -> Option<Timestamp> {
        let just_after = after.checked_add(SignedDuration::from_nanos(1)).ok()?;
        let transition = zone.preceding(just_after).next()?;
        let new_offset = transition.offset();
        let old_offset = zone.to_offset(
            transition
                .timestamp()
                .checked_sub(SignedDuration::from_nanos(1))
                .ok()?,
        );
        let gap = SignedDuration::from_secs(i64::from(new_offset.seconds() - old_offset.seconds()));
        if gap <= SignedDuration::ZERO || after >= transition.timestamp().checked_add(gap).ok()? {
            return None;
        }
        // Gap civil times c resolve to c - old offset, so those after `after` are the ones
        // after `after` read with the old offset, up to the first civil time past the gap.
        let gap_end: DateTime = new_offset.to_datetime(transition.timestamp());
        let civil = self
            .cron
            .find_next_occurrence(&old_offset.to_datetime(after), false)
            .ok()?;
        if civil >= gap_end {
            return None;
        }
        old_offset.to_timestamp(civil).ok()
    }
}

/// "30", "30 or 31", "29, 30 or 31".
fn join_or(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}
