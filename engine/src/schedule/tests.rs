//! Tests of timer schedules: DST rules, POSIX cron, durations, cycles, overdue timers and the
//! errors an author sees.

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};

use super::{Schedule, ScheduleError, ScheduleKind, preview};

fn ts(text: &str) -> Timestamp {
    text.parse().expect("test timestamps are valid")
}

fn schedule(expr: &str, zone: &str) -> Schedule {
    Schedule::parse(expr, Some(zone)).unwrap_or_else(|e| panic!("{expr} in {zone}: {e:?}"))
}

/// `count` fires iterating `next_after` from the previous result, the fired count growing.
fn fires(schedule: &Schedule, from: Timestamp, count: usize) -> Vec<Timestamp> {
    let mut out = Vec::new();
    let mut after = from;
    for fired in 0..count {
        let Some(next) = schedule.next_after(after, from, fired as u32) else {
            break;
        };
        out.push(next);
        after = next;
    }
    out
}

fn parse_error(expr: &str) -> ScheduleError {
    match Schedule::parse(expr, None) {
        Ok(_) => panic!("{expr} parsed but should not"),
        Err(error) => error,
    }
}

fn never_error(expr: &str) -> ScheduleError {
    match schedule(expr, "UTC").check_can_fire() {
        Ok(()) => panic!("{expr} can fire but should not"),
        Err(error) => error,
    }
}

/// Asserts the error's offset and that its message contains `needle`.
fn assert_error(error: ScheduleError, offset: usize, needle: &str, expr: &str) {
    assert!(
        error.message.contains(needle),
        "{expr}: message {:?} lacks {needle:?}",
        error.message
    );
    assert_eq!(
        error.offset, offset,
        "{expr}: offset of {:?}",
        error.message
    );
}

// 1. DST: a daily 02:30 job runs once every local day.

#[test]
fn daily_0230_in_rome_across_spring_forward_keeps_the_offset_from_before_the_jump() {
    let daily = schedule("0 30 2 * * *", "Europe/Rome");
    assert_eq!(
        fires(&daily, ts("2027-03-27T00:00:00Z"), 3),
        [
            ts("2027-03-27T01:30:00Z"),
            ts("2027-03-28T01:30:00Z"),
            ts("2027-03-29T00:30:00Z")
        ]
    );
}

#[test]
fn daily_0230_in_rome_across_fall_back_runs_at_the_first_occurrence_only() {
    let daily = schedule("0 30 2 * * *", "Europe/Rome");
    assert_eq!(
        fires(&daily, ts("2027-10-30T00:00:00Z"), 3),
        [
            ts("2027-10-30T00:30:00Z"),
            ts("2027-10-31T00:30:00Z"),
            ts("2027-11-01T01:30:00Z")
        ]
    );
    // Asked from inside the repeated hour, after the first 02:30 fired, the second 02:30 does
    // not fire again.
    assert_eq!(
        daily.next_after(ts("2027-10-31T01:10:00Z"), ts("2027-10-30T00:00:00Z"), 2),
        Some(ts("2027-11-01T01:30:00Z"))
    );
}

#[test]
fn daily_0230_fires_once_on_every_local_date_of_a_year() {
    for zone in ["Europe/Rome", "America/New_York"] {
        let daily = schedule("30 2 * * *", zone);
        let tz = daily.zone().clone();
        let from = Date::constant(2027, 1, 1)
            .to_zoned(tz.clone())
            .expect("midnight exists")
            .timestamp();
        let year = fires(&daily, from, 365);
        assert_eq!(year.len(), 365, "{zone}");
        let mut expected_date = Date::constant(2027, 1, 1);
        for instant in &year {
            let local = instant.to_zoned(tz.clone());
            assert_eq!(local.date(), expected_date, "{zone}: {instant}");
            // 02:30 everywhere, except on the spring-forward day where it does not exist.
            let hour_minute = (local.hour(), local.minute());
            assert!(
                hour_minute == (2, 30) || hour_minute == (3, 30),
                "{zone}: {local}"
            );
            expected_date = expected_date.tomorrow().expect("2027 has a tomorrow");
        }
        let next = daily.next_after(year[364], from, 365).expect("repeats");
        assert_eq!(
            next.to_zoned(tz).date(),
            Date::constant(2028, 1, 1),
            "{zone}"
        );
    }
}

