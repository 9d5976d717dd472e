//! Cosignatures (C2SP tlog-cosignature, `cosignature/v1`): a witness, here every Raft
//! voter, recomputes a checkpoint's root from its own copy of the log and adds its
//! signature line; a client demands a quorum of known cosigners before it trusts a
//! checkpoint. A cosignature signs "cosignature/v1\ntime T\n" followed by the
//! checkpoint's text, and its note signature is the key ID, then T (8 bytes, big endian,
//! seconds), then the Ed25519 signature. Keys are C2SP note keys of type 0x04.
//!
//! On one node the node itself is the only voter; the cluster adds one cosigner per voter.

use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use signed_note::{Note, Verifier, VerifierList};

use crate::{LedgerError, Result};

const ALG: u8 = 0x04;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn message(time: u64, checkpoint: &[u8]) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {time}\n").into_bytes();
    m.extend_from_slice(checkpoint);
    m
}

fn key_id(name: &str, public: &VerifyingKey) -> u32 {
    let mut k = vec![ALG];
    k.extend_from_slice(public.as_bytes());
    signed_note::key_id(name, &k)
}

/// A new cosigner key pair: (private key, public verifier key), both as text.
pub fn generate_key(name: &str) -> (String, String) {
    key_from_seed(name, SigningKey::generate(&mut rand_core::OsRng).to_bytes())
}

/// The cosigner key pair made from a 32-byte seed, as [`generate_key`]'s text.
pub fn key_from_seed(name: &str, seed: [u8; 32]) -> (String, String) {
    let sk = SigningKey::from_bytes(&seed);
    let id = key_id(name, &sk.verifying_key());
    let mut private = vec![ALG];
    private.extend_from_slice(&sk.to_bytes());
    let mut public = vec![ALG];
    public.extend_from_slice(sk.verifying_key().as_bytes());
    (
        format!("PRIVATE+KEY+{name}+{id:08x}+{}", B64.encode(private)),
        format!("{name}+{id:08x}+{}", B64.encode(public)),
    )
}

fn split_key(text: &str) -> Option<(String, Vec<u8>)> {
    // name+id+base64: names hold no '+', base64 may.
    let mut parts = text.trim().splitn(3, '+');
    let name = parts.next()?.to_string();
    let _id = parts.next()?;
    let key = B64.decode(parts.next()?).ok()?;
    (key.len() == 33 && key[0] == ALG).then(|| (name, key[1..].to_vec()))
}

/// Cosigns checkpoints (C2SP tlog-cosignature) with a voter's key.
pub struct Cosigner {
    name: String,
    key: SigningKey,
    id: u32,
}

impl Cosigner {
    /// A cosigner from a private key in note format.
    pub fn new(private_key: &str) -> Result<Self> {
        let bad =
            || LedgerError::Invalid("not a cosigner private key (PRIVATE+KEY+name+id+key)".into());
        let rest = private_key
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(bad)?;
        let (name, seed) = split_key(rest).ok_or_else(bad)?;
        let key = SigningKey::from_bytes(&seed.try_into().map_err(|_| bad())?);
        let id = key_id(&name, &key.verifying_key());
        Ok(Cosigner { name, key, id })
    }

    /// Adds this cosigner's signature to a signed checkpoint, at `time` (seconds).
    pub fn cosign(&self, signed_checkpoint: &[u8], time: u64) -> Result<Vec<u8>> {
        let mut note = Note::from_bytes(signed_checkpoint)
            .map_err(|e| LedgerError::Invalid(format!("malformed checkpoint: {e}")))?;
        let signer = TimedSigner { c: self, time };
        note.add_sigs(&[&signer])
            .map_err(|e| LedgerError::Invalid(e.to_string()))?;
        Ok(note.to_bytes())
    }
}

struct TimedSigner<'a> {
    c: &'a Cosigner,
    time: u64,
}

