//! The scrubber of a storage node: verifies every shard on its disks at a bounded rate,
//! drops corrupt records and notices vanished disks, then asks the catalog node to
//! rebuild what was lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shards::ShardStore;

use crate::membership::Membership;

/// Shards read and corrupt records removed in one pass over this node's disks.
pub fn verify_disks(store: &ShardStore, rate_bytes_per_sec: u64) -> (u64, u64) {
    let started = Instant::now();
    let (mut checked, mut removed, mut bytes) = (0u64, 0u64, 0u64);
    for disk in store.disks() {
        for (key, _) in disk.list() {
            checked += 1;
            match disk.read(&key) {
                Ok((_, data)) => bytes += data.len() as u64,
                Err(e) if e.is_missing() => {}
                Err(e) => {
                    tracing::warn!(shard = %key, error = %e, "scrub: corrupt shard dropped; asking for repair");
                    // The tombstone makes it read as missing, which repair rebuilds.
                    let d = disk.clone();
                    if futures::executor::block_on(d.delete(key)).is_ok() {
                        removed += 1;
                    }
                }
            }
            if rate_bytes_per_sec > 0 {
                let due = Duration::from_secs_f64(bytes as f64 / rate_bytes_per_sec as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
    }
    (checked, removed)
}

/// Disk checks every 30 s and a verification pass (then compaction) every `interval`;
/// anything lost is reported to the leader, which repairs it.
pub async fn run(
    store: Arc<ShardStore>,
    membership: Arc<Membership>,
    interval: Duration,
    rate_bytes_per_sec: u64,
) {
    let mut last_verify = Instant::now();
    let mut tick = tokio::time::interval(interval.min(Duration::from_secs(30)));
    loop {
        tick.tick().await;
        let s = store.clone();
        let verify = last_verify.elapsed() >= interval;
        let lost = tokio::task::spawn_blocking(move || {
            let vanished: usize = s.check_disks().iter().map(|h| h.lost).sum();
            let removed = if verify {
                let (checked, removed) = verify_disks(&s, rate_bytes_per_sec);
                tracing::info!(checked, removed, "scrub of this node's shards done");
                removed
            } else {
                0
            };
            vanished as u64 + removed
        })
        .await
        .unwrap_or(0);
        if verify {
            last_verify = Instant::now();
            // Shards the leader deleted here (garbage, strays) leave dead records; the
            // space returns when mostly-dead segments are rewritten.
            for disk in store.disks() {
                match disk.compact(0.5).await {
                    Ok(r) if r.segments_removed > 0 => tracing::info!(
                        disk = %disk.path().display(),
                        segments = r.segments_removed,
                        bytes = r.bytes_reclaimed,
                        "compacted"
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(disk = %disk.path().display(), error = %e, "compaction failed")
                    }
                }
            }
        }
        if lost > 0 {
            membership.request_repair();
        }
    }
}
