//! Bucket data keys: generated per bucket, stored only wrapped (sealed) by the node's
//! master key, and cached unwrapped in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use codec::{ChunkId, DataKey};

use crate::{ArchiveError, Bucket};

pub(crate) struct KeyCache {
    master: DataKey,
    cache: Mutex<HashMap<ChunkId, DataKey>>,
}

impl KeyCache {
    pub(crate) fn new(master: DataKey) -> Self {
        KeyCache {
            master,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh data key, sealed under the master key: (id, sealed bytes).
    pub(crate) fn wrap_new(&self) -> (ChunkId, Vec<u8>) {
        let key = DataKey::generate();
        let id = codec::chunk_id(&self.master, key.as_bytes());
        (id, codec::seal(&self.master, &id, key.as_bytes(), 0))
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
