//! Chunks that uploads through this node are storing and have not committed yet. Their
//! shards have no chunk record in the catalog until the upload commits, so to garbage
//! collection they look like orphans; it asks every node for this set first and spares
//! them, however long the upload runs (a slow client, a long FTP STOR, a big part).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use codec::ChunkId;

/// Chunks being written now, which garbage collection must leave alone.
#[derive(Default)]
pub struct Uploading {
    ids: Mutex<HashMap<ChunkId, usize>>,
}

impl Uploading {
    /// A hold for one upload: the chunks added to it stay in the set until it drops
    /// (after the upload committed, or failed).
    pub fn hold(self: &Arc<Self>) -> UploadHold {
        UploadHold {
            set: self.clone(),
            ids: Mutex::new(Vec::new()),
        }
    }

    /// True while `id` is being written.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.ids.lock().expect("uploading lock").contains_key(id)
    }

    /// Every chunk held now.
    pub fn list(&self) -> Vec<ChunkId> {
        self.ids
            .lock()
            .expect("uploading lock")
            .keys()
            .copied()
            .collect()
    }
}

/// One upload's chunks (see [`Uploading::hold`]).
pub struct UploadHold {
    set: Arc<Uploading>,
    ids: Mutex<Vec<ChunkId>>,
}

impl UploadHold {
    /// Holds `id`: call before its shards are written.
    pub fn add(&self, id: ChunkId) {
        *self
            .set
            .ids
            .lock()
            .expect("uploading lock")
            .entry(id)
            .or_default() += 1;
        self.ids.lock().expect("hold lock").push(id);
    }
}

impl Drop for UploadHold {
    fn drop(&mut self) {
        let mine = std::mem::take(&mut *self.ids.lock().expect("hold lock"));
        let mut ids = self.set.ids.lock().expect("uploading lock");
        for id in mine {
            if let Some(n) = ids.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    ids.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_stays_held_until_every_upload_holding_it_ends() {
        let set = Arc::new(Uploading::default());
        let (a, b) = (set.hold(), set.hold());
        a.add([1; 32]);
        b.add([1; 32]);
        b.add([2; 32]);
        drop(b);
        assert!(set.contains(&[1; 32]) && !set.contains(&[2; 32]));
        drop(a);
        assert!(set.list().is_empty());
    }
}
