//! Redundancy: how a sealed chunk becomes shards, and how shards become the chunk again.
//!
//! `Ec { k, m }`: the sealed bytes are padded to k equal data shards plus m parity
//! shards (Reed-Solomon over GF(2^8), `reed-solomon-erasure`); any k of the k+m rebuild it.
//! `Replicate(n)`: n identical shards. `None`: one shard.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::CodecError;

/// How a chunk's sealed bytes become shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Redundancy {
    /// One shard: the sealed chunk itself.
    None,
    /// This many identical copies.
    Replicate(u8),
    /// Reed-Solomon: k data shards and m parity shards; any k rebuild the chunk.
    Ec {
        /// Data shards.
        k: u8,
        /// Parity shards: how many may be lost.
        m: u8,
    },
}

impl Redundancy {
    /// Total number of shards a chunk is stored as.
    pub fn shard_count(&self) -> usize {
        match *self {
            Redundancy::None => 1,
            Redundancy::Replicate(n) => n as usize,
            Redundancy::Ec { k, m } => (k + m) as usize,
        }
    }
    /// How many intact shards are needed to read the chunk.
    pub fn needed(&self) -> usize {
        match *self {
            Redundancy::Ec { k, .. } => k as usize,
            _ => 1,
        }
    }
    /// How many shards may be lost without losing the chunk.
    pub fn tolerates(&self) -> usize {
        self.shard_count() - self.needed()
    }

    /// The policy a node picks for a given number of disks: the most failure tolerance
    /// that keeps overhead at or under 2x, favouring 4+2 (1.5x) once there are 6 disks.
    pub fn default_for_disks(disks: usize) -> Redundancy {
        match disks {
            0 | 1 => Redundancy::None,
            2 => Redundancy::Replicate(2),
            3 => Redundancy::Ec { k: 2, m: 1 },
            4 => Redundancy::Ec { k: 3, m: 1 },
            5 => Redundancy::Ec { k: 3, m: 2 },
            _ => Redundancy::Ec { k: 4, m: 2 },
        }
    }

