//! A booted node's disks. Each whole disk the kernel lists under `/sys/block` is one of:
//! - **ours**: an ext4 file system labelled `edgecloud-XXXXXX` (a disk this or another
//!   node formatted): mounted at `/disks/LABEL` and used again as it is;
//! - **blank**: its first MiB is zeros (no partition table, no file system): formatted
//!   as ext4 with a new label when the policy allows (`edgecloud.format=blank`, the
//!   default), else left alone;
//! - **foreign**: anything else (another file system, a partition table, data): never
//!   touched, and the console says so.
//!
//! The label is the disk's identity: device names change with slots and controllers,
//! the label moves with the disk. The node keeps its data directory on one of its disks
//! (the one that holds `node/`), so disks moved to new hardware bring the node with
//! them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{NetbootError, Result};

/// What every label of ours starts with (ext4 labels hold 16 bytes: 6 hex digits follow).
pub const LABEL_PREFIX: &str = "edgecloud-";
/// Where disks of ours are mounted, each at its label.
pub const MOUNTS: &str = "/disks";
/// The folder of the node's data directory on the disk that holds it.
pub const NODE_DIR: &str = "node";
/// The folder of the shards on each disk.
pub const SHARDS_DIR: &str = "shards";

/// How much of a disk's start is read to tell what it holds.
const HEAD: usize = 1 << 20;
/// The ext2/3/4 superblock: 1024 bytes in; its magic 56 bytes into it, its label 120.
const SUPERBLOCK: usize = 1024;
const EXT_MAGIC: [u8; 2] = [0x53, 0xEF];

/// Whether blank disks may be formatted (`edgecloud.format=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatPolicy {
    /// Format a disk whose first MiB is zeros (the default).
    #[default]
    Blank,
    /// Format nothing: only disks already ours are used.
    Never,
}

impl FormatPolicy {
    /// `blank` or `never`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "blank" => Ok(FormatPolicy::Blank),
            "never" => Ok(FormatPolicy::Never),
            other => Err(NetbootError::Boot(format!(
                "edgecloud.format={other}: use blank (format blank disks) or never"
            ))),
        }
    }
}

/// What a disk holds, from its first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// An ext4 file system of ours, with this label.
    Ours(String),
    /// Zeros: nothing on it.
    Blank,
    /// Something else, described.
    Foreign(String),
}

/// Tells what a disk holds from its first bytes (up to 1 MiB).
pub fn classify(head: &[u8]) -> Found {
    let magic = SUPERBLOCK + 56;
    if head.get(magic..magic + 2) == Some(&EXT_MAGIC[..]) {
        let raw = head
            .get(SUPERBLOCK + 120..SUPERBLOCK + 136)
            .unwrap_or_default();
        let label = String::from_utf8_lossy(raw)
            .trim_end_matches('\0')
            .to_string();
        return match label.starts_with(LABEL_PREFIX) {
            true => Found::Ours(label),
            false => Found::Foreign(format!("an ext2/3/4 file system labelled {label:?}")),
        };
    }
    if head.iter().all(|b| *b == 0) {
        return Found::Blank;
    }
    if head.get(510..512) == Some(&[0x55, 0xAA][..]) {
        return Found::Foreign("a partition table".into());
    }
    Found::Foreign("data that is not a file system of ours".into())
}

/// The whole disks under `sys_block` (`/sys/block`), by name: no loop, RAM, optical,
/// floppy, device-mapper, RAID or network block devices, none read-only.
pub fn block_devices(sys_block: &Path) -> Vec<String> {
    const NOT_DISKS: &[&str] = &["loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd"];
    let mut names: Vec<String> = std::fs::read_dir(sys_block)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| !NOT_DISKS.iter().any(|p| n.starts_with(p)));
    names.retain(|n| {
        std::fs::read_to_string(sys_block.join(n).join("ro")).map_or(true, |ro| ro.trim() != "1")
    });
    names.sort();
    names
}

/// A disk of ours, mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `vdb`.
    pub name: String,
    /// `edgecloud-1a2b3c`.
    pub label: String,
    /// `/disks/edgecloud-1a2b3c`.
    pub mountpoint: PathBuf,
    /// Whether it was formatted at this boot.
    pub formatted: bool,
}

/// Where the machine's devices and mounts are (the real ones at boot; folders in tests).
#[derive(Debug, Clone)]
pub struct Places {
    /// `/sys/block`.
    pub sys_block: PathBuf,
    /// `/dev`.
    pub dev: PathBuf,
    /// `/disks`.
    pub mounts: PathBuf,
    /// The formatter: `/sbin/mke2fs` in the image.
    pub mke2fs: PathBuf,
}