#[test]
fn half_hourly_cron_runs_each_local_half_hour_once_across_both_changes() {
    let half_hourly = schedule("*/30 * * * *", "Europe/Rome");
    // Spring: 02:00 and 02:30 do not exist and run at 03:00 and 03:30 CEST; the real 03:00
    // is the same instant as the shifted 02:00, so it does not run twice.
    assert_eq!(
        fires(&half_hourly, ts("2027-03-28T00:00:00Z"), 4),
        [
            ts("2027-03-28T00:30:00Z"),
            ts("2027-03-28T01:00:00Z"),
            ts("2027-03-28T01:30:00Z"),
            ts("2027-03-28T02:00:00Z"),
        ]
    );
    // Autumn: 02:00 and 02:30 run in CEST only; the repeated CET half-hours are skipped.
    assert_eq!(
        fires(&half_hourly, ts("2027-10-31T00:00:00Z"), 3),
        [
            ts("2027-10-31T00:30:00Z"),
            ts("2027-10-31T02:00:00Z"),
            ts("2027-10-31T02:30:00Z")
        ]
    );
}

#[test]
fn a_gap_time_is_found_when_asked_from_just_after_the_jump() {
    // 01:15Z is 03:15 CEST, past 02:30 on the wall clock, yet the shifted 02:30 (01:30Z) is
    // still ahead.
    let daily = schedule("0 30 2 * * *", "Europe/Rome");
    assert_eq!(
        daily.next_after(ts("2027-03-28T01:15:00Z"), ts("2027-03-27T00:00:00Z"), 1),
        Some(ts("2027-03-28T01:30:00Z"))
    );
}

// 2. POSIX day fields.

#[test]
fn day_of_month_or_day_of_week_when_both_are_restricted() {
    let friday_or_13th = schedule("0 0 13 * 5", "UTC");
    let expected: Vec<Timestamp> = [
        "2026-03-06",
        "2026-03-13",
        "2026-03-20",
        "2026-03-27",
        "2026-04-03",
        "2026-04-10",
        "2026-04-13",
        "2026-04-17",
    ]
    .iter()
    .map(|date| ts(&format!("{date}T00:00:00Z")))
    .collect();
    assert_eq!(
        fires(&friday_or_13th, ts("2026-03-01T00:00:00Z"), 8),
        expected
    );
}

#[test]
fn five_and_six_field_forms_and_names_mean_the_same() {
    let from = ts("2026-03-01T00:00:00Z");
    let five = fires(&schedule("0 9 * JAN-MAR mon-fri", "UTC"), from, 5);
    let six = fires(&schedule("0 0 9 * 1-3 1-5", "UTC"), from, 5);
    assert_eq!(five, six);
    assert_eq!(five[0], ts("2026-03-02T09:00:00Z"));
    // Seconds first in the 6-field form.
    assert_eq!(
        fires(&schedule("*/20 * * * * *", "UTC"), from, 3),
        [
            ts("2026-03-01T00:00:20Z"),
            ts("2026-03-01T00:00:40Z"),
            ts("2026-03-01T00:01:00Z")
        ]
    );
}

#[test]
fn last_nth_and_closest_weekday() {
    let from = ts("2026-03-01T00:00:00Z");
    // Last day of the month.
    assert_eq!(
        fires(&schedule("0 0 L * *", "UTC"), from, 2),
        [ts("2026-03-31T00:00:00Z"), ts("2026-04-30T00:00:00Z")]
    );
    // Second Monday.
    assert_eq!(
        fires(&schedule("0 0 * * MON#2", "UTC"), from, 1),
        [ts("2026-03-09T00:00:00Z")]
    );
    // Last Friday.
    assert_eq!(
        fires(&schedule("0 0 * * 5L", "UTC"), from, 1),
        [ts("2026-03-27T00:00:00Z")]
    );
    // The weekday closest to the 15th: 2026-03-15 is a Sunday, so Monday the 16th.
    assert_eq!(
        fires(&schedule("0 0 15W * *", "UTC"), from, 1),
        [ts("2026-03-16T00:00:00Z")]
    );
    // A nickname.
    assert_eq!(
        fires(&schedule("@daily", "UTC"), from, 1),
        [ts("2026-03-02T00:00:00Z")]
    );
}

