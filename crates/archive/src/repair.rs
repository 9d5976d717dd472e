//! The repair worker of a cluster: after a node goes down or comes back, a degraded
//! write, or a member's report of corrupt shards, it restores every chunk's redundancy
//! (rebuilding or moving shards to where placement wants them) at a bounded rate.

use std::time::{Duration, Instant};

use crate::{Archive, ScrubOptions, ScrubReport};

/// A pass that left chunks short of full redundancy is retried after this long.
const RETRY_UNHEALTHY: Duration = Duration::from_secs(5);

/// What `cluster status` shows of repair.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RepairState {
    pub running: bool,
    pub passes: u64,
    /// The pass in progress, or the last one.
    pub report: Option<ScrubReport>,
    pub last_seconds: f64,
    /// True once a whole pass found every shard where it belongs (and none lost).
    pub healthy: bool,
    /// Shards rebuilt or moved home since the node started, over all passes (repair
    /// passes and full scrubs alike).
    pub shards_repaired_total: u64,
}

impl Archive {
    pub fn repair_state(&self) -> RepairState {
        self.inner.repair.lock().expect("repair lock").clone()
    }

    /// One pass over every chunk: rebuild or move shards that are not where the current
    /// layout places them. Progress is visible in `repair_state` while it runs.
    pub async fn repair_pass(&self, rate_bytes_per_sec: Option<u64>) -> crate::Result<ScrubReport> {
        self.inner.repair.lock().expect("repair lock").running = true;
        let started = Instant::now();
        let opts = ScrubOptions {
            rate_bytes_per_sec,
            collect_garbage: false,
            repair_only: true,
        };
        let progress = |r: &ScrubReport| {
            self.inner.repair.lock().expect("repair lock").report = Some(r.clone());
        };
        let result = self.scrub(&opts, &progress).await;
        let mut st = self.inner.repair.lock().expect("repair lock");
        st.running = false;
        st.passes += 1;
        st.last_seconds = started.elapsed().as_secs_f64();
        if let Ok(r) = &result {
            st.healthy = r.shards_missing == 0
                && r.shards_corrupt == 0
                && r.chunks_unrecoverable.is_empty()
                && r.stray_shards_removed == 0;
            st.report = Some(r.clone());
        }
        result
    }

    /// Runs repair passes whenever the cluster asks for one, until the process ends.
    /// A pass that changed something is followed by another, to confirm.
    pub async fn repair_worker(self, rate_bytes_per_sec: Option<u64>) {
        let Some(m) = self.cluster().cloned() else {
            return;
        };
        loop {
            if self.repair_state().healthy || self.repair_state().passes == 0 {
                m.repair_requested().await;
            } else {
                // Not at full redundancy yet (a node still away, a write that failed):
                // try again soon even if nothing asks.
                tokio::select! {
                    _ = m.repair_requested() => {}
                    _ = tokio::time::sleep(RETRY_UNHEALTHY) => {}
                }
            }
            loop {
                // Let a burst of triggers (a site going down) settle into one pass.
                tokio::time::sleep(Duration::from_millis(500)).await;
                // One node repairs at a time: the one leading the catalog, confirmed by
                // a majority (a leader cut off from the others may still think it leads).
                if !m.confirm_leads().await {
                    break;
                }
                match self.repair_pass(rate_bytes_per_sec).await {
                    Ok(r) => {
                        tracing::info!(
                            chunks = r.chunks_checked,
                            missing = r.shards_missing,
                            repaired = r.shards_repaired,
                            strays = r.stray_shards_removed,
                            lost = r.chunks_unrecoverable.len(),
                            "repair pass done"
                        );
                        if r.shards_repaired == 0 && r.stray_shards_removed == 0 {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "repair pass failed");
                        break;
                    }
                }
            }
        }
    }
}
