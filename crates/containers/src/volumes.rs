//! Bucket volumes (`-v BUCKET[/PREFIX]:/path[:ro]`): the bucket is mounted by the node
//! (the same FUSE file system as `edgecloud mount`, over the node's own WebDAV gateway
//! with its root key) and bound into the container, so what the container writes is
//! versioned, encrypted and erasure-coded like any object, and outlives the container.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{ContainerError, Result};

/// How the node reaches its own buckets for volumes.
#[derive(Clone, Debug)]
pub struct VolumeSource {
    /// The node's WebDAV URL (`http://127.0.0.1:9401`).
    pub url: String,
    /// The access key volumes act as (the node's root key).
    pub access_key: String,
    /// Its secret.
    pub secret: String,
}

/// One `-v`: a bucket (and a folder in it) at a path in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The bucket.
    pub bucket: String,
    /// The folder in the bucket ("" for its root).
    pub prefix: String,
    /// The path in the container (absolute).
    pub target: String,
    /// Read-only.
    pub read_only: bool,
}

/// Parses `BUCKET[/PREFIX]:/path[:ro|:rw]`.
pub fn parse(spec: &str) -> Result<Volume> {
    let bad = |why: &str| {
        ContainerError::Invalid(format!(
            "volume {spec:?}: {why} (use BUCKET[/PREFIX]:/PATH[:ro])"
        ))
    };
    let mut parts = spec.split(':');
    let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad("no path in the container"));
    };
    let read_only = match parts.next() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(_) => return Err(bad("the mode is ro or rw")),
    };
    if parts.next().is_some() {
        return Err(bad("too many ':'"));
    }
    let (bucket, prefix) = source.split_once('/').unwrap_or((source, ""));
    if bucket.is_empty() {
        return Err(bad("no bucket"));
    }
    let clean_target = target.split('/').any(|p| p == "..") || !target.starts_with('/');
    if clean_target || target == "/" {
        return Err(bad("the path must be absolute, not / and without '..'"));
    }
    if prefix.split('/').any(|p| p == "..") {
        return Err(bad("the folder must not climb with '..'"));
    }
    Ok(Volume {
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
        target: target.to_string(),
        read_only,
    })
}

/// Whether `dir` is a mount point of this process's mount namespace.
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == want))
}

/// Mounts `v.bucket` at `dir` (unless it is mounted) with a cache in `cache`, and
/// returns the folder to bind into the container (`v.prefix` in it, made if missing).
pub fn mount(
    source: &VolumeSource,
    v: &Volume,
    dir: &Path,
    cache: &Path,
    owner: Option<u32>,
) -> Result<PathBuf> {
    if !is_mounted(dir) {
        // A mount left by an earlier node process no longer answers: drop it first.
        let _ = crate::rootfs::unmount(dir);
        std::fs::create_dir_all(dir)?;
        let opts = mount::Options {
            url: source.url.clone(),
            bucket: v.bucket.clone(),
            access_key: source.access_key.clone(),
            secret: source.secret.clone(),
            cache_dir: cache.to_path_buf(),
            // Processes in the container run as any user.
            allow_other: true,
            // In a user namespace, the container's root owns its volumes.
            owner: owner.map(|id| (id, id)),
        };
        let at = dir.to_path_buf();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("volume-{}", v.bucket))
            .spawn(move || {
                let _ = done_tx.send(mount::mount(opts, &at));
            })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mounted(dir) {
            if let Ok(ended) = done_rx.try_recv() {
                return Err(ContainerError::Invalid(format!(
                    "volume {}: {}",
                    v.bucket,
                    ended
                        .err()
                        .map_or("the mount ended".to_string(), |e| e.to_string())
                )));
            }
            if Instant::now() > deadline {
                return Err(ContainerError::Runtime(format!(
                    "volume {}: not mounted after 10 s",
                    v.bucket
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let source_dir = if v.prefix.is_empty() {
        dir.to_path_buf()
    } else {
        let d = dir.join(&v.prefix);
        std::fs::create_dir_all(&d)?;
        d
    };
    Ok(source_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_read_as_docker_reads_binds() {
        let v = parse("pgdata/db1:/var/lib/postgresql/data").unwrap();
        assert_eq!(
            (
                v.bucket.as_str(),
                v.prefix.as_str(),
                v.target.as_str(),
                v.read_only
            ),
            ("pgdata", "db1", "/var/lib/postgresql/data", false)
        );
        assert!(parse("site:/srv/www:ro").unwrap().read_only);
        for bad in [
            "bucket",
            "bucket:relative",
            "bucket:/",
            "b:/x:rx",
            "b/../c:/x",
            "b:/a/../b",
            ":/x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
