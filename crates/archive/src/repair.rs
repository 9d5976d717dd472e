//! The repair worker of a cluster: after a node goes down or comes back, a degraded
//! write, or a member's report of corrupt shards, it restores every chunk's redundancy
//! (rebuilding or moving shards to where placement wants them) at a bounded rate.

use std::time::{Duration, Instant};

use crate::{Archive, ScrubOptions, ScrubReport};

/// How long a first pass waits for a burst of triggers (a site going down) to settle.
const SETTLE: Duration = Duration::from_millis(500);
/// The pause before the pass that confirms one which changed something.
const CONFIRM_AFTER: Duration = Duration::from_millis(100);
/// A pass that left chunks short of full redundancy is retried after this long.
const RETRY_UNHEALTHY: Duration = Duration::from_secs(5);
/// How often an idle worker checks whether its node has become the leader.
const LEADERSHIP_CHECK: Duration = Duration::from_secs(2);
/// A request this node could not serve or hand on (no leader known, or its own
/// leadership unconfirmed: an election under way) is retried this often, for this long.
const OWED_RETRY: Duration = Duration::from_secs(1);
const OWED_FOR: Duration = Duration::from_secs(60);

/// What `cluster status` shows of repair.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RepairState {
    /// A repair pass is running now.
    pub running: bool,
    /// Passes since the node started.
    pub passes: u64,
    /// When the pass in progress, or the last one, started (seconds since the Unix
    /// epoch): tells whether a pass began after a given moment.
    #[serde(default)]
    pub last_started: f64,
    /// The pass in progress, or the last one.
    pub report: Option<ScrubReport>,
    /// How long the last finished pass took.
    pub last_seconds: f64,
    /// True once a whole pass found every shard where it belongs (and none lost).
    pub healthy: bool,
    /// Shards rebuilt or moved home since the node started, over all passes (repair
    /// passes and full scrubs alike).
    pub shards_repaired_total: u64,
}

impl Archive {
    /// Repair's progress, as `cluster status` shows it.
    pub fn repair_state(&self) -> RepairState {
        self.inner.repair.lock().expect("repair lock").clone()
    }

    /// The full scrub started from the admin API or console: the one in progress, or
    /// the last one (same shape as repair's progress).
    pub fn scrub_state(&self) -> RepairState {
        self.inner.scrub.lock().expect("scrub lock").clone()
    }

    /// One pass over every chunk: rebuild or move shards that are not where the current
    /// layout places them. Progress is visible in `repair_state` while it runs.
    pub async fn repair_pass(&self, rate_bytes_per_sec: Option<u64>) -> crate::Result<ScrubReport> {
        let opts = ScrubOptions {
            rate_bytes_per_sec,
            collect_garbage: false,
            repair_only: true,
        };
        self.tracked_pass(&self.inner.repair, &opts).await
    }

    /// A full scrub whose progress is visible in `scrub_state` while it runs.
    pub async fn tracked_scrub(&self, opts: &ScrubOptions) -> crate::Result<ScrubReport> {
        self.tracked_pass(&self.inner.scrub, opts).await
    }

    async fn tracked_pass(
        &self,
        state: &std::sync::Mutex<RepairState>,
        opts: &ScrubOptions,
    ) -> crate::Result<ScrubReport> {
        {
            let mut st = state.lock().expect("pass state lock");
            st.running = true;
            st.last_started = catalog::now_ns() as f64 / 1e9;
        }
        let started = Instant::now();
        let progress = |r: &ScrubReport| {
            state.lock().expect("pass state lock").report = Some(r.clone());
        };
        let result = self.scrub(opts, &progress).await;
        let mut st = state.lock().expect("pass state lock");
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
    /// Only the node leading the catalog repairs; any other hands requests to it. A pass
    /// that changed something is followed by another, to confirm, and a node that has
    /// just become leader runs one (its predecessor may have stopped mid-pass).
    pub async fn repair_worker(self, rate_bytes_per_sec: Option<u64>) {
        let Some(m) = self.cluster().cloned() else {
            return;
        };
        // Since when this node holds a request it could neither serve nor hand on.
        let mut owed: Option<Instant> = None;
        let mut led = false;
        loop {
            let st = self.repair_state();
            let unhealthy = !st.healthy && st.passes > 0;
            let wait = if owed.is_some() {
                OWED_RETRY
            } else if unhealthy {
                // Not at full redundancy yet (a node still away, a write that failed):
                // try again soon even if nothing asks.
                RETRY_UNHEALTHY
            } else {
                LEADERSHIP_CHECK
            };
            let asked = tokio::select! {
                _ = m.repair_requested() => true,
                _ = tokio::time::sleep(wait) => false,
            };
            let leads = m.leads();
            let became_leader = leads && !led;
            led = leads;
            if asked {
                owed.get_or_insert_with(Instant::now);
            }
            if owed.is_none() && !became_leader && !(unhealthy && leads) {
                continue;
            }
            let mut settle = SETTLE;
            loop {
                // Let a burst of triggers (a site going down) settle into one pass; a
                // confirming pass after one that changed something needs no such wait.
                tokio::time::sleep(settle).await;
                settle = CONFIRM_AFTER;
                // One node repairs at a time: the one leading the catalog, confirmed by
                // a majority (a leader cut off from the others may still think it leads).
                if !m.confirm_leads().await {
                    if let Some(since) = owed {
                        if m.hand_repair_to_leader().await {
                            owed = None;
                        } else if since.elapsed() > OWED_FOR {
                            tracing::warn!(
                                "no node confirmed as leader took a repair request for {OWED_FOR:?}; dropped (the next trigger asks again)"
                            );
                            owed = None;
                        }
                    }
                    break;
                }
                owed = None;
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
