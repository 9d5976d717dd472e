//! Lifecycle: rules per bucket that expire objects and clean up after themselves, run
//! by one node (the catalog's leader) on a schedule.
//!
//! A rule picks keys by prefix, tags and size, and can
//! - expire the current version after N days or on a date (a delete marker in a
//!   versioned bucket, the object goes in an unversioned one),
//! - remove noncurrent versions N days after they were superseded, keeping the newest
//!   few if asked,
//! - remove a delete marker that no longer hides anything,
//! - abort multipart uploads started N days ago.
//!
//! Every action is an ordinary catalog change made by the actor `@lifecycle`, so object
//! lock holds (a locked version is skipped and stays) and the ledger records what was
//! done and by whom. Days count from the version's time, rounded up to the next day
//! boundary (midnight UTC), as S3 does; tests shorten the day (`lifecycle_day`).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Archive, Result, Version, VersionsQuery};

/// The bucket setting that holds the rules (JSON `Lifecycle`).
pub use catalog::LIFECYCLE_SETTING as SETTING;

/// The audit log's actor for lifecycle's changes.
pub const ACTOR: &str = "@lifecycle";

/// A bucket's lifecycle rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Lifecycle {
    /// The rules; each key is acted on by every enabled rule that matches it.
    pub rules: Vec<Rule>,
}

/// One rule: which keys, and what happens to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Rule {
    /// The rule's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Disabled rules are kept but do nothing.
    pub enabled: bool,
    /// Keys starting with this.
    #[serde(default)]
    pub prefix: String,
    /// Versions carrying every one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    /// Versions larger than this (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_greater_than: Option<u64>,
    /// Versions smaller than this (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_less_than: Option<u64>,
    /// Expire the current version this many days after it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_days: Option<u32>,
    /// Expire current versions from this instant on (ns since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_at_ns: Option<u64>,
    /// Remove a delete marker that is the key's only version left.
    #[serde(default)]
    pub expired_delete_markers: bool,
    /// Remove noncurrent versions this many days after they were superseded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noncurrent_days: Option<u32>,
    /// Keep this many of the newest noncurrent versions anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_noncurrent: Option<u32>,
    /// Abort multipart uploads this many days after they started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_uploads_days: Option<u32>,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LifecycleReport {
    /// Buckets with rules.
    pub buckets: u64,
    /// Versions looked at.
    pub versions_checked: u64,
    /// Current versions expired (delete markers added, or unversioned objects deleted).
    pub expired: u64,
    /// Noncurrent versions removed.
    pub noncurrent_removed: u64,
    /// Delete markers removed.
    pub markers_removed: u64,
    /// Multipart uploads aborted.
    pub uploads_aborted: u64,
    /// Versions object lock kept.
    pub locked: u64,
}

/// How lifecycle runs: the length of a day, and how many changes a second at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleOptions {
    /// A day (shortened only by tests).
    pub day: Duration,
    /// At most this many changes per second.
    pub rate_per_sec: u32,
}

impl Lifecycle {
    /// A bucket's rules, if it has any.
    pub fn of(b: &crate::Bucket) -> Option<Lifecycle> {
        b.settings
            .get(SETTING)
            .and_then(|s| serde_json::from_str(s).ok())
    }

    /// When the current version `v` expires (ns since the epoch) and by which rule's id:
    /// the earliest enabled expiration that matches it, as a pass would act on it. What
    /// S3 answers in `x-amz-expiration`.
    pub fn expiry(&self, v: &Version, day: Duration) -> Option<(u64, Option<&str>)> {
        self.rules
            .iter()
            .filter(|r| !v.delete_marker && r.matches(v))
            .filter_map(|r| {
                let at = match (r.expire_days, r.expire_at_ns) {
                    (Some(d), _) => due(v.mtime_ns, d, day),
                    (None, Some(t)) => t,
                    (None, None) => return None,
                };
                Some((at, r.id.as_deref()))
            })
            .min_by_key(|(at, _)| *at)
    }
}

impl Rule {
    fn matches(&self, v: &Version) -> bool {
        if !self.enabled || !v.key.starts_with(&self.prefix) {
            return false;
        }
        if v.delete_marker {
            return self.tags.is_empty()
                && self.size_greater_than.is_none()
                && self.size_less_than.is_none();
        }
        let tags = tags_of(v);
        self.tags.iter().all(|t| tags.contains(t))
            && self.size_greater_than.is_none_or(|n| v.size > n)
            && self.size_less_than.is_none_or(|n| v.size < n)
    }
}

