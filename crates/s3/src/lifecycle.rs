//! Bucket lifecycle configuration over S3: validates S3's XML rules and turns them into
//! the engine's (`archive::lifecycle::Rule`), which the leader applies on a schedule.
//! The configuration as given is kept beside them, so GET answers what PUT set.

use archive::lifecycle::{Lifecycle, Rule};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use crate::EdgeS3;
use crate::error::OrS3;

/// Bucket setting: the configuration as S3 sent it (JSON of s3s's type).
const AS_GIVEN: &str = "lifecycle-s3";
const MAX_RULES: usize = 1000;
const NS_PER_DAY: i128 = 86_400 * 1_000_000_000;

fn positive(days: Option<i32>, what: &str) -> S3Result<Option<u32>> {
    match days {
        None => Ok(None),
        Some(d) if d > 0 => Ok(Some(d as u32)),
        Some(_) => Err(s3_error!(
            InvalidArgument,
            "'{what}' in a lifecycle rule must be a positive integer"
        )),
    }
}

/// A lifecycle date: midnight UTC, as S3 requires.
fn midnight(t: &Timestamp) -> S3Result<u64> {
    let ns = time::OffsetDateTime::from(t.clone()).unix_timestamp_nanos();
    if ns.rem_euclid(NS_PER_DAY) != 0 {
        return Err(s3_error!(
            MalformedXML,
            "a lifecycle Date must be at midnight UTC in ISO 8601 (2030-01-01T00:00:00Z)"
        ));
    }
    Ok(u64::try_from(ns).unwrap_or(0))
}

fn tag(t: &Tag) -> (String, String) {
    (
        t.key.clone().unwrap_or_default(),
        t.value.clone().unwrap_or_default(),
    )
}

/// One S3 rule as the engine's, or why it is refused.
fn convert(r: &LifecycleRule) -> S3Result<Rule> {
    let enabled = match r.status.as_str() {
        ExpirationStatus::ENABLED => true,
        ExpirationStatus::DISABLED => false,
        _ => {
            return Err(s3_error!(
                MalformedXML,
                "a rule's Status must be Enabled or Disabled"
            ));
        }
    };
    if r.id.as_ref().is_some_and(|id| id.len() > 255) {
        return Err(s3_error!(
            InvalidArgument,
            "a lifecycle rule ID is at most 255 characters"
        ));
    }
    let mut rule = Rule {
        id: r.id.clone(),
        enabled,
        ..Default::default()
    };
    // The filter: a rule-level Prefix (old form), or Filter with Prefix, Tag, sizes, And.
    // Every condition given must hold.
    let mut prefixes: Vec<&str> = r.prefix.iter().map(String::as_str).collect();
    if let Some(f) = &r.filter {
        prefixes.extend(f.prefix.as_deref());
        rule.tags.extend(f.tag.iter().map(tag));
        rule.size_greater_than = f.object_size_greater_than.map(|n| n.max(0) as u64);
        rule.size_less_than = f.object_size_less_than.map(|n| n.max(0) as u64);
        if let Some(and) = &f.and {
            prefixes.extend(and.prefix.as_deref());
            rule.tags.extend(and.tags.iter().flatten().map(tag));
            rule.size_greater_than = rule
                .size_greater_than
                .or(and.object_size_greater_than.map(|n| n.max(0) as u64));
            rule.size_less_than = rule
                .size_less_than
                .or(and.object_size_less_than.map(|n| n.max(0) as u64));
        }
    }
    // Keys must start with every prefix given: the longest, if the others lead to it.
    prefixes.sort_by_key(|p| p.len());
    let longest = prefixes.last().copied().unwrap_or("");
    if prefixes.iter().any(|p| !longest.starts_with(p)) {
        rule.enabled = false; // no key can match: S3 accepts such a rule, it does nothing
    }
    rule.prefix = longest.to_string();
    if let Some(e) = &r.expiration {
        let marker = e.expired_object_delete_marker.unwrap_or(false);
        if (e.days.is_some() as u8 + e.date.is_some() as u8 + marker as u8) > 1 {
            return Err(s3_error!(
                MalformedXML,
                "Expiration takes one of Days, Date and ExpiredObjectDeleteMarker"
            ));
        }
        rule.expire_days = positive(e.days, "Days")?;
        rule.expire_at_ns = e.date.as_ref().map(midnight).transpose()?;
        rule.expired_delete_markers = marker;
    }
    if let Some(n) = &r.noncurrent_version_expiration {
        rule.noncurrent_days = positive(n.noncurrent_days, "NoncurrentDays")?;
        rule.keep_noncurrent = n.newer_noncurrent_versions.map(|k| k.max(0) as u32);
    }
    if let Some(a) = &r.abort_incomplete_multipart_upload {
        rule.abort_uploads_days = positive(a.days_after_initiation, "DaysAfterInitiation")?;
    }
    let transitions = r.transitions.iter().flatten().count()
        + r.noncurrent_version_transitions.iter().flatten().count();
    for t in r.transitions.iter().flatten() {
        if let Some(d) = &t.date {
            midnight(d)?;
        }
    }
    if transitions > 0 {
        return Err(s3_error!(
            InvalidStorageClass,
            "storage class transitions are not supported: every object is kept in one \
             class (erasure-coded and encrypted); use Expiration instead"
        ));
    }
    let acts = rule.expire_days.is_some()
        || rule.expire_at_ns.is_some()
        || rule.expired_delete_markers
        || rule.noncurrent_days.is_some()
        || rule.abort_uploads_days.is_some();
    if !acts {
        return Err(s3_error!(
            InvalidRequest,
            "a lifecycle rule needs at least one action (Expiration, \
             NoncurrentVersionExpiration or AbortIncompleteMultipartUpload)"
        ));
    }
    Ok(rule)
}

