//! The node-to-node client: shard reads and writes, heartbeats, joining, layout pushes.
//! HTTP/1.1 over mutual TLS (reqwest with this node's rustls configuration).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use codec::Redundancy;
use serde::{Deserialize, Serialize};
use shards::{ShardKey, ShardMeta};

use crate::identity::NodeId;
use crate::layout::{Layout, NodeInfo};
use crate::mutual_tls::NodeTls;
use crate::shard_batch::{self, Fetched, PutHeader, ShardRef};

/// Why a node-to-node request failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The node does not hold that shard.
    #[error("shard not on that node")]
    Missing,
    /// The node holds the shard but it failed its checksum.
    #[error("corrupt shard: {0}")]
    Corrupt(String),
    /// No answer (connection refused, timeout, TLS failure).
    #[error("node {addr} unreachable: {reason}")]
    Unreachable {
        /// The node's address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The node answered with an error.
    #[error("node {addr} refused: {reason}")]
    Refused {
        /// The node's address.
        addr: String,
        /// What it answered.
        reason: String,
    },
}

impl RpcError {
    /// True when the node simply does not hold the shard.
    pub fn is_missing(&self) -> bool {
        matches!(self, RpcError::Missing)
    }
}

/// A node's answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeHealth {
    /// The node's id.
    pub id: NodeId,
    /// The layout epoch the node has.
    pub epoch: u64,
    /// Its shard disks.
    pub disks: Vec<DiskHealth>,
    /// Its CPUs and memory and what its containers and tasks hold (None from a node
    /// that does not report them).
    #[serde(default)]
    pub capacity: Option<crate::capacity::Capacity>,
}

/// One disk as a heartbeat reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskHealth {
    /// The disk's folder.
    pub path: String,
    /// Shards it holds.
    pub shards: u64,
    /// Size of its file system.
    pub bytes_total: u64,
    /// Free bytes on its file system.
    pub bytes_free: u64,
    /// False when the folder vanished (wiped or unmounted disk).
    pub ok: bool,
}

/// One shard in a node's listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardEntry {
    /// The chunk's id (hex).
    pub chunk: String,
    /// Which shard of the chunk.
    pub index: u8,
    /// The chunk's redundancy policy (e.g. "ec:4+2").
    pub policy: String,
    /// The sealed chunk's length (needed to join the shards).
    pub sealed_len: u32,
    /// When the shard was written (ms since the Unix epoch).
    pub written_ms: u64,
}

impl ShardEntry {
    /// The listing entry of a stored shard.
    pub fn from_parts(key: &ShardKey, meta: &ShardMeta) -> ShardEntry {
        ShardEntry {
            chunk: codec::hex(&key.chunk),
            index: key.index,
            policy: meta.policy.to_string(),
            sealed_len: meta.sealed_len,
            written_ms: meta.written_ms,
        }
    }

    /// The shard key and metadata back; None if the entry is malformed.
    pub fn parts(&self) -> Option<(ShardKey, ShardMeta)> {
        Some((
            ShardKey {
                chunk: parse_chunk(&self.chunk)?,
                index: self.index,
            },
            ShardMeta {
                policy: self.policy.parse().ok()?,
                sealed_len: self.sealed_len,
                written_ms: self.written_ms,
            },
        ))
    }
}

pub(crate) fn parse_chunk(s: &str) -> Option<codec::ChunkId> {
    codec::unhex(s)?.try_into().ok()
}

pub(crate) const POLICY: &str = "x-edgecloud-policy";
pub(crate) const SEALED_LEN: &str = "x-edgecloud-sealed-len";

/// The node-to-node client: mutual TLS, one connection pool, per-node limits.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Shard requests in flight per node: beyond this they queue rather than open more
    /// connections (each a TLS handshake). Heartbeats and listings are not limited.
    per_node: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

/// Shard requests in flight to one node at most.
const SHARD_REQUESTS_PER_NODE: usize = 16;
/// Shards per batch request (of 16-64 KiB each, typically).
const GET_BATCH: usize = 256;
/// How long a batch request may take (the client's default for other requests).
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);

fn shard_url(addr: &str, disk: Option<u32>, key: &ShardKey) -> String {
    let disk = disk.map_or("any".to_string(), |d| d.to_string());
    format!(
        "https://{addr}/v1/shards/{disk}/{}/{}",
        codec::hex(&key.chunk),
        key.index
    )
}

impl Client {
    /// A client that presents this node's certificate and trusts the cluster's.
    pub fn new(tls: &NodeTls) -> Result<Client, crate::ClusterError> {
        Client::bound(tls, None)
    }

