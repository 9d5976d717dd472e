//! What the crates' tests share: an archive with a bucket in a temporary folder (and the
//! file gateways' view of it), a runtime for property tests that share one server, and
//! this process's memory readings. A dev-dependency only: nothing ships with it.

use archive::{Archive, ArchiveConfig, DataKey, Versioning};

/// An archive on one disk in its own temporary folder (removed when this drops).
pub struct TestArchive {
    /// The archive.
    pub archive: Archive,
    /// The folder it lives in (removed on drop).
    pub dir: tempfile::TempDir,
}

/// An archive sealed under a master key of `key` bytes, holding the empty versioned
/// bucket `bucket`.
pub async fn archive_with_bucket(key: u8, bucket: &str) -> TestArchive {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let cfg = ArchiveConfig::new(
        dir.path().join("data"),
        vec![dir.path().join("disk0")],
        DataKey::from_bytes([key; 32]),
    );
    let archive = Archive::open(cfg).expect("the archive opens");
    archive
        .create_bucket(bucket, None, Versioning::Enabled)
        .await
        .expect("the bucket is created");
    TestArchive { archive, dir }
}

/// The file gateways' view of `archive`, with the root key `access`/`secret`.
pub fn files(archive: &Archive, access: &str, secret: &str) -> files::Files {
    files::Files::new(
        archive.clone(),
        files::RootKey {
            access_key: access.into(),
            secret: secret.into(),
        },
    )
}

/// A runtime of its own (two workers), for property tests whose cases share one server.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// This process's resident memory now, in KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// This process's resident memory at its peak so far, in KiB.
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A property test's number of cases: `default`, or `PROPTEST_CASES` for a long run
/// (proptest reads that variable only when a test does not set its own count).
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the cases of an in-process fuzzer share: a gateway's router over an archive
/// whose bucket holds one seed object, on a runtime of its own.
pub struct RouterEnv {
    /// The runtime the router's node runs on.
    pub rt: tokio::runtime::Runtime,
    /// The router under test.
    pub router: axum::Router,
    /// The archive behind it.
    pub test: TestArchive,
}

/// A `RouterEnv`: the archive as `archive_with_bucket(key, bucket)`, the object `seed`
/// put in it, and the router `make` builds over it.
pub fn router_env(
    key: u8,
    bucket: &str,
    seed: (&str, &'static [u8]),
    make: impl FnOnce(&Archive) -> axum::Router,
) -> RouterEnv {
    let rt = runtime();
    let test = rt.block_on(async {
        let t = archive_with_bucket(key, bucket).await;
        t.archive
            .put_bytes(
                bucket,
                seed.0,
                bytes::Bytes::from_static(seed.1),
                Default::default(),
            )
            .await
            .expect("the seed object is stored");
        t
    });
    let router = make(&test.archive);
    RouterEnv { rt, router, test }
}