#[test]
fn rare_but_possible_days_are_found() {
    let from = ts("2026-03-01T00:00:00Z");
    assert_eq!(
        fires(&schedule("0 0 29 2 *", "UTC"), from, 1),
        [ts("2028-02-29T00:00:00Z")]
    );
    // The fifth Friday of February needs a leap year whose February 29 is a Friday.
    assert_eq!(
        fires(&schedule("0 0 * 2 FRI#5", "UTC"), from, 1),
        [ts("2036-02-29T00:00:00Z")]
    );
}

// 3. Durations and dates.

#[test]
fn durations_add_calendar_days_in_the_zone_and_hours_exactly() {
    let armed = ts("2027-03-27T09:00:00Z"); // 10:00 CET
    let one_day = schedule("P1D", "Europe/Rome");
    let due = one_day.next_after(armed, armed, 0).expect("fires once");
    assert_eq!(due, ts("2027-03-28T08:00:00Z")); // 10:00 CEST
    assert_eq!(due.duration_since(armed), SignedDuration::from_hours(23));
    let twenty_four_hours = schedule("PT24H", "Europe/Rome");
    assert_eq!(
        twenty_four_hours.next_after(armed, armed, 0),
        Some(ts("2027-03-28T09:00:00Z"))
    );
    // Once only.
    assert_eq!(one_day.next_after(due, armed, 1), None);
    assert_eq!(
        schedule("P1DT2H30M", "UTC").first_due(armed),
        Some(ts("2027-03-28T11:30:00Z"))
    );
    assert_eq!(
        schedule("PT0.5S", "UTC").first_due(armed),
        Some(ts("2027-03-27T09:00:00.5Z"))
    );
    assert_eq!(
        schedule("P2W", "UTC").first_due(armed),
        Some(ts("2027-04-10T09:00:00Z"))
    );
}

#[test]
fn a_zero_duration_is_due_at_once() {
    let now = ts("2027-01-01T00:00:00Z");
    let zero = schedule("PT0S", "UTC");
    assert_eq!(zero.check_can_fire(), Ok(()));
    assert_eq!(zero.first_due(now), Some(now));
    assert_eq!(preview("PT0S", None, now, 5), Ok(vec![now]));
}

#[test]
fn dates_read_local_times_in_the_zone() {
    let rome = |expr| schedule(expr, "Europe/Rome").first_due(ts("2026-01-01T00:00:00Z"));
    assert_eq!(rome("2027-01-01T09:00"), Some(ts("2027-01-01T08:00:00Z")));
    assert_eq!(
        rome("2027-01-01T09:00:00"),
        Some(ts("2027-01-01T08:00:00Z"))
    );
    assert_eq!(rome("2027-01-01"), Some(ts("2026-12-31T23:00:00Z")));
    assert_eq!(
        rome("2027-01-01T09:00:00Z"),
        Some(ts("2027-01-01T09:00:00Z"))
    );
    assert_eq!(
        rome("2027-01-01T09:00:00+02:00"),
        Some(ts("2027-01-01T07:00:00Z"))
    );
    // In the spring gap: the offset from before the jump.
    assert_eq!(rome("2027-03-28T02:30"), Some(ts("2027-03-28T01:30:00Z")));
    // In the autumn fold: the first occurrence.
    assert_eq!(rome("2027-10-31T02:30"), Some(ts("2027-10-31T00:30:00Z")));
    assert_eq!(
        schedule("2027-01-01T09:00", "UTC").kind(),
        ScheduleKind::Date
    );
}

