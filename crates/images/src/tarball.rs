//! The outer file: a `docker save` tarball or an OCI image layout (as a tar). One scan
//! notes where every member lies and keeps the small JSON ones (manifests, configs,
//! indexes); [`plan`] then says which images it holds, what each is made of, and which
//! digests must hold.

use std::collections::HashMap;
use std::io::{Read, Seek};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::layer::{clean_path, hex_of};
use crate::{ImageError, Result};

/// The largest manifest, index or config read (the distribution spec's own limit).
pub const MAX_JSON: u64 = 4 << 20;

/// Where a member's bytes lie in the outer file.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    /// Offset of its first byte.
    pub offset: u64,
    /// Its length.
    pub size: u64,
}

/// What a scan of the outer tar found.
#[derive(Debug, Default)]
pub struct Contents {
    members: HashMap<String, Member>,
    json: HashMap<String, Vec<u8>>,
}

/// Notes every member of the tar `file` and keeps the small ones that look like JSON.
pub fn scan<F: Read + Seek>(file: F) -> Result<Contents> {
    let mut tar = tar::Archive::new(file);
    let mut c = Contents::default();
    let mut links = Vec::new();
    for entry in tar
        .entries_with_seek()
        .map_err(|e| ImageError::NotAnImage(format!("not a tar file: {e}")))?
    {
        let mut entry =
            entry.map_err(|e| ImageError::NotAnImage(format!("not a tar file: {e}")))?;
        let raw = entry.path_bytes();
        let Ok(Some(path)) = clean_path(&String::from_utf8_lossy(&raw)) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::Symlink {
            // docker save links a layer's `DIR/layer.tar` to a blob another item holds.
            if let Ok(Some(target)) = entry
                .link_name_bytes()
                .map(|t| {
                    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                    clean_path(&format!("{dir}/{}", String::from_utf8_lossy(&t)))
                })
                .transpose()
                .map(Option::flatten)
            {
                links.push((path, target));
            }
            continue;
        }
        if kind != tar::EntryType::Regular && kind != tar::EntryType::Continuous {
            continue;
        }
        let m = Member {
            offset: entry.raw_file_position(),
            size: entry.size(),
        };
        if m.size <= MAX_JSON {
            let mut first = [0u8; 1];
            if m.size > 0
                && entry.read_exact(&mut first).is_ok()
                && (first[0] == b'{' || first[0] == b'[')
            {
                let mut body = first.to_vec();
                entry.read_to_end(&mut body)?;
                c.json.insert(path.clone(), body);
            }
        }
        c.members.insert(path, m);
    }
    for (link, target) in links {
        if let Some(m) = c.members.get(&target).copied() {
            c.members.insert(link.clone(), m);
        }
        if let Some(body) = c.json.get(&target).cloned() {
            c.json.insert(link, body);
        }
    }
    Ok(c)
}

/// One layer of an image to import.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    /// Its member in the outer file.
    pub path: String,
    /// The blob digest (hex) that names it, when its manifest or file name gives one.
    pub blob_digest: Option<String>,
    /// The blob size its manifest gives.
    pub blob_size: Option<u64>,
    /// The diff id (hex) the image config gives.
    pub diff_id: String,
}

/// One image the outer file holds.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// SHA-256 (hex) of the config: the image's id.
    pub config_digest: String,
    /// The config (JSON).
    pub config: serde_json::Value,
    /// Names given in the file (not yet canonical).
    pub names: Vec<String>,
    /// The OCI manifest's digest (hex), when there is one.
    pub manifest_digest: Option<String>,
    /// Its layers, bottom first.
    pub layers: Vec<LayerPlan>,
}

/// A `docker save` manifest.json item.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SaveItem {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    pub(crate) layers: Vec<String>,
}

/// An OCI descriptor.
#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default)]
    pub(crate) annotations: HashMap<String, String>,
    #[serde(default)]
    pub(crate) platform: Option<Platform>,
}

#[derive(Deserialize, Clone)]
pub(crate) struct Platform {
    pub(crate) architecture: String,
    pub(crate) os: String,
}

