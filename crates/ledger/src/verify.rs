//! Verification for clients: inclusion and consistency proofs (RFC 9162 §2.1.3.2 and
//! §2.1.4.2, via `tlog_tiles`) and signed checkpoints (C2SP signed-note, Ed25519).
//! Hostile input gets an error, never a panic and never "verified".

use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::Checkpoint;

use crate::{Hash, LedgerError, Result};

fn no_panic<T>(f: impl FnOnce() -> std::result::Result<T, tlog_tiles::Error>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| LedgerError::Verification(e.to_string())),
        Err(_) => Err(LedgerError::Verification("malformed proof".into())),
    }
}

/// A 32-byte hash from bytes given by a client.
pub fn hash(b: &[u8]) -> Result<Hash> {
    Ok(Hash(b.try_into().map_err(|_| {
        LedgerError::Verification(format!("a hash has 32 bytes, not {}", b.len()))
    })?))
}

/// Proof hashes as the HTTP API and proof bundles carry them (base64).
pub fn hashes_from_base64(proof: &[String]) -> Result<Vec<Hash>> {
    use base64::Engine;
    proof
        .iter()
        .map(|p| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(p)
                .map_err(|_| LedgerError::Verification("a proof hash is not base64".into()))?;
            hash(&raw)
        })
        .collect()
}

/// Checks that `leaf` (a leaf hash) is entry `index` of the tree of `size` leaves whose
/// root is `root`.
pub fn inclusion(leaf: Hash, index: u64, size: u64, proof: &[Hash], root: Hash) -> Result<()> {
    if index >= size {
        return Err(LedgerError::Verification(format!(
            "index {index} is not below the tree size {size}"
        )));
    }
    no_panic(|| tlog_tiles::check_record(&proof.to_vec(), size, root, index, leaf)).map_err(|_| {
        LedgerError::Verification(format!(
            "entry {index} is not in the tree of size {size} with this root"
        ))
    })
}

/// Checks that the tree of `size1` leaves with `root1` is a prefix of the tree of
/// `size2` leaves with `root2`: nothing before `size1` was changed.
/// Roots are raw bytes here: for equal sizes RFC 9162 only compares them.
pub fn consistency(
    size1: u64,
    size2: u64,
    root1: &[u8],
    root2: &[u8],
    proof: &[Hash],
) -> Result<()> {
    let fail = || {
        LedgerError::Verification(format!(
            "the log of size {size2} does not extend the log of size {size1} (history was rewritten, or the proof is wrong)"
        ))
    };
    // transparency-dev's verifier, whose vectors we pass, refuses any proof from the
    // empty tree: it proves nothing.
    if size1 > size2 || size1 == 0 {
        return Err(fail());
    }
    if size1 == size2 {
        return if proof.is_empty() && root1 == root2 {
            Ok(())
        } else {
            Err(fail())
        };
    }
    if proof.is_empty() {
        // RFC 9162 §2.1.4.2: an empty proof proves nothing between different sizes.
        return Err(fail());
    }
    let (root1, root2) = (
        hash(root1).map_err(|_| fail())?,
        hash(root2).map_err(|_| fail())?,
    );
    no_panic(|| tlog_tiles::check_tree(&proof.to_vec(), size2, root2, size1, root1))
        .map_err(|_| fail())
}

/// Verifies a signed checkpoint with the log's public key (`name+hash+base64`, the
/// C2SP verifier key format) and returns what it commits to.
pub fn checkpoint(signed: &[u8], public_key: &str) -> Result<Checkpoint> {
    let v = StandardVerifier::new(public_key.trim())
        .map_err(|e| LedgerError::Verification(format!("bad public key: {e}")))?;
    let note = Note::from_bytes(signed)
        .map_err(|e| LedgerError::Verification(format!("malformed checkpoint: {e}")))?;
    note.verify(&VerifierList::new(vec![Box::new(v)]))
        .map_err(|e| LedgerError::Verification(format!("checkpoint signature: {e}")))?;
    Checkpoint::from_bytes(note.text())
        .map_err(|_| LedgerError::Verification("malformed checkpoint body".into()))
}
