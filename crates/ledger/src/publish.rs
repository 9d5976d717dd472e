//! Publishing: the C2SP tlog-tiles layout under a directory (`checkpoint`,
//! `tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`), written atomically (temporary
//! file, then rename) so a reader never sees half a tile, and the signed checkpoint
//! last, so every tile it needs exists when it appears.

use std::io::Write;
use std::path::{Path, PathBuf};

use signed_note::{Note, StandardSigner};
use tlog_tiles::{Checkpoint, Tile};

use crate::entries::EntryStore;
use crate::tree::{Tree, TreeReader};
use crate::{LedgerError, Result};

const HEIGHT: u8 = 8;
const WIDTH: u64 = 1 << HEIGHT;

/// C2SP paths: tlog_tiles writes Go sumdb paths (`tile/8/0/...`, `tile/8/data/...`).
pub fn c2sp_path(t: &Tile) -> String {
    let p = t.path();
    let p = p
        .strip_prefix("tile/8/")
        .map(|r| format!("tile/{r}"))
        .unwrap_or(p);
    p.replacen("tile/data/", "tile/entries/", 1)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// An entry bundle: each entry as a 2-byte big-endian length and its bytes.
fn bundle(entries: &dyn EntryStore, from: u64, to: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (i, e) in (from..to).zip(entries.range(from, to)?) {
        let len = u16::try_from(e.len())
            .map_err(|_| LedgerError::Invalid(format!("entry {i} is over 64 KiB")))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&e);
    }
    Ok(out)
}

pub struct Publisher {
    dir: PathBuf,
    origin: String,
    signer: StandardSigner,
}

impl Publisher {
    /// `signing_key` is a C2SP signed-note private key (`PRIVATE+KEY+name+hash+base64`);
    /// its name is the log's origin line.
    pub fn new(dir: &Path, signing_key: &str) -> Result<Self> {
        let signer = StandardSigner::new(signing_key.trim())
            .map_err(|e| LedgerError::Invalid(format!("bad signing key: {e}")))?;
        let origin = signing_key
            .trim()
            .split('+')
            .nth(2)
            .unwrap_or("edgecloud")
            .to_string();
        Ok(Publisher {
            dir: dir.to_path_buf(),
            origin,
            signer,
        })
    }

    /// Writes the tiles and entry bundles for leaves `old_size..tree.size()` and a new
    /// signed checkpoint; returns the checkpoint.
    pub fn publish(&self, tree: &Tree, entries: &dyn EntryStore, old_size: u64) -> Result<Vec<u8>> {
        self.publish_with(tree, entries, old_size, Ok)
    }

    /// `publish`, with `seal` adding signatures (a voter's cosignature) to the signed
    /// checkpoint before it is written.
    pub fn publish_with(
        &self,
        tree: &Tree,
        entries: &dyn EntryStore,
        old_size: u64,
        seal: impl FnOnce(Vec<u8>) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let size = tree.size();
        for t in Tile::new_tiles(HEIGHT, old_size, size) {
            let data = t.read_data(&TreeReader(tree)).map_err(LedgerError::tlog)?;
            write_atomic(&self.dir.join(c2sp_path(&t)), &data)?;
        }
        let first_bundle = old_size / WIDTH;
        for n in first_bundle..size.div_ceil(WIDTH) {
            let (from, to) = (n * WIDTH, ((n + 1) * WIDTH).min(size));
            let t = Tile::new(HEIGHT, 0, n, (to - from) as u32, true);
            write_atomic(&self.dir.join(c2sp_path(&t)), &bundle(entries, from, to)?)?;
        }
        let root = tree.root(size)?;
        let cp = Checkpoint::new(&self.origin, size, root, "")
            .map_err(|_| LedgerError::Invalid("bad checkpoint origin".into()))?;
        let mut note =
            Note::new(&cp.to_bytes(), &[]).map_err(|e| LedgerError::Invalid(e.to_string()))?;
        note.add_sigs(&[&self.signer])
            .map_err(|e| LedgerError::Invalid(e.to_string()))?;
        let signed = seal(note.to_bytes())?;
        write_atomic(&self.dir.join("checkpoint"), &signed)?;
        Ok(signed)
    }
}

impl Publisher {
    /// Replaces the published checkpoint (the same one with more cosignatures).
    pub fn rewrite_checkpoint(&self, signed: &[u8]) -> Result<()> {
        write_atomic(&self.dir.join("checkpoint"), signed)
    }
}

/// A new Ed25519 key pair for a log named `name`: (private key, public verifier key).
pub fn generate_key(name: &str) -> (String, String) {
    signed_note::generate_key(&mut rand_core::OsRng, name)
}
