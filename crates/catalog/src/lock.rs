//! Object lock (write once, read many): a bucket's lock configuration and each
//! version's retention and legal hold, with S3's rules. The rules are checked here,
//! where every change is applied, so no gateway, tool or background task (S3, WebDAV,
//! FTP, NFS, the admin API, lifecycle, history expiry) can get around them.
//!
//! - A locked bucket stays versioned: deleting a key only adds a delete marker, and
//!   the locked version stays. Removing that version is refused while it is retained
//!   or under legal hold.
//! - COMPLIANCE retention can be extended, never shortened or removed, by anyone (the
//!   root key included). GOVERNANCE retention can be shortened, removed or turned into
//!   COMPLIANCE only by a request that bypasses governance (a bucket owner's).
//! - A bucket's lock cannot be turned off once on.
//!
//! Retention and legal hold live in the version's metadata under `:` names (no HTTP
//! header can have them), the bucket's configuration in its settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::records::{Bucket, Version, Versioning};
use crate::{CatalogError, Result};

/// Version metadata: the retention mode, `GOVERNANCE` or `COMPLIANCE`.
pub const LOCK_MODE: &str = ":lock-mode";
/// Version metadata: retained until this instant (ns since the Unix epoch, decimal).
pub const LOCK_UNTIL: &str = ":lock-until";
/// Version metadata: `ON` or `OFF`.
pub const LEGAL_HOLD: &str = ":legal-hold";
/// Bucket setting: the bucket's lock configuration (JSON `BucketLock`); present means
/// object lock is enabled.
pub const BUCKET_LOCK: &str = "object-lock";

const NS_PER_DAY: u64 = 86_400 * 1_000_000_000;

/// How strongly a version is retained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockMode {
    /// Owners may shorten or lift it (bypassing governance).
    Governance,
    /// Nobody may shorten or lift it.
    Compliance,
}

impl LockMode {
    /// S3's name: `GOVERNANCE` or `COMPLIANCE`.
    pub fn name(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }

    /// The mode S3 names exactly so (upper case, as S3 requires).
    pub fn parse(s: &str) -> Option<LockMode> {
        match s {
            "GOVERNANCE" => Some(LockMode::Governance),
            "COMPLIANCE" => Some(LockMode::Compliance),
            _ => None,
        }
    }
}

/// A bucket's object lock configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BucketLock {
    /// Retention given to every new version that does not ask for its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<DefaultRetention>,
}

/// A bucket's default retention: a mode and a period in days or years.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRetention {
    /// The mode.
    pub mode: LockMode,
    /// The period in days (exactly one of days and years).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// The period in years of 365 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub years: Option<u32>,
}

impl DefaultRetention {
    /// The retention a version written at `at_ns` gets.
    pub fn from(&self, at_ns: u64) -> Retention {
        let days = u64::from(self.days.unwrap_or(0)) + 365 * u64::from(self.years.unwrap_or(0));
        Retention {
            mode: self.mode,
            until_ns: at_ns.saturating_add(days.saturating_mul(NS_PER_DAY)),
        }
    }
}

/// One version's retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The mode.
    pub mode: LockMode,
    /// Retained until this instant (ns since the Unix epoch).
    pub until_ns: u64,
}

impl Retention {
    /// Writes the retention into version metadata.
    pub fn store(&self, meta: &mut BTreeMap<String, String>) {
        meta.insert(LOCK_MODE.into(), self.mode.name().into());
        meta.insert(LOCK_UNTIL.into(), self.until_ns.to_string());
    }
}

/// The bucket's lock configuration; None when object lock is off.
pub fn bucket_lock(b: &Bucket) -> Option<BucketLock> {
    // A configuration that does not parse still means "locked": never fail open.
    b.settings
        .get(BUCKET_LOCK)
        .map(|s| serde_json::from_str(s).unwrap_or_default())
}

/// A version's retention, if it has one.
pub fn retention(meta: &BTreeMap<String, String>) -> Option<Retention> {
    let mode = LockMode::parse(meta.get(LOCK_MODE)?)?;
    // An unreadable date locks for ever rather than not at all.
    let until_ns = meta
        .get(LOCK_UNTIL)
        .map_or(u64::MAX, |s| s.parse().unwrap_or(u64::MAX));
    Some(Retention { mode, until_ns })
}