impl EdgeS3 {
    /// `x-amz-expiration` for a bucket's current version: when a lifecycle pass will
    /// expire it, and by which rule (as S3 writes it: `expiry-date="HTTP date",
    /// rule-id="ID"`).
    pub(crate) fn expiration(&self, b: &archive::Bucket, v: &archive::Version) -> Option<String> {
        let rules = archive::lifecycle::Lifecycle::of(b)?;
        let (at_ns, id) = rules.expiry(v, self.lifecycle_day)?;
        let at = time::OffsetDateTime::from_unix_timestamp((at_ns / 1_000_000_000) as i64).ok()?;
        let format = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let date = at.format(format).ok()?;
        Some(format!(
            "expiry-date=\"{date}\", rule-id=\"{}\"",
            id.unwrap_or_default()
        ))
    }

    pub(crate) async fn put_bucket_lifecycle_configuration_op(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        let i = req.input;
        let mut conf = i
            .lifecycle_configuration
            .ok_or_else(|| s3_error!(MalformedXML, "no LifecycleConfiguration"))?;
        if conf.rules.is_empty() || conf.rules.len() > MAX_RULES {
            return Err(s3_error!(
                MalformedXML,
                "a lifecycle configuration has 1 to 1000 rules"
            ));
        }
        // Rules without an ID get one, as in S3, so GET names every rule.
        for r in &mut conf.rules {
            if r.id.as_deref().is_none_or(str::is_empty) {
                r.id = Some(archive::random_hex(16));
            }
        }
        let mut ids: Vec<&str> = conf.rules.iter().filter_map(|r| r.id.as_deref()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(s3_error!(
                InvalidArgument,
                "two lifecycle rules have the same ID"
            ));
        }
        let rules = conf
            .rules
            .iter()
            .map(convert)
            .collect::<S3Result<Vec<_>>>()?;
        let engine = serde_json::to_string(&Lifecycle { rules }).expect("rules serialize");
        let given = serde_json::to_string(&conf).expect("s3s configurations serialize");
        self.archive
            .update_bucket_settings(&i.bucket, move |s| {
                s.insert(archive::lifecycle::SETTING.into(), engine.clone());
                s.insert(AS_GIVEN.into(), given.clone());
            })
            .await
            .s3()?;
        Ok(S3Response::new(
            PutBucketLifecycleConfigurationOutput::default(),
        ))
    }

    pub(crate) async fn get_bucket_lifecycle_configuration_op(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        let b = self.archive.bucket(&req.input.bucket).s3()?;
        let conf: BucketLifecycleConfiguration = b
            .settings
            .get(AS_GIVEN)
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| {
                s3_error!(
                    NoSuchLifecycleConfiguration,
                    "The lifecycle configuration does not exist"
                )
            })?;
        Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
            rules: Some(conf.rules),
            ..Default::default()
        }))
    }

    pub(crate) async fn delete_bucket_lifecycle_op(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        self.archive
            .update_bucket_settings(&req.input.bucket, |s| {
                s.remove(archive::lifecycle::SETTING);
                s.remove(AS_GIVEN);
            })
            .await
            .s3()?;
        Ok(S3Response::new(DeleteBucketLifecycleOutput::default()))
    }
}
