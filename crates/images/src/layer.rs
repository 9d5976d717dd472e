//! One layer: a tar stream (plain, gzip or zstd) read entry by entry into [`Entry`]
//! records, each regular file's bytes handed to a [`FileSink`] that keeps them.

use std::io::{BufRead, BufReader, Read};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ImageError, Result};

/// What a path in a layer (or in an image's flattened tree) is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file; its bytes are kept under their SHA-256.
    File,
    /// A directory.
    Dir,
    /// A symbolic link to `link` (kept as written; resolved inside the container only).
    Symlink,
    /// A hard link to the file at `link` (in the flattened tree: that file's bytes).
    Hardlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
    /// A whiteout: the path and everything under it, from lower layers, is deleted.
    Whiteout,
    /// An opaque directory: what lower layers hold under the path is hidden.
    Opaque,
}

/// One path of a layer, with its metadata.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The path relative to the root, '/'-separated, without `.` or `..` parts.
    pub path: String,
    /// What it is.
    pub kind: Kind,
    /// Permission bits (with setuid, setgid, sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// A regular file's length.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// A regular file's SHA-256 (hex): its bytes are the store's `files/<digest>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// A link's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// A device's major and minor numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<(u32, u32)>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Keeps regular files' bytes somewhere and names them by SHA-256.
pub trait FileSink {
    /// Reads `size` bytes from `body`, keeps them, and returns their SHA-256 (hex).
    fn store(&mut self, size: u64, body: &mut dyn Read) -> Result<String>;
}

/// What reading a layer found.
#[derive(Debug, Clone)]
pub struct LayerRead {
    /// Its paths, in the order of the tar stream.
    pub entries: Vec<Entry>,
    /// SHA-256 of the blob as shipped (compressed or not): its digest in a manifest.
    pub blob_digest: String,
    /// The blob's length.
    pub blob_size: u64,
    /// SHA-256 of the uncompressed tar: the `diff_id` an image config names.
    pub diff_id: String,
    /// Bytes of regular files in the layer.
    pub file_bytes: u64,
}

/// Limits that keep a hostile layer from exhausting the node.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes of files one layer may unpack to.
    pub max_layer_bytes: u64,
    /// Most paths one layer may hold.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_layer_bytes: 64 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// A reader that hashes and counts what passes through it.
pub(crate) struct Hashing<'a, R> {
    inner: R,
    hasher: &'a mut Sha256,
    count: &'a mut u64,
}

impl<'a, R: Read> Hashing<'a, R> {
    pub(crate) fn new(inner: R, hasher: &'a mut Sha256, count: &'a mut u64) -> Self {
        Hashing {
            inner,
            hasher,
            count,
        }
    }
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        *self.count += n as u64;
        Ok(n)
    }
}

/// Hex of a finished SHA-256.
pub(crate) fn hex_of(h: Sha256) -> String {
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the layer blob `raw` (to its end), handing each regular file to `sink`.
/// `name` is how errors call the layer.
pub fn read_layer(
    raw: impl Read,
    name: &str,
    limits: Limits,
    sink: &mut dyn FileSink,
) -> Result<LayerRead> {
    // A read that fails inside a layer is a corrupt blob (bad gzip, cut short): say which.
    read_layer_inner(raw, name, limits, sink).map_err(|e| match e {
        ImageError::Io(e) => ImageError::HostileLayer {
            layer: name.to_string(),
            reason: format!("it cannot be read: {e}"),
        },
        other => other,
    })
}

fn read_layer_inner(
    raw: impl Read,
    name: &str,
    limits: Limits,
    sink: &mut dyn FileSink,
) -> Result<LayerRead> {
    let hostile = |reason: String| ImageError::HostileLayer {
        layer: name.to_string(),
        reason,
    };
    let (mut blob_hash, mut blob_size) = (Sha256::new(), 0u64);
    let (mut diff_hash, mut diff_size) = (Sha256::new(), 0u64);
    let mut entries = Vec::new();
    let mut file_bytes = 0u64;
    {
        let mut buffered = BufReader::with_capacity(
            256 * 1024,
            Hashing::new(raw, &mut blob_hash, &mut blob_size),
        );
        {
            let head = buffered.fill_buf()?;
            let decoded: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
                Box::new(flate2::bufread::MultiGzDecoder::new(&mut buffered))
            } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                Box::new(zstd::stream::read::Decoder::with_buffer(&mut buffered)?)
            } else {
                Box::new(&mut buffered)
            };
            let mut tar = tar::Archive::new(Hashing::new(decoded, &mut diff_hash, &mut diff_size));
            for entry in tar.entries()? {
                let mut entry = entry.map_err(|e| hostile(format!("not a tar stream: {e}")))?;
                if entries.len() >= limits.max_entries {
                    return Err(hostile(format!(
                        "more than {} paths in one layer",
                        limits.max_entries
                    )));
                }
                let Some(e) = describe(&mut entry).map_err(hostile)? else {
                    continue;
                };
                let e = if e.kind == Kind::File {
                    file_bytes += e.size;
                    if file_bytes > limits.max_layer_bytes {
                        return Err(hostile(format!(
                            "its files unpack to more than {} bytes (the layer size limit)",
                            limits.max_layer_bytes
                        )));
                    }
                    let digest = sink.store(e.size, &mut entry)?;
                    Entry {
                        digest: Some(digest),
                        ..e
                    }
                } else {
                    e
                };
                entries.push(e);
            }
            // The tar end marker may come before the stream's end (padding): hash it all.
            std::io::copy(&mut tar.into_inner(), &mut std::io::sink())?;
        }
        std::io::copy(&mut buffered, &mut std::io::sink())?;
    }
    Ok(LayerRead {
        entries,
        blob_digest: hex_of(blob_hash),
        blob_size,
        diff_id: hex_of(diff_hash),
        file_bytes,
    })
}

