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
/// Hashes in a full tile, entries in a full bundle.
pub const WIDTH: u64 = 1 << HEIGHT;

/// C2SP paths: tlog_tiles writes Go sumdb paths (`tile/8/0/...`, `tile/8/data/...`).
pub fn c2sp_path(t: &Tile) -> String {
    let p = t.path();
    let p = p
        .strip_prefix("tile/8/")
        .map(|r| format!("tile/{r}"))
        .unwrap_or(p);
    p.replacen("tile/data/", "tile/entries/", 1)
}

/// A partial tile or bundle (`<N>.p/<W>`) is the prefix of the full one that follows
/// it: once the full one is published, its partials are deleted (C2SP allows it; a
/// client that misses a partial reads the full one instead), or a log written slowly
/// would keep two small files per entry. Readers here cut a missing partial from its
/// full tile (`partial_from_full`).
///
/// For the path of a partial tile or bundle: the path of its full one, and its width.
pub fn full_of_partial(path: &str) -> Option<(&str, usize)> {
    let (full, w) = path.rsplit_once(".p/")?;
    let w = w
        .parse::<usize>()
        .ok()
        .filter(|w| (1..WIDTH as usize).contains(w))?;
    Some((full, w))
}

/// The partial of width `w` cut from the bytes of its full tile, or of its full entry
/// bundle when `full_path` names one (`.../entries/...`); None if they are too short.
pub fn partial_from_full(full_path: &str, full: &[u8], w: usize) -> Option<Vec<u8>> {
    let bundle = full_path.starts_with("entries/") || full_path.contains("/entries/");
    if !bundle {
        return full.get(..w * 32).map(<[u8]>::to_vec);
    }
    let mut end = 0;
    for _ in 0..w {
        let len = full.get(end..end + 2)?;
        end += 2 + u16::from_be_bytes([len[0], len[1]]) as usize;
    }
    full.get(..end).map(<[u8]>::to_vec)
}

/// A published file by its path under the log's folder (`tile/0/000.p/5`), read by
/// `read` (None when missing); a partial that was deleted is cut from its full one, or
/// is the full one's bytes when they are too short to cut (whoever checks them finds
/// where they end). None when neither exists.
pub fn read_or_cut(
    path: &str,
    mut read: impl FnMut(&str) -> Result<Option<Vec<u8>>>,
) -> Result<Option<Vec<u8>>> {
    Ok(match (read(path)?, full_of_partial(path)) {
        (Some(bytes), _) => Some(bytes),
        (None, Some((full, w))) => read(full)?.map(|b| partial_from_full(full, &b, w).unwrap_or(b)),
        (None, None) => None,
    })
}

/// `read_or_cut` from the files under `dir`.
pub fn read_published(dir: &Path, path: &str) -> Result<Option<Vec<u8>>> {
    read_or_cut(path, |path| match std::fs::read(dir.join(path)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LedgerError::from(e)),
    })
}

/// Deletes the partials of every full tile and bundle under `tile/` (those of a log
/// published before partials were deleted, or left by a crash); at start.
fn prune_partials(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for e in entries {
        let e = e?;
        if !e.file_type()?.is_dir() {
            continue;
        }
        let path = e.path();
        match path.to_str().and_then(|p| p.strip_suffix(".p")) {
            Some(full) if Path::new(full).is_file() => remove_partials(&path)?,
            Some(_) => {}
            None => prune_partials(&path)?,
        }
    }
    Ok(())
}

fn remove_partials(partials: &Path) -> Result<()> {
    match std::fs::remove_dir_all(partials) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
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

/// Signs checkpoints and writes them where monitors can fetch them.
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
        prune_partials(&dir.join("tile"))?;
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
        // Full tiles and bundles written now, whose partials go once the checkpoint is.
        let mut completed = Vec::new();
        for t in Tile::new_tiles(HEIGHT, old_size, size) {
            let data = t.read_data(&TreeReader(tree)).map_err(LedgerError::tlog)?;
            let path = self.dir.join(c2sp_path(&t));
            write_tile(&path, &data)?;
            if t.width() as u64 == WIDTH {
                completed.push(path.with_extension("p"));
            }
            written.push(path);
        }
        let first_bundle = old_size / WIDTH;
        for n in first_bundle..size.div_ceil(WIDTH) {
            let (from, to) = (n * WIDTH, ((n + 1) * WIDTH).min(size));
            let t = Tile::new(HEIGHT, 0, n, (to - from) as u32, true);
            let path = self.dir.join(c2sp_path(&t));
            write_tile(&path, &bundle(entries, from, to)?)?;
            if to - from == WIDTH {
                completed.push(path.with_extension("p"));
            }
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
        for partials in &completed {
            remove_partials(partials)?;
        }
        let due = {
            let mut u = self.unsynced.lock().expect("unsynced lock");
            u.paths
                .retain(|p| !p.parent().is_some_and(|d| completed.iter().any(|c| c == d)));
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
            match std::fs::File::open(path) {
                Ok(f) => f.sync_data()?,
                // A partial deleted since (its full tile is among the paths).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
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
