//! The TOML config file. Its keys mirror the long flags; flags and environment
//! variables win over it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub data: Option<PathBuf>,
    pub admin: Option<String>,
    pub admin_listen: Option<String>,
    pub s3_listen: Option<String>,
    pub dav_listen: Option<String>,
    pub ftp_listen: Option<String>,
    pub nfs_key: Option<String>,
    pub nfs_listen: Option<String>,
    pub ftp_passive_ports: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_self_signed: Option<bool>,
    pub domain: Option<String>,
    pub disk: Option<Vec<PathBuf>>,
    pub policy: Option<String>,
    pub chunk_avg: Option<String>,
    pub compression: Option<i32>,
    pub inline_threshold: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub scrub_interval: Option<String>,
    pub scrub_rate: Option<u64>,
    pub public_ledger: Option<bool>,
    pub gc_grace: Option<String>,
    pub history: Option<String>,
    pub max_object_size: Option<String>,
    pub admin_ca: Option<PathBuf>,
    pub bind: Option<String>,
    pub rpc_listen: Option<String>,
    pub site: Option<String>,
    pub join: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub down_after: Option<String>,
}

impl FileConfig {
    /// Loads `path`, or ./edgecloud.toml when it exists, or nothing.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None if Path::new("edgecloud.toml").exists() => PathBuf::from("edgecloud.toml"),
            None => return Ok(FileConfig::default()),
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("config file {} is not valid", path.display()))
    }
}

/// Parses sizes like `4096`, `64KiB`, `1MiB`, `2GiB`, `5TiB` (KB/MB/GB/TB are read as powers of 1024 too).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a size like 64KiB or 1MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => anyhow::bail!("unknown size unit {u:?} in {s:?}: use B, KiB, MiB, GiB or TiB"),
    };
    n.checked_mul(mult)
        .with_context(|| format!("{s:?} is too large a size"))
}

pub fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    humantime::parse_duration(s)
        .with_context(|| format!("{s:?} is not a duration like 30s, 10m, 24h"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse() {
        assert_eq!(super::parse_size("64KiB").unwrap(), 65536);
        assert_eq!(super::parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(super::parse_size("4096").unwrap(), 4096);
        assert!(super::parse_size("1XB").is_err());
    }
}