impl Default for Places {
    fn default() -> Self {
        Places {
            sys_block: "/sys/block".into(),
            dev: "/dev".into(),
            mounts: MOUNTS.into(),
            mke2fs: "/sbin/mke2fs".into(),
        }
    }
}

/// Finds the disks, formats blank ones if `policy` allows, and makes each disk of ours
/// ready with `mount` (at boot: mount it at its mountpoint). Returns the disks in label
/// order and what to tell the console about the others.
pub fn prepare(
    policy: FormatPolicy,
    places: &Places,
    mount: &dyn Fn(&Path, &Path) -> Result<()>,
) -> (Vec<Disk>, Vec<String>) {
    let mut disks = Vec::new();
    let mut said = Vec::new();
    for name in block_devices(&places.sys_block) {
        let device = places.dev.join(&name);
        let head = match read_head(&device) {
            Ok(h) => h,
            Err(e) => {
                said.push(format!("disk {name}: cannot read it ({e}): left alone"));
                continue;
            }
        };
        let (label, formatted) = match classify(&head) {
            Found::Ours(label) => (label, false),
            Found::Blank if policy == FormatPolicy::Never => {
                said.push(format!(
                    "disk {name} is blank: not formatted (edgecloud.format=never)"
                ));
                continue;
            }
            Found::Blank => match format(&places.mke2fs, &device) {
                Ok(label) => (label, true),
                Err(e) => {
                    said.push(format!("disk {name} is blank; formatting it failed: {e}"));
                    continue;
                }
            },
            Found::Foreign(what) => {
                said.push(format!("disk {name} holds {what}: left alone"));
                continue;
            }
        };
        let mountpoint = places.mounts.join(&label);
        if disks.iter().any(|d: &Disk| d.label == label) {
            said.push(format!(
                "disk {name} has the label {label} of another disk here: left alone"
            ));
            continue;
        }
        let ready = std::fs::create_dir_all(&mountpoint)
            .map_err(NetbootError::from)
            .and_then(|()| mount(&device, &mountpoint))
            .and_then(|()| {
                std::fs::create_dir_all(mountpoint.join(SHARDS_DIR))?;
                Ok(())
            });
        match ready {
            Ok(()) => disks.push(Disk {
                name,
                label,
                mountpoint,
                formatted,
            }),
            Err(e) => said.push(format!("disk {name} ({label}): mounting it failed: {e}")),
        }
    }
    disks.sort_by(|a, b| a.label.cmp(&b.label));
    (disks, said)
}

/// The disk that keeps the node's data directory: the first that holds one, else the
/// first (None without disks: the data directory stays in memory).
pub fn data_disk(disks: &[Disk]) -> Option<&Disk> {
    disks
        .iter()
        .find(|d| d.mountpoint.join(NODE_DIR).is_dir())
        .or_else(|| disks.first())
}

