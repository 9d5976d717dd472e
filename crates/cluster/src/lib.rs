//! The cluster: node identity, membership and layout, and node-to-node RPC over mutual
//! TLS. The archive uses it to put shards on other nodes' disks and read them back.
//!
//! - `identity`: node keys and ids, the cluster secret.
//! - `invite`: one-time invitation tokens, traded for the secret.
//! - `tls`: the cluster authority derived from the secret; each node's certificate.
//! - `layout`: sites, nodes, disks, states; placement spots and default policies.
//! - `capacity`: each node's CPUs, memory and load, and the ranking that places
//!   containers and job tasks by them.
//! - `membership`: joining, layout pushes, heartbeats and failure detection.
//! - `rpc` / `client`: the node-to-node API (shards, health, join, layout).
//! - `shard_batch`: many shards per request (repair, rebalance, scrubs).
//! - `server`: the one HTTP server loop behind every HTTP listener of the node (limits,
//!   timeouts, accept errors).

pub mod capacity;
pub mod client;
mod error;
pub mod identity;
pub mod invite;
pub mod layout;
pub mod membership;
pub mod mutual_tls;
pub mod rpc;
pub mod scrubber;
pub mod server;
pub mod shard_batch;

pub use client::{Client, DiskHealth, NodeHealth, RpcError, ShardEntry};
pub use error::ClusterError;
pub use identity::{ClusterSecret, NodeId, NodeKey};
pub use layout::{DiskInfo, DiskRef, Layout, NodeInfo, NodeState};
pub use membership::{ClusterStatus, LayoutStore, Membership, NodeStatus, StartOptions};
pub use mutual_tls::NodeTls;
pub use shard_batch::{Fetched, PutHeader, ShardRef};
