//! The audit log of a node: the catalog holds the leaf records (written with each
//! change); the `Auditor` keeps the Merkle tree over them up to date, publishes tiles
//! and a signed checkpoint, and answers proofs.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use catalog::audit::LedgerEntries;
use ledger::entries::EntryStore;
use ledger::publish::Publisher;
use ledger::tree::Tree;
use serde::{Deserialize, Serialize};

use crate::{Archive, ArchiveError, Result};

/// Keeps the audit log: appends records, grows the Merkle tree, signs checkpoints.
pub struct Auditor {
    entries: LedgerEntries,
    tree: Tree,
    publisher: Publisher,
    dir: PathBuf,
    /// The latest signed checkpoint and the size it covers.
    latest: Mutex<(u64, Vec<u8>)>,
    /// The checkpoint signing key's public half (C2SP note verifier key).
    pub public_key: String,
    /// This node as a voter: it checks each checkpoint against its own tree and
    /// cosigns it (C2SP tlog-cosignature).
    cosigner: Option<ledger::cosign::Cosigner>,
}

/// Everything needed to check offline that a version is in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProofBundle {
    /// The leaf record (canonical JSON) as text.
    pub entry: String,
    /// The entry's position in the log.
    pub index: u64,
    /// Inclusion proof in the tree of the checkpoint's size, base64 hashes.
    pub proof: Vec<String>,
    /// The signed checkpoint (C2SP signed note) as text.
    pub checkpoint: String,
}

/// A tree hash as base64 (how proofs and checkpoints carry them).
pub fn b64(h: &ledger::Hash) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(h.0)
}

impl Auditor {
    /// Opens (or creates) the log's files under `dir` and signs with `signing_key`;
    /// with `cosigner_key`, every checkpoint is also cosigned by this node as a voter.
    pub fn open(
        archive: &Archive,
        dir: &Path,
        signing_key: &str,
        public_key: &str,
        cosigner_key: Option<&str>,
    ) -> Result<Self> {
        let cosigner = cosigner_key
            .map(ledger::cosign::Cosigner::new)
            .transpose()?;
        std::fs::create_dir_all(dir).map_err(|e| ArchiveError::io(dir, e))?;
        let entries = LedgerEntries(archive.inner.catalog.clone());
        let size = entries.len();
        // Leaves the hash file lacks (after a crash) are read in runs, not one by one.
        let mut run: (u64, Vec<Vec<u8>>) = (0, Vec::new());
        let tree = Tree::open(&dir.join("hashes.bin"), size, |i| {
            if !(run.0..run.0 + run.1.len() as u64).contains(&i) {
                run = (i, entries.range(i, (i + 4096).min(size))?);
            }
            Ok(ledger::leaf_hash(&run.1[(i - run.0) as usize]))
        })?;
        let publisher = Publisher::new(dir, signing_key)?;
        let a = Auditor {
            entries,
            tree,
            publisher,
            dir: dir.to_path_buf(),
            latest: Mutex::new((0, Vec::new())),
            public_key: public_key.into(),
            cosigner,
        };
        // Tiles are append-only: only what the last synced checkpoint does not cover is
        // written again, not the whole log at every start.
        let published = ledger::publish::resume_size(dir, public_key).min(size);
        let cp = a
            .publisher
            .publish_with(&a.tree, &a.entries, published, |cp| a.cosign(cp))?;
        a.publisher.sync()?;
        *a.latest.lock().expect("checkpoint lock") = (size, cp);
        Ok(a)
    }

    /// Adds the entries committed since the last call to the tree and publishes a new
    /// checkpoint if there were any; returns the tree size.
    pub fn catch_up(&self) -> Result<u64> {
        self.publish(false)
    }

    /// `catch_up` as `serve` runs it every second: under load (a tile boundary crossed
    /// since the last checkpoint) only up to the last full tile, the rest a second
    /// later, so no partial level-0 tile and bundle are written (and deleted a second
    /// later, once full). Requests for a checkpoint or proof still publish everything.
    pub fn catch_up_whole_tiles(&self) -> Result<u64> {
        self.publish(true)
    }

    fn publish(&self, whole_tiles: bool) -> Result<u64> {
        let mut latest = self.latest.lock().expect("checkpoint lock");
        let (old, mut size) = (self.tree.size(), self.entries.len());
        let boundary = size - size % ledger::publish::WIDTH;
        if whole_tiles && boundary > old {
            size = boundary;
        }
        if size > old {
            let recent = self.entries.range(old, size)?;
            let hashes: Vec<_> = recent.iter().map(|e| ledger::leaf_hash(e)).collect();
            self.tree.append(&hashes, true)?;
            let entries = ledger::entries::WithRecent {
                store: &self.entries,
                first: old,
                recent: &recent,
            };
            let cp = self
                .publisher
                .publish_with(&self.tree, &entries, latest.0, |cp| self.cosign(cp))?;
            *latest = (size, cp);
        }
        Ok(size)
    }

    /// Makes every published tile durable now (they are otherwise synced in batches);
    /// at shutdown, so the next start has nothing to write again.
    pub fn sync(&self) -> Result<()> {
        let _latest = self.latest.lock().expect("checkpoint lock");
        self.publisher.sync().map_err(ArchiveError::from)
    }