fn read_head(device: &Path) -> Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD);
    std::fs::File::open(device)?
        .take(HEAD as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// A new label: the prefix and 6 random hex digits.
fn new_label() -> Result<String> {
    let mut raw = [0u8; 3];
    getrandom::fill(&mut raw).map_err(|e| NetbootError::Boot(e.to_string()))?;
    Ok(format!(
        "{LABEL_PREFIX}{:02x}{:02x}{:02x}",
        raw[0], raw[1], raw[2]
    ))
}

/// Formats `device` as ext4 with a new label of ours; returns the label.
pub fn format(mke2fs: &Path, device: &Path) -> Result<String> {
    let label = new_label()?;
    // No blocks kept for root (nothing but the node writes here); inode tables and the
    // journal are zeroed by the kernel later, so a large disk formats in seconds.
    let out = Command::new(mke2fs)
        .args(["-q", "-F", "-t", "ext4", "-m", "0", "-L", &label])
        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg(device)
        .output()
        .map_err(|e| NetbootError::Boot(format!("running {}: {e}", mke2fs.display())))?;
    if !out.status.success() {
        return Err(NetbootError::Boot(format!(
            "{} {}: {}",
            mke2fs.display(),
            device.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext_head(label: &str) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[SUPERBLOCK + 56..SUPERBLOCK + 58].copy_from_slice(&EXT_MAGIC);
        h[SUPERBLOCK + 120..SUPERBLOCK + 120 + label.len()].copy_from_slice(label.as_bytes());
        h
    }

    #[test]
    fn a_disk_is_ours_blank_or_foreign_by_its_first_bytes() {
        assert_eq!(
            classify(&ext_head("edgecloud-0a1b2c")),
            Found::Ours("edgecloud-0a1b2c".into())
        );
        assert_eq!(
            classify(&ext_head("home")),
            Found::Foreign("an ext2/3/4 file system labelled \"home\"".into())
        );
        assert_eq!(classify(&vec![0u8; HEAD]), Found::Blank);
        let mut mbr = vec![0u8; 4096];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert_eq!(classify(&mbr), Found::Foreign("a partition table".into()));
        let mut data = vec![0u8; 4096];
        data[3000] = 1;
        assert!(matches!(classify(&data), Found::Foreign(_)));
        assert_eq!(classify(&[]), Found::Blank, "an empty device holds nothing");
    }

    #[test]
    fn only_whole_writable_disks_are_listed() {
        let t = tempfile::tempdir().unwrap();
        for (name, ro) in [
            ("vda", "0"),
            ("vdb", "1"),
            ("loop0", "0"),
            ("sr0", "0"),
            ("nvme0n1", "0"),
        ] {
            std::fs::create_dir_all(t.path().join(name)).unwrap();
            std::fs::write(t.path().join(name).join("ro"), ro).unwrap();
        }
        assert_eq!(block_devices(t.path()), vec!["nvme0n1", "vda"]);
    }

    #[test]
    fn blank_disks_are_formatted_by_policy_ours_reused_and_others_left_alone() {
        let mke2fs = ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let Some(mke2fs) = mke2fs else {
            eprintln!("skipped: needs mke2fs (e2fsprogs)");
            return;
        };
        let t = tempfile::tempdir().unwrap();
        let places = Places {
            sys_block: t.path().join("sys"),
            dev: t.path().join("dev"),
            mounts: t.path().join("disks"),
            mke2fs: mke2fs.clone(),
        };
        std::fs::create_dir_all(&places.dev).unwrap();
        let disk = |name: &str, bytes: &[u8], len: u64| {
            std::fs::create_dir_all(places.sys_block.join(name)).unwrap();
            let f = std::fs::File::create(places.dev.join(name)).unwrap();
            std::io::Write::write_all(&mut &f, bytes).unwrap();
            f.set_len(len).unwrap();
        };
        disk("vdb", &[], 32 << 20);
        disk("vdc", b"some user's data", 1 << 20);
        disk("vdd", &[], 32 << 20);
        let foreign = std::fs::read(places.dev.join("vdc")).unwrap();
        // "Mounting" here makes the folder only: what the disk holds is checked by label.
        let no_mount = |_: &Path, _: &Path| Ok(());

        let (none, said) = prepare(FormatPolicy::Never, &places, &no_mount);
        assert!(none.is_empty(), "{none:?}");
        assert_eq!(said.len(), 3, "{said:?}");
        assert!(said[0].contains("vdb is blank: not formatted"), "{said:?}");

        let (first, said) = prepare(FormatPolicy::Blank, &places, &no_mount);
        assert_eq!(first.len(), 2, "{first:?}");
        assert!(
            first
                .iter()
                .all(|d| d.formatted && d.label.starts_with(LABEL_PREFIX))
        );
        assert_eq!(
            said,
            vec!["disk vdc holds data that is not a file system of ours: left alone"]
        );
        assert_eq!(std::fs::read(places.dev.join("vdc")).unwrap(), foreign);

        // Booted again (the devices named the other way round): the same labels, nothing
        // formatted.
        std::fs::rename(places.dev.join("vdb"), places.dev.join("tmp")).unwrap();
        std::fs::rename(places.dev.join("vdd"), places.dev.join("vdb")).unwrap();
        std::fs::rename(places.dev.join("tmp"), places.dev.join("vdd")).unwrap();
        let (again, _) = prepare(FormatPolicy::Blank, &places, &no_mount);
        let labels = |d: &[Disk]| d.iter().map(|d| d.label.clone()).collect::<Vec<_>>();
        assert_eq!(labels(&again), labels(&first));
        assert!(again.iter().all(|d| !d.formatted));
        assert_ne!(again[0].name, first[0].name, "found by label, not by name");

        // The data directory stays on the disk that holds it.
        assert_eq!(data_disk(&again), again.first());
        std::fs::create_dir_all(again[1].mountpoint.join(NODE_DIR)).unwrap();
        assert_eq!(data_disk(&again), again.get(1));
    }
}
