//! What each node can still take (CPUs and memory, and what its containers and job
//! tasks hold of them), reported with every heartbeat, and the one ranking of nodes that
//! both the container scheduler (`edgecloud run --site/--node`) and the jobs scheduler
//! (a task whose data holders are busy) place work by.
//!
//! Memory is booked the way Kubernetes and Nomad book it: a container's `--memory` is
//! reserved on its node whether it uses it or not, and a container is placed only where
//! the node's memory less what is reserved there holds it. CPUs are shared: `--cpus`
//! must fit in the node, but nodes are ranked by how much of their CPUs is spoken for,
//! not refused.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::identity::NodeId;

/// What a container without `--cpus` counts as on its node's CPUs when ranking.
pub const DEFAULT_CPUS: f64 = 0.25;
/// What a container without `--memory` counts as on its node's memory when ranking.
pub const DEFAULT_MEMORY: u64 = 64 << 20;

/// What runs on a node, as the node's services count it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Running containers.
    pub containers: u32,
    /// The sum of their CPU limits ([`DEFAULT_CPUS`] for one without).
    pub cpus_reserved: f64,
    /// The sum of their memory limits (nothing for one without).
    pub memory_reserved: u64,
    /// Job tasks running on the node.
    pub tasks: u32,
}

/// A node's size and load, as its heartbeat reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// CPUs the node may use.
    pub cpus: f64,
    /// Its memory (MemTotal).
    pub memory_total: u64,
    /// Memory the kernel could hand out now (MemAvailable).
    pub memory_available: u64,
    /// What its containers and tasks hold.
    pub load: Load,
}

impl Capacity {
    /// This machine's size with `load` on it.
    pub fn measure(load: Load) -> Capacity {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map_or(0, |kib| kib << 10)
        };
        Capacity {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            memory_total: field("MemTotal:"),
            memory_available: field("MemAvailable:"),
            load,
        }
    }

    /// Memory not reserved by containers.
    pub fn memory_unreserved(&self) -> u64 {
        self.memory_total.saturating_sub(self.load.memory_reserved)
    }

    /// How much of the node `need` would leave spoken for, 0 (idle) to 1 (full) or
    /// more: the larger of the CPU and the memory share.
    fn share_after(&self, need: &Need) -> f64 {
        let cpus =
            self.load.cpus_reserved + self.load.tasks as f64 + need.cpus.unwrap_or(DEFAULT_CPUS);
        let memory = self.load.memory_reserved + need.memory.unwrap_or(DEFAULT_MEMORY);
        let cpu_share = cpus / self.cpus.max(1.0);
        let memory_share = memory as f64 / self.memory_total.max(1) as f64;
        cpu_share.max(memory_share)
    }
}

/// What a container (or task) asks of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Need {
    /// `--cpus`.
    pub cpus: Option<f64>,
    /// `--memory`, bytes.
    pub memory: Option<u64>,
}

/// A node work may go to.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its id.
    pub id: NodeId,
    /// Its site.
    pub site: String,
    /// Its node-to-node address.
    pub rpc_addr: String,
    /// Whether it is this node.
    pub me: bool,
    /// Its size and load (this node's measured now, the others' from their last
    /// heartbeat, plus what was placed there since).
    pub capacity: Capacity,
}

/// Where work must go: a site, a node (id, id prefix or node-to-node address), or
/// anywhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    /// Only nodes of this site.
    pub site: Option<String>,
    /// Only this node.
    pub node: Option<String>,
}

impl Constraint {
    fn admits(&self, c: &Candidate) -> bool {
        self.site.as_ref().is_none_or(|s| &c.site == s)
            && self.node.as_ref().is_none_or(|n| {
                let n = n.as_str();
                c.id.0 == n
                    || (n.len() >= 4 && c.id.0.starts_with(n))
                    || c.rpc_addr == n
                    || c.rpc_addr
                        .rsplit_once(':')
                        .is_some_and(|(host, _)| host == n)
            })
    }

    fn describe(&self) -> String {
        match (&self.site, &self.node) {
            (Some(s), Some(n)) => format!("node {n} in site {s}"),
            (Some(s), None) => format!("site {s}"),
            (None, Some(n)) => format!("node {n}"),
            (None, None) => "the cluster".into(),
        }
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Why work cannot be placed; the text says what to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Unplaceable {
    /// No active node is the site or node asked for.
    NoMatch(String),
    /// The nodes asked for have no room for it.
    NoRoom(String),
}

impl std::fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unplaceable::NoMatch(m) | Unplaceable::NoRoom(m) => f.write_str(m),
        }
    }
}

