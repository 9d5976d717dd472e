//! Server-side encryption with customer keys (S3's SSE-C): the client sends a 256-bit
//! key with every write and read of the object, and the node never stores it.
//!
//! The object's chunks are sealed, and their ids keyed, with a key derived from the
//! bucket's data key and the customer's key, so the data cannot be read without both:
//! neither a stolen disk, nor the catalog, nor the node's master key alone opens it.
//! What is stored is a verifier (a keyed hash of the customer key under the bucket
//! key), so a wrong key is refused before any chunk is read. Deduplication works only
//! among objects written with the same key.

use codec::DataKey;

use crate::{ArchiveError, Result, Version};

/// Version metadata: the verifier of the customer key (hex).
pub const VERIFIER: &str = ":sse-c";

/// A customer-provided key (SSE-C). Never stored, never printed.
#[derive(Clone)]
pub struct CustomerKey(pub [u8; 32]);

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerKey(..)")
    }
}

impl CustomerKey {
    /// The key that seals this object's chunks.
    pub(crate) fn object_key(&self, bucket_key: &DataKey) -> DataKey {
        let mut h = blake3::Hasher::new_derive_key("edgecloud 2026 sse-c object key v1");
        h.update(bucket_key.as_bytes());
        h.update(&self.0);
        DataKey::from_bytes(*h.finalize().as_bytes())
    }

    /// What is stored to recognise the key later.
    pub(crate) fn verifier(&self, bucket_key: &DataKey) -> String {
        let k = blake3::derive_key("edgecloud 2026 sse-c verifier v1", bucket_key.as_bytes());
        codec::hex(blake3::keyed_hash(&k, &self.0).as_bytes())
    }
}

/// The key that opens `v`'s chunks: the bucket's, or the one derived from the
/// customer's key, which must be the one the version was written with.
pub(crate) fn opening_key(
    bucket_key: DataKey,
    meta: &std::collections::BTreeMap<String, String>,
    given: Option<&CustomerKey>,
) -> Result<DataKey> {
    match (meta.get(VERIFIER), given) {
        (None, None) => Ok(bucket_key),
        (Some(_), None) => Err(ArchiveError::CustomerKey(
            "the object is encrypted with a customer key (SSE-C): send the key with the request"
                .into(),
        )),
        (None, Some(_)) => Err(ArchiveError::CustomerKey(
            "the object is not encrypted with a customer key: send no SSE-C headers".into(),
        )),
        (Some(stored), Some(k)) => {
            // blake3's Hash compares in constant time.
            let want = blake3::Hash::from_hex(k.verifier(&bucket_key)).ok();
            if want.is_none() || blake3::Hash::from_hex(stored).ok() != want {
                return Err(ArchiveError::CustomerKey(
                    "the customer key (SSE-C) is not the one the object was written with".into(),
                ));
            }
            Ok(k.object_key(&bucket_key))
        }
    }
}

impl crate::Archive {
    /// Checks that `key` is what reading `v` needs (HEAD answers as GET would).
    pub fn check_customer_key(
        &self,
        bucket: &str,
        v: &Version,
        key: Option<&CustomerKey>,
    ) -> Result<()> {
        // The common case needs no bucket key (every HEAD and file gateway read asks).
        if key.is_none() && !v.meta.contains_key(VERIFIER) {
            return Ok(());
        }
        let b = self.bucket(bucket)?;
        opening_key(self.inner.keys.data_key(&b)?, &v.meta, key).map(|_| ())
    }
}
