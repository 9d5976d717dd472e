//! Bucket data keys: generated per bucket, stored only wrapped (sealed) by the node's
//! master key, and cached unwrapped in memory. Access-key secrets are sealed by the
//! same key before they reach the catalog, the Raft log or a snapshot (SigV4 needs the
//! secret itself on the server, so it cannot be a hash); they are opened on lookup.

use std::collections::HashMap;
use std::sync::Mutex;

use codec::{ChunkId, DataKey};

use crate::{ArchiveError, Bucket};

pub(crate) struct KeyCache {
    master: DataKey,
    cache: Mutex<HashMap<ChunkId, DataKey>>,
    /// Opened secrets by their sealed form: every signed request looks its key up.
    secrets: Mutex<HashMap<String, String>>,
}

/// How a sealed secret starts in the catalog; a secret without it was stored before
/// secrets were sealed, and is read as it is.
const SEALED_SECRET: &str = "sealed1:";

impl KeyCache {
    pub(crate) fn new(master: DataKey) -> Self {
        KeyCache {
            master,
            cache: Mutex::new(HashMap::new()),
            secrets: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh data key, sealed under the master key: (id, sealed bytes).
    pub(crate) fn wrap_new(&self) -> (ChunkId, Vec<u8>) {
        let key = DataKey::generate();
        let id = codec::chunk_id(&self.master, key.as_bytes());
        (id, codec::seal(&self.master, &id, key.as_bytes(), 0))
    }

    /// The sealed form of `access_key`'s secret: `sealed1:ID:SEALED` (hex), where the
    /// sealed plaintext is `ACCESS_KEY NUL SECRET` (so a sealed secret cannot be moved
    /// to another key) and ID its keyed hash, as for chunks.
    pub(crate) fn seal_secret(&self, access_key: &str, secret: &str) -> String {
        let plain = format!("{access_key}\0{secret}");
        let id = codec::chunk_id(&self.master, plain.as_bytes());
        let sealed = codec::seal(&self.master, &id, plain.as_bytes(), 0);
        format!("{SEALED_SECRET}{}:{}", codec::hex(&id), codec::hex(&sealed))
    }

    /// The secret of `access_key` from its stored form.
    pub(crate) fn open_secret(
        &self,
        access_key: &str,
        stored: &str,
    ) -> Result<String, ArchiveError> {
        let Some(rest) = stored.strip_prefix(SEALED_SECRET) else {
            return Ok(stored.to_string());
        };
        if let Some(s) = self.secrets.lock().expect("secret cache").get(stored) {
            return Ok(s.clone());
        }
        let bad = |why: &str| ArchiveError::Key(format!("access key {access_key}: {why}"));
        let (id, sealed) = rest
            .split_once(':')
            .ok_or_else(|| bad("malformed sealed secret"))?;
        let id: ChunkId = codec::unhex(id)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("malformed sealed secret"))?;
        let sealed = codec::unhex(sealed).ok_or_else(|| bad("malformed sealed secret"))?;
        let plain = codec::open(&self.master, &id, sealed).map_err(|e| bad(&e.to_string()))?;
        let plain = std::str::from_utf8(&plain).map_err(|_| bad("secret is not text"))?;
        let secret = plain
            .strip_prefix(access_key)
            .and_then(|r| r.strip_prefix('\0'))
            .ok_or_else(|| bad("the sealed secret belongs to another key"))?
            .to_string();
        self.secrets
            .lock()
            .expect("secret cache")
            .insert(stored.to_string(), secret.clone());
        Ok(secret)
    }

    pub(crate) fn data_key(&self, b: &Bucket) -> Result<DataKey, ArchiveError> {
        if let Some(k) = self.cache.lock().expect("key cache").get(&b.wrapped_key_id) {
            return Ok(k.clone());
        }
        let plain = codec::open(&self.master, &b.wrapped_key_id, b.wrapped_key.clone())
            .map_err(|e| ArchiveError::Key(format!("bucket {}: {e}", b.name)))?;
        let bytes: [u8; 32] = plain[..]
            .try_into()
            .map_err(|_| ArchiveError::Key(format!("bucket {}: bad key length", b.name)))?;
        let k = DataKey::from_bytes(bytes);
        self.cache
            .lock()
            .expect("key cache")
            .insert(b.wrapped_key_id, k.clone());
        Ok(k)
    }
}
