//! Many shards per node-to-node request: repair, rebalance and scrubs move thousands of
//! small shards (a 64 KiB chunk makes 16 KiB shards at 4+2), and one HTTPS request per
//! shard made them bound by requests, not by bytes or disks.
//!
//! `POST /v1/shard-batch/get` takes a JSON list of shards and answers one frame per
//! shard, in order; `POST /v1/shard-batch/put` takes frames of (JSON header, data) and
//! writes them together (the disk's writer fsyncs them as one group); `POST
//! /v1/shard-batch/delete` takes a JSON list. Every answer says what happened to each
//! shard, so one bad shard never fails the others.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shards::ShardKey;

use crate::client::{parse_chunk, parse_policy};
use crate::rpc::{RpcState, disks_of, read_any, shard_meta};

/// Shards in one batch request at most (a larger batch is refused).
pub const MAX_BATCH: usize = 1024;
/// Bytes of shard data a client puts in one batch (it splits larger ones).
pub const BATCH_BYTES: usize = 8 << 20;

/// One shard a batch names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardRef {
    /// The disk (its position on the node), or any disk (`None`).
    pub disk: Option<u32>,
    /// The chunk id (hex).
    pub chunk: String,
    /// Which shard of the chunk.
    pub index: u8,
}

impl ShardRef {
    /// A reference to `key` on `disk` (or any disk).
    pub fn new(disk: Option<u32>, key: &ShardKey) -> ShardRef {
        ShardRef {
            disk,
            chunk: codec::hex(&key.chunk),
            index: key.index,
        }
    }

    fn key(&self) -> Result<ShardKey, String> {
        let chunk = parse_chunk(&self.chunk).ok_or("bad chunk id")?;
        Ok(ShardKey {
            chunk,
            index: self.index,
        })
    }
}

/// The header of one shard in a put batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutHeader {
    /// The disk to write to.
    pub disk: u32,
    /// The chunk id (hex).
    pub chunk: String,
    /// Which shard of the chunk.
    pub index: u8,
    /// The chunk's redundancy policy ("ec:4+2").
    pub policy: String,
    /// The sealed chunk's length.
    pub sealed_len: u32,
}

/// How a shard of a get batch came back.
#[derive(Debug)]
pub enum Fetched {
    /// Read and verified.
    Data(Vec<u8>),
    /// Not on the node (or not on the disk named).
    Missing,
    /// On the node but failing its checksum (the reason).
    Corrupt(String),
}

const OK: u8 = 0;
const MISSING: u8 = 1;
const CORRUPT: u8 = 2;

/// Appends a frame: a tag byte, a little-endian u32 length, the bytes.
fn frame(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads frames back; Err on a truncated or overlong one.
pub(crate) fn frames(mut body: &[u8]) -> Result<Vec<(u8, &[u8])>, String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        if body.len() < 5 {
            return Err("truncated frame header".into());
        }
        let tag = body[0];
        let len = u32::from_le_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
        let rest = &body[5..];
        if rest.len() < len {
            return Err(format!("frame of {len} bytes with {} left", rest.len()));
        }
        out.push((tag, &rest[..len]));
        body = &rest[len..];
        if out.len() > 2 * MAX_BATCH {
            return Err(format!("more than {MAX_BATCH} shards in one batch"));
        }
    }
    Ok(out)
}

/// Encodes a get answer.
pub(crate) fn encode_fetched(items: &[Fetched]) -> Vec<u8> {
    let size = items
        .iter()
        .map(|f| match f {
            Fetched::Data(d) => d.len() + 5,
            _ => 64,
        })
        .sum();
    let mut out = Vec::with_capacity(size);
    for f in items {
        match f {
            Fetched::Data(d) => frame(&mut out, OK, d),
            Fetched::Missing => frame(&mut out, MISSING, b""),
            Fetched::Corrupt(why) => frame(&mut out, CORRUPT, why.as_bytes()),
        }
    }
    out
}

/// Decodes a get answer of `expected` shards.
pub(crate) fn decode_fetched(body: &[u8], expected: usize) -> Result<Vec<Fetched>, String> {
    let items = frames(body)?;
    if items.len() != expected {
        return Err(format!("{} answers for {expected} shards", items.len()));
    }
    items
        .into_iter()
        .map(|(tag, bytes)| match tag {
            OK => Ok(Fetched::Data(bytes.to_vec())),
            MISSING => Ok(Fetched::Missing),
            CORRUPT => Ok(Fetched::Corrupt(
                String::from_utf8_lossy(bytes).into_owned(),
            )),
            t => Err(format!("unknown answer tag {t}")),
        })
        .collect()
}

/// Encodes a put batch: per shard a header frame and a data frame.
pub(crate) fn encode_puts(items: &[(PutHeader, &[u8])]) -> Vec<u8> {
    let size = items.iter().map(|(_, d)| d.len() + 128).sum();
    let mut out = Vec::with_capacity(size);
    for (h, data) in items {
        let header = serde_json::to_vec(h).expect("a header serializes");
        frame(&mut out, 0, &header);
        frame(&mut out, 1, data);
    }
    out
}

fn refusal(msg: impl Into<String>) -> Response {
    let msg = msg.into();
    tracing::warn!("node-to-node batch refused: {msg}");
    (StatusCode::BAD_REQUEST, msg).into_response()
}

