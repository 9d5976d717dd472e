//! Signed boot configuration. An image built with a signing key
//! (`node-image build --signing-key FILE`) carries the key's public half at
//! `/etc/edgecloud/boot.pub`; the boot server signs the kernel command line it hands
//! out (`serve --boot-key FILE`), and init checks the signature before it starts the
//! node: a command line changed on the way (another cluster to join, another disk
//! policy, another secret) starts nothing.
//!
//! What is signed: every word of the kernel command line but `edgecloud.sig=` itself
//! and `BOOT_IMAGE=` (which some boot loaders add), in order, quotes taken off, one per
//! line after the line `edgecloud boot configuration v1`. The signature is Ed25519,
//! base64url without padding, in `edgecloud.sig=`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use crate::{NetbootError, Result};

/// A boot signing key (Ed25519).
pub type SigningKey = Ed25519KeyPair;

/// Where the image keeps the public key (relative to its root).
pub const PUBLIC_KEY_PATH: &str = "etc/edgecloud/boot.pub";
/// The parameter that carries the signature.
pub const SIG_PARAM: &str = "edgecloud.sig=";
const DOMAIN: &str = "edgecloud boot configuration v1";

fn bad(why: String) -> NetbootError {
    NetbootError::Boot(why)
}

/// A new signing key: its file's text (the 32-byte seed, base64) and the public key
/// (base64).
pub fn generate() -> Result<(String, String)> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| bad(e.to_string()))?;
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| bad(e.to_string()))?;
    Ok((
        format!("{}\n", STANDARD.encode(seed)),
        STANDARD.encode(pair.public_key().as_ref()),
    ))
}

/// The key in a key file's text (a base64 seed, as [`generate`] writes it).
pub fn key_from(text: &str) -> Result<Ed25519KeyPair> {
    let seed = STANDARD
        .decode(text.trim())
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or_else(|| {
            bad("not a boot signing key (32 bytes, base64): make one with `edgecloud node-image keygen`".into())
        })?;
    Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| bad(e.to_string()))
}

/// The public half of `key`, base64.
pub fn public_key(key: &Ed25519KeyPair) -> String {
    STANDARD.encode(key.public_key().as_ref())
}

/// The bytes signed for a command line's words.
fn message(words: &[String]) -> Vec<u8> {
    let mut m = DOMAIN.to_string();
    for w in words {
        if w.starts_with(SIG_PARAM) || w.starts_with("BOOT_IMAGE=") {
            continue;
        }
        m.push('\n');
        m.push_str(w);
    }
    m.into_bytes()
}

/// `args` with its signature appended as `edgecloud.sig=`.
pub fn sign(key: &Ed25519KeyPair, args: &str) -> String {
    let sig = key.sign(&message(&crate::init::words(args)));
    format!(
        "{} {SIG_PARAM}{}",
        args.trim_end(),
        URL_SAFE_NO_PAD.encode(sig.as_ref())
    )
}

/// Checks the command line `cmdline` against `public_key` (base64).
pub fn verify(public_key: &str, cmdline: &str) -> Result<()> {
    let key = STANDARD
        .decode(public_key.trim())
        .map_err(|e| bad(format!("the image's boot key is damaged: {e}")))?;
    let words = crate::init::words(cmdline);
    let sig = words
        .iter()
        .find_map(|w| w.strip_prefix(SIG_PARAM))
        .ok_or_else(|| {
            bad("the boot configuration is not signed (no edgecloud.sig), and this image takes signed ones only".into())
        })?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| bad("edgecloud.sig is not a signature".into()))?;
    UnparsedPublicKey::new(&ED25519, key)
        .verify(&message(&words), &sig)
        .map_err(|_| {
            bad("the boot configuration's signature does not match it: it was changed after it was signed, or signed with another key".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_command_line_verifies_and_any_change_does_not() {
        let (file, public) = generate().unwrap();
        let key = key_from(&file).unwrap();
        assert_eq!(public_key(&key), public);
        let args = "initrd=initramfs.img console=ttyS0 edgecloud.serve=\"--site lab --join 10.0.0.1:9420\" edgecloud.image=abc";
        let signed = sign(&key, args);
        assert!(signed.starts_with(args) && signed.contains(" edgecloud.sig="));
        verify(&public, &signed).unwrap();
        // As the kernel shows it, with what a boot loader adds.
        verify(&public, &format!("BOOT_IMAGE=/vmlinuz {signed}\n")).unwrap();
        for changed in [
            signed.replace("lab", "lob"),
            signed.replace("console=ttyS0 ", ""),
            signed.replace("edgecloud.image=abc", "edgecloud.image=abd"),
            format!("{signed} edgecloud.format=never"),
            format!("init=/bin/sh {signed}"),
        ] {
            let e = verify(&public, &changed).unwrap_err().to_string();
            assert!(e.contains("does not match"), "{changed}: {e}");
        }
        let e = verify(&public, args).unwrap_err().to_string();
        assert!(e.contains("not signed"), "{e}");
        let (_, other) = generate().unwrap();
        assert!(verify(&other, &signed).is_err(), "another key");
        assert!(key_from("not a key").is_err());
    }
}
