//! Object lock over S3: the bucket's configuration, each version's retention and legal
//! hold, and the lock headers of PUT, COPY, multipart and HEAD/GET. The rules (what may
//! be deleted or shortened) are the catalog's (`archive::lock`); this file only speaks
//! S3's XML and headers and checks who may bypass governance.

use std::collections::BTreeMap;

use archive::lock::{
    BUCKET_LOCK, BucketLock, LEGAL_HOLD, LOCK_MODE, LOCK_UNTIL, LockMode, Retention,
};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use crate::EdgeS3;
use crate::error::OrS3;

fn invalid_request(msg: &'static str) -> s3s::S3Error {
    s3_error!(InvalidRequest, "{msg}")
}

fn not_locked() -> s3s::S3Error {
    invalid_request("Bucket is missing Object Lock Configuration")
}

fn invalid_period(msg: &'static str) -> s3s::S3Error {
    let mut e = s3s::S3Error::with_message(
        s3s::S3ErrorCode::Custom("InvalidRetentionPeriod".into()),
        msg,
    );
    e.set_status_code(http::StatusCode::BAD_REQUEST);
    e
}

fn mode(s: &str) -> S3Result<LockMode> {
    LockMode::parse(s).ok_or_else(|| {
        s3_error!(
            MalformedXML,
            "the retention mode must be GOVERNANCE or COMPLIANCE"
        )
    })
}

fn ns_of(t: &Timestamp) -> u64 {
    let t = time::OffsetDateTime::from(t.clone());
    u64::try_from(t.unix_timestamp_nanos()).unwrap_or(0)
}

fn hold_status(on: bool) -> ObjectLockLegalHoldStatus {
    ObjectLockLegalHoldStatus::from_static(if on {
        ObjectLockLegalHoldStatus::ON
    } else {
        ObjectLockLegalHoldStatus::OFF
    })
}

fn hold_on(status: &str) -> S3Result<bool> {
    match status {
        ObjectLockLegalHoldStatus::ON => Ok(true),
        ObjectLockLegalHoldStatus::OFF => Ok(false),
        _ => Err(s3_error!(
            MalformedXML,
            "the legal hold status must be ON or OFF"
        )),
    }
}

/// The lock metadata a write asks for with its `x-amz-object-lock-*` headers (PUT,
/// COPY, CreateMultipartUpload); the catalog refuses it in a bucket without lock.
pub(crate) fn write_meta(
    meta: &mut BTreeMap<String, String>,
    m: Option<&ObjectLockMode>,
    until: Option<&Timestamp>,
    hold: Option<&ObjectLockLegalHoldStatus>,
) -> S3Result<()> {
    match (m, until) {
        (Some(m), Some(u)) => Retention {
            mode: mode(m.as_str())?,
            until_ns: ns_of(u),
        }
        .store(meta),
        (None, None) => {}
        _ => {
            return Err(invalid_request(
                "x-amz-object-lock-mode and x-amz-object-lock-retain-until-date go together",
            ));
        }
    }
    if let Some(h) = hold {
        let on = hold_on(h.as_str())?;
        meta.insert(LEGAL_HOLD.into(), if on { "ON" } else { "OFF" }.into());
    }
    Ok(())
}

/// Drops a source's lock metadata (a copy gets its own lock, as in S3).
pub(crate) fn strip(meta: &mut BTreeMap<String, String>) {
    for k in [LOCK_MODE, LOCK_UNTIL, LEGAL_HOLD] {
        meta.remove(k);
    }
}

/// The lock headers of a HEAD or GET: mode, retain-until date, legal hold.
pub(crate) struct LockHeaders {
    pub mode: Option<ObjectLockMode>,
    pub until: Option<Timestamp>,
    pub hold: Option<ObjectLockLegalHoldStatus>,
}

/// Copies a version's lock headers into a GET or HEAD output (same field names).
macro_rules! set_lock_headers {
    ($out:expr, $meta:expr) => {{
        let lock = $crate::lock::headers_of($meta);
        $out.object_lock_mode = lock.mode;
        $out.object_lock_retain_until_date = lock.until;
        $out.object_lock_legal_hold_status = lock.hold;
    }};
}
pub(crate) use set_lock_headers;