/// An OCI index or image manifest (whichever fields it has).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OciDoc {
    #[serde(default)]
    pub(crate) media_type: Option<String>,
    #[serde(default)]
    pub(crate) manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub(crate) config: Option<Descriptor>,
    #[serde(default)]
    pub(crate) layers: Option<Vec<Descriptor>>,
}

/// The config fields the import needs.
#[derive(Deserialize)]
struct ConfigRootfs {
    rootfs: Rootfs,
}

#[derive(Deserialize)]
struct Rootfs {
    diff_ids: Vec<String>,
}

/// This machine's platform in OCI words.
pub(crate) fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux", arch)
}

/// The hex of a `sha256:HEX` digest; other algorithms are refused.
pub(crate) fn sha256_hex(digest: &str) -> Result<String> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(h.to_ascii_lowercase())
        }
        _ => Err(ImageError::NotAnImage(format!(
            "digest {digest:?}: only sha256 digests are supported"
        ))),
    }
}

impl Contents {
    /// A member's place, or a clear error naming what refers to it.
    pub fn member(&self, path: &str) -> Result<Member> {
        self.members
            .get(path)
            .copied()
            .ok_or_else(|| ImageError::NotAnImage(format!("{path} is named but not in the file")))
    }

    /// A JSON member's bytes, checked against `digest_hex` when given.
    fn json(&self, path: &str, digest_hex: Option<&str>) -> Result<&[u8]> {
        let body = self.json.get(path).ok_or_else(|| {
            ImageError::NotAnImage(match self.members.get(path) {
                Some(m) if m.size > MAX_JSON => format!("{path} is over {MAX_JSON} bytes"),
                Some(_) => format!("{path} is not JSON"),
                None => format!("{path} is named but not in the file"),
            })
        })?;
        if let Some(want) = digest_hex {
            let got = hex_of(Sha256::new_with_prefix(body));
            if got != want {
                return Err(ImageError::DigestMismatch {
                    what: path.to_string(),
                    expected: format!("sha256:{want}"),
                    actual: format!("sha256:{got}"),
                });
            }
        }
        Ok(body)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, path: &str, digest: Option<&str>) -> Result<T> {
        serde_json::from_slice(self.json(path, digest)?)
            .map_err(|e| ImageError::NotAnImage(format!("{path}: {e}")))
    }

    /// The digest a member's path names (`blobs/sha256/HEX` or docker's `HEX.json`).
    fn digest_in_path(path: &str) -> Option<String> {
        let name = path
            .strip_prefix("blobs/sha256/")
            .or_else(|| path.strip_suffix(".json"))?;
        (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())).then(|| name.to_string())
    }
}

