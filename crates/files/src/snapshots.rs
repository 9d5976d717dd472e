//! The instants `/.snapshots/` offers: one per hour of the last day and one per day of
//! the last month (UTC), newest first, none before the bucket existed. Any other
//! RFC 3339 instant works too when typed as a folder name.

use std::time::{Duration, SystemTime};

const HOUR: u64 = 3600 * 1_000_000_000;
const DAY: u64 = 24 * HOUR;

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// (instant in ns, folder name) pairs.
pub(crate) fn instants(created_ns: u64, now_ns: u64) -> Vec<(u64, String)> {
    let mut out: Vec<u64> = Vec::new();
    let hour = now_ns - now_ns % HOUR;
    out.extend((0..24).map(|i| hour.saturating_sub(i * HOUR)));
    let day = now_ns - now_ns % DAY;
    out.extend((0..31).map(|i| day.saturating_sub(i * DAY)));
    out.sort_unstable_by(|a, b| b.cmp(a));
    out.dedup();
    out.into_iter()
        .filter(|t| *t >= created_ns)
        .map(|t| (t, name(t)))
        .collect()
}

pub(crate) fn name(ns: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hourly_for_a_day_daily_for_a_month_never_before_the_bucket() {
        let now = archive::parse_instant("2026-11-25T16:42:10Z").unwrap();
        let all = instants(0, now);
        assert_eq!(all[0].1, "2026-11-25T16:00:00Z");
        assert!(all.iter().any(|(_, n)| n == "2026-11-24T17:00:00Z"));
        assert!(all.iter().any(|(_, n)| n == "2026-10-26T00:00:00Z"));
        assert_eq!(
            all.len(),
            24 + 31 - 1,
            "today's midnight is also an hour mark"
        );
        assert!(all.windows(2).all(|w| w[0].0 > w[1].0));
        let young = instants(now - 90 * 60 * 1_000_000_000, now);
        assert_eq!(
            young.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
            ["2026-11-25T16:00:00Z"]
        );
        for (ns, n) in all {
            assert_eq!(archive::parse_instant(&n).unwrap(), ns);
        }
    }
}
