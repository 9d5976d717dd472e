//! The kernel of a node image, taken from a Debian `linux-image-*` package without
//! installing it: `dpkg-deb --fsys-tarfile` gives the package's files as a tar stream,
//! from which come the kernel (`boot/vmlinuz-VERSION`) and the modules the node needs
//! with everything they depend on (read from each module's `.modinfo`, since the
//! package carries no `modules.dep`: depmod makes it at install).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{NetbootError, Result};

/// Modules a node loads at boot, when the kernel has them as modules: network cards
/// (virtio, Intel), disks (virtio, NVMe, SATA, SCSI), and what containers use; each
/// with the configuration option that builds it into the kernel instead.
pub const NODE_MODULES: &[(&str, &str)] = &[
    ("virtio_pci", "CONFIG_VIRTIO_PCI"),
    ("virtio_net", "CONFIG_VIRTIO_NET"),
    ("virtio_blk", "CONFIG_VIRTIO_BLK"),
    ("virtio_scsi", "CONFIG_SCSI_VIRTIO"),
    ("e1000", "CONFIG_E1000"),
    ("e1000e", "CONFIG_E1000E"),
    ("nvme", "CONFIG_BLK_DEV_NVME"),
    ("ahci", "CONFIG_SATA_AHCI"),
    ("sd_mod", "CONFIG_BLK_DEV_SD"),
    ("ext4", "CONFIG_EXT4_FS"),
    // ext4 checksums its metadata with crc32c, which it asks for by name (a soft
    // dependency modinfo does not list): the generic one, and the SSE 4.2 one first.
    ("crc32c_intel", "CONFIG_CRYPTO_CRC32C_INTEL"),
    ("crc32c_generic", "CONFIG_CRYPTO_CRC32C"),
    ("overlay", "CONFIG_OVERLAY_FS"),
    ("fuse", "CONFIG_FUSE_FS"),
    ("veth", "CONFIG_VETH"),
];

/// One kernel module as the image carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Its name (`virtio_net`).
    pub name: String,
    /// Where it is under `lib/modules/VERSION/`.
    pub path: String,
    /// The modules it needs loaded first.
    pub depends: Vec<String>,
    /// The `.ko` file.
    pub bytes: Vec<u8>,
}

/// What a node image takes from a kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `6.1.0-57-amd64`.
    pub version: String,
    /// The bzImage.
    pub vmlinuz: Vec<u8>,
    /// The modules to load, each after those it depends on.
    pub modules: Vec<Module>,
    /// Asked-for modules the kernel has built in (nothing to load).
    pub built_in: Vec<String>,
}

/// Module names are written with `-` or `_` alike; the kernel uses `_`.
fn normal(name: &str) -> String {
    name.replace('-', "_")
}

/// The `key=value` strings of a module's `.modinfo` ELF section.
pub fn modinfo(ko: &[u8]) -> Result<BTreeMap<String, String>> {
    let bad = |why: &str| NetbootError::Kernel(format!("not a kernel module: {why}"));
    // The field of N bytes at offset o (offsets come from the file: checked, never
    // trusted to stay in it).
    fn at<const N: usize>(ko: &[u8], o: usize) -> Option<[u8; N]> {
        ko.get(o..o.checked_add(N)?)?.try_into().ok()
    }
    let u16_at = |o| {
        at(ko, o)
            .map(u16::from_le_bytes)
            .ok_or_else(|| bad("cut short"))
    };
    let u32_at = |o| {
        at(ko, o)
            .map(u32::from_le_bytes)
            .ok_or_else(|| bad("cut short"))
    };
    let u64_at = |o| {
        at(ko, o)
            .map(u64::from_le_bytes)
            .ok_or_else(|| bad("cut short"))
    };
    if ko.get(..5) != Some(b"\x7fELF\x02") || ko.get(5) != Some(&1) {
        return Err(bad("not a 64-bit little-endian ELF file"));
    }
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3A)? as usize;
    let shnum = u16_at(0x3C)? as usize;
    let shstrndx = u16_at(0x3E)? as usize;
    let section = |i: usize| -> Result<(u32, usize, usize)> {
        let h = shoff.saturating_add(i.saturating_mul(shentsize));
        Ok((
            u32_at(h)?,
            u64_at(h.saturating_add(0x18))? as usize,
            u64_at(h.saturating_add(0x20))? as usize,
        ))
    };
    let (_, names_at, names_len) = section(shstrndx)?;
    let names = ko
        .get(names_at..names_at.saturating_add(names_len))
        .ok_or_else(|| bad("section names out of the file"))?;
    for i in 0..shnum {
        let (name, at, len) = section(i)?;
        let name = names.get(name as usize..).unwrap_or_default();
        if !name.starts_with(b".modinfo\0") {
            continue;
        }
        let body = ko
            .get(at..at.saturating_add(len))
            .ok_or_else(|| bad(".modinfo out of the file"))?;
        return Ok(body
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = std::str::from_utf8(kv).ok()?;
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect());
    }
    Err(bad("no .modinfo section"))
}

