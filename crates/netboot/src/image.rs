//! `edgecloud node-image build`: a kernel and an initramfs that holds the edgecloud
//! binary (as `/init`), the shared libraries it links, the kernel modules a node loads,
//! `mke2fs` to format blank disks (`disks`), and nothing else. Built reproducibly: the same inputs give the same bytes (entries
//! in path order, owner root, mtime 0, inode numbers by position, zstd at a fixed level
//! on one thread), so an image's hash names what it boots.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::kernel::{self, Kernel};
use crate::{NetbootError, Result};

/// Where the initramfs lists its modules in load order (one path per line, relative to
/// `lib/modules/VERSION/`).
pub const LOAD_ORDER: &str = "load-order";
/// zstd level of the initramfs: a fifth of the size for a second or two of work.
const ZSTD_LEVEL: i32 = 9;

/// What to build from.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// A Debian `linux-image-*` package.
    pub kernel_deb: PathBuf,
    /// The edgecloud binary to boot (stripped of symbols on the way in).
    pub binary: PathBuf,
    /// Where `vmlinuz`, `initramfs.img` and `manifest.json` go.
    pub out: PathBuf,
    /// Modules to load (with their dependencies) [default: `kernel::NODE_MODULES`].
    pub modules: Vec<String>,
    /// e2fsprogs' `mke2fs`, put at `/sbin/mke2fs` (None: the node formats no disk).
    pub mke2fs: Option<PathBuf>,
    /// The public boot key (base64) whose signature the image demands on its kernel
    /// command line (`signing`); None: it takes any.
    pub config_key: Option<String>,
}

/// What was built, as `manifest.json` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `6.1.0-57-amd64`.
    pub kernel_version: String,
    /// SHA-256 of `vmlinuz`.
    pub kernel_sha256: String,
    /// SHA-256 of `initramfs.img`.
    pub initramfs_sha256: String,
    /// Its length.
    pub initramfs_bytes: u64,
    /// SHA-256 of the binary as the image holds it (stripped).
    pub binary_sha256: String,
    /// Modules, in load order.
    pub modules: Vec<String>,
    /// Asked-for modules the kernel has built in.
    pub built_in: Vec<String>,
    /// Shared libraries the binary and the tools link, at their paths.
    pub libraries: Vec<String>,
    /// Programs besides edgecloud, at their paths (`/sbin/mke2fs`).
    #[serde(default)]
    pub tools: Vec<String>,
    /// The public key (base64) the image checks its boot configuration against; the
    /// boot server must sign with its private half.
    #[serde(default)]
    pub config_key: Option<String>,
    /// SHA-256 over the kernel's and the initramfs's hashes: the image's name.
    pub image_sha256: String,
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// The binary without symbols or debug information (`strip`, from binutils), or as it
/// is where `strip` is missing.
fn stripped(binary: &Path) -> Result<Vec<u8>> {
    let tmp = tempfile_path(binary)?;
    let out = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&tmp)
        .arg(binary)
        .output();
    let bytes = match out {
        Ok(o) if o.status.success() => std::fs::read(&tmp)?,
        _ => std::fs::read(binary)?,
    };
    let _ = std::fs::remove_file(&tmp);
    Ok(bytes)
}

fn tempfile_path(near: &Path) -> Result<PathBuf> {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(|e| NetbootError::Image(e.to_string()))?;
    Ok(std::env::temp_dir().join(format!(
        "edgecloud-strip-{}-{}",
        hex(&raw),
        near.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    )))
}