/// The record of one tar entry, None for entries that are not paths (the root itself,
/// aufs bookkeeping), or why it is refused.
fn describe<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<Entry>, String> {
    let raw_path = entry.path_bytes();
    let path = std::str::from_utf8(&raw_path)
        .map_err(|_| format!("path {:?} is not UTF-8", String::from_utf8_lossy(&raw_path)))?
        .to_string();
    let Some(path) = clean_path(&path)? else {
        return Ok(None);
    };
    let h = entry.header();
    let bad = |what: &str, e: std::io::Error| format!("{path}: bad {what}: {e}");
    // An empty numeric field is 0, as Go's archive/tar (which wrote most layers) reads it.
    let blank = |field: &[u8]| field.iter().all(|b| *b == 0 || *b == b' ');
    let old = h.as_old();
    let number = |what: &str, got: std::io::Result<u64>, field: &[u8]| match got {
        Ok(n) => Ok(n),
        Err(_) if blank(field) => Ok(0),
        Err(e) => Err(bad(what, e)),
    };
    let mode = number("mode", h.mode().map(u64::from), &old.mode)? as u32 & 0o7777;
    let uid = number("uid", h.uid(), &old.uid)?;
    let gid = number("gid", h.gid(), &old.gid)?;
    let mtime = number("mtime", h.mtime(), &old.mtime)?;
    let link = || -> Result<String, String> {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| format!("{path}: a link without a target"))?;
        std::str::from_utf8(&target)
            .map(str::to_string)
            .map_err(|_| format!("{path}: link target is not UTF-8"))
    };
    let device = || -> Result<(u32, u32), String> {
        let major = h.device_major().map_err(|e| bad("device", e))?.unwrap_or(0);
        let minor = h.device_minor().map_err(|e| bad("device", e))?.unwrap_or(0);
        Ok((major, minor))
    };
    let base = Entry {
        path: path.clone(),
        kind: Kind::File,
        mode,
        uid,
        gid,
        mtime,
        size: 0,
        digest: None,
        link: None,
        device: None,
    };
    // Whiteouts (the OCI layer spec): `.wh..wh..opq` makes its directory opaque,
    // `.wh.NAME` deletes NAME; other `.wh..wh.` names are aufs bookkeeping.
    let (parent, file_name) = match path.rsplit_once('/') {
        Some((p, f)) => (p.to_string(), f),
        None => (String::new(), path.as_str()),
    };
    if file_name == ".wh..wh..opq" {
        return Ok(Some(Entry {
            path: parent,
            kind: Kind::Opaque,
            ..base
        }));
    }
    if file_name.starts_with(".wh..wh.") {
        return Ok(None);
    }
    if let Some(hidden) = file_name.strip_prefix(".wh.") {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(format!("{path}: a whiteout of nothing"));
        }
        let path = if parent.is_empty() {
            hidden.to_string()
        } else {
            format!("{parent}/{hidden}")
        };
        return Ok(Some(Entry {
            path,
            kind: Kind::Whiteout,
            ..base
        }));
    }
    use tar::EntryType as T;
    let e = match h.entry_type() {
        T::Regular | T::Continuous | T::GNUSparse => Entry {
            size: entry.size(),
            ..base
        },
        T::Directory => Entry {
            kind: Kind::Dir,
            ..base
        },
        T::Symlink => Entry {
            kind: Kind::Symlink,
            link: Some(link()?),
            ..base
        },
        T::Link => {
            let target = link()?;
            let target =
                clean_path(&target)?.ok_or_else(|| format!("{path}: a hard link to the root"))?;
            Entry {
                kind: Kind::Hardlink,
                link: Some(target),
                ..base
            }
        }
        T::Char => Entry {
            kind: Kind::Char,
            device: Some(device()?),
            ..base
        },
        T::Block => Entry {
            kind: Kind::Block,
            device: Some(device()?),
            ..base
        },
        T::Fifo => Entry {
            kind: Kind::Fifo,
            ..base
        },
        other => return Err(format!("{path}: unsupported tar entry type {other:?}")),
    };
    Ok(Some(e))
}

