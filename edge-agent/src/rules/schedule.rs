//! Zone schedules: `"HH:MM-HH:MM"` windows (several separated by commas, wrapping midnight) on
//! the clock UTC + a fixed offset, resolved to the minute. Outside its windows a zone's fence is
//! disarmed and its crowd rules are not evaluated.

use std::fmt;

use time::{Duration, OffsetDateTime, UtcOffset};

/// A parsed zone schedule: the windows of the day when the zone is active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    /// Per minute of the (offset) day: minutes since the window containing it opened, or
    /// `INACTIVE`. Overlapping and back-to-back windows merge (also across midnight).
    open_for: Vec<u16>,
    /// Active all day: never opens or closes.
    all_day: bool,
    utc_offset_minutes: i32,
}

const INACTIVE: u16 = u16::MAX;
const MINUTES_PER_DAY: usize = 1440;

impl Schedule {
    /// Parses `"HH:MM-HH:MM"` (or several, comma-separated) on the clock UTC + `utc_offset_minutes`.
    pub fn parse(text: &str, utc_offset_minutes: i32) -> Result<Schedule, String> {
        let bad = |why: String| {
            format!(
                "bad schedule {text:?}: {why}; expected \"HH:MM-HH:MM\" windows separated by commas, e.g. \"22:00-06:00\""
            )
        };
        if !(-1439..=1439).contains(&utc_offset_minutes) {
            return Err(format!("utc offset {utc_offset_minutes} is not within -1439..=1439 minutes"));
        }
        let mut active = vec![false; MINUTES_PER_DAY];
        for part in text.split(',') {
            let part = part.trim();
            let (start, end) = part.split_once('-').ok_or_else(|| bad(format!("{part:?} has no '-'")))?;
            let start = hhmm(start.trim(), false).map_err(&bad)?;
            let end = hhmm(end.trim(), true).map_err(&bad)?;
            if start == end {
                return Err(bad(format!("{part:?} is empty (start equals end); omit `schedule` for always")));
            }
            let len = if end > start { end - start } else { end + MINUTES_PER_DAY - start };
            (0..len).for_each(|i| active[(start + i) % MINUTES_PER_DAY] = true);
        }
        let mut open_for = vec![INACTIVE; MINUTES_PER_DAY];
        let all_day = !active.contains(&false);
        match active.iter().position(|a| !a) {
            None => open_for.fill(0),
            Some(closed) => {
                let mut run: u16 = INACTIVE;
                for i in 1..=MINUTES_PER_DAY {
                    let m = (closed + i) % MINUTES_PER_DAY;
                    run = if !active[m] {
                        INACTIVE
                    } else if run == INACTIVE {
                        0
                    } else {
                        run + 1
                    };
                    open_for[m] = run;
                }
            }
        }
        Ok(Schedule { text: text.trim().to_owned(), open_for, all_day, utc_offset_minutes })
    }

    /// Whether `t` falls within one of the windows.
    pub fn is_active(&self, t: OffsetDateTime) -> bool {
        self.open_for[self.minute(t)] != INACTIVE
    }

    /// When the window containing `t` opened (`None` outside the windows). An all-day schedule
    /// reports a time long ago.
    pub(super) fn opened_at(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let open_for = self.open_for[self.minute(t)];
        if open_for == INACTIVE {
            return None;
        }
        if self.all_day {
            return Some(OffsetDateTime::UNIX_EPOCH);
        }
        let t = t.to_offset(UtcOffset::UTC);
        let minute_start =
            t - Duration::seconds(i64::from(t.second())) - Duration::nanoseconds(i64::from(t.nanosecond()));
        Some(minute_start - Duration::minutes(i64::from(open_for)))
    }

    /// Minute of the day of `t` on the schedule's clock.
    fn minute(&self, t: OffsetDateTime) -> usize {
        let t = t.to_offset(UtcOffset::UTC);
        let minute = i32::from(t.hour()) * 60 + i32::from(t.minute()) + self.utc_offset_minutes;
        minute.rem_euclid(MINUTES_PER_DAY as i32) as usize
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        match self.utc_offset_minutes {
            0 => f.write_str(" UTC"),
            o => write!(f, " UTC{}{:02}:{:02}", if o < 0 { '-' } else { '+' }, o.abs() / 60, o.abs() % 60),
        }
    }
}

/// `HH:MM` to minutes of the day; `24:00` only as an end.
fn hhmm(s: &str, end: bool) -> Result<usize, String> {
    let b = s.as_bytes();
    let digit = |i: usize| b[i].is_ascii_digit();
    if b.len() != 5 || b[2] != b':' || !(digit(0) && digit(1) && digit(3) && digit(4)) {
        return Err(format!("{s:?} is not HH:MM"));
    }
    let num = |i: usize| usize::from(b[i] - b'0') * 10 + usize::from(b[i + 1] - b'0');
    let (h, m) = (num(0), num(3));
    if m >= 60 || h > 24 || (h == 24 && !(end && m == 0)) {
        return Err(format!("{s:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn schedule_windows_wrap_midnight() {
        let s = Schedule::parse("22:00-06:00", 0).unwrap();
        let at = |h: u8, m: u8, sec: u8| {
            datetime!(2026-11-23 00:00 UTC).replace_time(time::Time::from_hms(h, m, sec).unwrap())
        };
        for (h, m, sec, active) in [
            (21, 59, 59, false),
            (22, 0, 0, true),
            (23, 59, 59, true),
            (0, 0, 0, true),
            (5, 59, 59, true),
            (6, 0, 0, false),
            (12, 0, 0, false),
        ] {
            assert_eq!(s.is_active(at(h, m, sec)), active, "{h}:{m}:{sec}");
        }
        // the clock is UTC + offset; other offsets of `t` do not matter
        let cet = Schedule::parse("22:00-06:00", 60).unwrap();
        assert!(cet.is_active(at(21, 0, 0)) && !cet.is_active(at(20, 59, 0)) && !cet.is_active(at(5, 0, 0)));
        assert!(cet.is_active(datetime!(2026-11-23 22:30 +01:00)));
        assert_eq!(cet.to_string(), "22:00-06:00 UTC+01:00");
        let all = Schedule::parse("00:00-24:00", 0).unwrap();
        assert!(all.is_active(at(0, 0, 0)) && all.is_active(at(23, 59, 59)));
        assert_eq!(all.opened_at(at(12, 0, 0)), Some(OffsetDateTime::UNIX_EPOCH));
        // back-to-back windows are one window: it opened at 12:00 the day before
        let joined = Schedule::parse("12:00-24:00,00:00-06:00", 0).unwrap();
        assert_eq!(joined.opened_at(at(3, 0, 30)), Some(at(12, 0, 0) - Duration::days(1)));
        assert_eq!(s.opened_at(at(5, 59, 59)), Some(at(22, 0, 0) - Duration::days(1)));
        assert_eq!(s.opened_at(at(22, 0, 0)), Some(at(22, 0, 0)));
        assert_eq!(s.opened_at(at(12, 0, 0)), None);
        let two = Schedule::parse("00:00-06:00, 12:00-24:00", 0).unwrap();
        assert!(two.is_active(at(3, 0, 0)) && !two.is_active(at(9, 0, 0)) && two.is_active(at(23, 59, 0)));
        for bad in
            ["22:00", "2200-0600", "25:00-06:00", "22:60-06:00", "24:00-06:00", "22:00-22:00", "22:00-06:00,", " "]
        {
            assert!(Schedule::parse(bad, 0).is_err(), "{bad:?}");
        }
    }
}