pub(crate) fn headers_of(meta: &BTreeMap<String, String>) -> LockHeaders {
    let r = archive::lock::retention(meta);
    LockHeaders {
        mode: r.map(|r| ObjectLockMode::from(r.mode.name().to_string())),
        until: r.map(|r| crate::timestamp(r.until_ns)),
        hold: archive::lock::legal_hold(meta).map(hold_status),
    }
}

/// The settings that turn object lock on for a new bucket (CreateBucket with
/// `x-amz-bucket-object-lock-enabled`).
pub(crate) fn enabled_setting() -> (String, String) {
    (
        BUCKET_LOCK.to_string(),
        serde_json::to_string(&BucketLock::default()).expect("lock configurations serialize"),
    )
}

fn parse_configuration(c: &ObjectLockConfiguration) -> S3Result<BucketLock> {
    if c.object_lock_enabled.as_ref().map(|e| e.as_str()) != Some(ObjectLockEnabled::ENABLED) {
        return Err(s3_error!(
            MalformedXML,
            "ObjectLockEnabled must be Enabled (object lock cannot be turned off)"
        ));
    }
    let Some(d) = c.rule.as_ref().and_then(|r| r.default_retention.as_ref()) else {
        return Ok(BucketLock { default: None });
    };
    let m = mode(d.mode.as_ref().map_or("", |m| m.as_str()))?;
    let (days, years) = match (d.days, d.years) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(s3_error!(
                MalformedXML,
                "DefaultRetention needs exactly one of Days and Years"
            ));
        }
        (Some(d), None) if d <= 0 => return Err(invalid_period("Days must be positive")),
        (None, Some(y)) if y <= 0 => return Err(invalid_period("Years must be positive")),
        (d, y) => (d.map(|d| d as u32), y.map(|y| y as u32)),
    };
    Ok(BucketLock {
        default: Some(archive::lock::DefaultRetention {
            mode: m,
            days,
            years,
        }),
    })
}

impl EdgeS3 {
    fn locked_bucket(&self, bucket: &str) -> S3Result<Option<BucketLock>> {
        Ok(archive::lock::bucket_lock(
            &self.archive.bucket(bucket).s3()?,
        ))
    }

    /// The version a retention or legal hold request names, in a bucket with lock on.
    fn version_in_locked_bucket(
        &self,
        bucket: &str,
        key: &str,
        version_id: &Option<String>,
    ) -> S3Result<archive::Version> {
        if self.locked_bucket(bucket)?.is_none() {
            return Err(not_locked());
        }
        self.archive
            .head(bucket, key, &crate::version_sel(version_id))
            .s3()
    }

    /// A request that asks to bypass governance must come from an owner of the bucket
    /// (S3's `s3:BypassGovernanceRetention`).
    pub(crate) fn bypass<T>(
        &self,
        req: &S3Request<T>,
        bucket: &str,
        asked: Option<bool>,
    ) -> S3Result<bool> {
        if !asked.unwrap_or(false) {
            return Ok(false);
        }
        let key = req.credentials.as_ref().map(|c| c.access_key.as_str());
        if self.owns(key, bucket) {
            Ok(true)
        } else {
            Err(s3_error!(
                AccessDenied,
                "bypassing governance retention needs owner permission on the bucket"
            ))
        }
    }

    pub(crate) async fn put_object_lock_configuration_op(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        let i = req.input;
        let conf = i
            .object_lock_configuration
            .as_ref()
            .ok_or_else(|| s3_error!(MalformedXML, "no ObjectLockConfiguration"))?;
        let lock = parse_configuration(conf)?;
        let b = self.archive.bucket(&i.bucket).s3()?;
        if archive::lock::bucket_lock(&b).is_none() && b.versioning != archive::Versioning::Enabled
        {
            return Err(s3_error!(
                InvalidBucketState,
                "object lock needs a versioned bucket: create the bucket with object lock, \
                 or enable versioning first"
            ));
        }
        let value = serde_json::to_string(&lock).expect("lock configurations serialize");
        self.archive
            .update_bucket_settings(&i.bucket, move |s| {
                s.insert(BUCKET_LOCK.into(), value.clone());
            })
            .await
            .s3()?;
        Ok(S3Response::new(PutObjectLockConfigurationOutput::default()))
    }