/// Whether a legal hold is on. None when it was never set.
pub fn legal_hold(meta: &BTreeMap<String, String>) -> Option<bool> {
    meta.get(LEGAL_HOLD).map(|s| s == "ON")
}

fn has_lock_meta(meta: &BTreeMap<String, String>) -> bool {
    [LOCK_MODE, LOCK_UNTIL, LEGAL_HOLD]
        .iter()
        .any(|k| meta.contains_key(*k))
}

fn locked(v: &Version, why: String) -> CatalogError {
    CatalogError::Locked(format!("version {} of {:?} {why}", v.version_id, v.key))
}

/// Whether `v` may be removed for good at `now_ns`.
pub(crate) fn check_removal(v: &Version, now_ns: u64, bypass_governance: bool) -> Result<()> {
    if legal_hold(&v.meta) == Some(true) {
        return Err(locked(v, "is under legal hold; lift the hold first".into()));
    }
    match retention(&v.meta) {
        Some(r) if r.until_ns > now_ns => match r.mode {
            LockMode::Compliance => Err(locked(
                v,
                "is retained in COMPLIANCE mode; it can be removed once the retention ends".into(),
            )),
            LockMode::Governance if !bypass_governance => Err(locked(
                v,
                "is retained in GOVERNANCE mode; an owner may remove it with \
                 x-amz-bypass-governance-retention"
                    .into(),
            )),
            LockMode::Governance => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Whether the version's metadata may change from `old` to `new` at `now_ns`: the
/// retention may only grow unless governance is bypassed, and never while COMPLIANCE.
pub(crate) fn check_change(
    v: &Version,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    now_ns: u64,
    bypass_governance: bool,
) -> Result<()> {
    let Some(before) = retention(old).filter(|r| r.until_ns > now_ns) else {
        return Ok(());
    };
    let after = retention(new);
    let weaker = match after {
        None => true,
        Some(a) => a.until_ns < before.until_ns || a.mode != before.mode,
    };
    let stronger_mode = after.is_some_and(|a| {
        a.until_ns >= before.until_ns
            && before.mode == LockMode::Governance
            && a.mode == LockMode::Compliance
    });
    match before.mode {
        _ if !weaker => Ok(()),
        LockMode::Compliance => Err(locked(
            v,
            "is retained in COMPLIANCE mode; its retention can only be extended".into(),
        )),
        LockMode::Governance if bypass_governance => Ok(()),
        LockMode::Governance => Err(locked(
            v,
            if stronger_mode {
                "is retained in GOVERNANCE mode; changing the mode needs \
                 x-amz-bypass-governance-retention"
            } else {
                "is retained in GOVERNANCE mode; shortening or removing it needs \
                 x-amz-bypass-governance-retention"
            }
            .into(),
        )),
    }
}

/// Whether a bucket may change from `old` to `new`: a lock stays on and keeps the
/// bucket versioned, and is turned on only in a versioned bucket.
pub(crate) fn check_bucket_change(old: &Bucket, new: &Bucket) -> Result<()> {
    let (was, is) = (bucket_lock(old).is_some(), bucket_lock(new).is_some());
    if was && !is {
        return Err(CatalogError::InvalidState(format!(
            "bucket {:?} has object lock on; it cannot be turned off",
            old.name
        )));
    }
    if is && new.versioning != Versioning::Enabled {
        return Err(CatalogError::InvalidState(format!(
            "bucket {:?} needs versioning Enabled for object lock{}",
            old.name,
            if was {
                "; a locked bucket cannot suspend versioning"
            } else {
                "; enable versioning first"
            }
        )));
    }
    Ok(())
}

/// Checks a new version's lock metadata against its bucket and adds the bucket's
/// default retention when the writer gave none.
pub(crate) fn on_write(b: &Bucket, meta: &mut BTreeMap<String, String>, at_ns: u64) -> Result<()> {
    let Some(lock) = bucket_lock(b) else {
        if has_lock_meta(meta) {
            return Err(CatalogError::Invalid(format!(
                "bucket {:?} has no object lock configuration; retention and legal hold \
                 need a bucket created with object lock",
                b.name
            )));
        }
        return Ok(());
    };
    if !meta.contains_key(LOCK_MODE)
        && let Some(d) = lock.default
    {
        d.from(at_ns).store(meta);
    }
    Ok(())
}

/// The ledger records of the lock metadata a change sets (retention, legal hold).
pub(crate) fn changes(
    bucket: &str,
    v: &Version,
    old: Option<&BTreeMap<String, String>>,
) -> Vec<ledger::record::Change> {
    let empty = BTreeMap::new();
    let old = old.unwrap_or(&empty);
    let mut out = Vec::new();
    let (before, after) = (retention(old), retention(&v.meta));
    if before != after {
        out.push(ledger::record::Change::RetentionSet {
            bucket: bucket.into(),
            key: v.key.clone(),
            version_id: v.version_id.clone(),
            mode: after.map(|r| r.mode.name().to_string()),
            retain_until_ns: after.map(|r| r.until_ns),
        });
    }
    let (before, after) = (legal_hold(old), legal_hold(&v.meta));
    if before.unwrap_or(false) != after.unwrap_or(false) {
        out.push(ledger::record::Change::LegalHoldSet {
            bucket: bucket.into(),
            key: v.key.clone(),
            version_id: v.version_id.clone(),
            on: after.unwrap_or(false),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(meta: &[(&str, &str)]) -> Version {
        Version {
            key: "k".into(),
            version_id: "v1".into(),
            seq: 1,
            mtime_ns: 0,
            delete_marker: false,
            hidden: false,
            size: 0,
            etag: String::new(),
            content_type: None,
            meta: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: crate::records::Body::Empty,
            parts: Vec::new(),
        }
    }

    #[test]
    fn retained_versions_cannot_be_removed_until_they_expire() {
        let gov = version(&[(LOCK_MODE, "GOVERNANCE"), (LOCK_UNTIL, "100")]);
        assert!(check_removal(&gov, 99, false).is_err());
        assert!(check_removal(&gov, 99, true).is_ok());
        assert!(check_removal(&gov, 100, false).is_ok());
        let comp = version(&[(LOCK_MODE, "COMPLIANCE"), (LOCK_UNTIL, "100")]);
        assert!(check_removal(&comp, 99, true).is_err());
        assert!(check_removal(&comp, 101, false).is_ok());
        let held = version(&[(LEGAL_HOLD, "ON")]);
        assert!(check_removal(&held, 0, true).is_err());
        assert!(check_removal(&version(&[(LEGAL_HOLD, "OFF")]), 0, false).is_ok());
        // A date that does not parse locks for ever.
        let odd = version(&[(LOCK_MODE, "COMPLIANCE"), (LOCK_UNTIL, "soon")]);
        assert!(check_removal(&odd, u64::MAX - 1, true).is_err());
    }

    #[test]
    fn retention_only_grows_unless_governance_is_bypassed() {
        let m = |mode: &str, until: &str| version(&[(LOCK_MODE, mode), (LOCK_UNTIL, until)]).meta;
        let v = version(&[]);
        let gov = m("GOVERNANCE", "100");
        assert!(check_change(&v, &gov, &m("GOVERNANCE", "200"), 50, false).is_ok());
        assert!(check_change(&v, &gov, &m("GOVERNANCE", "60"), 50, false).is_err());
        assert!(check_change(&v, &gov, &m("GOVERNANCE", "60"), 50, true).is_ok());
        assert!(check_change(&v, &gov, &BTreeMap::new(), 50, false).is_err());
        assert!(check_change(&v, &gov, &m("COMPLIANCE", "100"), 50, false).is_err());
        assert!(check_change(&v, &gov, &m("COMPLIANCE", "100"), 50, true).is_ok());
        let comp = m("COMPLIANCE", "100");
        assert!(check_change(&v, &comp, &m("COMPLIANCE", "300"), 50, false).is_ok());
        assert!(check_change(&v, &comp, &m("COMPLIANCE", "60"), 50, true).is_err());
        assert!(check_change(&v, &comp, &m("GOVERNANCE", "300"), 50, true).is_err());
        // Expired retention is no retention.
        assert!(check_change(&v, &comp, &BTreeMap::new(), 100, false).is_ok());
    }

    #[test]
    fn default_retention_counts_days_or_years_from_the_write() {
        let d = DefaultRetention {
            mode: LockMode::Governance,
            days: Some(2),
            years: None,
        };
        assert_eq!(d.from(5).until_ns, 5 + 2 * NS_PER_DAY);
        let y = DefaultRetention {
            mode: LockMode::Compliance,
            days: None,
            years: Some(1),
        };
        assert_eq!(y.from(0).until_ns, 365 * NS_PER_DAY);
    }
}
