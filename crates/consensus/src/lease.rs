//! The leader's read lease: for a short while after a majority of voters last
//! acknowledged this node as leader, no other node can lead, so a read barrier needs no
//! heartbeat round to confirm the leadership.
//!
//! Why it holds (openraft 0.9): a follower that heard from a leader refuses to vote for
//! another candidate for `election_timeout_max` (openraft's leader lease) and calls no
//! election of its own for that plus an election timeout. An acknowledgement names the
//! moment the leader *sent* its heartbeat, so a majority heard from it at or after that
//! moment; any new leader needs a vote from one of them. `LEASE_READ`, half the
//! smallest election timeout, is well inside that, with room for a late wake-up here.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::Raft;

/// `Replica::start`'s smallest election timeout, in milliseconds.
pub(crate) const ELECTION_TIMEOUT_MIN: u64 = 1000;

/// How long after a majority's acknowledgement a leader answers reads on its own.
const LEASE_READ: Duration = Duration::from_millis(ELECTION_TIMEOUT_MIN / 2);

/// When a majority of voters last acknowledged this node as leader, and in which term.
#[derive(Default)]
pub(crate) struct Lease(Mutex<Option<(u64, Instant)>>);

impl Lease {
    /// Follows the Raft core's metrics (published on every turn of its loop, with the
    /// time since the last majority acknowledgement) for as long as the node runs.
    pub(crate) async fn track(self: Arc<Self>, raft: Raft) {
        let mut metrics = raft.metrics();
        loop {
            let acked = {
                let m = metrics.borrow_and_update();
                match (m.state, m.millis_since_quorum_ack) {
                    // One millisecond more: the figure is rounded down.
                    (ServerState::Leader, Some(ms)) => Instant::now()
                        .checked_sub(Duration::from_millis(ms + 1))
                        .map(|t| (m.vote.leader_id().get_term(), t)),
                    _ => None,
                }
            };
            *self.0.lock().expect("lease lock") = acked;
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// If this node leads under a valid lease: the index of its last log entry (None for
    /// an empty log), which a read must wait to be applied. It covers every write
    /// acknowledged so far, by this leader or an earlier one.
    pub(crate) fn read_index(&self, raft: &Raft) -> Option<Option<u64>> {
        let (term, acked) = (*self.0.lock().expect("lease lock"))?;
        let m = raft.metrics();
        let m = m.borrow();
        let valid = m.state == ServerState::Leader
            && m.vote.leader_id().get_term() == term
            && acked.elapsed() < LEASE_READ;
        valid.then_some(m.last_log_index)
    }
}
