//! Server-side encryption headers. Every object is encrypted at rest anyway (with its
//! bucket's key); on top of that:
//! - SSE-C: the client's own key (`x-amz-server-side-encryption-customer-*`), checked
//!   against its MD5 here and used by the archive (`archive::sse_c`), never stored.
//! - SSE-S3 and SSE-KMS (`x-amz-server-side-encryption: AES256 | aws:kms`): recorded and
//!   answered as S3 does; there is no separate KMS, the key id is kept as a label.
//! - A bucket's default encryption (Put/Get/DeleteBucketEncryption), answered on writes
//!   that name none.

use std::collections::BTreeMap;

use archive::CustomerKey;
use base64::Engine;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use crate::EdgeS3;
use crate::error::OrS3;

/// Version metadata: `AES256` or `aws:kms`, as the write asked (or the bucket default).
const SSE: &str = ":sse";
/// Version metadata: the KMS key id the write named.
const SSE_KMS_KEY: &str = ":sse-kms-key-id";
/// Bucket setting: the default encryption (JSON of s3s's configuration).
const BUCKET_DEFAULT: &str = "encryption";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The SSE-C headers of a request as given.
#[derive(Default)]
pub(crate) struct CustomerHeaders<'a> {
    pub algorithm: Option<&'a String>,
    pub key: Option<&'a String>,
    pub key_md5: Option<&'a String>,
}

/// The SSE-C headers of any input that carries them (the same names on many types).
macro_rules! customer_headers {
    ($i:expr) => {
        $crate::sse::CustomerHeaders {
            algorithm: $i.sse_customer_algorithm.as_ref(),
            key: $i.sse_customer_key.as_ref(),
            key_md5: $i.sse_customer_key_md5.as_ref(),
        }
    };
}
pub(crate) use customer_headers;

/// The customer key a request gives (SSE-C), checked: AES256, 32 bytes, its MD5 right.
pub(crate) fn customer_key(h: CustomerHeaders<'_>) -> S3Result<Option<CustomerKey>> {
    let (alg, key) = match (h.algorithm, h.key) {
        (None, None) if h.key_md5.is_none() => return Ok(None),
        (Some(a), Some(k)) => (a, k),
        _ => {
            return Err(s3_error!(
                InvalidArgument,
                "SSE-C needs x-amz-server-side-encryption-customer-algorithm, -key and -key-MD5 together"
            ));
        }
    };
    if alg != "AES256" {
        return Err(s3_error!(
            InvalidArgument,
            "the SSE-C algorithm must be AES256"
        ));
    }
    let raw = B64
        .decode(key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "the SSE-C key must be 256 bits, base64-encoded"
            )
        })?;
    let md5 = h.key_md5.ok_or_else(|| {
        s3_error!(
            InvalidArgument,
            "SSE-C needs x-amz-server-side-encryption-customer-key-MD5"
        )
    })?;
    use md5::Digest;
    if B64.encode(md5::Md5::digest(raw)) != *md5 {
        return Err(s3_error!(
            InvalidArgument,
            "The calculated MD5 hash of the key did not match the hash that was provided"
        ));
    }
    Ok(Some(CustomerKey(raw)))
}

/// Records the SSE-S3/KMS a write asks for, or the bucket's default.
pub(crate) fn write_meta(
    meta: &mut BTreeMap<String, String>,
    sse: Option<&ServerSideEncryption>,
    kms_key: Option<&String>,
    customer: bool,
    bucket: &archive::Bucket,
) -> S3Result<()> {
    meta.remove(SSE);
    meta.remove(SSE_KMS_KEY);
    match (sse.map(|s| s.as_str()), kms_key) {
        (Some(_), _) if customer => {
            return Err(s3_error!(
                InvalidArgument,
                "x-amz-server-side-encryption and SSE-C headers exclude each other"
            ));
        }
        (Some(ServerSideEncryption::AES256), None) => {
            meta.insert(SSE.into(), ServerSideEncryption::AES256.into());
        }
        (Some(ServerSideEncryption::AWS_KMS), Some(k)) if !k.is_empty() => {
            meta.insert(SSE.into(), ServerSideEncryption::AWS_KMS.into());
            meta.insert(SSE_KMS_KEY.into(), k.clone());
        }
        (Some(ServerSideEncryption::AWS_KMS), _) => {
            return Err(s3_error!(
                InvalidArgument,
                "aws:kms needs x-amz-server-side-encryption-aws-kms-key-id (a label here: \
                 every object is encrypted with its bucket's key)"
            ));
        }
        (Some(other), _) => {
            return Err(s3_error!(
                InvalidArgument,
                "x-amz-server-side-encryption {other} is not AES256 or aws:kms"
            ));
        }
        (None, Some(_)) => {
            return Err(s3_error!(
                InvalidArgument,
                "x-amz-server-side-encryption-aws-kms-key-id needs x-amz-server-side-encryption: aws:kms"
            ));
        }
        (None, None) if !customer => {
            if let Some((alg, key)) = bucket_default(bucket) {
                meta.insert(SSE.into(), alg);
                if let Some(k) = key {
                    meta.insert(SSE_KMS_KEY.into(), k);
                }
            }
        }
        (None, None) => {}
    }
    Ok(())
}