    /// Refuses shapes the codec cannot use (k = 0, more than 255 shards, ...).
    pub fn validate(&self) -> Result<(), CodecError> {
        match *self {
            Redundancy::Replicate(n) if !(1..=16).contains(&n) => Err(CodecError::BadPolicy(
                format!("replicate:{n}: N must be 1..16"),
            )),
            Redundancy::Ec { k, m } if k == 0 || m == 0 || k as usize + m as usize > 64 => {
                Err(CodecError::BadPolicy(format!(
                    "ec:{k}+{m}: K and M must be at least 1 and K+M at most 64"
                )))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Redundancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Redundancy::None => write!(f, "none"),
            Redundancy::Replicate(n) => write!(f, "replicate:{n}"),
            Redundancy::Ec { k, m } => write!(f, "ec:{k}+{m}"),
        }
    }
}

impl FromStr for Redundancy {
    type Err = CodecError;
    fn from_str(s: &str) -> Result<Self, CodecError> {
        let bad = || CodecError::BadPolicy(format!("{s:?}: expected none, replicate:N or ec:K+M"));
        let r = if s == "none" {
            Redundancy::None
        } else if let Some(n) = s.strip_prefix("replicate:") {
            Redundancy::Replicate(n.parse().map_err(|_| bad())?)
        } else if let Some(km) = s.strip_prefix("ec:") {
            let (k, m) = km.split_once('+').ok_or_else(bad)?;
            Redundancy::Ec {
                k: k.parse().map_err(|_| bad())?,
                m: m.parse().map_err(|_| bad())?,
            }
        } else {
            return Err(bad());
        };
        r.validate()?;
        Ok(r)
    }
}

/// BLAKE3 of a shard's bytes, stored beside it and checked on every read.
pub fn shard_checksum(shard: &[u8]) -> [u8; 32] {
    *blake3::hash(shard).as_bytes()
}

/// The Reed-Solomon codec for k+m, built once per shape (building inverts a matrix).
fn rs(k: usize, m: usize) -> Arc<ReedSolomon> {
    static CACHE: OnceLock<Mutex<HashMap<(usize, usize), Arc<ReedSolomon>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .expect("rs cache");
    cache
        .entry((k, m))
        .or_insert_with(|| Arc::new(ReedSolomon::new(k, m).expect("k+m validated: 1..=64 shards")))
        .clone()
}

/// Splits sealed bytes into `policy.shard_count()` shards.
pub fn split_shards(policy: Redundancy, sealed: &[u8]) -> Vec<Vec<u8>> {
    match policy {
        Redundancy::None => vec![sealed.to_vec()],
        Redundancy::Replicate(n) => vec![sealed.to_vec(); n as usize],
        Redundancy::Ec { k, m } => {
            let (k, m) = (k as usize, m as usize);
            let len = shard_len(sealed.len(), k);
            let mut shards: Vec<Vec<u8>> = (0..k + m)
                .map(|i| {
                    let mut s = Vec::with_capacity(len);
                    if i < k {
                        let start = (i * len).min(sealed.len());
                        let end = ((i + 1) * len).min(sealed.len());
                        s.extend_from_slice(&sealed[start..end]);
                    }
                    s.resize(len, 0);
                    s
                })
                .collect();
            rs(k, m)
                .encode(&mut shards)
                .expect("shard count and size are consistent");
            shards
        }
    }
}

fn shard_len(sealed_len: usize, k: usize) -> usize {
    sealed_len.div_ceil(k).max(1)
}

/// Rebuilds the sealed bytes from whichever shards are present (`None` = lost or
/// corrupt; callers verify checksums first). `sealed_len` removes the padding.
pub fn join_shards(
    policy: Redundancy,
    mut shards: Vec<Option<Vec<u8>>>,
    sealed_len: usize,
) -> Result<Vec<u8>, CodecError> {
    let have = shards.iter().filter(|s| s.is_some()).count();
    let need = policy.needed();
    if shards.len() != policy.shard_count() || have < need {
        return Err(CodecError::NotEnoughShards { have, need });
    }
    match policy {
        Redundancy::None | Redundancy::Replicate(_) => {
            let s = shards.into_iter().flatten().next().expect("have >= 1");
            if s.len() != sealed_len {
                return Err(CodecError::BadFormat);
            }
            Ok(s)
        }
        Redundancy::Ec { k, m } => {
            let (k, m) = (k as usize, m as usize);
            let len = shard_len(sealed_len, k);
            if shards.iter().flatten().any(|s| s.len() != len) {
                return Err(CodecError::BadFormat);
            }
            if shards[..k].iter().any(|s| s.is_none()) {
                rs(k, m)
                    .reconstruct_data(&mut shards)
                    .map_err(|_| CodecError::NotEnoughShards { have, need })?;
            }
            let mut out = Vec::with_capacity(len * k);
            for s in shards[..k].iter().flatten() {
                out.extend_from_slice(s);
            }
            out.truncate(sealed_len);
            Ok(out)
        }
    }
}

/// Rebuilds every shard of a chunk from the present ones: what repair writes back.
pub fn rebuild_all(
    policy: Redundancy,
    mut shards: Vec<Option<Vec<u8>>>,
    sealed_len: usize,
) -> Result<Vec<Vec<u8>>, CodecError> {
    let have = shards.iter().filter(|s| s.is_some()).count();
    let need = policy.needed();
    match policy {
        Redundancy::Ec { k, m } => {
            let len = shard_len(sealed_len, k as usize);
            if have < need
                || shards.len() != policy.shard_count()
                || shards.iter().flatten().any(|s| s.len() != len)
            {
                return Err(CodecError::NotEnoughShards { have, need });
            }
            rs(k as usize, m as usize)
                .reconstruct(&mut shards)
                .map_err(|_| CodecError::NotEnoughShards { have, need })?;
            Ok(shards
                .into_iter()
                .map(|s| s.expect("reconstructed"))
                .collect())
        }
        _ => {
            let sealed = join_shards(policy, shards, sealed_len)?;
            Ok(split_shards(policy, &sealed))
        }
    }
}