    /// A client whose connections leave from `local` (a node given `--bind` talks to
    /// the others from that address, so firewalls see the node, not the host).
    pub fn bound(
        tls: &NodeTls,
        local: Option<std::net::IpAddr>,
    ) -> Result<Client, crate::ClusterError> {
        let http = reqwest::Client::builder()
            .local_address(local)
            .tls_backend_preconfigured((*tls.client).clone())
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?;
        Ok(Client {
            http,
            per_node: Default::default(),
        })
    }

    async fn slot(&self, addr: &str) -> tokio::sync::OwnedSemaphorePermit {
        let sem = self
            .per_node
            .lock()
            .expect("per-node lock")
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(SHARD_REQUESTS_PER_NODE)))
            .clone();
        sem.acquire_owned().await.expect("never closed")
    }

    async fn send(
        &self,
        addr: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RpcError> {
        let resp = req.send().await.map_err(|e| RpcError::Unreachable {
            addr: addr.to_string(),
            reason: error_chain(&e),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(match status.as_u16() {
            404 => RpcError::Missing,
            422 => RpcError::Corrupt(body),
            _ => RpcError::Refused {
                addr: addr.to_string(),
                reason: format!("{status}: {body}"),
            },
        })
    }

    /// Stores a shard on the node at `addr`.
    pub async fn put_shard(
        &self,
        addr: &str,
        disk: u32,
        key: &ShardKey,
        meta: ShardMeta,
        data: Vec<u8>,
    ) -> Result<(), RpcError> {
        let _slot = self.slot(addr).await;
        let req = self
            .http
            .put(shard_url(addr, Some(disk), key))
            .header(POLICY, meta.policy.to_string())
            .header(SEALED_LEN, meta.sealed_len.to_string())
            .body(data);
        self.send(addr, req).await.map(|_| ())
    }

    /// A verified shard from one disk of a node, or from any of its disks (`None`).
    pub async fn get_shard(
        &self,
        addr: &str,
        disk: Option<u32>,
        key: &ShardKey,
    ) -> Result<Vec<u8>, RpcError> {
        let _slot = self.slot(addr).await;
        let resp = self
            .send(addr, self.http.get(shard_url(addr, disk, key)))
            .await?;
        let body = resp.bytes().await.map_err(|e| RpcError::Unreachable {
            addr: addr.to_string(),
            reason: error_chain(&e),
        })?;
        Ok(body.to_vec())
    }

    /// Removes a shard from one disk of a node, or from every disk that holds it (`None`).
    pub async fn delete_shard(
        &self,
        addr: &str,
        disk: Option<u32>,
        key: &ShardKey,
    ) -> Result<(), RpcError> {
        let _slot = self.slot(addr).await;
        self.send(addr, self.http.delete(shard_url(addr, disk, key)))
            .await
            .map(|_| ())
    }

    /// Many verified shards from a node, a few hundred per request (`shard_batch`):
    /// one answer per shard, in order.
    pub async fn get_shards(
        &self,
        addr: &str,
        refs: &[ShardRef],
    ) -> Result<Vec<Fetched>, RpcError> {
        concat(refs.chunks(GET_BATCH).map(|group| async move {
            let body = serde_json::to_vec(group).expect("shard refs serialize");
            let answer = self.post_batch(addr, "/v1/shard-batch/get", body).await?;
            shard_batch::decode_fetched(&answer, group.len()).map_err(|reason| RpcError::Refused {
                addr: addr.to_string(),
                reason,
            })
        }))
        .await
    }

    /// Writes many shards to a node, durably, in requests of up to
    /// `shard_batch::BATCH_BYTES`: per shard Ok or why it was not written.
    pub async fn put_shards(
        &self,
        addr: &str,
        shards: &[(PutHeader, &[u8])],
    ) -> Result<Vec<Result<(), String>>, RpcError> {
        let mut groups: Vec<&[(PutHeader, &[u8])]> = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, (_, data)) in shards.iter().enumerate() {
            if i > start
                && (bytes + data.len() > shard_batch::BATCH_BYTES || i - start >= GET_BATCH)
            {
                groups.push(&shards[start..i]);
                (start, bytes) = (i, 0);
            }
            bytes += data.len();
        }
        if start < shards.len() {
            groups.push(&shards[start..]);
        }
        concat(groups.into_iter().map(|group| async move {
            let body = shard_batch::encode_puts(group);
            let answer = self.post_batch(addr, "/v1/shard-batch/put", body).await?;
            batch_answers(addr, &answer, group.len())
        }))
        .await
    }

    /// Removes many shards from a node: per shard Ok or why not.
    pub async fn delete_shards(
        &self,
        addr: &str,
        refs: &[ShardRef],
    ) -> Result<Vec<Result<(), String>>, RpcError> {
        concat(refs.chunks(shard_batch::MAX_BATCH).map(|group| async move {
            let body = serde_json::to_vec(group).expect("shard refs serialize");
            let answer = self
                .post_batch(addr, "/v1/shard-batch/delete", body)
                .await?;
            batch_answers(addr, &answer, group.len())
        }))
        .await
    }

    /// POSTs one shard batch to a node, in one of its shard-request slots.
    async fn post_batch(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<bytes::Bytes, RpcError> {
        let _slot = self.slot(addr).await;
        self.call(addr, path, body, BATCH_TIMEOUT).await
    }

    /// Every shard a node holds, with the disk it is on.
    pub async fn list_shards(&self, addr: &str) -> Result<Vec<(u32, ShardEntry)>, RpcError> {
        let req = self
            .http
            .get(format!("https://{addr}/v1/shards"))
            .timeout(Duration::from_secs(60));
        let resp = self.send(addr, req).await?;
        resp.json().await.map_err(|e| RpcError::Unreachable {
            addr: addr.to_string(),
            reason: error_chain(&e),
        })
    }

    /// The chunks uploads through the node at `addr` are writing, not yet committed.
    pub async fn uploading(&self, addr: &str) -> Result<Vec<codec::ChunkId>, RpcError> {
        let req = self
            .http
            .get(format!("https://{addr}/v1/uploading"))
            .timeout(Duration::from_secs(30));
        let resp = self.send(addr, req).await?;
        let bad = |reason: String| RpcError::Unreachable {
            addr: addr.to_string(),
            reason,
        };
        let ids: Vec<String> = resp.json().await.map_err(|e| bad(error_chain(&e)))?;
        ids.iter()
            .map(|h| {
                codec::unhex(h)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| bad(format!("{h:?} is not a chunk id")))
            })
            .collect()
    }

    /// Asks the node at `addr` for its heartbeat.
    pub async fn health(&self, addr: &str, timeout: Duration) -> Result<NodeHealth, RpcError> {
        let req = self
            .http
            .get(format!("https://{addr}/v1/health"))
            .timeout(timeout);
        let resp = self.send(addr, req).await?;
        resp.json().await.map_err(|e| RpcError::Unreachable {
            addr: addr.to_string(),
            reason: error_chain(&e),
        })
    }

    /// Asks the node at `addr` to add `me` to the cluster; answers the new layout.
    pub async fn join(&self, addr: &str, me: &NodeInfo) -> Result<Layout, RpcError> {
        let req = self.http.post(format!("https://{addr}/v1/join")).json(me);
        let resp = self.send(addr, req).await?;
        resp.json().await.map_err(|e| RpcError::Unreachable {
            addr: addr.to_string(),
            reason: error_chain(&e),
        })
    }

    /// Asks the node at `addr` (the leader) to start a repair pass.
    pub async fn request_repair(&self, addr: &str) -> Result<(), RpcError> {
        let req = self.http.post(format!("https://{addr}/v1/repair"));
        self.send(addr, req).await.map(|_| ())
    }

    /// POSTs `body` to `path` on a node and answers the response body: the transport
    /// of other layers' messages (the catalog's Raft messages).
    pub async fn call(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<bytes::Bytes, RpcError> {
        let req = self
            .http
            .post(format!("https://{addr}{path}"))
            .timeout(timeout)
            .body(body);
        let resp = self.send(addr, req).await?;
        resp.bytes().await.map_err(|e| RpcError::Unreachable {
            addr: addr.to_string(),
            reason: error_chain(&e),
        })
    }

    /// Sends the node at `addr` the current layout.
    pub async fn push_layout(&self, addr: &str, layout: &Layout) -> Result<(), RpcError> {
        let req = self
            .http
            .put(format!("https://{addr}/v1/layout"))
            .timeout(Duration::from_secs(5))
            .json(layout);
        self.send(addr, req).await.map(|_| ())
    }
}

/// The answers of a node's batch requests, in the order of the requests.
async fn concat<T>(
    requests: impl Iterator<Item = impl std::future::Future<Output = Result<Vec<T>, RpcError>>>,
) -> Result<Vec<T>, RpcError> {
    let mut out = Vec::new();
    for r in futures::future::join_all(requests).await {
        out.extend(r?);
    }
    Ok(out)
}

/// A put or delete batch's answer: per shard Ok, or why not.
fn batch_answers(
    addr: &str,
    body: &[u8],
    expected: usize,
) -> Result<Vec<Result<(), String>>, RpcError> {
    let bad = |reason: String| RpcError::Refused {
        addr: addr.to_string(),
        reason,
    };
    let answers: Vec<Option<String>> =
        serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if answers.len() != expected {
        return Err(bad(format!(
            "{} answers for {expected} shards",
            answers.len()
        )));
    }
    Ok(answers.into_iter().map(|a| a.map_or(Ok(()), Err)).collect())
}

/// The error with its causes: a TLS refusal hides under "error sending request".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A policy string as sent in `x-edgecloud-policy`.
pub(crate) fn parse_policy(s: &str) -> Option<Redundancy> {
    s.parse().ok()
}