/// The package's files as a tar stream, entry by entry.
fn each_file(deb: &Path, mut f: impl FnMut(&str, &mut dyn Read) -> Result<()>) -> Result<()> {
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            NetbootError::Kernel(format!(
                "running dpkg-deb (apt-get install dpkg) on {}: {e}",
                deb.display()
            ))
        })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| NetbootError::Kernel("no output".into()))?;
    let mut archive = tar::Archive::new(stdout);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        f(&path, &mut entry)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(NetbootError::Kernel(format!(
            "dpkg-deb --fsys-tarfile {}: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Reads the kernel and the modules `wanted` (with their dependencies) from the Debian
/// package `deb`.
pub fn from_deb(deb: &Path, wanted: &[&str]) -> Result<Kernel> {
    // First pass: the kernel, its configuration, and every module's name and needs.
    let mut vmlinuz = None;
    let mut version = None;
    let mut config = String::new();
    let mut index: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    each_file(deb, |path, r| {
        if let Some(v) = path.strip_prefix("boot/vmlinuz-") {
            let mut b = Vec::new();
            r.read_to_end(&mut b)?;
            vmlinuz = Some(b);
            version = Some(v.to_string());
        } else if path.starts_with("boot/config-") {
            r.read_to_string(&mut config)?;
        } else if path.starts_with("lib/modules/") && path.ends_with(".ko") {
            let mut b = Vec::new();
            r.read_to_end(&mut b)?;
            let info = modinfo(&b)?;
            let name = info.get("name").cloned().unwrap_or_else(|| {
                let file = path.rsplit('/').next().unwrap_or_default();
                normal(file.trim_end_matches(".ko"))
            });
            let depends = info
                .get("depends")
                .map(|d| d.split(',').filter(|s| !s.is_empty()).map(normal).collect())
                .unwrap_or_default();
            index.insert(normal(&name), (path.to_string(), depends));
        }
        Ok(())
    })?;
    let (Some(vmlinuz), Some(version)) = (vmlinuz, version) else {
        return Err(NetbootError::Kernel(format!(
            "{} holds no boot/vmlinuz-*: is it a linux-image package?",
            deb.display()
        )));
    };
    // Which asked-for modules are built in (CONFIG_X=y), judged by the config's
    // wording of the option that makes them: only to tell "built in" from "missing".
    let built_in_option = |name: &str| {
        NODE_MODULES
            .iter()
            .find(|(module, _)| *module == name)
            .is_some_and(|(_, option)| config.lines().any(|l| l == format!("{option}=y")))
    };
    // Dependencies first, each module once, in a fixed order (reproducible images).
    let mut order: Vec<String> = Vec::new();
    let mut built_in = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> bool {
        let Some((_, deps)) = index.get(name) else {
            return false;
        };
        if !seen.insert(name.to_string()) {
            return true;
        }
        for d in deps {
            // A dependency the package lacks is built into the kernel.
            visit(d, index, seen, order);
        }
        order.push(name.to_string());
        true
    }
    for w in wanted {
        let w = normal(w);
        if !visit(&w, &index, &mut seen, &mut order) {
            if built_in_option(&w) {
                built_in.push(w);
            } else {
                return Err(NetbootError::Kernel(format!(
                    "the kernel {version} has no module {w}, and does not build it in"
                )));
            }
        }
    }
    // Second pass: the chosen modules' files.
    let paths: BTreeMap<&str, &str> = order
        .iter()
        .filter_map(|n| Some((index.get(n)?.0.as_str(), n.as_str())))
        .collect();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    each_file(deb, |path, r| {
        if let Some(name) = paths.get(path) {
            let mut b = Vec::new();
            r.read_to_end(&mut b)?;
            files.insert(name.to_string(), b);
        }
        Ok(())
    })?;
    let prefix = format!("lib/modules/{version}/");
    let modules = order
        .iter()
        .map(|name| {
            let (path, depends) = &index[name];
            Module {
                name: name.clone(),
                path: path.strip_prefix(&prefix).unwrap_or(path).to_string(),
                depends: depends.clone(),
                bytes: files.remove(name).unwrap_or_default(),
            }
        })
        .collect();
    Ok(Kernel {
        version,
        vmlinuz,
        modules,
        built_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 object with a `.modinfo` section.
    pub(crate) fn fake_module(info: &[&str]) -> Vec<u8> {
        let mut modinfo = Vec::new();
        for kv in info {
            modinfo.extend_from_slice(kv.as_bytes());
            modinfo.push(0);
        }
        let names = b"\0.shstrtab\0.modinfo\0".to_vec();
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let names_at = f.len();
        f.extend_from_slice(&names);
        let info_at = f.len();
        f.extend_from_slice(&modinfo);
        let shoff = f.len();
        f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        f[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        f[0x3E..0x40].copy_from_slice(&1u16.to_le_bytes());
        let header = |name: u32, at: usize, len: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(at as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(len as u64).to_le_bytes());
            h
        };
        f.extend(header(0, 0, 0));
        f.extend(header(1, names_at, names.len()));
        f.extend(header(11, info_at, modinfo.len()));
        f
    }

    #[test]
    fn modinfo_gives_the_name_and_what_a_module_needs() {
        let ko = fake_module(&[
            "license=GPL",
            "depends=virtio,virtio_ring",
            "name=virtio_net",
        ]);
        let info = modinfo(&ko).unwrap();
        assert_eq!(info["name"], "virtio_net");
        assert_eq!(info["depends"], "virtio,virtio_ring");
        assert!(modinfo(b"#!/bin/sh\n").is_err());
        let mut cut = ko.clone();
        cut.truncate(100);
        assert!(
            modinfo(&cut).is_err(),
            "a cut file is refused, not read past its end"
        );
    }
}