/// The disks and key of each shard a JSON list names; Err (the whole batch refused) at
/// the first a node could not hold. (The body is read as JSON whatever its content type.)
fn resolve(state: &RpcState, body: &[u8]) -> Result<Vec<(Vec<usize>, ShardKey)>, String> {
    let refs: Vec<ShardRef> =
        serde_json::from_slice(body).map_err(|e| format!("not a list of shards: {e}"))?;
    if refs.len() > MAX_BATCH {
        return Err(format!("more than {MAX_BATCH} shards in one batch"));
    }
    refs.iter()
        .map(|r| {
            let disks = disks_of(&state.store, r.disk.map(|d| d as usize))
                .ok_or_else(|| no_disk(state, r.disk.unwrap_or_default()))?;
            Ok((disks, r.key()?))
        })
        .collect()
}

fn no_disk(state: &RpcState, d: u32) -> String {
    format!(
        "no disk {d} on this node ({} disks)",
        state.store.disks().len()
    )
}

/// `POST /v1/shard-batch/get`: each named shard, verified, in order.
pub(crate) async fn get_shards(State(state): State<RpcState>, body: Bytes) -> Response {
    let wanted = match resolve(&state, &body) {
        Ok(w) => w,
        Err(e) => return refusal(e),
    };
    let store = state.store.clone();
    let read = tokio::task::spawn_blocking(move || {
        let items: Vec<Fetched> = wanted
            .iter()
            .map(|(disks, key)| read_any(&store, disks, key))
            .collect();
        encode_fetched(&items)
    });
    match read.await {
        Ok(body) => body.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `POST /v1/shard-batch/put`: writes every shard (durably, one group commit per disk);
/// answers per shard `null` (written) or why not.
pub(crate) async fn put_shards(State(state): State<RpcState>, body: Bytes) -> Response {
    let items = match frames(&body) {
        Ok(f) if f.len() % 2 == 0 => f,
        Ok(_) => return refusal("a header without its data"),
        Err(e) => return refusal(e),
    };
    let mut writes = Vec::with_capacity(items.len() / 2);
    for pair in items.chunks(2) {
        let [(0, header), (1, data)] = pair else {
            return refusal("frames out of order");
        };
        let h: PutHeader = match serde_json::from_slice(header) {
            Ok(h) => h,
            Err(e) => return refusal(format!("bad shard header: {e}")),
        };
        let parsed = (|| {
            let d = match disks_of(&state.store, Some(h.disk as usize)).as_deref() {
                Some(&[d]) => d,
                _ => return Err(no_disk(&state, h.disk)),
            };
            let chunk = parse_chunk(&h.chunk).ok_or("bad chunk id")?;
            let policy = parse_policy(&h.policy).ok_or("bad policy")?;
            let meta = shard_meta(policy, h.sealed_len, h.index)?;
            let key = ShardKey {
                chunk,
                index: h.index,
            };
            Ok((d, key, meta))
        })();
        match parsed {
            Ok((d, key, meta)) => writes.push((d, key, meta, data.to_vec())),
            Err(e) => return refusal(e),
        }
    }
    let store = &state.store;
    let results: Vec<Option<String>> =
        futures::future::join_all(writes.into_iter().map(|(d, key, meta, data)| async move {
            store
                .disk(d)
                .write(key, meta, data)
                .await
                .err()
                .map(|e| e.to_string())
        }))
        .await;
    Json(results).into_response()
}

/// `POST /v1/shard-batch/delete`: removes each shard from its disk (or from every disk
/// holding it); answers per shard `null` (gone) or why not.
pub(crate) async fn delete_shards(State(state): State<RpcState>, body: Bytes) -> Response {
    let doomed = match resolve(&state, &body) {
        Ok(d) => d,
        Err(e) => return refusal(e),
    };
    let store = &state.store;
    let results: Vec<Option<String>> =
        futures::future::join_all(doomed.into_iter().map(|(disks, key)| async move {
            for d in disks {
                if let Err(e) = store.disk(d).delete(key).await {
                    return Some(e.to_string());
                }
            }
            None
        }))
        .await;
    Json(results).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_and_bad_frames_are_refused() {
        let items = vec![
            Fetched::Data(vec![1, 2, 3]),
            Fetched::Missing,
            Fetched::Corrupt("checksum".into()),
            Fetched::Data(Vec::new()),
        ];
        let body = encode_fetched(&items);
        let back = decode_fetched(&body, 4).expect("decodes");
        assert!(matches!(&back[0], Fetched::Data(d) if d == &[1, 2, 3]));
        assert!(matches!(back[1], Fetched::Missing));
        assert!(matches!(&back[2], Fetched::Corrupt(w) if w == "checksum"));
        assert!(matches!(&back[3], Fetched::Data(d) if d.is_empty()));
        assert!(decode_fetched(&body, 3).is_err(), "count checked");
        assert!(
            decode_fetched(&body[..body.len() - 1], 4).is_err(),
            "truncated"
        );
        assert!(frames(&[0, 255, 255, 255, 255]).is_err(), "overlong");
        assert!(frames(&[0, 1]).is_err(), "short header");
        let puts = encode_puts(&[(
            PutHeader {
                disk: 0,
                chunk: "00".into(),
                index: 1,
                policy: "ec:4+2".into(),
                sealed_len: 9,
            },
            &[7u8; 5][..],
        )]);
        let f = frames(&puts).expect("frames");
        assert_eq!(f.len(), 2);
        assert_eq!(f[1], (1, &[7u8; 5][..]));
    }
}