/// The candidates that `need` fits on and `constraint` admits, best first: least
/// spoken for after placing it, then most memory free now, then this node (no hop),
/// then by id. Err says why none fits, and what to do.
pub fn rank(
    candidates: &[Candidate],
    need: &Need,
    constraint: &Constraint,
) -> Result<Vec<Candidate>, Unplaceable> {
    let admitted: Vec<&Candidate> = candidates.iter().filter(|c| constraint.admits(c)).collect();
    if admitted.is_empty() {
        let known: Vec<String> = candidates
            .iter()
            .map(|c| format!("{} ({}, site {})", c.id, c.rpc_addr, c.site))
            .collect();
        return Err(Unplaceable::NoMatch(format!(
            "no active node matches {}; the active nodes are: {}",
            constraint.describe(),
            known.join(", ")
        )));
    }
    let mut fits: Vec<Candidate> = admitted
        .iter()
        .filter(|c| {
            let cap = &c.capacity;
            need.memory.is_none_or(|m| cap.memory_unreserved() >= m)
                && need.cpus.is_none_or(|n| n <= cap.cpus)
        })
        .map(|c| (*c).clone())
        .collect();
    if fits.is_empty() {
        let most_memory = admitted
            .iter()
            .map(|c| c.capacity.memory_unreserved())
            .max()
            .unwrap_or(0);
        let most_cpus = admitted.iter().map(|c| c.capacity.cpus).fold(0.0, f64::max);
        let mut wants = Vec::new();
        if let Some(m) = need.memory {
            wants.push(format!(
                "{} of memory (the most any has unreserved is {})",
                gib(m),
                gib(most_memory)
            ));
        }
        if let Some(n) = need.cpus {
            wants.push(format!("{n} CPUs (the most any has is {most_cpus})"));
        }
        return Err(Unplaceable::NoRoom(format!(
            "no node in {} has room for {}: stop or remove containers there, ask for less, or place it elsewhere",
            constraint.describe(),
            wants.join(" and ")
        )));
    }
    fits.sort_by(|a, b| {
        let (sa, sb) = (a.capacity.share_after(need), b.capacity.share_after(need));
        sa.total_cmp(&sb)
            .then(
                b.capacity
                    .memory_available
                    .cmp(&a.capacity.memory_available),
            )
            .then(b.me.cmp(&a.me))
            .then(a.id.0.cmp(&b.id.0))
    });
    Ok(fits)
}

/// Work placed on nodes since their last heartbeat: counted into their load until a
/// heartbeat sent after the node took it reports it, so that runs placed within a
/// second of each other spread instead of all going to the node that looked idlest.
#[derive(Default)]
pub struct Placements {
    recent: std::sync::Mutex<Vec<Placement>>,
    next: std::sync::atomic::AtomicU64,
}

struct Placement {
    token: u64,
    node: NodeId,
    need: Need,
    /// When the node took it (or when it was sent there, while in flight).
    at: Instant,
}

/// How long a placement is counted without a heartbeat (heartbeats come each second).
const COUNTED_FOR: Duration = Duration::from_secs(5);

impl Placements {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Placement>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `need` is being placed on `node`; call [`Placements::taken`] or
    /// [`Placements::failed`] with the token when the node answers.
    pub fn placed(&self, node: &NodeId, need: &Need) -> u64 {
        let token = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut r = self.lock();
        r.retain(|p| p.at.elapsed() < COUNTED_FOR);
        r.push(Placement {
            token,
            node: node.clone(),
            need: need.clone(),
            at: Instant::now(),
        });
        token
    }

    /// The node took it: heartbeats sent from now on count it.
    pub fn taken(&self, token: u64) {
        if let Some(p) = self.lock().iter_mut().find(|p| p.token == token) {
            p.at = Instant::now();
        }
    }

    /// The node did not take it.
    pub fn failed(&self, token: u64) {
        self.lock().retain(|p| p.token != token);
    }

