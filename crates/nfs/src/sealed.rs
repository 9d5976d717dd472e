//! Staged files sealed at rest: NFS writes wait on the node's disk in this form until
//! they become a version (`staging.rs`), so the disk shows no plaintext. It owns the
//! on-disk format and nothing else; callers hold the staged file's lock around every
//! call, so nothing here locks.
//!
//! Format: a 32-byte random salt (the file's key is BLAKE3 keyed by the node's staging
//! key over it), then for each 16 KiB block of plaintext two fixed-size slots:
//! `seq u64 | len u32 | nonce 12 | AES-256-GCM(len bytes) + tag`, zero-padded. A write
//! of a block goes to the slot that does not hold its current content, with a higher
//! `seq`; a read takes the valid slot with the higher `seq`. A crash in the middle of a
//! write (a torn slot) therefore never destroys what a block held before: data that a
//! stable WRITE made durable survives a later write cut short. A block with no valid
//! slot was never durable and reads as zeros. The additional data binds each slot to
//! its block, its `seq` and its length.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Plaintext bytes per block.
pub(crate) const BLOCK: usize = 16 << 10;
const SALT: u64 = 32;
const TAG: usize = 16;
const HEAD: usize = 8 + 4 + NONCE_LEN;
const SLOT: usize = HEAD + BLOCK + TAG;

pub(crate) struct SealedFile {
    file: File,
    key: LessSafeKey,
    size: u64,
    /// Per block: which slot holds its content (None: neither is valid).
    current: Vec<Option<u8>>,
    /// Above every `seq` in the file.
    next_seq: u64,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn file_key(staging_key: &[u8; 32], salt: &[u8]) -> LessSafeKey {
    let k = blake3::keyed_hash(staging_key, salt);
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k.as_bytes()).expect("a 32-byte key"))
}

fn aad(block: u64, seq: u64, len: u32) -> [u8; 20] {
    let mut a = [0u8; 20];
    a[..8].copy_from_slice(&block.to_le_bytes());
    a[8..16].copy_from_slice(&seq.to_le_bytes());
    a[16..].copy_from_slice(&len.to_le_bytes());
    a
}

fn slot_offset(block: u64, slot: u8) -> u64 {
    SALT + (2 * block + slot as u64) * SLOT as u64
}

