//! `x-amz-checksum-*` (CRC32, CRC32C, SHA1, SHA256, CRC64NVME): the body is hashed as it
//! streams into the archive; a mismatch with the value in a header or in an aws-chunked
//! trailer fails the stream before the archive commits, so nothing is stored.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::Checksum;
use s3s::{S3Result, TrailingHeaders};

use crate::headers::CHECKSUM_PREFIX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Algo {
    Crc32,
    Crc32c,
    Sha1,
    Sha256,
    Crc64Nvme,
}

const ALL: [Algo; 5] = [
    Algo::Crc32,
    Algo::Crc32c,
    Algo::Sha1,
    Algo::Sha256,
    Algo::Crc64Nvme,
];

impl Algo {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algo::Crc32 => "crc32",
            Algo::Crc32c => "crc32c",
            Algo::Sha1 => "sha1",
            Algo::Sha256 => "sha256",
            Algo::Crc64Nvme => "crc64nvme",
        }
    }

    fn header(self) -> String {
        format!("x-amz-checksum-{}", self.name())
    }

    fn hasher(self) -> ChecksumHasher {
        let mut h = ChecksumHasher::default();
        match self {
            Algo::Crc32 => h.crc32 = Some(Default::default()),
            Algo::Crc32c => h.crc32c = Some(Default::default()),
            Algo::Sha1 => h.sha1 = Some(s3s::crypto::Sha1::new()),
            Algo::Sha256 => h.sha256 = Some(s3s::crypto::Sha256::new()),
            Algo::Crc64Nvme => h.crc64nvme = Some(Default::default()),
        }
        h
    }

    fn value_of(self, c: &Checksum) -> Option<String> {
        match self {
            Algo::Crc32 => c.checksum_crc32.clone(),
            Algo::Crc32c => c.checksum_crc32c.clone(),
            Algo::Sha1 => c.checksum_sha1.clone(),
            Algo::Sha256 => c.checksum_sha256.clone(),
            Algo::Crc64Nvme => c.checksum_crc64nvme.clone(),
        }
    }
}

/// What the request says the body's checksum is.
pub(crate) struct Expected {
    algo: Algo,
    /// From a header; None when it comes in a trailer, or not at all (then the
    /// checksum is computed and stored, as AWS does for `x-amz-sdk-checksum-algorithm`).
    value: Option<String>,
    trailers: Option<TrailingHeaders>,
}

/// Reads the checksum a request announces: a `x-amz-checksum-*` header, a trailer named
/// by `x-amz-trailer`, or just an algorithm (`x-amz-sdk-checksum-algorithm`).
pub(crate) fn expected(
    headers: &http::HeaderMap,
    trailers: Option<TrailingHeaders>,
) -> S3Result<Option<Expected>> {
    let mut found = None;
    for algo in ALL {
        if let Some(v) = headers.get(algo.header()) {
            if found.is_some() {
                return Err(s3s::s3_error!(
                    InvalidRequest,
                    "Expecting a single x-amz-checksum- header"
                ));
            }
            let v = v
                .to_str()
                .map_err(|_| s3s::s3_error!(InvalidRequest, "checksum header is not ASCII"))?;
            found = Some(Expected {
                algo,
                value: Some(v.to_string()),
                trailers: None,
            });
        }
    }
    if found.is_some() {
        return Ok(found);
    }
    let named = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_ascii_lowercase())
    };
    if let Some(t) = named("x-amz-trailer")
        && let Some(algo) = ALL.into_iter().find(|a| a.header() == t)
    {
        return Ok(Some(Expected {
            algo,
            value: None,
            trailers,
        }));
    }
    if let Some(a) = named("x-amz-sdk-checksum-algorithm") {
        if let Some(algo) = ALL.into_iter().find(|x| x.name() == a) {
            return Ok(Some(Expected {
                algo,
                value: None,
                trailers: None,
            }));
        }
        return Err(s3s::s3_error!(
            InvalidRequest,
            "unknown checksum algorithm {a}"
        ));
    }
    Ok(None)
}

/// A body stream that hashes what passes and, at the end, checks the checksum: on a
/// mismatch it ends with an error (so the archive stores nothing) and raises `failed`.
pub(crate) struct Verified<S> {
    inner: S,
    hasher: Option<ChecksumHasher>,
    exp: Expected,
    pub failed: Arc<AtomicBool>,
    /// Where the verified value goes, to be stored with the object.
    pub late: archive::LateMeta,
}

impl<S> Verified<S> {
    pub(crate) fn new(inner: S, exp: Expected) -> Self {
        let hasher = Some(exp.algo.hasher());
        Verified {
            inner,
            hasher,
            exp,
            failed: Arc::default(),
            late: archive::LateMeta::default(),
        }
    }

    /// The S3 error for a mismatch.
    pub(crate) fn error(&self) -> s3s::S3Error {
        s3s::s3_error!(
            BadDigest,
            "The {} you specified did not match the calculated checksum.",
            self.exp.algo.header()
        )
    }

    fn finish(&mut self) -> std::io::Result<()> {
        let Some(h) = self.hasher.take() else {
            return Ok(());
        };
        let got = self.exp.algo.value_of(&h.finalize()).unwrap_or_default();
        let header = self.exp.algo.header();
        let want = self.exp.value.clone().or_else(|| {
            self.exp.trailers.as_ref()?.read(|t| {
                t.get(&header)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })?
        });
        if want.as_ref().is_some_and(|w| w.trim() != got) {
            self.failed.store(true, Ordering::SeqCst);
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{header} does not match the body"),
            ));
        }
        self.late
            .lock()
            .expect("late metadata lock")
            .insert(format!("{CHECKSUM_PREFIX}{}", self.exp.algo.name()), got);
        Ok(())
    }
}

impl<S: Stream<Item = std::io::Result<Bytes>> + Unpin> Stream for Verified<S> {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                if let Some(h) = &mut self.hasher {
                    h.update(&b);
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(None) => Poll::Ready(self.finish().err().map(Err)),
            other => other,
        }
    }
}

/// The stored checksum as response fields (GET/HEAD with `x-amz-checksum-mode: ENABLED`
/// on the whole object).
pub(crate) fn stored(meta: &std::collections::BTreeMap<String, String>) -> Checksum {
    let get = |a: Algo| meta.get(&format!("{CHECKSUM_PREFIX}{}", a.name())).cloned();
    Checksum {
        checksum_crc32: get(Algo::Crc32),
        checksum_crc32c: get(Algo::Crc32c),
        checksum_sha1: get(Algo::Sha1),
        checksum_sha256: get(Algo::Sha256),
        checksum_crc64nvme: get(Algo::Crc64Nvme),
        ..Default::default()
    }
}
