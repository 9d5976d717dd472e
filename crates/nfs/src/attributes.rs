//! NFS attributes and status codes: how `files` entries and errors look to a client.

use super::*;

pub(crate) fn map_err(e: FsError) -> nfsstat3 {
    match e {
        FsError::NotFound => nfsstat3::NFS3ERR_NOENT,
        FsError::Exists => nfsstat3::NFS3ERR_EXIST,
        FsError::NotEmpty => nfsstat3::NFS3ERR_NOTEMPTY,
        FsError::Denied => nfsstat3::NFS3ERR_ACCES,
        FsError::ReadOnly => nfsstat3::NFS3ERR_ROFS,
        FsError::NotADirectory => nfsstat3::NFS3ERR_NOTDIR,
        FsError::IsADirectory => nfsstat3::NFS3ERR_ISDIR,
        FsError::NameTooLong => nfsstat3::NFS3ERR_NAMETOOLONG,
        FsError::Invalid(_) => nfsstat3::NFS3ERR_INVAL,
        FsError::TooLarge(_) => nfsstat3::NFS3ERR_FBIG,
        FsError::Storage(m) if m.contains("No space") => nfsstat3::NFS3ERR_NOSPC,
        FsError::Aborted | FsError::Storage(_) => nfsstat3::NFS3ERR_IO,
    }
}

pub(crate) fn io_err(e: std::io::Error) -> nfsstat3 {
    tracing::warn!("nfs staging: {e}");
    if e.raw_os_error() == Some(28) {
        nfsstat3::NFS3ERR_NOSPC
    } else {
        nfsstat3::NFS3ERR_IO
    }
}

pub(crate) fn time(t: SystemTime) -> nfstime3 {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    nfstime3 {
        seconds: u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
        nseconds: d.subsec_nanos(),
    }
}

pub(crate) fn attr(id: u64, dir: bool, size: u64, modified: SystemTime, read_only: bool) -> fattr3 {
    let mode = match (dir, read_only) {
        (true, false) => 0o755,
        (true, true) => 0o555,
        (false, false) => 0o644,
        (false, true) => 0o444,
    };
    fattr3 {
        type_: if dir { ftype3::NF3DIR } else { ftype3::NF3REG },
        mode,
        nlink: 1,
        uid: 0,
        gid: 0,
        size,
        used: size,
        rdev: specdata3::default(),
        fsid: 0,
        fileid: id,
        atime: time(modified),
        mtime: time(modified),
        ctime: time(modified),
    }
}

pub(crate) fn entry_attr(id: u64, e: &Entry) -> fattr3 {
    attr(id, e.dir, e.size, e.modified, e.read_only)
}