#[test]
fn a_date_fires_once_and_an_overdue_date_is_due_at_once() {
    let date = schedule("2027-01-01T09:00:00Z", "UTC");
    let nine = ts("2027-01-01T09:00:00Z");
    let before = ts("2026-12-01T00:00:00Z");
    assert_eq!(date.next_after(before, before, 0), Some(nine));
    assert_eq!(date.next_after(nine, before, 0), None, "strictly after");
    assert_eq!(date.next_after(before, before, 1), None, "already fired");
    let late = ts("2027-02-01T00:00:00Z");
    assert_eq!(
        date.first_due(late),
        Some(nine),
        "overdue: the runtime fires it at once"
    );
    assert_eq!(preview("2027-01-01T09:00:00Z", None, late, 3), Ok(vec![]));
    assert_eq!(
        preview("2027-01-01T09:00:00Z", None, before, 3),
        Ok(vec![nine])
    );
}

// 4. Cycles and overdue timers.

#[test]
fn a_counted_cycle_fires_exactly_its_count() {
    let armed = ts("2027-01-01T00:00:00Z");
    let cycle = schedule("R3/PT10H", "UTC");
    assert_eq!(
        fires(&cycle, armed, 10),
        [
            ts("2027-01-01T10:00:00Z"),
            ts("2027-01-01T20:00:00Z"),
            ts("2027-01-02T06:00:00Z")
        ]
    );
    assert!(cycle.repeats());
    assert_eq!(cycle.first_due(armed), Some(ts("2027-01-01T10:00:00Z")));
}

#[test]
fn an_overdue_cycle_skips_the_missed_periods() {
    let armed = ts("2027-01-01T00:00:00Z");
    let cycle = schedule("R3/PT10H", "UTC");
    let hours = |h| {
        armed
            .checked_add(SignedDuration::from_hours(h))
            .expect("in range")
    };
    // Fired once at +10h, then down until +35h: +20h and +30h are not replayed.
    assert_eq!(cycle.next_after(hours(35), armed, 1), Some(hours(40)));
    assert_eq!(cycle.next_after(hours(40), armed, 2), Some(hours(50)));
    assert_eq!(cycle.next_after(hours(50), armed, 3), None);
}

#[test]
fn an_overdue_cron_fires_next_after_now_not_the_missed_ones() {
    let hourly = schedule("0 * * * *", "UTC");
    let armed = ts("2027-01-01T00:00:00Z");
    assert_eq!(
        hourly.next_after(ts("2027-01-03T05:17:00Z"), armed, 1),
        Some(ts("2027-01-03T06:00:00Z"))
    );
}

#[test]
fn an_endless_cycle_overdue_by_years_is_answered_by_bisection() {
    let armed = ts("2027-01-01T00:00:00Z");
    let every_second = schedule("R/PT1S", "UTC");
    assert_eq!(
        every_second.next_after(ts("2037-06-01T12:00:00.5Z"), armed, 1),
        Some(ts("2037-06-01T12:00:01Z"))
    );
    // Far beyond the supported range: no fire, and no long loop.
    assert_eq!(every_second.next_after(Timestamp::MAX, armed, 1), None);
}

#[test]
fn monthly_cycles_count_from_the_base_without_drifting() {
    let armed = ts("2027-01-31T10:00:00Z");
    let monthly = schedule("R/P1M", "UTC");
    assert_eq!(
        fires(&monthly, armed, 3),
        [
            ts("2027-02-28T10:00:00Z"),
            ts("2027-03-31T10:00:00Z"),
            ts("2027-04-30T10:00:00Z")
        ]
    );
}

#[test]
fn daily_cycles_keep_the_local_time_across_dst() {
    let armed = ts("2027-03-26T09:00:00Z"); // 10:00 CET
    let daily = schedule("R/P1D", "Europe/Rome");
    assert_eq!(
        fires(&daily, armed, 2),
        [ts("2027-03-27T09:00:00Z"), ts("2027-03-28T08:00:00Z")]
    );
}

