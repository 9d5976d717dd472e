//! S3 access keys and what each may do. Kept in the replicated catalog so that every
//! gateway of every node sees the same keys.

use std::collections::BTreeMap;

use redb::{ReadableTable, WriteTransaction};

use crate::command::{Command, Stamp, expect_outcome};
use serde::{Deserialize, Serialize};

use crate::records::*;
use crate::{Catalog, Result};

/// What a key may do in one bucket; each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// List and read objects, their versions and tags.
    Read,
    /// Also write and delete objects.
    Write,
    /// Also change the bucket itself: versioning, CORS, tags, policy, deletion.
    Owner,
}

/// An S3 access key and what it may do.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// The access key id.
    pub access_key: String,
    /// SigV4 needs the secret itself on the server, not a hash of it.
    pub secret: String,
    /// A name for people.
    pub name: String,
    /// When it was created (ns since the Unix epoch).
    pub created_ns: u64,
    /// May do anything, in every bucket.
    pub admin: bool,
    /// May create buckets (and owns the ones it creates).
    pub create_buckets: bool,
    /// Its permission per bucket.
    pub buckets: BTreeMap<String, Permission>,
}

impl Permission {
    /// The name the CLI, the admin API and the audit log use.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Owner => "owner",
        }
    }
}

impl AccessKey {
    /// What the key may do in `bucket` (admins: everything).
    pub fn permission(&self, bucket: &str) -> Option<Permission> {
        if self.admin {
            Some(Permission::Owner)
        } else {
            self.buckets.get(bucket).copied()
        }
    }
}

/// Never prints the secret (keys end up in logs and panics).
impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key", &self.access_key)
            .field("secret", &"<redacted>")
            .field("name", &self.name)
            .field("created_ns", &self.created_ns)
            .field("admin", &self.admin)
            .field("create_buckets", &self.create_buckets)
            .field("buckets", &self.buckets)
            .finish()
    }
}

impl Catalog {
    /// The key `access_key`, if it exists.
    pub fn access_key(&self, access_key: &str) -> Result<Option<AccessKey>> {
        let t = self.read()?.open_table(ACCESS_KEYS)?;
        t.get(access_key)?
            .map(|v| dec("access_keys", access_key.as_bytes(), v.value()))
            .transpose()
    }

    /// Every access key.
    pub fn access_keys(&self) -> Result<Vec<AccessKey>> {
        let t = self.read()?.open_table(ACCESS_KEYS)?;
        t.iter()?
            .map(|e| {
                let (k, v) = e?;
                dec("access_keys", k.value().as_bytes(), v.value())
            })
            .collect()
    }

    /// Creates or replaces a key; `actor` is who did it, for the audit log.
    pub async fn put_access_key(&self, key: AccessKey, actor: Option<String>) -> Result<AccessKey> {
        expect_outcome!(
            self.execute(Command::PutAccessKey { key, actor }).await?,
            AccessKey
        )
    }

    /// Changes a key atomically (retried if another change landed meanwhile);
    /// `Invalid` names the access key when it is unknown.
    pub async fn update_access_key(
        &self,
        access_key: &str,
        actor: Option<String>,
        f: impl Fn(&mut AccessKey) + Send + 'static,
    ) -> Result<AccessKey> {
        let read = || {
            self.access_key(access_key)?.ok_or_else(|| {
                crate::CatalogError::Invalid(format!("no access key {access_key:?}"))
            })
        };
        self.read_modify_write(
            read,
            |k| {
                f(k);
                Ok(())
            },
            |expect, key| Command::ReplaceAccessKey {
                expect,
                key,
                actor: actor.clone(),
            },
        )
        .await
        .and_then(|o| expect_outcome!(o, AccessKey))
    }

    /// Revokes a key; returns whether it existed.
    pub async fn delete_access_key(&self, access_key: &str, actor: Option<String>) -> Result<bool> {
        let access_key = access_key.to_string();
        expect_outcome!(
            self.execute(Command::DeleteAccessKey { access_key, actor })
                .await?,
            Existed
        )
    }
}

pub(crate) fn put(
    txn: &WriteTransaction,
    key: AccessKey,
    actor: Option<String>,
) -> Result<AccessKey> {
    let existed = txn
        .open_table(ACCESS_KEYS)?
        .insert(key.access_key.as_str(), enc(&key).as_slice())?
        .is_some();
    if !existed {
        let change = ledger::record::Change::KeyCreated {
            access_key: key.access_key.clone(),
        };
        crate::audit::append(txn, key.created_ns, actor, change)?;
    }
    Ok(key)
}

pub(crate) fn replace(
    txn: &WriteTransaction,
    at: &Stamp,
    expect: &AccessKey,
    k: AccessKey,
    actor: Option<String>,
) -> Result<AccessKey> {
    let mut t = txn.open_table(ACCESS_KEYS)?;
    let id = k.access_key.clone();
    let before: AccessKey = match t.get(id.as_str())? {
        Some(v) => dec("access_keys", id.as_bytes(), v.value())?,
        None => {
            return Err(crate::CatalogError::Invalid(format!(
                "no access key {id:?}"
            )));
        }
    };
    if &before != expect {
        return Err(crate::CatalogError::Conflict);
    }
    t.insert(id.as_str(), enc(&k).as_slice())?;
    let names: std::collections::BTreeSet<&String> =
        before.buckets.keys().chain(k.buckets.keys()).collect();
    for b in names {
        let (was, now) = (before.buckets.get(b), k.buckets.get(b));
        if was != now {
            let permission = now.map_or("none", |p| p.name());
            let change = ledger::record::Change::PermissionChanged {
                access_key: k.access_key.clone(),
                bucket: b.clone(),
                permission: permission.into(),
            };
            crate::audit::append(txn, at.at_ns, actor.clone(), change)?;
        }
    }
    Ok(k)
}

pub(crate) fn delete(
    txn: &WriteTransaction,
    at: &Stamp,
    id: String,
    actor: Option<String>,
) -> Result<bool> {
    let existed = txn.open_table(ACCESS_KEYS)?.remove(id.as_str())?.is_some();
    if existed {
        crate::audit::append(
            txn,
            at.at_ns,
            actor,
            ledger::record::Change::KeyRevoked { access_key: id },
        )?;
    }
    Ok(existed)
}

/// A new random key pair: an access key like AWS's (20 upper-case letters and digits,
/// starting "EC") and a 40-character secret.
pub fn generate_key_pair() -> (String, String) {
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const ANY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // The slight modulo bias leaves the secret with well over 200 bits of entropy.
    let mut b = [0u8; 58];
    getrandom::fill(&mut b).expect("the OS random source failed");
    let access: String = "EC"
        .chars()
        .chain(
            b[..18]
                .iter()
                .map(|x| UPPER[*x as usize % UPPER.len()] as char),
        )
        .collect();
    let secret: String = b[18..]
        .iter()
        .map(|x| ANY[*x as usize % ANY.len()] as char)
        .collect();
    (access, secret)
}
