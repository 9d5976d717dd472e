//! What S3 keeps with an object besides its bytes and user metadata: the standard
//! headers given at PUT (Cache-Control, Content-Disposition, ...), its tags and its
//! checksum. They live in the version's metadata map under names that start with ':',
//! a character no HTTP header name (so no `x-amz-meta-*` name) can contain.

use std::collections::BTreeMap;

use s3s::S3Result;
use s3s::dto::{Metadata, Tag, Timestamp, TimestampFormat};

pub(crate) const CACHE_CONTROL: &str = ":cache-control";
pub(crate) const CONTENT_DISPOSITION: &str = ":content-disposition";
pub(crate) const CONTENT_ENCODING: &str = ":content-encoding";
pub(crate) const CONTENT_LANGUAGE: &str = ":content-language";
pub(crate) const EXPIRES: &str = ":expires";
/// Tags as a URL query string, the form of the `x-amz-tagging` header.
pub(crate) const TAGGING: &str = ":tagging";
/// The access key (or `@anonymous`) that started a multipart upload: its Initiator and
/// Owner in ListMultipartUploads. Kept in the completed object's metadata.
pub(crate) const INITIATOR: &str = ":initiator";
/// The object's canned ACL (`public-read` makes it readable anonymously).
pub(crate) const ACL: &str = ":acl";
/// `:checksum-crc32` etc.: the full-object checksum the client sent, base64.
pub(crate) const CHECKSUM_PREFIX: &str = ":checksum-";

/// The standard headers a PUT (or CreateMultipartUpload, or CopyObject with REPLACE)
/// stores.
#[derive(Default)]
pub(crate) struct StoredHeaders<'a> {
    pub cache_control: Option<&'a String>,
    pub content_disposition: Option<&'a String>,
    pub content_encoding: Option<&'a String>,
    pub content_language: Option<&'a String>,
    pub expires: Option<&'a Timestamp>,
}

/// The stored headers of any S3 input that carries them (PutObject,
/// CreateMultipartUpload, CopyObject): the same field names on different types.
macro_rules! stored_headers {
    ($input:expr) => {
        $crate::headers::StoredHeaders {
            cache_control: $input.cache_control.as_ref(),
            content_disposition: $input.content_disposition.as_ref(),
            content_encoding: $input.content_encoding.as_ref(),
            content_language: $input.content_language.as_ref(),
            expires: $input.expires.as_ref(),
        }
    };
}
pub(crate) use stored_headers;

/// Copies a `Checksum` into the checksum fields of an S3 output (PutObject, GetObject,
/// HeadObject, UploadPart all have the same five).
macro_rules! set_checksums {
    ($out:expr, $sums:expr) => {{
        let sums = $sums;
        $out.checksum_crc32 = sums.checksum_crc32;
        $out.checksum_crc32c = sums.checksum_crc32c;
        $out.checksum_sha1 = sums.checksum_sha1;
        $out.checksum_sha256 = sums.checksum_sha256;
        $out.checksum_crc64nvme = sums.checksum_crc64nvme;
    }};
}
pub(crate) use set_checksums;

impl StoredHeaders<'_> {
    pub(crate) fn store(&self, meta: &mut BTreeMap<String, String>) {
        let pairs = [
            (CACHE_CONTROL, self.cache_control.cloned()),
            (CONTENT_DISPOSITION, self.content_disposition.cloned()),
            (CONTENT_ENCODING, self.content_encoding.cloned()),
            (CONTENT_LANGUAGE, self.content_language.cloned()),
            (EXPIRES, self.expires.map(http_date)),
        ];
        for (name, value) in pairs {
            if let Some(v) = value {
                meta.insert(name.to_string(), v);
            }
        }
    }
}

/// User metadata (`x-amz-meta-*`) from a request, plus the stored headers.
pub(crate) fn object_meta(
    user: Option<Metadata>,
    stored: StoredHeaders<'_>,
) -> BTreeMap<String, String> {
    let mut meta: BTreeMap<String, String> = user.unwrap_or_default().into_iter().collect();
    stored.store(&mut meta);
    meta
}