impl signed_note::Signer for TimedSigner<'_> {
    fn name(&self) -> &str {
        &self.c.name
    }
    fn key_id(&self) -> u32 {
        self.c.id
    }
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, ed25519_dalek::SignatureError> {
        let sig = self.c.key.sign(&message(self.time, msg));
        let mut out = self.time.to_be_bytes().to_vec();
        out.extend_from_slice(&sig.to_bytes());
        Ok(out)
    }
}

/// Adds to `ours` the signature lines of `theirs` that it lacks: both must be the same
/// checkpoint (the same text); another voter returned `theirs` with its cosignature.
pub fn merge(ours: &[u8], theirs: &[u8]) -> Result<Vec<u8>> {
    let split = |n: &[u8]| -> Result<(String, Vec<String>)> {
        let text = std::str::from_utf8(n)
            .map_err(|_| LedgerError::Invalid("a checkpoint is not UTF-8".into()))?;
        let (body, sigs) = text
            .split_once("\n\n")
            .ok_or_else(|| LedgerError::Invalid("a checkpoint without signatures".into()))?;
        Ok((body.to_string(), sigs.lines().map(str::to_string).collect()))
    };
    let (body, mut sigs) = split(ours)?;
    let (other, more) = split(theirs)?;
    if body != other {
        return Err(LedgerError::Verification(
            "the cosigned checkpoint is not this one".into(),
        ));
    }
    for line in more {
        if !sigs.contains(&line) {
            sigs.push(line);
        }
    }
    Ok(format!("{body}\n\n{}\n", sigs.join("\n")).into_bytes())
}

/// Verifies cosignature/v1 signatures of one cosigner.
struct CosignatureVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let (Some(t), Some(s)) = (sig.get(..8), sig.get(8..)) else {
            return false;
        };
        let (Ok(t), Ok(s)) = (
            <[u8; 8]>::try_from(t),
            ed25519_dalek::Signature::from_slice(s),
        ) else {
            return false;
        };
        self.key
            .verify(&message(u64::from_be_bytes(t), msg), &s)
            .is_ok()
    }
}

fn verifier(public_key: &str) -> Result<CosignatureVerifier> {
    let (name, key) = split_key(public_key).ok_or_else(|| {
        LedgerError::Verification(format!("{public_key:?} is not a cosigner key"))
    })?;
    let key = VerifyingKey::from_bytes(
        &key.try_into()
            .map_err(|_| LedgerError::Verification("bad cosigner key".into()))?,
    )
    .map_err(|_| LedgerError::Verification("bad cosigner key".into()))?;
    let id = key_id(&name, &key);
    Ok(CosignatureVerifier { name, id, key })
}