/// `path` relative to the root without `.` parts or repeated slashes; None for the root
/// itself; refused when a `..` part would climb out of it.
pub fn clean_path(path: &str) -> Result<Option<String>, String> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("path {path:?} climbs out of the root with '..'")),
            p => parts.push(p),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Keeps files in memory by digest (the store's behaviour without an archive).
    #[derive(Default)]
    pub(crate) struct MemorySink(pub std::collections::HashMap<String, Vec<u8>>);

    impl FileSink for MemorySink {
        fn store(&mut self, size: u64, body: &mut dyn Read) -> Result<String> {
            let mut buf = Vec::new();
            body.read_to_end(&mut buf)?;
            assert_eq!(buf.len() as u64, size);
            let digest = hex_of(Sha256::new_with_prefix(&buf));
            self.0.insert(digest.clone(), buf);
            Ok(digest)
        }
    }

    /// A tar stream built entry by entry; paths are written raw, so hostile ones too.
    pub(crate) struct TarBuilder(tar::Builder<Vec<u8>>);

    impl TarBuilder {
        pub(crate) fn new() -> Self {
            TarBuilder(tar::Builder::new(Vec::new()))
        }
        fn header(path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(size);
            h.set_mode(if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_mtime(1_700_000_000);
            let name = &mut h.as_gnu_mut().unwrap().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            h
        }
        pub(crate) fn file(mut self, path: &str, body: &[u8]) -> Self {
            let h = Self::header(path, tar::EntryType::Regular, body.len() as u64);
            self.0.append(&h, body).unwrap();
            self
        }
        pub(crate) fn dir(mut self, path: &str) -> Self {
            let h = Self::header(path, tar::EntryType::Directory, 0);
            self.0.append(&h, std::io::empty()).unwrap();
            self
        }
        pub(crate) fn link(mut self, path: &str, kind: tar::EntryType, target: &str) -> Self {
            let mut h = Self::header(path, kind, 0);
            h.set_link_name(target).unwrap();
            h.set_cksum();
            self.0.append(&h, std::io::empty()).unwrap();
            self
        }
        pub(crate) fn finish(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_gzip_layer_yields_its_paths_files_and_both_digests() {
        let tar = TarBuilder::new()
            .dir("./etc/")
            .file("./etc/hostname", b"edge\n")
            .link("etc/alias", tar::EntryType::Link, "./etc/hostname")
            .link("bin", tar::EntryType::Symlink, "usr/bin")
            .file("etc/.wh.motd", b"")
            .file("var/.wh..wh..opq", b"")
            .finish();
        let blob = gzip(&tar);
        let mut sink = MemorySink::default();
        let read = read_layer(&blob[..], "test", Limits::default(), &mut sink).unwrap();
        assert_eq!(read.diff_id, hex_of(Sha256::new_with_prefix(&tar)));
        assert_eq!(read.blob_digest, hex_of(Sha256::new_with_prefix(&blob)));
        assert_eq!(read.blob_size, blob.len() as u64);
        let got: Vec<(&str, Kind)> = read
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.kind))
            .collect();
        assert_eq!(
            got,
            [
                ("etc", Kind::Dir),
                ("etc/hostname", Kind::File),
                ("etc/alias", Kind::Hardlink),
                ("bin", Kind::Symlink),
                ("etc/motd", Kind::Whiteout),
                ("var", Kind::Opaque),
            ]
        );
        assert_eq!(read.entries[2].link.as_deref(), Some("etc/hostname"));
        let digest = read.entries[1].digest.clone().unwrap();
        assert_eq!(sink.0[&digest], b"edge\n");
    }

    #[test]
    fn paths_that_climb_out_are_refused() {
        for (tar, what) in [
            (TarBuilder::new().file("../escape", b"x").finish(), "climbs"),
            (TarBuilder::new().file("a/../../b", b"x").finish(), "climbs"),
            (
                TarBuilder::new()
                    .link("a", tar::EntryType::Link, "../../etc/shadow")
                    .finish(),
                "climbs",
            ),
        ] {
            let err = read_layer(&tar[..], "l", Limits::default(), &mut MemorySink::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(what) && err.contains("refused layer"), "{err}");
        }
        assert_eq!(clean_path("/usr//bin/./x").unwrap().unwrap(), "usr/bin/x");
        assert_eq!(clean_path("./").unwrap(), None);
    }

    #[test]
    fn a_layer_over_the_size_limit_is_refused() {
        let tar = TarBuilder::new()
            .file("a", &[1u8; 3000])
            .file("b", &[2u8; 3000])
            .finish();
        let limits = Limits {
            max_layer_bytes: 5000,
            ..Limits::default()
        };
        let err = read_layer(&tar[..], "l", limits, &mut MemorySink::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("size limit"), "{err}");
    }
}