#[test]
fn a_cycle_with_a_start_fires_on_its_calendar_points_only() {
    let cycle = schedule("R5/2027-01-01T09:00/P1D", "Europe/Rome");
    let armed = ts("2026-12-01T00:00:00Z");
    let five = fires(&cycle, armed, 10);
    assert_eq!(five.len(), 5);
    assert_eq!(five[0], ts("2027-01-01T08:00:00Z"));
    assert_eq!(five[4], ts("2027-01-05T08:00:00Z"));
    // Down from January 2 to January 3 noon: the 3rd is skipped, the 4th is next.
    assert_eq!(
        cycle.next_after(ts("2027-01-03T11:00:00Z"), armed, 2),
        Some(ts("2027-01-04T08:00:00Z"))
    );
    // Armed after the start: the first point still ahead.
    assert_eq!(
        cycle.first_due(ts("2027-01-02T08:00:00Z")),
        Some(ts("2027-01-02T08:00:00Z"))
    );
    // Armed after the last point: nothing.
    assert_eq!(cycle.first_due(ts("2027-02-01T00:00:00Z")), None);
}

#[test]
fn what_repeats() {
    let repeats = |expr| schedule(expr, "UTC").repeats();
    assert!(repeats("R/PT1H"));
    assert!(repeats("R2/PT1H"));
    assert!(!repeats("R1/PT1H"));
    assert!(repeats("0 9 * * *"));
    assert!(!repeats("P3D"));
    assert!(!repeats("2027-01-01"));
    assert!(schedule("P3D", "UTC").is_duration());
    assert_eq!(schedule("R/PT1H", "UTC").kind(), ScheduleKind::Cycle);
    assert_eq!(schedule("0 9 * * *", "UTC").kind(), ScheduleKind::Cron);
}

// 5. Schedules that never fire, and malformed expressions.

#[test]
fn schedules_that_can_never_fire_say_why_at_once() {
    assert_error(
        never_error("0 0 31 4 *"),
        4,
        "April has no day 31",
        "0 0 31 4 *",
    );
    assert_error(
        never_error("0 0 30 2 *"),
        4,
        "February has no day 30",
        "0 0 30 2 *",
    );
    assert_error(
        never_error("0 0 30,31 FEB *"),
        4,
        "February has no day 30 or 31",
        "0 0 30,31 FEB *",
    );
    assert_error(
        never_error("0 0 0 31 APR,JUN *"),
        6,
        "none of April or June has a day 31",
        "6 fields",
    );
    assert_error(
        never_error("0 0 31W 4 *"),
        4,
        "April has no day 31",
        "0 0 31W 4 *",
    );
    assert_error(
        never_error("R0/PT1H"),
        1,
        "R0 repeats zero times",
        "R0/PT1H",
    );
    assert_error(never_error("R/PT0S"), 2, "interval is zero", "R/PT0S");
    assert_error(
        never_error("R3/2027-01-01/P0D"),
        14,
        "interval is zero",
        "R3/2027-01-01/P0D",
    );
    // And `next_after` does not search for them.
    let armed = ts("2027-01-01T00:00:00Z");
    assert_eq!(
        schedule("0 0 31 4 *", "UTC").next_after(armed, armed, 0),
        None
    );
    assert_eq!(schedule("R0/PT1H", "UTC").next_after(armed, armed, 0), None);
    assert_eq!(
        preview("0 0 31 4 *", None, armed, 3).map_err(|e| e.offset),
        Err(4)
    );
}

#[test]
fn restricted_day_fields_that_can_fire_are_accepted() {
    for expr in [
        "0 0 29 2 *",
        "0 0 31 4 MON",
        "0 0 L 2 *",
        "0 0 LW 2 *",
        "0 0 * 2 5#5",
        "0 0 31 * *",
    ] {
        assert_eq!(schedule(expr, "UTC").check_can_fire(), Ok(()), "{expr}");
    }
}

