//! ACL grants: permissions a bucket or object gives to other access keys (S3's
//! canonical users are access key ids here) and to groups (everyone, every key). Kept
//! as JSON in the bucket's settings (`grants`) or the version's metadata (`:grants`);
//! the owner's full control is implicit and never stored. Every gateway sees the data
//! permissions through `Archive::key_permission`; the S3 gateway also checks the ACP
//! ones (reading and changing the ACL itself).

use serde::{Deserialize, Serialize};

use crate::Permission;

/// Bucket setting: the bucket's grants (JSON list).
pub const BUCKET_SETTING: &str = "grants";
/// Version metadata: the object's grants (JSON list).
pub const OBJECT_META: &str = ":grants";

/// The group S3 calls AllUsers: everyone, anonymous clients included (reads only here).
pub const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
/// The group S3 calls AuthenticatedUsers: every access key.
pub const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

/// What a grant allows, as S3 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Access {
    /// Bucket: list; object: read.
    Read,
    /// Bucket: write and delete objects.
    Write,
    /// Read the ACL.
    ReadAcp,
    /// Change the ACL.
    WriteAcp,
    /// All of the above.
    FullControl,
}

impl Access {
    /// S3's name (READ, WRITE, READ_ACP, WRITE_ACP, FULL_CONTROL).
    pub fn name(self) -> &'static str {
        match self {
            Access::Read => "READ",
            Access::Write => "WRITE",
            Access::ReadAcp => "READ_ACP",
            Access::WriteAcp => "WRITE_ACP",
            Access::FullControl => "FULL_CONTROL",
        }
    }

    /// The access S3 names so.
    pub fn parse(s: &str) -> Option<Access> {
        Some(match s {
            "READ" => Access::Read,
            "WRITE" => Access::Write,
            "READ_ACP" => Access::ReadAcp,
            "WRITE_ACP" => Access::WriteAcp,
            "FULL_CONTROL" => Access::FullControl,
            _ => return None,
        })
    }

    /// Whether this grant includes `want`.
    pub fn includes(self, want: Access) -> bool {
        self == want || self == Access::FullControl
    }
}

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grantee {
    /// An access key (S3's canonical user id).
    Key(String),
    /// A group, by S3's URI.
    Group(String),
}

/// One grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Who.
    pub grantee: Grantee,
    /// What.
    pub access: Access,
}

/// Grants as stored (none when the value is missing or unreadable).
pub fn parse(stored: Option<&String>) -> Vec<Grant> {
    stored
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Grants as stored.
pub fn store(grants: &[Grant]) -> String {
    serde_json::to_string(grants).expect("grants serialize")
}

/// Whether `grants` give `want` to the access key `key` (None: anonymous).
pub fn allows(grants: &[Grant], key: Option<&str>, want: Access) -> bool {
    grants.iter().any(|g| {
        g.access.includes(want)
            && match &g.grantee {
                Grantee::Key(k) => Some(k.as_str()) == key,
                Grantee::Group(u) if u == ALL_USERS => true,
                Grantee::Group(u) if u == AUTHENTICATED_USERS => key.is_some(),
                Grantee::Group(_) => false,
            }
    })
}

/// The data permission a bucket's grants give a key: READ lists and reads, WRITE (or
/// FULL_CONTROL) writes too. Never ownership: only owners configure or delete buckets.
pub fn bucket_permission(grants: &[Grant], key: &str) -> Option<Permission> {
    if allows(grants, Some(key), Access::Write) {
        Some(Permission::Write)
    } else if allows(grants, Some(key), Access::Read) {
        Some(Permission::Read)
    } else {
        None
    }
}

/// Bucket setting: S3's object ownership (`BucketOwnerEnforced` turns ACLs off).
pub const OWNERSHIP_SETTING: &str = "ownership";
/// Bucket setting: the public access block (JSON `PublicAccessBlock`).
pub const PUBLIC_ACCESS_BLOCK_SETTING: &str = "public-access-block";
/// The object ownership that turns ACLs off.
pub const OWNER_ENFORCED: &str = "BucketOwnerEnforced";

/// S3's public access block: guards against making a bucket public by mistake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicAccessBlock {
    /// Refuse ACLs that make anything public.
    pub block_public_acls: bool,
    /// Public ACLs already set give nothing.
    pub ignore_public_acls: bool,
    /// Refuse bucket policies that make anything public.
    pub block_public_policy: bool,
    /// Public policy statements give nothing to anonymous clients or other keys.
    pub restrict_public_buckets: bool,
}

/// The bucket's public access block (all off when none is set).
pub fn public_access_block(b: &crate::Bucket) -> PublicAccessBlock {
    b.settings
        .get(PUBLIC_ACCESS_BLOCK_SETTING)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Which ACLs of a bucket (and its objects) count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclsApply {
    /// Grants to access keys.
    pub keys: bool,
    /// Public ones: canned public ACLs and grants to the AllUsers and
    /// AuthenticatedUsers groups.
    pub public: bool,
}

/// Which ACLs count in `b`: none when object ownership is BucketOwnerEnforced, no
/// public ones when the public access block ignores them.
pub fn acls_apply(b: &crate::Bucket) -> AclsApply {
    let enforced = b.settings.get(OWNERSHIP_SETTING).map(String::as_str) == Some(OWNER_ENFORCED);
    AclsApply {
        keys: !enforced,
        public: !enforced && !public_access_block(b).ignore_public_acls,
    }
}

/// Whether grants make anything public (to a group).
pub fn any_public(grants: &[Grant]) -> bool {
    grants
        .iter()
        .any(|g| matches!(g.grantee, Grantee::Group(_)))
}

/// The grants that count under `apply`.
pub fn effective(grants: Vec<Grant>, apply: AclsApply) -> Vec<Grant> {
    grants
        .into_iter()
        .filter(|g| match g.grantee {
            Grantee::Key(_) => apply.keys,
            Grantee::Group(_) => apply.public,
        })
        .collect()
}