/// The shared libraries `binary` needs, as `ldd` resolves them: (path the loader asks
/// for, file it is).
fn libraries(binary: &Path) -> Result<Vec<(String, PathBuf)>> {
    let out = Command::new("ldd").arg(binary).output().map_err(|e| {
        NetbootError::Image(format!(
            "running ldd (glibc's) on {}: {e}",
            binary.display()
        ))
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || !out.status.success() {
        return Ok(Vec::new()); // static: nothing to carry
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or_default(),
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            let real = std::fs::canonicalize(path)?;
            libs.push((path.trim_start_matches('/').to_string(), real));
        } else if line.contains("not found") {
            return Err(NetbootError::Image(format!(
                "{} needs a library this machine lacks: {line}",
                binary.display()
            )));
        }
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

/// One entry of the initramfs.
enum Item {
    Dir,
    File { mode: u32, bytes: Vec<u8> },
    CharDevice { major: u32, minor: u32 },
}

/// The initramfs as a newc cpio archive, uncompressed: `items` in path order, each
/// folder before what it holds.
fn cpio(items: &BTreeMap<String, Item>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (n, (path, item)) in items.iter().enumerate() {
        let b = cpio::newc::Builder::new(path)
            .ino(n as u32 + 1)
            .uid(0)
            .gid(0)
            .mtime(0);
        out = match item {
            Item::Dir => b.mode(0o040755).nlink(2).write(out, 0).finish()?,
            Item::File { mode, bytes } => {
                let len = u32::try_from(bytes.len())
                    .map_err(|_| NetbootError::Image(format!("{path} is over 4 GiB")))?;
                let mut w = b.mode(0o100000 | mode).nlink(1).write(out, len);
                w.write_all(bytes)?;
                w.finish()?
            }
            Item::CharDevice { major, minor } => b
                .mode(0o020600)
                .nlink(1)
                .rdev_major(*major)
                .rdev_minor(*minor)
                .write(out, 0)
                .finish()?,
        };
    }
    Ok(cpio::newc::trailer(out)?)
}

/// Adds `path` and every folder above it.
fn with_parents(items: &mut BTreeMap<String, Item>, path: &str, item: Item) {
    let mut at = path;
    while let Some((parent, _)) = at.rsplit_once('/') {
        items.entry(parent.to_string()).or_insert(Item::Dir);
        at = parent;
    }
    items.insert(path.to_string(), item);
}

/// The initramfs for `kernel` and `binary` (uncompressed), and the libraries it holds.
pub fn initramfs(kernel: &Kernel, binary: &[u8], libs: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    for dir in ["dev", "proc", "sys", "run", "tmp", "etc", "var"] {
        items.insert(dir.into(), Item::Dir);
    }
    // The kernel opens /dev/console for /init's output before devtmpfs is mounted.
    items.insert(
        "dev/console".into(),
        Item::CharDevice { major: 5, minor: 1 },
    );
    items.insert(
        "init".into(),
        Item::File {
            mode: 0o755,
            bytes: binary.to_vec(),
        },
    );
    for (path, bytes) in libs {
        with_parents(
            &mut items,
            path,
            Item::File {
                mode: 0o755,
                bytes: bytes.clone(),
            },
        );
    }
    let base = format!("lib/modules/{}", kernel.version);
    let mut order = String::new();
    for m in &kernel.modules {
        with_parents(
            &mut items,
            &format!("{base}/{}", m.path),
            Item::File {
                mode: 0o644,
                bytes: m.bytes.clone(),
            },
        );
        order.push_str(&m.path);
        order.push('\n');
    }
    with_parents(
        &mut items,
        &format!("{base}/{LOAD_ORDER}"),
        Item::File {
            mode: 0o644,
            bytes: order.into_bytes(),
        },
    );
    cpio(&items)
}

/// Builds the image into `opts.out`: `vmlinuz`, `initramfs.img`, `manifest.json`.
pub fn build(opts: &BuildOptions) -> Result<Manifest> {
    let wanted: Vec<&str> = if opts.modules.is_empty() {
        kernel::NODE_MODULES
            .iter()
            .map(|(module, _)| *module)
            .collect()
    } else {
        opts.modules.iter().map(String::as_str).collect()
    };
    let kernel = kernel::from_deb(&opts.kernel_deb, &wanted)?;
    let binary = stripped(&opts.binary)?;
    let mut needed = libraries(&opts.binary)?;
    let mut tools = Vec::new();
    if let Some(mke2fs) = &opts.mke2fs {
        needed.extend(libraries(mke2fs)?);
        tools.push(("sbin/mke2fs".to_string(), std::fs::read(mke2fs)?));
    }
    needed.sort();
    needed.dedup();
    let libs: Vec<(String, Vec<u8>)> = needed
        .into_iter()
        .map(|(path, real)| Ok((path, std::fs::read(real)?)))
        .collect::<Result<_>>()?;
    // Tools are files at their paths, as libraries are; so is the boot key.
    let mut files: Vec<(String, Vec<u8>)> = libs.iter().chain(&tools).cloned().collect();
    if let Some(key) = &opts.config_key {
        let path = crate::signing::PUBLIC_KEY_PATH.to_string();
        files.push((path, format!("{key}\n").into_bytes()));
    }
    let archive = initramfs(&kernel, &binary, &files)?;
    let mut compressed = Vec::new();
    let mut z = zstd::Encoder::new(&mut compressed, ZSTD_LEVEL)?;
    z.include_checksum(true)?;
    z.write_all(&archive)?;
    z.finish()?;
    std::fs::create_dir_all(&opts.out)?;
    std::fs::write(opts.out.join("vmlinuz"), &kernel.vmlinuz)?;
    std::fs::write(opts.out.join("initramfs.img"), &compressed)?;
    let (kernel_sha256, initramfs_sha256) = (sha256(&kernel.vmlinuz), sha256(&compressed));
    let manifest = Manifest {
        image_sha256: sha256(format!("{kernel_sha256}\n{initramfs_sha256}\n").as_bytes()),
        kernel_version: kernel.version.clone(),
        kernel_sha256,
        initramfs_sha256,
        initramfs_bytes: compressed.len() as u64,
        binary_sha256: sha256(&binary),
        modules: kernel.modules.iter().map(|m| m.name.clone()).collect(),
        built_in: kernel.built_in.clone(),
        libraries: libs.iter().map(|(p, _)| format!("/{p}")).collect(),
        tools: tools.iter().map(|(p, _)| format!("/{p}")).collect(),
        config_key: opts.config_key.clone(),
    };
    let json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| NetbootError::Image(e.to_string()))?;
    std::fs::write(opts.out.join("manifest.json"), json)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Module;

    fn kernel() -> Kernel {
        Kernel {
            version: "6.1.0-test".into(),
            vmlinuz: b"bzImage".to_vec(),
            modules: vec![
                Module {
                    name: "virtio".into(),
                    path: "kernel/drivers/virtio/virtio.ko".into(),
                    depends: vec![],
                    bytes: b"ko1".to_vec(),
                },
                Module {
                    name: "virtio_net".into(),
                    path: "kernel/drivers/net/virtio_net.ko".into(),
                    depends: vec!["virtio".into()],
                    bytes: b"ko2".to_vec(),
                },
            ],
            built_in: vec![],
        }
    }

    #[test]
    fn the_initramfs_is_the_same_bytes_every_time_and_reads_back() {
        let libs = vec![("lib64/ld-linux-x86-64.so.2".to_string(), b"ld".to_vec())];
        let a = initramfs(&kernel(), b"\x7fELF binary", &libs).unwrap();
        let b = initramfs(&kernel(), b"\x7fELF binary", &libs).unwrap();
        assert_eq!(a, b, "reproducible");
        // Read it back with the crate's reader: parents before children, modes, order.
        let mut names = Vec::new();
        let mut rest = &a[..];
        loop {
            let r = cpio::newc::Reader::new(rest).unwrap();
            let e = r.entry().clone();
            if e.is_trailer() {
                break;
            }
            names.push((e.name().to_string(), e.mode(), e.mtime(), e.uid()));
            let mut body = Vec::new();
            rest = r.to_writer(&mut body).unwrap();
            if e.name().ends_with("load-order") {
                assert_eq!(
                    String::from_utf8(body).unwrap(),
                    "kernel/drivers/virtio/virtio.ko\nkernel/drivers/net/virtio_net.ko\n"
                );
            }
        }
        let paths: Vec<&str> = names.iter().map(|n| n.0.as_str()).collect();
        let lib = paths.iter().position(|p| *p == "lib").unwrap();
        let ko = paths
            .iter()
            .position(|p| p.ends_with("virtio_net.ko"))
            .unwrap();
        assert!(lib < ko, "folders come before what they hold");
        assert!(paths.contains(&"dev/console") && paths.contains(&"init"));
        let init = names.iter().find(|n| n.0 == "init").unwrap();
        assert_eq!((init.1, init.2, init.3), (0o100755, 0, 0));
    }
}