/// The user metadata part only, for `x-amz-meta-*` response headers.
pub(crate) fn user_meta(meta: &BTreeMap<String, String>) -> Metadata {
    meta.iter()
        .filter(|(k, _)| !k.starts_with(':'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub(crate) fn http_date(t: &Timestamp) -> String {
    let mut out = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut out)
        .expect("timestamps always format");
    String::from_utf8(out).expect("HTTP dates are ASCII")
}

pub(crate) fn parse_http_date(s: &str) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, s).ok()
}

/// The response headers of a GET or HEAD: the stored ones, each replaced by its
/// `response-*` query override when given (S3 allows overrides on signed requests).
pub(crate) struct ResponseHeaders {
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_type: Option<String>,
    pub expires: Option<Timestamp>,
}

impl ResponseHeaders {
    pub(crate) fn of(v: &archive::Version) -> Self {
        let get = |k: &str| v.meta.get(k).cloned();
        ResponseHeaders {
            cache_control: get(CACHE_CONTROL),
            content_disposition: get(CONTENT_DISPOSITION),
            content_encoding: get(CONTENT_ENCODING),
            content_language: get(CONTENT_LANGUAGE),
            // What S3 answers for an object stored without a Content-Type.
            content_type: Some(
                v.content_type
                    .clone()
                    .unwrap_or_else(|| "binary/octet-stream".into()),
            ),
            expires: get(EXPIRES).and_then(|s| parse_http_date(&s)),
        }
    }

    pub(crate) fn with_overrides(mut self, i: &s3s::dto::GetObjectInput) -> Self {
        let pick = |over: &Option<String>, cur: &mut Option<String>| {
            if let Some(o) = over {
                *cur = Some(o.clone());
            }
        };
        pick(&i.response_cache_control, &mut self.cache_control);
        pick(
            &i.response_content_disposition,
            &mut self.content_disposition,
        );
        pick(&i.response_content_encoding, &mut self.content_encoding);
        pick(&i.response_content_language, &mut self.content_language);
        pick(&i.response_content_type, &mut self.content_type);
        if let Some(e) = &i.response_expires {
            self.expires = Some(e.clone());
        }
        self
    }
}

// ---- tags ----

/// S3's limits: at most 10 tags per object (50 per bucket), keys up to 128 and
/// values up to 256 characters, keys unique.
pub(crate) fn validate_tags(tags: &[Tag], max: usize) -> S3Result<()> {
    if tags.len() > max {
        return Err(s3s::s3_error!(InvalidTag, "at most {max} tags are allowed"));
    }
    let mut seen = std::collections::HashSet::new();
    for t in tags {
        let k = t.key.as_deref().unwrap_or("");
        let v = t.value.as_deref().unwrap_or("");
        if k.is_empty() || k.chars().count() > 128 {
            return Err(s3s::s3_error!(
                InvalidTag,
                "tag keys must be 1 to 128 characters"
            ));
        }
        if v.chars().count() > 256 {
            return Err(s3s::s3_error!(
                InvalidTag,
                "tag values must be at most 256 characters"
            ));
        }
        if !seen.insert(k) {
            return Err(s3s::s3_error!(InvalidTag, "tag keys must be unique"));
        }
    }
    Ok(())
}

pub(crate) fn encode_tags(tags: &[Tag]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for t in tags {
        s.append_pair(
            t.key.as_deref().unwrap_or(""),
            t.value.as_deref().unwrap_or(""),
        );
    }
    s.finish()
}

/// Tags as S3 lists them: sorted by key.
pub(crate) fn decode_tags(s: &str) -> Vec<Tag> {
    let mut tags: Vec<Tag> = form_urlencoded::parse(s.as_bytes())
        .map(|(k, v)| Tag {
            key: Some(k.into_owned()),
            value: Some(v.into_owned()),
        })
        .collect();
    tags.sort_by(|a, b| a.key.cmp(&b.key));
    tags
}

/// Tags from an `x-amz-tagging` header, validated.
pub(crate) fn parse_tagging_header(h: &str) -> S3Result<Vec<Tag>> {
    let tags = decode_tags(h);
    validate_tags(&tags, 10)?;
    Ok(tags)
}

pub(crate) fn tag_count(meta: &BTreeMap<String, String>) -> Option<i32> {
    meta.get(TAGGING)
        .map(|s| decode_tags(s).len() as i32)
        .filter(|n| *n > 0)
}