    pub(crate) async fn get_object_lock_configuration_op(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        let lock = self.locked_bucket(&req.input.bucket)?.ok_or_else(|| {
            s3_error!(
                ObjectLockConfigurationNotFoundError,
                "Object Lock configuration does not exist for this bucket"
            )
        })?;
        let rule = lock.default.map(|d| ObjectLockRule {
            default_retention: Some(s3s::dto::DefaultRetention {
                mode: Some(ObjectLockRetentionMode::from(d.mode.name().to_string())),
                days: d.days.map(|d| d as i32),
                years: d.years.map(|y| y as i32),
            }),
        });
        Ok(S3Response::new(GetObjectLockConfigurationOutput {
            object_lock_configuration: Some(ObjectLockConfiguration {
                object_lock_enabled: Some(ObjectLockEnabled::from_static(
                    ObjectLockEnabled::ENABLED,
                )),
                rule,
            }),
        }))
    }

    pub(crate) async fn put_object_retention_op(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        let bypass = self.bypass(
            &req,
            &req.input.bucket,
            req.input.bypass_governance_retention,
        )?;
        let i = req.input;
        if self.locked_bucket(&i.bucket)?.is_none() {
            return Err(not_locked());
        }
        let r = i.retention.unwrap_or_default();
        let wanted = match (r.mode, r.retain_until_date) {
            (Some(m), Some(u)) => Some(Retention {
                mode: mode(m.as_str())?,
                until_ns: ns_of(&u),
            }),
            (None, None) => None,
            _ => {
                return Err(s3_error!(
                    MalformedXML,
                    "Retention needs both Mode and RetainUntilDate, or neither to remove it"
                ));
            }
        };
        if wanted.is_some_and(|w| w.until_ns <= archive::now_ns()) {
            return Err(invalid_request(
                "the retain-until date must be in the future",
            ));
        }
        self.archive
            .update_meta_governed(
                &i.bucket,
                &i.key,
                crate::version_sel(&i.version_id),
                bypass,
                move |m| match wanted {
                    Some(w) => w.store(m),
                    None => {
                        m.remove(LOCK_MODE);
                        m.remove(LOCK_UNTIL);
                    }
                },
            )
            .await
            .s3()?;
        Ok(S3Response::new(PutObjectRetentionOutput::default()))
    }

    pub(crate) async fn get_object_retention_op(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        let i = &req.input;
        let v = self.version_in_locked_bucket(&i.bucket, &i.key, &i.version_id)?;
        let r = archive::lock::retention(&v.meta).ok_or_else(|| {
            s3_error!(
                NoSuchObjectLockConfiguration,
                "The specified object does not have a retention configuration"
            )
        })?;
        Ok(S3Response::new(GetObjectRetentionOutput {
            retention: Some(ObjectLockRetention {
                mode: Some(ObjectLockRetentionMode::from(r.mode.name().to_string())),
                retain_until_date: Some(crate::timestamp(r.until_ns)),
            }),
        }))
    }

    pub(crate) async fn put_object_legal_hold_op(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        let i = req.input;
        if self.locked_bucket(&i.bucket)?.is_none() {
            return Err(not_locked());
        }
        let status = i
            .legal_hold
            .and_then(|h| h.status)
            .ok_or_else(|| s3_error!(MalformedXML, "LegalHold needs a Status"))?;
        let on = hold_on(status.as_str())?;
        self.archive
            .update_meta(
                &i.bucket,
                &i.key,
                crate::version_sel(&i.version_id),
                move |m| {
                    m.insert(LEGAL_HOLD.into(), if on { "ON" } else { "OFF" }.into());
                },
            )
            .await
            .s3()?;
        Ok(S3Response::new(PutObjectLegalHoldOutput::default()))
    }

    pub(crate) async fn get_object_legal_hold_op(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        let i = &req.input;
        let v = self.version_in_locked_bucket(&i.bucket, &i.key, &i.version_id)?;
        let hold = archive::lock::legal_hold(&v.meta).ok_or_else(|| {
            s3_error!(
                NoSuchObjectLockConfiguration,
                "The specified object does not have a legal hold configuration"
            )
        })?;
        Ok(S3Response::new(GetObjectLegalHoldOutput {
            legal_hold: Some(ObjectLockLegalHold {
                status: Some(hold_status(hold)),
            }),
        }))
    }
}
