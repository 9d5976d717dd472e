//! Publishing: the C2SP tlog-tiles layout under a directory (`checkpoint`,
//! `tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`), the signed checkpoint last, so
//! every tile it needs exists when it appears. The checkpoint is replaced atomically
//! (temporary file, then rename); tiles are never replaced, and synced in batches (see
//! `SYNC_EVERY`).

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

/// Writes a whole file through a temporary name, so a reader sees the old file or the
/// new one, never a part (the checkpoint: the one file that is ever replaced).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Creates (or truncates) a file, and its folder on first use.
fn create(path: &Path) -> Result<std::fs::File> {
    match std::fs::File::create(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d)?;
            }
            Ok(std::fs::File::create(path)?)
        }
        r => Ok(r?),
    }
}

/// Tiles and entry bundles are not synced one by one as they are written: an fsync of a
/// new file writes its inode and data synchronously (a journal commit, on a journaled
/// file system), and twenty-odd a second queued the Raft log's own fsyncs behind them. They are
/// derived data: any of them can be written again, byte for byte, from the tree and
/// the entries. So they are synced every `SYNC_EVERY` (by then the kernel has mostly
/// written them back), and a marker file (`TILES_SYNCED`) then names the size up to
/// which every tile and bundle is durable; a restart writes again everything after it
/// (`resume_size`). A crash can leave a published checkpoint whose tiles are torn,
/// until the restart mends them.
///
/// They need no temporary name: every tile path is new when written (a partial tile's
/// name carries its width) and no checkpoint refers to it yet, so no reader asks for it.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The marker file: the tree size up to which every tile and bundle has been synced.
pub const TILES_SYNCED: &str = "tiles-synced";

/// Files written since the last sync.
struct Unsynced {
    paths: Vec<PathBuf>,
    /// The size of the latest checkpoint they belong to.
    size: u64,
    since: std::time::Instant,
}

/// Writes a tile or bundle (not synced: see `SYNC_EVERY`).
fn write_tile(path: &Path, bytes: &[u8]) -> Result<()> {
    create(path)?.write_all(bytes)?;
    Ok(())
}

/// The size from which a restart must publish again: the last checkpoint's size, or
/// less when its tiles were not all synced yet. Directories from before the marker
/// synced every tile before its checkpoint.
pub fn resume_size(dir: &Path, public_key: &str) -> u64 {
    let published = crate::verify::checkpoint(
        &std::fs::read(dir.join("checkpoint")).unwrap_or_default(),
        public_key,
    )
    .map(|c| c.size())
    .unwrap_or(0);
    match std::fs::read_to_string(dir.join(TILES_SYNCED)) {
        Ok(text) => text.trim().parse::<u64>().unwrap_or(0).min(published),
        Err(_) => published,
    }
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
    unsynced: std::sync::Mutex<Unsynced>,
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
            unsynced: std::sync::Mutex::new(Unsynced {
                paths: Vec::new(),
                size: 0,
                since: std::time::Instant::now(),
            }),
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
        let mut written = Vec::new();
        for t in Tile::new_tiles(HEIGHT, old_size, size) {
            let data = t.read_data(&TreeReader(tree)).map_err(LedgerError::tlog)?;
            let path = self.dir.join(c2sp_path(&t));
            write_tile(&path, &data)?;
            written.push(path);
        }
        let first_bundle = old_size / WIDTH;
        for n in first_bundle..size.div_ceil(WIDTH) {
            let (from, to) = (n * WIDTH, ((n + 1) * WIDTH).min(size));
            let t = Tile::new(HEIGHT, 0, n, (to - from) as u32, true);
            let path = self.dir.join(c2sp_path(&t));
            write_tile(&path, &bundle(entries, from, to)?)?;
            written.push(path);
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
        let due = {
            let mut u = self.unsynced.lock().expect("unsynced lock");
            u.paths.extend(written);
            u.size = size;
            u.since.elapsed() >= SYNC_EVERY
        };
        if due {
            self.sync()?;
        }
        Ok(signed)
    }

    /// Makes every tile and bundle written so far durable, and records up to which size
    /// they are (`TILES_SYNCED`).
    pub fn sync(&self) -> Result<()> {
        let mut u = self.unsynced.lock().expect("unsynced lock");
        for path in &u.paths {
            std::fs::File::open(path)?.sync_data()?;
        }
        write_atomic(
            &self.dir.join(TILES_SYNCED),
            format!("{}\n", u.size).as_bytes(),
        )?;
        u.paths.clear();
        u.since = std::time::Instant::now();
        Ok(())
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
