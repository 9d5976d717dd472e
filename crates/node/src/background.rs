//! What a node runs in the background besides its servers: publishing and cosigning
//! the ledger, checking disks, and the periodic scrub.

use std::sync::Arc;
use std::time::Duration;

use archive::{Archive, ScrubOptions};
use tokio::task::JoinHandle;

/// Publishes a new checkpoint every second when the log grew, and has the other voters
/// of the catalog cosign it (each from its own replica of the log).
pub(crate) fn publish_ledger(
    auditor: Arc<archive::audit::Auditor>,
    client: cluster::Client,
    replica: Arc<consensus::Replica>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // The checkpoint last sent for cosigning, and how many voters cosigned it.
        let mut asked: (Vec<u8>, usize) = (Vec::new(), 0);
        loop {
            tick.tick().await;
            let a = auditor.clone();
            match tokio::task::spawn_blocking(move || a.catch_up_whole_tiles()).await {
                Ok(Err(e)) => tracing::error!(error = %e, "ledger publishing failed"),
                Err(e) => tracing::error!(error = %e, "ledger task failed"),
                Ok(Ok(_)) => {}
            }
            let voters: Vec<String> = replica
                .members()
                .into_iter()
                .filter(|(m, voter)| *voter && m.node != replica.me.node)
                .map(|(m, _)| m.addr)
                .collect();
            let cp = auditor.checkpoint();
            let body = cp
                .split(|b| *b == b'\n')
                .take(3)
                .flatten()
                .copied()
                .collect::<Vec<u8>>();
            if voters.is_empty() || (asked.0 == body && asked.1 >= voters.len()) {
                continue;
            }
            let got = admin::peers::collect_cosignatures(&auditor, &client, &voters).await;
            if asked.0 != body || got > asked.1 {
                asked = (body, got);
            }
        }
    })
}

/// Disk checks every 30 s; a full, rate-limited scrub (with garbage collection) on
/// every interval, on the leading node.
pub(crate) fn check_and_scrub(
    archive: Archive,
    scrub_interval: Duration,
    rate_bytes_per_sec: u64,
) -> [JoinHandle<()>; 2] {
    let a = archive.clone();
    let disk_checks = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            let probe = a.clone();
            let lost = tokio::task::spawn_blocking(move || {
                probe.disk_health().iter().map(|h| h.lost).sum::<usize>()
            })
            .await
            .unwrap_or(0);
            if lost > 0
                && let Some(m) = a.cluster()
            {
                m.request_repair();
            }
        }
    });
    let scrubs = tokio::spawn(async move {
        loop {
            tokio::time::sleep(scrub_interval).await;
            // In a cluster the leading node scrubs every chunk and collects garbage;
            // each node's own scrubber verifies its disks.
            if let Some(m) = archive.cluster()
                && !m.confirm_leads().await
            {
                continue;
            }
            let opts = ScrubOptions {
                rate_bytes_per_sec: Some(rate_bytes_per_sec),
                collect_garbage: true,
                repair_only: false,
            };
            match archive.scrub(&opts, &|_| {}).await {
                Ok(r) => tracing::info!(
                    chunks = r.chunks_checked,
                    repaired = r.shards_repaired,
                    lost = r.chunks_unrecoverable.len(),
                    "background scrub done"
                ),
                Err(e) => tracing::error!(error = %e, "background scrub failed"),
            }
        }
    });
    [disk_checks, scrubs]
}
