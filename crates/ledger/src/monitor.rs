//! A monitor's check of a whole published log (as Certificate Transparency monitors
//! do): read every entry bundle and tile a checkpoint covers, recompute every hash from
//! the entries, and name the first entry whose published bytes or hashes disagree.
//! Proofs check one entry; this checks that nothing published was changed or cut.
//!
//! Memory is two hashes per entry (64 MB at a million entries).

use tlog_tiles::{Hash, Tile};

use crate::publish::c2sp_path;
use crate::{LedgerError, Result};

const HEIGHT: u8 = 8;
const WIDTH: u64 = 1 << HEIGHT;

fn damaged(index: u64, reason: impl Into<String>) -> LedgerError {
    LedgerError::Damaged {
        index,
        reason: reason.into(),
    }
}

/// Checks the published log of `size` entries against `root` (from a verified
/// checkpoint). `read` returns a published file by its path relative to the log's
/// base (`tile/entries/000`, `tile/0/000.p/5`, ...), or None when it is missing.
/// Returns the entries, in order, when every byte checks out.
pub fn check_published(
    size: u64,
    root: Hash,
    mut read: impl FnMut(&str) -> Result<Option<Vec<u8>>>,
) -> Result<Vec<Vec<u8>>> {
    // A partial tile or bundle may be gone once its full one is published: its bytes
    // are then the full one's first.
    let mut fetch = |t: &Tile, first: u64| {
        let path = c2sp_path(t);
        crate::publish::read_or_cut(&path, &mut read)?
            .ok_or_else(|| damaged(first, format!("{path} is missing")))
    };

    // 1. The entries, from their bundles (a 2-byte big-endian length, then the bytes),
    //    each checked against its leaf hash in the level-0 tile as it is read, so the
    //    first damaged entry is the one named.
    let mut entries = Vec::with_capacity(size as usize);
    let mut leaves = Vec::with_capacity(size as usize);
    for n in 0..size.div_ceil(WIDTH) {
        let first = n * WIDTH;
        let width = (size - first).min(WIDTH);
        let bundle = fetch(&Tile::new(HEIGHT, 0, n, width as u32, true), first)?;
        let tile = Tile::new(HEIGHT, 0, n, width as u32, false);
        let hashes = fetch(&tile, first)?;
        let mut rest = &bundle[..];
        for (j, index) in (first..first + width).enumerate() {
            let (len, tail) = match rest {
                [a, b, tail @ ..] => (u16::from_be_bytes([*a, *b]) as usize, tail),
                _ => return Err(damaged(index, "its entry bundle ends before it")),
            };
            let entry = tail
                .get(..len)
                .ok_or_else(|| damaged(index, "its entry bundle ends inside it"))?;
            let leaf = crate::leaf_hash(entry);
            match hashes.get(j * 32..j * 32 + 32) {
                Some(h) if h == leaf.0 => {}
                Some(_) => {
                    return Err(damaged(
                        index,
                        format!("its bytes do not match its hash in {}", c2sp_path(&tile)),
                    ));
                }
                None => {
                    return Err(damaged(
                        index,
                        format!("{} ends before its hash", c2sp_path(&tile)),
                    ));
                }
            }
            entries.push(entry.to_vec());
            leaves.push(leaf);
            rest = &tail[len..];
        }
        if !rest.is_empty() {
            return Err(damaged(
                first + width - 1,
                "its entry bundle has bytes after the last entry",
            ));
        }
        if hashes.len() != width as usize * 32 {
            return Err(damaged(
                first + width - 1,
                format!("{} has bytes after its last hash", c2sp_path(&tile)),
            ));
        }
    }

    // 2. Every complete subtree hash, level by level, recomputed from the entries.
    let mut levels: Vec<Vec<Hash>> = vec![leaves];
    while levels.last().is_some_and(|l| l.len() > 1) {
        let below = levels.last().expect("a level");
        let up = below
            .chunks_exact(2)
            .map(|p| node_hash(&p[0], &p[1]))
            .collect();
        levels.push(up);
    }

    // 3. Each higher tile must hold exactly the recomputed hashes. A tile at tile level
    //    L holds hashes of tree level 8L; its hash j covers entries from j*256^L on.
    for (tree_level, level) in levels.iter().enumerate().step_by(HEIGHT as usize).skip(1) {
        let tile_level = tree_level as u32 / HEIGHT as u32;
        let span = WIDTH.pow(tile_level);
        for (n, want) in level.chunks(WIDTH as usize).enumerate() {
            let first = n as u64 * WIDTH * span;
            let t = Tile::new(HEIGHT, tile_level as u8, n as u64, want.len() as u32, false);
            let data = fetch(&t, first)?;
            for (j, h) in want.iter().enumerate() {
                let index = first + j as u64 * span;
                match data.get(j * 32..j * 32 + 32) {
                    Some(got) if got == h.0 => {}
                    Some(_) => {
                        return Err(damaged(
                            index,
                            format!("{} holds another hash for it", c2sp_path(&t)),
                        ));
                    }
                    None => {
                        return Err(damaged(
                            index,
                            format!("{} ends before its hash", c2sp_path(&t)),
                        ));
                    }
                }
            }
            if data.len() != want.len() * 32 {
                let last = first + (want.len() as u64 - 1) * span;
                return Err(damaged(
                    last,
                    format!("{} has bytes after its last hash", c2sp_path(&t)),
                ));
            }
        }
    }

    // 4. The root: complete subtrees for the bits of `size`, largest first, folded
    //    from the right (RFC 9162 §2.1.1).
    let mut subtrees = Vec::new();
    let mut start = 0u64;
    for bit in (0..64).rev() {
        if size & (1 << bit) != 0 {
            subtrees.push((levels[bit][(start >> bit) as usize], start));
            start += 1 << bit;
        }
    }
    let got = subtrees
        .iter()
        .rev()
        .map(|(h, _)| *h)
        .reduce(|right, left| node_hash(&left, &right));
    let got = got.unwrap_or_else(|| Hash(sha256(&[])));
    if got != root {
        return Err(LedgerError::Verification(format!(
            "the {size} published entries do not hash to the checkpoint's root (the checkpoint and the tiles disagree)"
        )));
    }
    Ok(entries)
}

fn node_hash(l: &Hash, r: &Hash) -> Hash {
    let mut b = Vec::with_capacity(65);
    b.push(1u8);
    b.extend_from_slice(&l.0);
    b.extend_from_slice(&r.0);
    Hash(sha256(&b))
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}