fn tags_of(v: &Version) -> Vec<(String, String)> {
    v.meta
        .get(":tagging")
        .map(|t| {
            t.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (unescape(k), unescape(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// URL query unescaping (`+` is a space, `%XX` a byte), as tags are stored.
fn unescape(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 2;
            }
            (b'+', ..) => out.push(b' '),
            (c, ..) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The instant a thing dated `from_ns` is `days` old: rounded up to the next day
/// boundary (S3: midnight UTC).
fn due(from_ns: u64, days: u32, day: Duration) -> u64 {
    let day = (day.as_nanos() as u64).max(1);
    let t = from_ns.saturating_add(u64::from(days).saturating_mul(day));
    t.div_ceil(day).saturating_mul(day)
}

/// What to do with one version.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Expire the key (delete marker, or delete when unversioned).
    Expire,
    /// Remove this version (noncurrent, or a lone delete marker) for good.
    Remove { version_id: String, marker: bool },
}

/// The actions due for one key's versions (newest first, hidden ones left out).
fn plan(rules: &[Rule], versions: &[Version], now_ns: u64, day: Duration) -> Vec<Action> {
    let mut out = Vec::new();
    let Some(current) = versions.first() else {
        return out;
    };
    if !current.delete_marker
        && rules.iter().any(|r| {
            r.matches(current)
                && (r
                    .expire_days
                    .is_some_and(|d| now_ns >= due(current.mtime_ns, d, day))
                    || r.expire_at_ns.is_some_and(|t| now_ns >= t))
        })
    {
        out.push(Action::Expire);
    }
    // Noncurrent versions: each became noncurrent when the next newer one was written.
    let mut removed = 0;
    let noncurrent = versions.len() - 1;
    for (i, v) in versions.iter().enumerate().skip(1) {
        let since = versions[i - 1].mtime_ns;
        let newer_noncurrent = (i - 1) as u32;
        let due_now = rules.iter().any(|r| {
            r.matches(v)
                && r.noncurrent_days
                    .is_some_and(|d| now_ns >= due(since, d, day))
                && newer_noncurrent >= r.keep_noncurrent.unwrap_or(0)
        });
        if due_now {
            removed += 1;
            out.push(Action::Remove {
                version_id: v.version_id.clone(),
                marker: v.delete_marker,
            });
        }
    }
    // A delete marker with nothing left under it (or nothing left once this pass is done).
    if current.delete_marker
        && removed == noncurrent
        && rules
            .iter()
            .any(|r| r.expired_delete_markers && r.matches(current))
    {
        out.push(Action::Remove {
            version_id: current.version_id.clone(),
            marker: true,
        });
    }
    out
}

/// Spaces changes out to at most `rate` a second.
struct Pace {
    rate: u32,
    start: Instant,
    done: u64,
}

impl Pace {
    async fn step(&mut self) {
        self.done += 1;
        let due = Duration::from_secs_f64(self.done as f64 / f64::from(self.rate.max(1)));
        if let Some(wait) = due.checked_sub(self.start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

impl Archive {
    /// One lifecycle pass over every bucket with rules.
    pub async fn lifecycle_pass(&self, opts: LifecycleOptions) -> Result<LifecycleReport> {
        let mut report = LifecycleReport::default();
        let mut pace = Pace {
            rate: opts.rate_per_sec,
            start: Instant::now(),
            done: 0,
        };
        for b in self.buckets()? {
            let Some(lc) = Lifecycle::of(&b) else {
                continue;
            };
            let rules: Vec<Rule> = lc.rules.into_iter().filter(|r| r.enabled).collect();
            if rules.is_empty() {
                continue;
            }
            report.buckets += 1;
            self.expire_versions(&b.name, &rules, opts, &mut pace, &mut report)
                .await?;
            self.abort_stale_uploads(&b.name, &rules, opts, &mut pace, &mut report)
                .await?;
        }
        Ok(report)
    }

    async fn expire_versions(
        &self,
        bucket: &str,
        rules: &[Rule],
        opts: LifecycleOptions,
        pace: &mut Pace,
        report: &mut LifecycleReport,
    ) -> Result<()> {
        // Only the prefixes some rule covers; one pass over each (the shortest prefix
        // that covers another covers its keys too).
        let mut prefixes: Vec<&str> = rules.iter().map(|r| r.prefix.as_str()).collect();
        prefixes.sort();
        prefixes.dedup_by(|later, earlier| later.starts_with(*earlier));
        for prefix in prefixes {
            let mut q = VersionsQuery {
                prefix: prefix.to_string(),
                max_keys: 1000,
                ..Default::default()
            };
            let mut key: Option<String> = None;
            let mut group: Vec<Version> = Vec::new();
            loop {
                let page = self.list_versions(bucket, &q)?;
                for (v, _) in page.versions {
                    report.versions_checked += 1;
                    if key.as_deref() != Some(v.key.as_str()) {
                        self.act(bucket, rules, &group, opts, pace, report).await?;
                        group.clear();
                        key = Some(v.key.clone());
                    }
                    group.push(v);
                }
                if !page.truncated {
                    break;
                }
                q.key_marker = page.next_key_marker;
                q.version_id_marker = page.next_version_id_marker;
            }
            self.act(bucket, rules, &group, opts, pace, report).await?;
        }
        Ok(())
    }

    async fn act(
        &self,
        bucket: &str,
        rules: &[Rule],
        versions: &[Version],
        opts: LifecycleOptions,
        pace: &mut Pace,
        report: &mut LifecycleReport,
    ) -> Result<()> {
        let now = catalog::now_ns();
        let Some(first) = versions.first() else {
            return Ok(());
        };
        for action in plan(rules, versions, now, opts.day) {
            pace.step().await;
            let (version_id, counter) = match &action {
                Action::Expire => (None, &mut report.expired),
                Action::Remove {
                    version_id,
                    marker: true,
                } => (Some(version_id.clone()), &mut report.markers_removed),
                Action::Remove { version_id, .. } => {
                    (Some(version_id.clone()), &mut report.noncurrent_removed)
                }
            };
            match self
                .delete_as(bucket, &first.key, version_id, Some(ACTOR.into()))
                .await
            {
                Ok(_) => *counter += 1,
                Err(crate::ArchiveError::Catalog(catalog::CatalogError::Locked(_))) => {
                    report.locked += 1;
                }
                // Gone meanwhile (another change removed it first): nothing to do.
                Err(crate::ArchiveError::Catalog(catalog::CatalogError::NoSuchVersion {
                    ..
                })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn abort_stale_uploads(
        &self,
        bucket: &str,
        rules: &[Rule],
        opts: LifecycleOptions,
        pace: &mut Pace,
        report: &mut LifecycleReport,
    ) -> Result<()> {
        if rules.iter().all(|r| r.abort_uploads_days.is_none()) {
            return Ok(());
        }
        let now = catalog::now_ns();
        for up in self.list_uploads(bucket)? {
            let stale = rules.iter().any(|r| {
                up.key.starts_with(&r.prefix)
                    && r.abort_uploads_days
                        .is_some_and(|d| now >= due(up.created_ns, d, opts.day))
            });
            if stale {
                pace.step().await;
                match self.abort_multipart(bucket, &up.key, &up.upload_id).await {
                    Ok(()) => report.uploads_aborted += 1,
                    Err(crate::ArchiveError::Catalog(catalog::CatalogError::NoSuchUpload(_))) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Runs lifecycle passes for good: every `every`, on the node that leads the
    /// catalog (confirmed by a majority, as for repair), or always on a lone node.
    pub async fn lifecycle_worker(self, opts: LifecycleOptions, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if let Some(m) = self.cluster()
                && !m.confirm_leads().await
            {
                continue;
            }
            match self.lifecycle_pass(opts).await {
                Ok(r)
                    if r.expired + r.noncurrent_removed + r.markers_removed + r.uploads_aborted
                        > 0 =>
                {
                    tracing::info!(report = ?r, "lifecycle pass done");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "lifecycle pass failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const DAY: Duration = Duration::from_secs(10);
    const D: u64 = 10_000_000_000;

    fn v(id: &str, mtime_days: u64, marker: bool) -> Version {
        Version {
            key: "logs/a".into(),
            version_id: id.into(),
            seq: 0,
            mtime_ns: mtime_days * D,
            delete_marker: marker,
            hidden: false,
            size: 10,
            etag: String::new(),
            content_type: None,
            meta: BTreeMap::new(),
            body: crate::Body::Empty,
            parts: Vec::new(),
        }
    }

    fn rule() -> Rule {
        Rule {
            enabled: true,
            prefix: "logs/".into(),
            ..Default::default()
        }
    }

    #[test]
    fn current_versions_expire_at_the_day_boundary_after_their_age() {
        let r = Rule {
            expire_days: Some(2),
            ..rule()
        };
        let vs = [v("v1", 1, false)];
        // Written during day 1 (at its start here): due at the start of day 3.
        assert!(plan(std::slice::from_ref(&r), &vs, 3 * D - 1, DAY).is_empty());
        assert_eq!(
            plan(std::slice::from_ref(&r), &vs, 3 * D, DAY),
            vec![Action::Expire]
        );
        // Half a day in: due at the next boundary after 2 days, day 4.
        let late = [Version {
            mtime_ns: D + D / 2,
            ..v("v1", 0, false)
        }];
        assert!(plan(std::slice::from_ref(&r), &late, 3 * D + D / 2, DAY).is_empty());
        assert_eq!(
            plan(std::slice::from_ref(&r), &late, 4 * D, DAY),
            vec![Action::Expire]
        );
        // Other prefixes, disabled rules and missing tags do nothing.
        let other = Rule {
            prefix: "tmp/".into(),
            ..r.clone()
        };
        let off = Rule {
            enabled: false,
            ..r.clone()
        };
        let tagged = Rule {
            tags: vec![("k".into(), "v".into())],
            ..r.clone()
        };
        assert!(plan(&[other, off, tagged.clone()], &vs, 100 * D, DAY).is_empty());
        let mut with_tag = v("v1", 1, false);
        with_tag.meta.insert(":tagging".into(), "a=b&k=v".into());
        assert_eq!(
            plan(&[tagged], &[with_tag], 100 * D, DAY),
            vec![Action::Expire]
        );
    }

    #[test]
    fn a_version_says_when_it_expires_by_the_earliest_rule() {
        let by_days = Rule {
            id: Some("days".into()),
            expire_days: Some(2),
            ..rule()
        };
        let by_date = Rule {
            id: Some("date".into()),
            expire_at_ns: Some(10 * D),
            ..rule()
        };
        let lc = Lifecycle {
            rules: vec![by_date.clone(), by_days.clone()],
        };
        let written = Version {
            mtime_ns: D + D / 2,
            ..v("v1", 0, false)
        };
        // The same instant a pass would act on it: the day boundary after 2 days.
        assert_eq!(lc.expiry(&written, DAY), Some((4 * D, Some("days"))));
        assert_eq!(
            plan(
                std::slice::from_ref(&by_days),
                std::slice::from_ref(&written),
                4 * D,
                DAY
            ),
            vec![Action::Expire]
        );
        let late = Version {
            mtime_ns: 9 * D,
            ..v("v1", 0, false)
        };
        assert_eq!(lc.expiry(&late, DAY), Some((10 * D, Some("date"))));
        // Rules that do not match, and delete markers, say nothing.
        let other = Version {
            key: "tmp/x".into(),
            ..written.clone()
        };
        assert_eq!(lc.expiry(&other, DAY), None);
        assert_eq!(lc.expiry(&v("m", 1, true), DAY), None);
    }

    #[test]
    fn noncurrent_versions_go_after_their_successor_is_old_enough_keeping_the_newest() {
        let r = Rule {
            noncurrent_days: Some(1),
            ..rule()
        };
        // v3 current (day 5); v2 superseded on day 5; v1 superseded on day 2.
        let vs = [v("v3", 5, false), v("v2", 2, false), v("v1", 1, false)];
        let removes = |rules: &[Rule], now| -> Vec<String> {
            plan(rules, &vs, now, DAY)
                .into_iter()
                .filter_map(|a| match a {
                    Action::Remove { version_id, .. } => Some(version_id),
                    Action::Expire => None,
                })
                .collect()
        };
        assert_eq!(
            removes(std::slice::from_ref(&r), 3 * D),
            vec!["v1".to_string()]
        );
        assert_eq!(
            removes(std::slice::from_ref(&r), 6 * D),
            vec!["v2".to_string(), "v1".into()]
        );
        let keep_one = Rule {
            keep_noncurrent: Some(1),
            ..r
        };
        assert_eq!(removes(&[keep_one], 6 * D), vec!["v1".to_string()]);
    }

    #[test]
    fn a_delete_marker_goes_once_nothing_is_left_under_it() {
        let r = Rule {
            noncurrent_days: Some(1),
            expired_delete_markers: true,
            ..rule()
        };
        let vs = [v("m", 5, true), v("v1", 1, false)];
        // Before v1 is due, the marker stays.
        assert!(plan(std::slice::from_ref(&r), &vs, 5 * D, DAY).is_empty());
        assert_eq!(
            plan(std::slice::from_ref(&r), &vs, 6 * D, DAY),
            vec![
                Action::Remove {
                    version_id: "v1".into(),
                    marker: false
                },
                Action::Remove {
                    version_id: "m".into(),
                    marker: true
                }
            ]
        );
        // Expiration of current versions never stacks markers on markers.
        let exp = Rule {
            expire_days: Some(1),
            ..rule()
        };
        assert!(plan(&[exp], &vs[..1], 100 * D, DAY).is_empty());
    }

    #[test]
    fn tags_are_read_as_stored() {
        let mut x = v("v", 0, false);
        x.meta
            .insert(":tagging".into(), "a%20b=c+d&empty=&e%3D=%26".into());
        assert_eq!(
            tags_of(&x),
            vec![
                ("a b".to_string(), "c d".to_string()),
                ("empty".into(), "".into()),
                ("e=".into(), "&".into())
            ]
        );
    }
}