/// Checks that at least `quorum` of `cosigners` (public keys) validly cosigned the
/// checkpoint; returns how many did. Signatures by other keys are ignored; a bad
/// signature by a known cosigner fails the check.
pub fn check_quorum(
    signed_checkpoint: &[u8],
    cosigners: &[String],
    quorum: usize,
) -> Result<usize> {
    let note = Note::from_bytes(signed_checkpoint)
        .map_err(|e| LedgerError::Verification(format!("malformed checkpoint: {e}")))?;
    let list: Vec<Box<dyn Verifier>> = cosigners
        .iter()
        .map(|k| verifier(k).map(|v| Box::new(v) as Box<dyn Verifier>))
        .collect::<Result<_>>()?;
    let n = match note.verify(&VerifierList::new(list)) {
        Ok((verified, _)) => verified.len(),
        Err(signed_note::NoteError::UnverifiedNote) => 0,
        Err(e) => return Err(LedgerError::Verification(format!("cosignature: {e}"))),
    };
    if n < quorum {
        return Err(LedgerError::Verification(format!(
            "{n} of the {} known cosigners signed; {quorum} required",
            cosigners.len()
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> (Vec<u8>, String) {
        let (skey, vkey) = crate::publish::generate_key("edgecloud.test/log");
        let signer = signed_note::StandardSigner::new(&skey).unwrap();
        let mut note = Note::new(
            b"edgecloud.test/log\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            &[],
        )
        .unwrap();
        note.add_sigs(&[&signer]).unwrap();
        (note.to_bytes(), vkey)
    }

    #[test]
    fn a_quorum_of_cosigners_is_demanded_and_forgeries_fail() {
        let (cp, log_key) = checkpoint();
        let (a_priv, a_pub) = generate_key("voter-a");
        let (b_priv, b_pub) = generate_key("voter-b");
        let (_, c_pub) = generate_key("voter-c");
        let once = Cosigner::new(&a_priv)
            .unwrap()
            .cosign(&cp, 1_800_000_000)
            .unwrap();
        let twice = Cosigner::new(&b_priv)
            .unwrap()
            .cosign(&once, 1_800_000_001)
            .unwrap();
        let all = [a_pub.clone(), b_pub.clone(), c_pub.clone()];
        assert_eq!(check_quorum(&twice, &all, 2).unwrap(), 2);
        assert!(check_quorum(&twice, &all, 3).is_err(), "c never signed");
        assert!(check_quorum(&once, &all, 2).is_err());
        // the log's own signature still verifies with cosignatures beside it
        crate::verify::checkpoint(&twice, &log_key).unwrap();
        // a changed checkpoint body invalidates every cosignature
        let text = String::from_utf8(twice.clone())
            .unwrap()
            .replacen("\n3\n", "\n4\n", 1);
        assert!(check_quorum(text.as_bytes(), &all, 1).is_err());
        // a signature line moved to another key name is not counted
        let (_, impostor) = generate_key("voter-a");
        assert!(check_quorum(&twice, &[impostor], 1).is_err());
    }

    #[test]
    fn cosignatures_from_several_voters_merge_into_one_checkpoint() {
        let (cp, log_key) = checkpoint();
        let (a_priv, a_pub) = generate_key("voter-a");
        let (b_priv, b_pub) = generate_key("voter-b");
        let a = Cosigner::new(&a_priv).unwrap().cosign(&cp, 7).unwrap();
        let b = Cosigner::new(&b_priv).unwrap().cosign(&cp, 8).unwrap();
        let both = merge(&merge(&cp, &a).unwrap(), &b).unwrap();
        assert_eq!(check_quorum(&both, &[a_pub, b_pub], 2).unwrap(), 2);
        crate::verify::checkpoint(&both, &log_key).unwrap();
        assert_eq!(
            merge(&both, &a).unwrap(),
            both,
            "merging twice adds nothing"
        );
        let other = String::from_utf8(b).unwrap().replacen("\n3\n", "\n4\n", 1);
        assert!(
            merge(&both, other.as_bytes()).is_err(),
            "another checkpoint"
        );
    }

    #[test]
    fn the_signed_message_follows_the_spec() {
        let (cp, _) = checkpoint();
        let (a_priv, a_pub) = generate_key("w");
        let signed = Cosigner::new(&a_priv).unwrap().cosign(&cp, 42).unwrap();
        let text = String::from_utf8(signed).unwrap();
        let line = text.lines().last().unwrap();
        let sig = B64.decode(line.rsplit(' ').next().unwrap()).unwrap();
        assert_eq!(sig.len(), 4 + 8 + 64);
        assert_eq!(u64::from_be_bytes(sig[4..12].try_into().unwrap()), 42);
        let (_, key) = split_key(&a_pub).unwrap();
        let key = VerifyingKey::from_bytes(&key.try_into().unwrap()).unwrap();
        let body = text.split("\n\n").next().unwrap().to_string() + "\n";
        let mut msg = b"cosignature/v1\ntime 42\n".to_vec();
        msg.extend_from_slice(body.as_bytes());
        key.verify(
            &msg,
            &ed25519_dalek::Signature::from_slice(&sig[12..]).unwrap(),
        )
        .unwrap();
    }
}