    /// As a voter: recompute the checkpoint's root from this node's own tree, and only
    /// if it matches add this node's cosignature (before the checkpoint is written).
    fn cosign(&self, cp: Vec<u8>) -> ledger::Result<Vec<u8>> {
        let Some(c) = &self.cosigner else {
            return Ok(cp);
        };
        let parsed = ledger::verify::checkpoint(&cp, &self.public_key)?;
        if self.tree.root(parsed.size())? != *parsed.hash() {
            return Err(ledger::LedgerError::Verification(format!(
                "checkpoint of size {} does not match this node's tree; not cosigned",
                parsed.size()
            )));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        c.cosign(&cp, now)
    }

    /// As a voter, for another node: catch up to the checkpoint's size (waiting up to
    /// `wait` for this replica to apply that far), and cosign it only if this node's own
    /// tree has the same root.
    pub fn cosign_for_peer(&self, cp: &[u8], wait: std::time::Duration) -> Result<Vec<u8>> {
        let parsed = ledger::verify::checkpoint(cp, &self.public_key)?;
        let started = std::time::Instant::now();
        while self.catch_up()? < parsed.size() {
            if started.elapsed() > wait {
                return Err(ArchiveError::Storage(format!(
                    "this replica has {} ledger entries, the checkpoint {}: not cosigned yet",
                    self.tree.size(),
                    parsed.size()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if self.cosigner.is_none() {
            return Err(ArchiveError::Invalid(
                "this node has no cosigner key".into(),
            ));
        }
        self.cosign(cp.to_vec()).map_err(ArchiveError::from)
    }

    /// Adds other voters' cosignatures of the current checkpoint (each returned by
    /// `cosign_for_peer` on another node) and republishes it; returns how many notes
    /// were for the current checkpoint.
    pub fn add_cosignatures(&self, cosigned: &[Vec<u8>]) -> Result<usize> {
        let mut latest = self.latest.lock().expect("checkpoint lock");
        let mut cp = latest.1.clone();
        let mut used = 0;
        for theirs in cosigned {
            if let Ok(merged) = ledger::cosign::merge(&cp, theirs) {
                cp = merged;
                used += 1;
            }
        }
        if cp != latest.1 {
            self.publisher.rewrite_checkpoint(&cp)?;
            latest.1 = cp;
        }
        Ok(used)
    }

    /// The latest signed checkpoint (C2SP signed note).
    pub fn checkpoint(&self) -> Vec<u8> {
        self.latest.lock().expect("checkpoint lock").1.clone()
    }

    /// How many entries the log holds.
    pub fn size(&self) -> u64 {
        self.latest.lock().expect("checkpoint lock").0
    }

    /// A published file by its path under `dir()` (`tile/0/000.p/5`); a partial tile
    /// whose full one is published is cut from it. None when there is no such file.
    pub fn published(&self, path: &str) -> Result<Option<Vec<u8>>> {
        ledger::publish::read_published(&self.dir, path).map_err(ArchiveError::from)
    }

    /// The folder of the log's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The proof that entry `index` is in the tree of `size` entries.
    pub fn inclusion(&self, index: u64, size: u64) -> Result<Vec<String>> {
        Ok(self
            .tree
            .inclusion_proof(index, size)?
            .iter()
            .map(b64)
            .collect())
    }

    /// The proof that the tree of `to` entries extends the tree of `from`.
    pub fn consistency(&self, from: u64, to: u64) -> Result<Vec<String>> {
        Ok(self
            .tree
            .consistency_proof(from, to)?
            .iter()
            .map(b64)
            .collect())
    }

    /// Entry `index` as stored (canonical JSON).
    pub fn entry(&self, index: u64) -> Result<Vec<u8>> {
        self.entries.get(index).map_err(ArchiveError::from)
    }

    /// The bundle proving entry `index` against the latest checkpoint.
    pub fn prove(&self, index: u64) -> Result<ProofBundle> {
        self.catch_up()?;
        let (size, cp) = self.latest.lock().expect("checkpoint lock").clone();
        let entry = String::from_utf8(self.entry(index)?)
            .map_err(|_| ArchiveError::Storage("ledger entry is not UTF-8".into()))?;
        Ok(ProofBundle {
            entry,
            index,
            proof: self.inclusion(index, size)?,
            checkpoint: String::from_utf8_lossy(&cp).into_owned(),
        })
    }
}

/// Checks a bundle offline with only the log's public key: the checkpoint signature,
/// then the entry's inclusion under the checkpoint's root. Returns the record.
pub fn check_bundle(
    b: &ProofBundle,
    public_key: &str,
) -> std::result::Result<ledger::record::Record, String> {
    let cp = ledger::verify::checkpoint(b.checkpoint.as_bytes(), public_key)
        .map_err(|e| e.to_string())?;
    let proof = ledger::verify::hashes_from_base64(&b.proof).map_err(|e| e.to_string())?;
    let leaf = ledger::leaf_hash(b.entry.as_bytes());
    ledger::verify::inclusion(leaf, b.index, cp.size(), &proof, *cp.hash())
        .map_err(|e| e.to_string())?;
    ledger::record::Record::from_bytes(b.entry.as_bytes()).map_err(|e| e.to_string())
}