#[test]
fn malformed_cron_points_at_the_field() {
    let cases = [
        ("75 * * * *", 0, "minute field"),
        ("0 25 * * *", 2, "hour field"),
        ("0 9 0 * *", 4, "day-of-month field"),
        ("0 9 * 13 *", 6, "month field"),
        ("0 9 * * 8", 8, "day-of-week field"),
        ("0 9 * * MON#6", 8, "day-of-week field"),
        ("0 9 * FOO *", 6, "`FOO` is not allowed in the month field"),
        ("0 MON * * *", 2, "`MON` is not allowed in the hour field"),
        ("*/0 * * * *", 0, "step cannot be zero"),
        ("1,,2 * * * *", 1, "empty item"),
        ("0 0 * * +5", 8, "POSIX"),
        ("* * *", 5, "found 3 fields"),
        ("0 0 0 0 0 0 0", 12, "found 7 fields"),
        ("tomorrow", 8, "ISO 8601 duration"),
        ("@often", 0, "unknown cron nickname"),
        ("  75 * * * *", 2, "minute field"),
    ];
    for (expr, offset, needle) in cases {
        assert_error(parse_error(expr), offset, needle, expr);
    }
}

#[test]
fn malformed_iso_points_at_where_parsing_failed() {
    let cases = [
        ("P", 1, "at least one number"),
        ("P3X", 2, "expected a unit"),
        ("PT", 2, "after `T`"),
        ("P1H", 2, "after `T`"),
        ("PT1D", 3, "before `T`"),
        ("P1DT2H3D", 7, "before `T`"),
        ("P1D2Y", 4, "in the order"),
        ("P1.5D", 2, "only seconds"),
        ("PTH", 2, "expected a number"),
        ("2027-02-30", 8, "February 2027 has no day 30"),
        ("2027-13-01", 5, "no month 13"),
        ("2027-1-01", 5, "expected a month"),
        ("2027-01-01T25:00", 11, "no hour 25"),
        ("2027-01-01T09:60", 14, "no minute 60"),
        (
            "2027-01-01T09:00X",
            16,
            "expected the end, `Z` or an offset",
        ),
        ("2027-01-01X", 10, "expected `T`"),
        ("R3PT10H", 2, "expected `/`"),
        ("R3/2027-01-01", 3, "expected a duration"),
        ("R/P1D/2027-12-31", 2, "not supported"),
        (
            "R/2027-01-01/2027-02-01",
            13,
            "expected a duration after the start",
        ),
        ("R/2027-01-01/P1D/P1D", 16, "at most a start and a duration"),
        ("R99999999999/PT1H", 1, "too large"),
        ("R/2027-02-30/P1D", 10, "February 2027 has no day 30"),
        ("  P3X", 4, "expected a unit"),
        ("", 0, "empty timer expression"),
    ];
    for (expr, offset, needle) in cases {
        assert_error(parse_error(expr), offset, needle, expr);
    }
}

#[test]
fn an_unknown_zone_is_named() {
    let error = Schedule::parse("P1D", Some("Europe/Atlantis")).expect_err("no such zone");
    assert!(
        error.message.contains("Europe/Atlantis"),
        "{}",
        error.message
    );
    assert_eq!(
        Schedule::parse("P1D", None).map(|s| s.zone_name().to_string()),
        Ok("UTC".to_string())
    );
}

#[test]
fn preview_lists_upcoming_fires() {
    let from = ts("2026-03-01T00:00:00Z");
    assert_eq!(preview("0 0 13 * 5", None, from, 3).map(|v| v.len()), Ok(3));
    assert_eq!(
        preview("R3/PT10H", None, from, 10),
        Ok(vec![
            ts("2026-03-01T10:00:00Z"),
            ts("2026-03-01T20:00:00Z"),
            ts("2026-03-02T06:00:00Z")
        ])
    );
    assert_eq!(
        preview("P1D", Some("Europe/Rome"), from, 10),
        Ok(vec![ts("2026-03-02T00:00:00Z")])
    );
    assert_eq!(
        preview("0 9 * * *", Some("Europe/Rome"), from, 0),
        Ok(vec![])
    );
    assert_eq!(
        preview("0 9 * * *", Some("Mars/Olympus"), from, 1).map_err(|e| e.offset),
        Err(0)
    );
}
