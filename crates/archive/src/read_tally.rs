//! Shard bytes one piece of work read, by where they came from: this node's disks,
//! another node of its site, another site. Compute jobs measure their locality with it
//! (`tally_reads` around a task; every shard read inside is counted).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shard bytes read, by origin.
#[derive(Debug, Default)]
pub struct ReadTally {
    /// From this node's disks.
    pub local: AtomicU64,
    /// From another node of this node's site.
    pub site: AtomicU64,
    /// From a node in another site.
    pub cross: AtomicU64,
}

impl ReadTally {
    /// (local, site, cross) bytes so far.
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.local.load(Ordering::Relaxed),
            self.site.load(Ordering::Relaxed),
            self.cross.load(Ordering::Relaxed),
        )
    }
}

tokio::task_local! {
    static TALLY: Arc<ReadTally>;
}

/// Runs `work`, counting into `tally` every shard it reads (in this tokio task).
pub async fn tally_reads<F: Future>(tally: Arc<ReadTally>, work: F) -> F::Output {
    TALLY.scope(tally, work).await
}

/// Where a shard came from.
pub(crate) enum Origin {
    Local,
    Site,
    Cross,
}

/// Counts a shard read, when the work around it is being tallied.
pub(crate) fn count(origin: Origin, bytes: usize) {
    let _ = TALLY.try_with(|t| {
        let counter = match origin {
            Origin::Local => &t.local,
            Origin::Site => &t.site,
            Origin::Cross => &t.cross,
        };
        counter.fetch_add(bytes as u64, Ordering::Relaxed);
    });
}