impl SealedFile {
    /// A new, empty file at `path` (created only for this user).
    pub fn create(path: &Path, staging_key: &[u8; 32]) -> io::Result<Self> {
        let file = crate::staging::private_file(path, false)?;
        let mut salt = [0u8; SALT as usize];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| io::Error::other("the OS random source failed"))?;
        file.write_all_at(&salt, 0)?;
        Ok(SealedFile {
            file,
            key: file_key(staging_key, &salt),
            size: 0,
            current: Vec::new(),
            next_seq: 1,
        })
    }

    /// Opens a file an earlier run left: every block is read once to find its current
    /// slot and the file's size.
    pub fn open(path: &Path, staging_key: &[u8; 32]) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let mut salt = [0u8; SALT as usize];
        file.read_exact_at(&mut salt, 0)?;
        let mut f = SealedFile {
            file,
            key: file_key(staging_key, &salt),
            size: 0,
            current: Vec::new(),
            next_seq: 1,
        };
        let len = f.file.metadata()?.len().saturating_sub(SALT);
        let blocks = len.div_ceil(2 * SLOT as u64);
        for b in 0..blocks {
            let found = f.load(b)?;
            f.current.push(found.as_ref().map(|(slot, _, _)| *slot));
            if let Some((_, seq, plain)) = found {
                f.next_seq = f.next_seq.max(seq + 1);
                f.size = b * BLOCK as u64 + plain.len() as u64;
            }
        }
        f.current.truncate(f.size.div_ceil(BLOCK as u64) as usize);
        Ok(f)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Block `b`'s valid slot with the highest `seq`: (slot, seq, plaintext).
    fn load(&self, b: u64) -> io::Result<Option<(u8, u64, Vec<u8>)>> {
        let mut both = vec![0u8; 2 * SLOT];
        let n = read_up_to(&self.file, &mut both, slot_offset(b, 0))?;
        both.truncate(n);
        let mut best: Option<(u8, u64, Vec<u8>)> = None;
        for (slot, raw) in both.chunks(SLOT).enumerate() {
            if let Some((seq, plain)) = self.unseal(b, raw)
                && best.as_ref().is_none_or(|(_, s, _)| seq > *s)
            {
                best = Some((slot as u8, seq, plain));
            }
        }
        Ok(best)
    }

    /// A slot's (seq, plaintext), if it holds a whole, authentic record of block `b`.
    fn unseal(&self, b: u64, raw: &[u8]) -> Option<(u64, Vec<u8>)> {
        if raw.len() < HEAD + TAG {
            return None;
        }
        let seq = u64::from_le_bytes(raw[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes"));
        if seq == 0 || len as usize > BLOCK || raw.len() < HEAD + len as usize + TAG {
            return None; // never written, or torn
        }
        let nonce = Nonce::try_assume_unique_for_key(&raw[12..HEAD]).expect("nonce length");
        let mut sealed = raw[HEAD..HEAD + len as usize + TAG].to_vec();
        // A failure is a slot torn by a crash (or tampered with): the other one stands.
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(b, seq, len)), &mut sealed)
            .ok()?;
        Some((seq, plain.to_vec()))
    }

    /// Block `b`'s plaintext as far as the file's size reaches (zeros where no slot is
    /// valid).
    fn block(&self, b: u64) -> io::Result<Vec<u8>> {
        let want = (self.size.saturating_sub(b * BLOCK as u64)).min(BLOCK as u64) as usize;
        let mut plain = match self.current.get(b as usize).copied().flatten() {
            Some(slot) => {
                let mut raw = vec![0u8; SLOT];
                let n = read_up_to(&self.file, &mut raw, slot_offset(b, slot))?;
                let (_, plain) = self.unseal(b, &raw[..n]).ok_or_else(|| {
                    invalid(format!(
                        "staged block {b} no longer reads back: the disk changed it"
                    ))
                })?;
                plain
            }
            None => Vec::new(),
        };
        plain.resize(want, 0);
        Ok(plain)
    }

    /// Seals `plain` (at most a block) as block `b`'s new content, in its other slot.
    fn store(&mut self, b: u64, plain: &[u8]) -> io::Result<()> {
        debug_assert!(plain.len() <= BLOCK);
        let i = b as usize;
        if self.current.len() <= i {
            self.current.resize(i + 1, None);
        }
        let slot = match self.current[i] {
            Some(s) => 1 - s,
            None => 0,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let len = plain.len() as u32;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| io::Error::other("the OS random source failed"))?;
        let mut rec = Vec::with_capacity(SLOT);
        rec.extend_from_slice(&seq.to_le_bytes());
        rec.extend_from_slice(&len.to_le_bytes());
        rec.extend_from_slice(&nonce);
        rec.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(b, seq, len)),
                &mut rec[HEAD..],
            )
            .map_err(|_| io::Error::other("sealing a staged block failed"))?;
        rec.extend_from_slice(tag.as_ref());
        rec.resize(SLOT, 0);
        self.file.write_all_at(&rec, slot_offset(b, slot))?;
        self.current[i] = Some(slot);
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`; the range must lie within the size.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset + buf.len() as u64 > self.size {
            return Err(invalid(format!(
                "read of {} bytes at {offset} past the staged size {}",
                buf.len(),
                self.size
            )));
        }
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let b = at / BLOCK as u64;
            let within = (at % BLOCK as u64) as usize;
            let plain = self.block(b)?;
            let n = (plain.len() - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&plain[within..within + n]);
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at `offset`; a gap past the end reads as zeros.
    pub fn write_all_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        if offset > self.size {
            self.set_len(offset)?;
        }
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let b = at / BLOCK as u64;
            let within = (at % BLOCK as u64) as usize;
            let n = (BLOCK - within).min(data.len() - done);
            let mut plain = if within == 0 && n == BLOCK {
                Vec::new() // the whole block is new: nothing to read
            } else {
                self.block(b)?
            };
            if plain.len() < within + n {
                plain.resize(within + n, 0);
            }
            plain[within..within + n].copy_from_slice(&data[done..done + n]);
            self.store(b, &plain)?;
            done += n;
            self.size = self.size.max(at + n as u64);
        }
        Ok(())
    }

    /// Appends `data` at the end.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all_at(data, self.size)
    }

    /// Cuts or extends (with zeros) to `size` bytes.
    pub fn set_len(&mut self, size: u64) -> io::Result<()> {
        let blocks = size.div_ceil(BLOCK as u64);
        if size < self.size {
            let tail = (size % BLOCK as u64) as usize;
            let last = (tail > 0)
                .then(|| self.block(size / BLOCK as u64))
                .transpose()?;
            self.current.truncate(blocks as usize);
            self.file.set_len(slot_offset(blocks, 0))?;
            self.size = size;
            if let Some(mut plain) = last {
                plain.truncate(tail);
                self.store(size / BLOCK as u64, &plain)?;
            }
            return Ok(());
        }
        // Extending: the last block is filled out, then whole blocks of zeros follow.
        let mut b = self.size / BLOCK as u64;
        while b < blocks {
            let mut plain = self.block(b)?;
            let want = (size - b * BLOCK as u64).min(BLOCK as u64) as usize;
            if plain.len() < want {
                plain.resize(want, 0);
                self.store(b, &plain)?;
            }
            b += 1;
        }
        self.size = size;
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The plaintext from `offset`, up to `max` bytes (empty at the end).
    pub fn read_piece(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let n = (self.size.saturating_sub(offset)).min(max as u64) as usize;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// Reads as much of `buf` as the file holds at `offset`; answers how much.
fn read_up_to(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [9; 32];

    proptest! {
        #![proptest_config(ProptestConfig { cases: testkit::proptest_cases(64), ..ProptestConfig::default() })]

        /// Any mix of writes and truncations reads back as the same operations on a
        /// plain buffer, before and after reopening.
        #[test]
        fn reads_back_like_a_plain_file(ops in proptest::collection::vec(
            prop_oneof![
                (0u64..70_000, proptest::collection::vec(any::<u8>(), 0..40_000))
                    .prop_map(|(o, d)| (o, Some(d))),
                (0u64..90_000).prop_map(|s| (s, None)),
            ],
            1..12,
        )) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("1");
            let mut f = SealedFile::create(&path, &KEY).unwrap();
            let mut model: Vec<u8> = Vec::new();
            for (at, data) in ops {
                match data {
                    Some(d) => {
                        f.write_all_at(&d, at).unwrap();
                        let end = at as usize + d.len();
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[at as usize..end].copy_from_slice(&d);
                    }
                    None => {
                        f.set_len(at).unwrap();
                        model.resize(at as usize, 0);
                    }
                }
                prop_assert_eq!(f.size(), model.len() as u64);
            }
            prop_assert_eq!(f.read_piece(0, usize::MAX).unwrap(), model.clone());
            // In pieces, as an upload reads it, to an empty piece at the end.
            let (mut at, mut pieces) = (0u64, Vec::new());
            loop {
                let p = f.read_piece(at, 5000).unwrap();
                if p.is_empty() {
                    break;
                }
                at += p.len() as u64;
                pieces.extend(p);
            }
            prop_assert_eq!(&pieces, &model);
            prop_assert!(f.read_piece(model.len() as u64 + 7, 10).unwrap().is_empty());
            drop(f);
            let f = SealedFile::open(&path, &KEY).unwrap();
            prop_assert_eq!(f.size(), model.len() as u64);
            prop_assert_eq!(f.read_piece(0, usize::MAX).unwrap(), model);
        }
    }

    #[test]
    fn the_disk_holds_no_plaintext_and_another_key_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1");
        let secret = b"the quarterly numbers, not for the disk ".repeat(2000);
        let mut f = SealedFile::create(&path, &KEY).unwrap();
        f.write_all_at(&secret, 0).unwrap();
        f.sync_data().unwrap();
        let raw = std::fs::read(&path).unwrap();
        assert!(!raw.windows(20).any(|w| w == &secret[..20]));
        let other = SealedFile::open(&path, &[1; 32]).unwrap();
        assert_eq!(other.size(), 0, "no block opens under another key");
    }

    /// A write cut short by a crash (its slot torn) leaves the block's earlier,
    /// durable content readable.
    #[test]
    fn a_torn_overwrite_keeps_what_the_block_held_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1");
        let mut f = SealedFile::create(&path, &KEY).unwrap();
        f.write_all_at(&[1u8; BLOCK * 2], 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(&[2u8; 100], 10).unwrap();
        // The overwrite went to block 0's other slot: tear it.
        let slot = slot_offset(0, f.current[0].unwrap());
        drop(f);
        let raw = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        raw.write_all_at(&[0xee; 64], slot + 200).unwrap();
        let f = SealedFile::open(&path, &KEY).unwrap();
        assert_eq!(f.size(), BLOCK as u64 * 2);
        assert_eq!(f.read_piece(0, usize::MAX).unwrap(), vec![1u8; BLOCK * 2]);
    }
}