/// GET and HEAD take no `x-amz-server-side-encryption` headers (S3 refuses them).
pub(crate) fn refuse_on_read(headers: &http::HeaderMap) -> S3Result<()> {
    if headers.contains_key("x-amz-server-side-encryption")
        || headers.contains_key("x-amz-server-side-encryption-aws-kms-key-id")
    {
        return Err(s3_error!(
            InvalidArgument,
            "x-amz-server-side-encryption headers belong on writes, not reads"
        ));
    }
    Ok(())
}

/// What an answer says about a version's encryption.
#[derive(Default)]
pub(crate) struct Answer {
    pub server_side_encryption: Option<ServerSideEncryption>,
    pub ssekms_key_id: Option<String>,
    pub sse_customer_algorithm: Option<String>,
    pub sse_customer_key_md5: Option<String>,
}

/// The encryption headers of an answer about a version (and the SSE-C key the request
/// gave, whose MD5 is echoed).
pub(crate) fn answer(meta: &BTreeMap<String, String>, customer: &CustomerHeaders<'_>) -> Answer {
    let mut a = Answer {
        server_side_encryption: meta.get(SSE).map(|s| ServerSideEncryption::from(s.clone())),
        ssekms_key_id: meta.get(SSE_KMS_KEY).cloned(),
        ..Default::default()
    };
    if meta.contains_key(archive::sse_c::VERIFIER) {
        a.sse_customer_algorithm = Some("AES256".into());
        a.sse_customer_key_md5 = customer.key_md5.cloned();
    }
    a
}

/// Copies an `Answer` into the output fields of the same names.
macro_rules! set_answer {
    ($out:expr, $a:expr) => {{
        let a = $a;
        $out.server_side_encryption = a.server_side_encryption;
        $out.ssekms_key_id = a.ssekms_key_id;
        $out.sse_customer_algorithm = a.sse_customer_algorithm;
        $out.sse_customer_key_md5 = a.sse_customer_key_md5;
    }};
}
pub(crate) use set_answer;

fn bucket_default(b: &archive::Bucket) -> Option<(String, Option<String>)> {
    let conf: ServerSideEncryptionConfiguration =
        serde_json::from_str(b.settings.get(BUCKET_DEFAULT)?).ok()?;
    let d = conf
        .rules
        .first()?
        .apply_server_side_encryption_by_default
        .as_ref()?;
    Some((
        d.sse_algorithm.as_str().to_string(),
        d.kms_master_key_id.clone(),
    ))
}

impl EdgeS3 {
    pub(crate) async fn put_bucket_encryption_op(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        let i = req.input;
        let conf = i.server_side_encryption_configuration;
        for r in &conf.rules {
            match r
                .apply_server_side_encryption_by_default
                .as_ref()
                .map(|d| d.sse_algorithm.as_str())
            {
                Some(ServerSideEncryption::AES256 | ServerSideEncryption::AWS_KMS) => {}
                _ => {
                    return Err(s3_error!(
                        MalformedXML,
                        "each rule needs ApplyServerSideEncryptionByDefault with SSEAlgorithm \
                         AES256 or aws:kms"
                    ));
                }
            }
        }
        let value = serde_json::to_string(&conf).expect("s3s configurations serialize");
        self.archive
            .update_bucket_settings(&i.bucket, move |s| {
                s.insert(BUCKET_DEFAULT.into(), value.clone());
            })
            .await
            .s3()?;
        Ok(S3Response::new(PutBucketEncryptionOutput::default()))
    }

    pub(crate) async fn get_bucket_encryption_op(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        let b = self.archive.bucket(&req.input.bucket).s3()?;
        let conf = b
            .settings
            .get(BUCKET_DEFAULT)
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| {
                s3_error!(
                    ServerSideEncryptionConfigurationNotFoundError,
                    "The server side encryption configuration was not found"
                )
            })?;
        Ok(S3Response::new(GetBucketEncryptionOutput {
            server_side_encryption_configuration: Some(conf),
        }))
    }

    pub(crate) async fn delete_bucket_encryption_op(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        self.archive
            .update_bucket_settings(&req.input.bucket, |s| {
                s.remove(BUCKET_DEFAULT);
            })
            .await
            .s3()?;
        Ok(S3Response::new(DeleteBucketEncryptionOutput::default()))
    }
}