    /// Adds to `load` what was placed on `node` after `reported` (when the heartbeat
    /// that measured its load was sent).
    pub fn add_since(&self, node: &NodeId, reported: Option<Instant>, load: &mut Load) {
        for p in self.lock().iter() {
            if &p.node == node && p.at.elapsed() < COUNTED_FOR && reported.is_none_or(|t| p.at > t)
            {
                load.containers += 1;
                load.cpus_reserved += p.need.cpus.unwrap_or(DEFAULT_CPUS);
                load.memory_reserved += p.need.memory.unwrap_or(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Unplaceable {
        fn contains(&self, s: &str) -> bool {
            self.to_string().contains(s)
        }
    }

    const GIB: u64 = 1 << 30;

    fn node(id: &str, site: &str, me: bool, reserved_gib: u64, containers: u32) -> Candidate {
        Candidate {
            id: NodeId(id.into()),
            site: site.into(),
            rpc_addr: format!("10.0.0.{}:9420", id.len()),
            me,
            capacity: Capacity {
                cpus: 4.0,
                memory_total: 16 * GIB,
                memory_available: 12 * GIB,
                load: Load {
                    containers,
                    cpus_reserved: containers as f64 * DEFAULT_CPUS,
                    memory_reserved: reserved_gib * GIB,
                    tasks: 0,
                },
            },
        }
    }

    fn ids(r: &[Candidate]) -> Vec<&str> {
        r.iter().map(|c| c.id.0.as_str()).collect()
    }

    #[test]
    fn the_least_loaded_node_comes_first_and_this_node_wins_ties() {
        let nodes = [
            node("aaaa", "s1", false, 0, 0),
            node("bbbb", "s1", true, 0, 0),
            node("cccc", "s2", false, 8, 1),
        ];
        let r = rank(&nodes, &Need::default(), &Constraint::default()).unwrap();
        assert_eq!(ids(&r), ["bbbb", "aaaa", "cccc"]);
    }

    #[test]
    fn reserved_memory_is_booked_and_a_site_or_node_is_kept_to() {
        let nodes = [
            node("aaaa", "s1", true, 0, 0),
            node("bbbb", "s2", false, 10, 1),
            node("cccc", "s2", false, 4, 1),
        ];
        let need = Need {
            memory: Some(8 * GIB),
            cpus: None,
        };
        let in_s2 = Constraint {
            site: Some("s2".into()),
            node: None,
        };
        assert_eq!(ids(&rank(&nodes, &need, &in_s2).unwrap()), ["cccc"]);
        let big = Need {
            memory: Some(13 * GIB),
            cpus: None,
        };
        let e = rank(&nodes, &big, &in_s2).unwrap_err();
        assert!(
            e.contains("site s2") && e.contains("13.0 GiB") && e.contains("12.0 GiB"),
            "{e}"
        );
        let by_prefix = Constraint {
            site: None,
            node: Some("bbb".into()),
        };
        assert!(
            rank(&nodes, &need, &by_prefix).is_err(),
            "3 characters are no prefix"
        );
        let by_id = Constraint {
            site: None,
            node: Some("bbbb".into()),
        };
        assert!(rank(&nodes, &need, &by_id).unwrap_err().contains("room"));
        let by_host = Constraint {
            site: None,
            node: Some("10.0.0.4".into()),
        };
        assert_eq!(rank(&nodes, &Need::default(), &by_host).unwrap().len(), 3);
        let nowhere = Constraint {
            site: Some("s9".into()),
            node: None,
        };
        assert!(
            rank(&nodes, &need, &nowhere)
                .unwrap_err()
                .contains("no active node matches site s9")
        );
        let too_many_cpus = Need {
            cpus: Some(8.0),
            memory: None,
        };
        assert!(rank(&nodes, &too_many_cpus, &Constraint::default()).is_err());
    }

    #[test]
    fn placements_count_until_a_later_heartbeat() {
        let p = Placements::default();
        let id = NodeId("aaaa".into());
        let need = Need {
            cpus: None,
            memory: Some(GIB),
        };
        let before = Instant::now();
        let token = p.placed(&id, &need);
        let mut load = Load::default();
        p.add_since(&id, Some(before), &mut load);
        assert_eq!((load.containers, load.memory_reserved), (1, GIB));
        // A heartbeat sent while the node was still starting it does not show it...
        let during = Instant::now();
        p.taken(token);
        let mut still = Load::default();
        p.add_since(&id, Some(during), &mut still);
        assert_eq!(still.memory_reserved, GIB);
        // ... one sent after it took it does.
        let mut later = Load::default();
        p.add_since(&id, Some(Instant::now()), &mut later);
        assert_eq!(later, Load::default());
        let other = NodeId("bbbb".into());
        let failed = p.placed(&other, &need);
        p.failed(failed);
        let mut none = Load::default();
        p.add_since(&other, None, &mut none);
        assert_eq!(none, Load::default());
    }
}
