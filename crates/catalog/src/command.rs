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
    /// A stamp for a change made now.
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
    /// When the change was made (every replica applies it with this time).
    pub stamp: Stamp,
    /// The change.
    pub command: Command,
}

/// Every kind of change. Changes that edit a record in place (`Replace*`) carry the
/// record as the proposer last read it and are refused with `Conflict` if it changed
/// meanwhile, so a read-modify-write never loses a concurrent one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Create a bucket.
    CreateBucket {
        /// The new bucket.
        bucket: Bucket,
        /// Who asked, for the audit log.
        actor: Option<String>,
    },
    /// Change a bucket's settings.
    ReplaceBucket {
        /// The bucket as the proposer read it.
        expect: Bucket,
        /// The bucket as it should be.
        bucket: Bucket,
    },
    /// Delete an empty bucket.
    DeleteBucket {
        /// The bucket's name.
        name: String,
        /// Who asked, for the audit log.
        actor: Option<String>,
    },
    /// Create an access key.
    PutAccessKey {
        /// The new key.
        key: AccessKey,
        /// Who asked, for the audit log.
        actor: Option<String>,
    },
    /// Change an access key's permissions.
    ReplaceAccessKey {
        /// The key as the proposer read it.
        expect: AccessKey,
        /// The key as it should be.
        key: AccessKey,
        /// Who asked, for the audit log.
        actor: Option<String>,
    },
    /// Delete an access key.
    DeleteAccessKey {
        /// The key's id.
        access_key: String,
        /// Who asked, for the audit log.
        actor: Option<String>,
    },
    /// Append a record to the audit log that no other command writes (a job's run).
    Record {
        /// The change to record, as JSON: the Raft log's encoding (postcard) cannot
        /// carry `Change`'s internally tagged form.
        change_json: String,
        /// Who asked.
        actor: Option<String>,
    },
    /// Store a new version of an object.
    PutVersion {
        /// The object's bucket.
        bucket: String,
        /// The object's key.
        key: String,
        /// The version's size, metadata and chunks.
        version: NewVersion,
        /// Conditions checked when it is applied.
        cond: PutCondition,
    },
    /// Change a version's metadata (tags, copied headers).
    ReplaceVersionMeta {
        /// The object's bucket.
        bucket: String,
        /// The object's key.
        key: String,
        /// Which version.
        sel: VersionSel,
        /// The metadata as the proposer read it.
        expect: BTreeMap<String, String>,
        /// The metadata as it should be.
        meta: BTreeMap<String, String>,
    },
    /// Delete a key (a delete marker when versioned) or one version.
    Delete {
        /// The object's bucket.
        bucket: String,
        /// The object's key.
        key: String,
        /// The version to remove; None deletes the key.
        version_id: Option<String>,
        /// Who asked, for the audit log.
        actor: Option<String>,
    },
    /// Start a multipart upload.
    CreateUpload {
        /// The upload's id, key and metadata.
        upload: Upload,
    },
    /// Record one uploaded part (replacing a part with the same number).
    PutPart {
        /// The upload it belongs to.
        upload_id: String,
        /// The part's number, size and chunks.
        part: Part,
        /// Chunks the part's writer stored itself.
        fresh: Vec<ChunkId>,
    },
    /// Complete a multipart upload into a new version.
    CompleteUpload {
        /// The upload to complete.
        upload_id: String,
        /// The parts the client chose: number and ETag, in order.
        chosen: Vec<(u32, String)>,
        /// Conditions checked when it is applied.
        cond: PutCondition,
        /// Policy of the new version if no part has chunks.
        policy: Redundancy,
        /// Minimum size of every part but the last.
        min_part_size: u64,
        /// Who asked, for the audit log.
        actor: Option<String>,
    },
    /// Abort a multipart upload, dropping its parts.
    AbortUpload {
        /// The upload to abort.
        upload_id: String,
    },
    /// Remove chunk records unreferenced for longer than the grace period.
    CollectChunks {
        /// Unreferenced before this instant (ns).
        older_than_ns: u64,
        /// At most this many at once.
        limit: usize,
    },
    /// Drop hidden null versions superseded before an instant.
    ExpireHistory {
        /// Superseded before this instant (ns).
        before_ns: u64,
    },
    /// Sets a record of the cluster layer (the layout) if it still is `expect`.
    PutClusterRecord {
        /// The record's name (e.g. "layout").
        name: String,
        /// The value as the proposer read it; None if it should not exist yet.
        expect: Option<Vec<u8>>,
        /// The new value.
        value: Vec<u8>,
    },
    /// A `Delete` or `ReplaceVersionMeta` that may shorten or lift GOVERNANCE
    /// retention (an owner's request with `x-amz-bypass-governance-retention`).
    BypassingGovernance(Box<Command>),
}

/// What a command answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied; nothing to answer.
    Done,
    /// The bucket as it now is.
    Bucket(Bucket),
    /// The access key as it now is.
    AccessKey(AccessKey),
    /// Whether the record existed (before a delete).
    Existed(bool),
    /// The version written.
    Version(Version),
    /// What a delete did.
    Deleted(DeleteOutcome),
    /// The upload started.
    Upload(Upload),
    /// The part recorded.
    Part(Part),
    /// The chunk records removed (their shards are garbage now).
    Collected(Vec<(ChunkId, ChunkRecord)>),
    /// How many hidden versions were dropped.
    Expired(usize),
}

/// Applies one proposal inside a write transaction. A refused command writes nothing
/// (each checks everything before its first write), so many share one transaction.
pub fn apply(txn: &WriteTransaction, p: Proposal) -> Result<Outcome> {
    apply_command(txn, &p.stamp, p.command, false)
}

fn apply_command(
    txn: &WriteTransaction,
    at: &Stamp,
    command: Command,
    bypass_governance: bool,
) -> Result<Outcome> {
    Ok(match command {
        Command::CreateBucket { bucket, actor } => {
            Outcome::Bucket(crate::buckets::create(txn, bucket, actor)?)
        }
        Command::ReplaceBucket { expect, bucket } => {
            Outcome::Bucket(crate::buckets::replace(txn, at, &expect, bucket)?)
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
        Command::Record { change_json, actor } => {
            let change = serde_json::from_str(&change_json)
                .map_err(|e| crate::CatalogError::Invalid(format!("not a ledger change: {e}")))?;
            crate::audit::append(txn, at.at_ns, actor, change)?;
            Outcome::Done
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
            txn,
            at,
            &bucket,
            &key,
            sel,
            &expect,
            meta,
            bypass_governance,
        )?),
        Command::Delete {
            bucket,
            key,
            version_id,
            actor,
        } => Outcome::Deleted(crate::objects::delete(
            txn,
            at,
            &bucket,
            &key,
            version_id,
            actor,
            bypass_governance,
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
        Command::BypassingGovernance(inner) => match *inner {
            c @ (Command::Delete { .. } | Command::ReplaceVersionMeta { .. }) => {
                apply_command(txn, at, c, true)?
            }
            _ => {
                return Err(CatalogError::Invalid(
                    "only deletes and metadata changes can bypass governance".into(),
                ));
            }
        },
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