/// The images `c` holds: from an OCI `index.json` (manifest digests checked), else from
/// docker's `manifest.json`; names from either.
pub fn plan(c: &Contents) -> Result<Vec<ImagePlan>> {
    let mut images = Vec::new();
    if c.members.contains_key("index.json") {
        let index: OciDoc = c.parse("index.json", None)?;
        for d in index.manifests.unwrap_or_default() {
            let mut names: Vec<String> = Vec::new();
            if let Some(n) = d.annotations.get("io.containerd.image.name") {
                names.push(n.clone());
            } else if let Some(n) = d.annotations.get("org.opencontainers.image.ref.name") {
                // umoci and skopeo write `oci:DIR:NAME` as a bare ref name: NAME:latest.
                names.push(n.clone());
            }
            oci_images(c, &d, names, 0, &mut images)?;
        }
    }
    if c.members.contains_key("manifest.json") {
        let items: Vec<SaveItem> = c.parse("manifest.json", None)?;
        for item in items {
            let config_digest = match Contents::digest_in_path(&item.config) {
                Some(d) => d,
                None => hex_of(Sha256::new_with_prefix(c.json(&item.config, None)?)),
            };
            let names = item.repo_tags.unwrap_or_default();
            if let Some(known) = images.iter_mut().find(|i| i.config_digest == config_digest) {
                known.names.extend(names); // docker 25+ writes both: index.json checked it
                continue;
            }
            let config: serde_json::Value = c.parse(&item.config, Some(&config_digest))?;
            let diff_ids = diff_ids(&config, &item.config)?;
            if diff_ids.len() != item.layers.len() {
                return Err(ImageError::NotAnImage(format!(
                    "manifest.json lists {} layers but the config {} diff ids",
                    item.layers.len(),
                    diff_ids.len()
                )));
            }
            let layers = item
                .layers
                .iter()
                .zip(diff_ids)
                .map(|(p, diff_id)| {
                    let path = clean_path(p)
                        .map_err(ImageError::NotAnImage)?
                        .ok_or_else(|| ImageError::NotAnImage("an empty layer path".into()))?;
                    Ok(LayerPlan {
                        blob_digest: path.strip_prefix("blobs/sha256/").map(str::to_string),
                        path,
                        blob_size: None,
                        diff_id,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            images.push(ImagePlan {
                config_digest,
                config,
                names,
                manifest_digest: None,
                layers,
            });
        }
    }
    if images.is_empty() && !c.members.contains_key("index.json") {
        return Err(ImageError::NotAnImage(
            "neither manifest.json (docker save) nor index.json (OCI layout) is in it".into(),
        ));
    }
    Ok(images)
}

/// The config's diff ids (hex), bottom layer first.
fn diff_ids(config: &serde_json::Value, path: &str) -> Result<Vec<String>> {
    let c: ConfigRootfs = serde_json::from_value(config.clone())
        .map_err(|e| ImageError::NotAnImage(format!("config {path}: {e}")))?;
    c.rootfs.diff_ids.iter().map(|d| sha256_hex(d)).collect()
}

/// Follows descriptor `d` of an OCI layout: an index picks this machine's platform, a
/// manifest becomes an image.
fn oci_images(
    c: &Contents,
    d: &Descriptor,
    names: Vec<String>,
    depth: usize,
    out: &mut Vec<ImagePlan>,
) -> Result<()> {
    if depth > 4 {
        return Err(ImageError::NotAnImage(
            "indexes nested more than 4 deep".into(),
        ));
    }
    let hex = sha256_hex(&d.digest)?;
    let path = format!("blobs/sha256/{hex}");
    let body = c.json(&path, Some(&hex))?;
    if body.len() as u64 != d.size {
        return Err(ImageError::NotAnImage(format!(
            "{path} is {} bytes, its descriptor says {}",
            body.len(),
            d.size
        )));
    }
    let doc: OciDoc = c.parse(&path, None)?;
    if let Some(manifests) = doc.manifests {
        let (os, arch) = host_platform();
        let pick = manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == os && p.architecture == arch)
            })
            .or_else(|| (manifests.len() == 1).then(|| &manifests[0]))
            .ok_or_else(|| {
                ImageError::NotAnImage(format!("the index {path} has no image for {os}/{arch}"))
            })?;
        return oci_images(c, pick, names, depth + 1, out);
    }
    let (Some(config_d), Some(layer_ds)) = (doc.config, doc.layers) else {
        return Err(ImageError::NotAnImage(format!(
            "{path} ({}) is neither an index nor an image manifest",
            doc.media_type.unwrap_or(d.media_type.clone())
        )));
    };
    let config_digest = sha256_hex(&config_d.digest)?;
    let config_path = format!("blobs/sha256/{config_digest}");
    let config: serde_json::Value = c.parse(&config_path, Some(&config_digest))?;
    let diff_ids = diff_ids(&config, &config_path)?;
    if diff_ids.len() != layer_ds.len() {
        return Err(ImageError::NotAnImage(format!(
            "manifest {path} lists {} layers but its config {} diff ids",
            layer_ds.len(),
            diff_ids.len()
        )));
    }
    let layers = layer_ds
        .iter()
        .zip(diff_ids)
        .map(|(l, diff_id)| {
            let blob = sha256_hex(&l.digest)?;
            Ok(LayerPlan {
                path: format!("blobs/sha256/{blob}"),
                blob_digest: Some(blob),
                blob_size: Some(l.size),
                diff_id,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(known) = out.iter_mut().find(|i| i.config_digest == config_digest) {
        known.names.extend(names);
        return Ok(());
    }
    out.push(ImagePlan {
        config_digest,
        config,
        names,
        manifest_digest: Some(hex),
        layers,
    });
    Ok(())
}
