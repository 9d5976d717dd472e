//! A container's root file system: the image's tree unpacked once per node from the
//! store (`DATA/containers/images/<id>`), read-only, and an overlay per container whose
//! upper directory takes its writes.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use images::layer::{Entry, Kind};
use images::{Image, ImageStore};
use tokio::io::AsyncWriteExt;

use crate::{ContainerError, Result};

/// Unpacks `image` under `images_dir` unless done before; returns its directory. A
/// half-done unpack (a crash) is redone: the tree is written to `<id>.partial` and
/// renamed when complete.
pub async fn unpack(store: &ImageStore, image: &Image, images_dir: &Path) -> Result<PathBuf> {
    let hex = image.id.trim_start_matches("sha256:");
    let done = images_dir.join(hex);
    if done.is_dir() {
        return Ok(done);
    }
    let partial = images_dir.join(format!("{hex}.partial"));
    if partial.exists() {
        tokio::fs::remove_dir_all(&partial).await?;
    }
    tokio::fs::create_dir_all(&partial).await?;
    let tree = store.tree(image).await?;
    let mut hard_links = Vec::new();
    for e in tree.entries() {
        // Trees were checked on import; a path that climbs out is still never joined.
        if e.path.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(ContainerError::Image(format!(
                "bad path {:?} in the tree",
                e.path
            )));
        }
        let path = partial.join(&e.path);
        match e.kind {
            Kind::Dir => {
                match tokio::fs::create_dir(&path).await {
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                    other => other?,
                }
                owner_and_mode(&path, e, false)?;
            }
            Kind::File => {
                let digest = e.digest.as_deref().unwrap_or_default();
                let mut out = tokio::fs::File::create(&path).await?;
                let mut body = store.read_file(digest).await?;
                while let Some(piece) = body.next().await {
                    let piece = piece.map_err(|err| ContainerError::Image(err.to_string()))?;
                    out.write_all(&piece).await?;
                }
                out.flush().await?;
                drop(out);
                owner_and_mode(&path, e, false)?;
            }
            Kind::Symlink => {
                std::os::unix::fs::symlink(e.link.as_deref().unwrap_or_default(), &path)?;
                owner_and_mode(&path, e, true)?;
            }
            Kind::Hardlink => hard_links.push(e.clone()),
            Kind::Char | Kind::Block | Kind::Fifo => special(&path, e)?,
            Kind::Whiteout | Kind::Opaque => {}
        }
    }
    // Hard links last: their target may sort after them.
    for e in hard_links {
        let target = partial.join(e.link.as_deref().unwrap_or_default());
        std::fs::hard_link(&target, partial.join(&e.path))?;
    }
    tokio::fs::rename(&partial, &done).await?;
    Ok(done)
}

/// Sets owner, then mode (a chown clears setuid bits), then modification time.
fn owner_and_mode(path: &Path, e: &Entry, is_link: bool) -> Result<()> {
    let (uid, gid) = (e.uid as u32, e.gid as u32);
    if is_link {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(e.mode))?;
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(e.mtime);
    if e.kind == Kind::File {
        std::fs::File::options()
            .write(true)
            .open(path)?
            .set_modified(mtime)?;
    }
    Ok(())
}

/// Device nodes and pipes.
fn special(path: &Path, e: &Entry) -> Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ContainerError::Image(format!("{:?}: a NUL in the path", e.path)))?;
    let (kind, dev) = match e.kind {
        Kind::Char => (libc::S_IFCHR, e.device.unwrap_or_default()),
        Kind::Block => (libc::S_IFBLK, e.device.unwrap_or_default()),
        _ => (libc::S_IFIFO, (0, 0)),
    };
    // SAFETY: `c` is a valid NUL-terminated path; mknod reads nothing else.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | e.mode, libc::makedev(dev.0, dev.1)) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    owner_and_mode(path, e, false)
}

/// Mounts an overlay at `merged`: `lower` read-only, writes to `upper` (`work` is the
/// overlay's scratch space; all three are made if missing).
pub fn mount_overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> Result<()> {
    for d in [upper, work, merged] {
        std::fs::create_dir_all(d)?;
    }
    for p in [lower, upper, work] {
        if p.as_os_str().as_bytes().iter().any(|b| b",:".contains(b)) {
            return Err(ContainerError::Invalid(format!(
                "{} has a ',' or ':', which overlay options cannot carry: use another data directory",
                p.display()
            )));
        }
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let cstr =
        |s: &[u8]| CString::new(s).map_err(|_| ContainerError::Invalid("a NUL in a path".into()));
    let (src, target, fstype, data) = (
        cstr(b"overlay")?,
        cstr(merged.as_os_str().as_bytes())?,
        cstr(b"overlay")?,
        cstr(opts.as_bytes())?,
    );
    // SAFETY: every pointer is a valid NUL-terminated string for the call's duration.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(ContainerError::Runtime(format!(
            "mounting the overlay at {}: {err} (containers need root and overlayfs)",
            merged.display()
        )));
    }
    Ok(())
}

/// Unmounts `merged` if it is mounted (lazily: a process still inside keeps it alive).
pub fn unmount(merged: &Path) -> Result<()> {
    let c = CString::new(merged.as_os_str().as_bytes())
        .map_err(|_| ContainerError::Invalid("a NUL in a path".into()))?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) && err.raw_os_error() != Some(libc::ENOENT) {
            return Err(err.into());
        }
    }
    Ok(())
}
