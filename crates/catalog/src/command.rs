//! Every change to the catalog is a `Command`: plain data that can be written to a
//! replicated log and applied by each replica to its own database with the same result.
//! What would differ between replicas (the clock, random ids) is fixed when the change
//! is proposed and travels with it (`Stamp`), so `apply` is deterministic: it reads
//! only the database and the proposal.
//!
//! On one node the proposal goes straight to the group-commit writer; in a cluster it
//! goes through Raft first (`crate::Consensus`) and every voter applies it.

use std::collections::BTreeMap;

use codec::{ChunkId, Redundancy};
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::access::AccessKey;
use crate::objects::{DeleteOutcome, PutCondition, VersionSel};
use crate::records::*;
use crate::{CatalogError, Result};

/// The proposer's clock and randomness for one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Wall clock at the proposer (ns since the epoch). Modification times never go
    /// back: a version's time is at least one past the newest one's.
    pub at_ns: u64,
    /// Random bits for the ids this change creates (version ids).
    pub nonce: u64,
}

impl Stamp {
    pub fn now() -> Stamp {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("the OS random source failed");
        Stamp {
            at_ns: now_ns(),
            nonce: u64::from_le_bytes(b),
        }
    }
}

/// One change, as proposed: what to do and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposal {
    pub stamp: Stamp,
    pub command: Command,
}

/// Every kind of change. Changes that edit a record in place (`Replace*`) carry the
/// record as the proposer last read it and are refused with `Conflict` if it changed
/// meanwhile, so a read-modify-write never loses a concurrent one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    CreateBucket {
        bucket: Bucket,
        actor: Option<String>,
    },
    ReplaceBucket {
        expect: Bucket,
        bucket: Bucket,
    },
    DeleteBucket {
        name: String,
        actor: Option<String>,
    },
    PutAccessKey {
        key: AccessKey,
        actor: Option<String>,
    },
    ReplaceAccessKey {
        expect: AccessKey,
        key: AccessKey,
        actor: Option<String>,
    },
    DeleteAccessKey {
        access_key: String,
        actor: Option<String>,
    },
    PutVersion {
        bucket: String,
        key: String,
        version: NewVersion,
        cond: PutCondition,
    },
    ReplaceVersionMeta {
        bucket: String,
        key: String,
        sel: VersionSel,
        expect: BTreeMap<String, String>,
        meta: BTreeMap<String, String>,
    },
    Delete {
        bucket: String,
        key: String,
        version_id: Option<String>,
        actor: Option<String>,
    },
    CreateUpload {
        upload: Upload,
    },
    PutPart {
        upload_id: String,
        part: Part,
        fresh: Vec<ChunkId>,
    },
    CompleteUpload {
        upload_id: String,
        chosen: Vec<(u32, String)>,
        cond: PutCondition,
        /// Policy of the new version if no part has chunks.
        policy: Redundancy,
        min_part_size: u64,
        actor: Option<String>,
    },
    AbortUpload {
        upload_id: String,
    },
    CollectChunks {
        older_than_ns: u64,
        limit: usize,
    },
    ExpireHistory {
        before_ns: u64,
    },
    /// Sets a record of the cluster layer (the layout) if it still is `expect`.
    PutClusterRecord {
        name: String,
        expect: Option<Vec<u8>>,
        value: Vec<u8>,
    },
}

/// What a command answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    Bucket(Bucket),
    AccessKey(AccessKey),
    Existed(bool),
    Version(Version),
    Deleted(DeleteOutcome),
    Upload(Upload),
    Part(Part),
    Collected(Vec<(ChunkId, ChunkRecord)>),
    Expired(usize),
}

/// Applies one proposal inside a write transaction. A refused command writes nothing
/// (each checks everything before its first write), so many share one transaction.
pub fn apply(txn: &WriteTransaction, p: Proposal) -> Result<Outcome> {
    let at = &p.stamp;
    Ok(match p.command {
        Command::CreateBucket { bucket, actor } => {
            Outcome::Bucket(crate::buckets::create(txn, bucket, actor)?)
        }
        Command::ReplaceBucket { expect, bucket } => {
            Outcome::Bucket(crate::buckets::replace(txn, &expect, bucket)?)
        }
        Command::DeleteBucket { name, actor } => {
            crate::buckets::delete(txn, at, &name, actor)?;
            Outcome::Done
        }
        Command::PutAccessKey { key, actor } => {
            Outcome::AccessKey(crate::access::put(txn, key, actor)?)
        }
        Command::ReplaceAccessKey { expect, key, actor } => {
            Outcome::AccessKey(crate::access::replace(txn, at, &expect, key, actor)?)
        }
        Command::DeleteAccessKey { access_key, actor } => {
            Outcome::Existed(crate::access::delete(txn, at, access_key, actor)?)
        }
        Command::PutVersion {
            bucket,
            key,
            version,
            cond,
        } => Outcome::Version(crate::objects::insert_version(
            txn, at, &bucket, &key, version, &cond,
        )?),
        Command::ReplaceVersionMeta {
            bucket,
            key,
            sel,
            expect,
            meta,
        } => Outcome::Version(crate::objects::replace_meta(
            txn, &bucket, &key, sel, &expect, meta,
        )?),
        Command::Delete {
            bucket,
            key,
            version_id,
            actor,
        } => Outcome::Deleted(crate::objects::delete(
            txn, at, &bucket, &key, version_id, actor,
        )?),
        Command::CreateUpload { upload } => Outcome::Upload(crate::multipart::create(txn, upload)?),
        Command::PutPart {
            upload_id,
            part,
            fresh,
        } => Outcome::Part(crate::multipart::put_part(
            txn, at, &upload_id, part, &fresh,
        )?),
        Command::CompleteUpload {
            upload_id,
            chosen,
            cond,
            policy,
            min_part_size,
            actor,
        } => Outcome::Version(crate::multipart::complete(
            txn,
            at,
            &upload_id,
            &chosen,
            &cond,
            policy,
            min_part_size,
            actor,
        )?),
        Command::AbortUpload { upload_id } => {
            crate::multipart::abort(txn, at, &upload_id)?;
            Outcome::Done
        }
        Command::CollectChunks {
            older_than_ns,
            limit,
        } => Outcome::Collected(crate::chunks::collect(txn, older_than_ns, limit)?),
        Command::ExpireHistory { before_ns } => {
            Outcome::Expired(crate::objects::expire_history(txn, at, before_ns)?)
        }
        Command::PutClusterRecord {
            name,
            expect,
            value,
        } => {
            let mut t = txn.open_table(CLUSTER)?;
            let current = t.get(name.as_str())?.map(|v| v.value().to_vec());
            if current != expect {
                return Err(CatalogError::Conflict);
            }
            t.insert(name.as_str(), value.as_slice())?;
            Outcome::Done
        }
    })
}

/// The answer a command gives when it is applied as expected; anything else means the
/// replicated state and this code disagree.
pub(crate) fn unexpected(o: Outcome) -> CatalogError {
    CatalogError::Db(format!("catalog command answered unexpectedly: {o:?}"))
}

/// Unwraps the one `Outcome` variant a command answers.
macro_rules! expect_outcome {
    ($e:expr, $variant:ident) => {
        match $e {
            $crate::command::Outcome::$variant(v) => Ok(v),
            other => Err($crate::command::unexpected(other)),
        }
    };
}
pub(crate) use expect_outcome;
