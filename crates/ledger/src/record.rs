//! Leaf records: one per change, canonical so anyone can recompute a leaf hash. A
//! record is compact UTF-8 JSON with the fields in this order: `v` (format, 1),
//! `time_ns` (UTC nanoseconds), `actor` (the access key id that made the change,
//! "@admin" for the admin token, or null for the node itself),
//! `kind`, then the kind's fields in declaration order. Contents are identified by their
//! SHA-256, never included: a record proves that a version existed with given bytes at a
//! given time without revealing them.
//!
//! A multipart upload's parts are hashed as they arrive, so its record carries
//! `sha256: null` and `parts`: each part's size and SHA-256 in order (the object is the
//! parts concatenated). `parts` is left out of every other record. [`ContentCheck`]
//! checks a file against either form.

use serde::{Deserialize, Serialize};

/// One change the audit log records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A bucket was created.
    BucketCreated {
        /// The bucket.
        bucket: String,
    },
    /// A bucket was deleted.
    BucketDeleted {
        /// The bucket.
        bucket: String,
    },
    /// A new object version; `sha256` is of the plaintext, hex (null for multipart
    /// uploads, which list their parts' hashes in `parts` instead).
    VersionWritten {
        /// The bucket.
        bucket: String,
        /// The object's key.
        key: String,
        /// The new version's id.
        version_id: String,
        /// Size in bytes.
        size: u64,
        /// SHA-256 of the plaintext, hex.
        sha256: Option<String>,
        /// Each part's size and SHA-256 (multipart uploads).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        parts: Vec<PartDigest>,
    },
    /// A delete marker was written.
    DeleteMarker {
        /// The bucket.
        bucket: String,
        /// The object's key.
        key: String,
        /// The marker's version id.
        version_id: String,
    },
    /// A version was removed for good.
    VersionDeleted {
        /// The bucket.
        bucket: String,
        /// The object's key.
        key: String,
        /// The removed version's id.
        version_id: String,
    },
    /// An access key was created.
    KeyCreated {
        /// The key's id.
        access_key: String,
    },
    /// An access key was deleted.
    KeyRevoked {
        /// The key's id.
        access_key: String,
    },
    /// `permission` is read, write, owner or none.
    PermissionChanged {
        /// The key's id.
        access_key: String,
        /// The bucket.
        bucket: String,
        /// The new permission.
        permission: String,
    },
    /// A compute job finished and wrote its output: what code ran over which inputs
    /// and what it wrote. The output is also an ordinary version (its own record), so
    /// `ledger prove` works for it; this record ties it to the code and the inputs.
    JobRun {
        /// The job's id.
        job_id: String,
        /// The runtime ("lua").
        runtime: String,
        /// SHA-256 of the job's code, hex.
        code_sha256: String,
        /// The input bucket.
        bucket: String,
        /// The input prefix.
        prefix: String,
        /// The instant the inputs were pinned to (ns since the Unix epoch).
        as_of_ns: u64,
        /// How many object versions were read.
        inputs: u64,
        /// SHA-256 (hex) of the input list: each input's `key NUL version_id NUL etag LF`,
        /// in key order, so anyone with the listing can check which versions were read
        /// (the ETag tells apart the "null" versions of an unversioned bucket).
        inputs_sha256: String,
        /// The output object's bucket.
        output_bucket: String,
        /// The output object's key.
        output_key: String,
        /// The output version's id.
        output_version_id: String,
        /// SHA-256 of the output, hex.
        output_sha256: String,
    },
    /// A bucket's object lock was turned on or its default retention changed.
    ObjectLockSet {
        /// The bucket.
        bucket: String,
        /// The default retention's mode (GOVERNANCE or COMPLIANCE); None: no default.
        mode: Option<String>,
        /// The default retention in days.
        days: Option<u32>,
        /// The default retention in years.
        years: Option<u32>,
    },
    /// A version's retention was set, extended, shortened or lifted.
    RetentionSet {
        /// The bucket.
        bucket: String,
        /// The object's key.
        key: String,
        /// The version's id.
        version_id: String,
        /// GOVERNANCE or COMPLIANCE; None when the retention was lifted.
        mode: Option<String>,
        /// Retained until (ns since the Unix epoch).
        retain_until_ns: Option<u64>,
    },
    /// A version's legal hold was put on or lifted.
    LegalHoldSet {
        /// The bucket.
        bucket: String,
        /// The object's key.
        key: String,
        /// The version's id.
        version_id: String,
        /// Whether the hold is on.
        on: bool,
    },
    /// A bucket's lifecycle rules were set or removed.
    LifecycleSet {
        /// The bucket.
        bucket: String,
        /// The rules as stored (JSON); None when they were removed.
        rules: Option<String>,
    },
    /// A container was deployed (`edgecloud run`): which image, by digest, and what it
    /// runs. The command is identified by its SHA-256 (it may carry secrets), the
    /// environment not at all.
    ContainerStarted {
        /// The container's id.
        container_id: String,
        /// Its name, when given.
        name: Option<String>,
        /// The image as it was named (`web:1`).
        image: String,
        /// The image's id (`sha256:` and its config's digest).
        image_id: String,
        /// The image manifest's digest, when it came with one.
        manifest_digest: Option<String>,
        /// SHA-256 (hex) of the command line, its arguments joined by NUL.
        command_sha256: String,
    },
    /// A node started serving a node image to machines that boot from the network
    /// (`serve --boot-image`), its files checked against its manifest.
    BootImageServed {
        /// The image's name: SHA-256 over its kernel's and initramfs's hashes.
        image_sha256: String,
        /// The kernel's version (`6.1.0-57-amd64`).
        kernel_version: String,
        /// SHA-256 of the kernel.
        kernel_sha256: String,
        /// SHA-256 of the initramfs.
        initramfs_sha256: String,
    },
    /// A node started from a node image it booted (`edgecloud init` names it).
    NodeBooted {
        /// The node's id.
        node_id: String,
        /// The image it booted, as the boot server named it.
        image_sha256: String,
    },
}

/// One part of a multipart object: its plaintext size and SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartDigest {
    /// Plaintext bytes.
    pub size: u64,
    /// SHA-256 of the plaintext, hex.
    pub sha256: String,
}

/// One entry of the audit log: a change, when, and who made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Format version (1).
    pub v: u32,
    /// When the change was made (ns since the Unix epoch).
    pub time_ns: u64,
    /// The access key that made it; None for the node itself.
    pub actor: Option<String>,
    /// The change.
    #[serde(flatten)]
    pub change: Change,
}

impl Record {
    /// A version-1 record.
    pub fn new(time_ns: u64, actor: Option<String>, change: Change) -> Self {
        Record {
            v: 1,
            time_ns,
            actor,
            change,
        }
    }

    /// The canonical bytes that are hashed into the tree: exactly what `serde_json`
    /// writes for the derived `Serialize` (a property test holds the two together),
    /// written directly because every small write pays for it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        self.write_to(&mut out);
        out
    }

    /// `to_bytes`, appended to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut j = Json(out);
        j.0.extend_from_slice(b"{\"v\":");
        j.num(self.v as u64);
        j.key("time_ns");
        j.num(self.time_ns);
        j.key("actor");
        j.opt_str(self.actor.as_deref());
        j.key("kind");
        j.str(self.change.kind());
        match &self.change {
            Change::BucketCreated { bucket } | Change::BucketDeleted { bucket } => {
                j.field("bucket", bucket);
            }
            Change::VersionWritten {
                bucket,
                key,
                version_id,
                size,
                sha256,
                parts,
            } => {
                j.field("bucket", bucket);
                j.field("key", key);
                j.field("version_id", version_id);
                j.key("size");
                j.num(*size);
                j.key("sha256");
                j.opt_str(sha256.as_deref());
                if !parts.is_empty() {
                    j.key("parts");
                    for (i, p) in parts.iter().enumerate() {
                        j.0.extend_from_slice(if i == 0 {
                            b"[{\"size\":"
                        } else {
                            b",{\"size\":"
                        });
                        j.num(p.size);
                        j.field("sha256", &p.sha256);
                        j.0.push(b'}');
                    }
                    j.0.push(b']');
                }
            }
            Change::DeleteMarker {
                bucket,
                key,
                version_id,
            }
            | Change::VersionDeleted {
                bucket,
                key,
                version_id,
            } => {
                j.field("bucket", bucket);
                j.field("key", key);
                j.field("version_id", version_id);
            }
            Change::KeyCreated { access_key } | Change::KeyRevoked { access_key } => {
                j.field("access_key", access_key);
            }
            Change::PermissionChanged {
                access_key,
                bucket,
                permission,
            } => {
                j.field("access_key", access_key);
                j.field("bucket", bucket);
                j.field("permission", permission);
            }
            Change::JobRun {
                job_id,
                runtime,
                code_sha256,
                bucket,
                prefix,
                as_of_ns,
                inputs,
                inputs_sha256,
                output_bucket,
                output_key,
                output_version_id,
                output_sha256,
            } => {
                j.field("job_id", job_id);
                j.field("runtime", runtime);
                j.field("code_sha256", code_sha256);
                j.field("bucket", bucket);
                j.field("prefix", prefix);
                j.key("as_of_ns");
                j.num(*as_of_ns);
                j.key("inputs");
                j.num(*inputs);
                j.field("inputs_sha256", inputs_sha256);
                j.field("output_bucket", output_bucket);
                j.field("output_key", output_key);
                j.field("output_version_id", output_version_id);
                j.field("output_sha256", output_sha256);
            }
            Change::ObjectLockSet {
                bucket,
                mode,
                days,
                years,
            } => {
                j.field("bucket", bucket);
                j.key("mode");
                j.opt_str(mode.as_deref());
                j.key("days");
                j.opt_num(days.map(u64::from));
                j.key("years");
                j.opt_num(years.map(u64::from));
            }
            Change::RetentionSet {
                bucket,
                key,
                version_id,
                mode,
                retain_until_ns,
            } => {
                j.field("bucket", bucket);
                j.field("key", key);
                j.field("version_id", version_id);
                j.key("mode");
                j.opt_str(mode.as_deref());
                j.key("retain_until_ns");
                j.opt_num(*retain_until_ns);
            }
            Change::LegalHoldSet {
                bucket,
                key,
                version_id,
                on,
            } => {
                j.field("bucket", bucket);
                j.field("key", key);
                j.field("version_id", version_id);
                j.key("on");
                j.0.extend_from_slice(if *on { b"true" } else { b"false" });
            }
            Change::LifecycleSet { bucket, rules } => {
                j.field("bucket", bucket);
                j.key("rules");
                j.opt_str(rules.as_deref());
            }
            Change::ContainerStarted {
                container_id,
                name,
                image,
                image_id,
                manifest_digest,
                command_sha256,
            } => {
                j.field("container_id", container_id);
                j.key("name");
                j.opt_str(name.as_deref());
                j.field("image", image);
                j.field("image_id", image_id);
                j.key("manifest_digest");
                j.opt_str(manifest_digest.as_deref());
                j.field("command_sha256", command_sha256);
            }
            Change::BootImageServed {
                image_sha256,
                kernel_version,
                kernel_sha256,
                initramfs_sha256,
            } => {
                j.field("image_sha256", image_sha256);
                j.field("kernel_version", kernel_version);
                j.field("kernel_sha256", kernel_sha256);
                j.field("initramfs_sha256", initramfs_sha256);
            }
            Change::NodeBooted {
                node_id,
                image_sha256,
            } => {
                j.field("node_id", node_id);
                j.field("image_sha256", image_sha256);
            }
        }
        j.0.push(b'}');
    }

    /// Parses a record; refuses unknown versions and malformed JSON.
    pub fn from_bytes(b: &[u8]) -> crate::Result<Self> {
        serde_json::from_slice(b)
            .map_err(|e| crate::LedgerError::Invalid(format!("not a ledger record: {e}")))
    }
}

impl Change {
    /// The record's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::BucketCreated { .. } => "bucket_created",
            Change::BucketDeleted { .. } => "bucket_deleted",
            Change::VersionWritten { .. } => "version_written",
            Change::DeleteMarker { .. } => "delete_marker",
            Change::VersionDeleted { .. } => "version_deleted",
            Change::KeyCreated { .. } => "key_created",
            Change::KeyRevoked { .. } => "key_revoked",
            Change::PermissionChanged { .. } => "permission_changed",
            Change::JobRun { .. } => "job_run",
            Change::ObjectLockSet { .. } => "object_lock_set",
            Change::RetentionSet { .. } => "retention_set",
            Change::LegalHoldSet { .. } => "legal_hold_set",
            Change::LifecycleSet { .. } => "lifecycle_set",
            Change::ContainerStarted { .. } => "container_started",
            Change::BootImageServed { .. } => "boot_image_served",
            Change::NodeBooted { .. } => "node_booted",
        }
    }
}

/// Compact JSON as `serde_json` writes it: strings escape `"`, `\\` and control
/// characters (short forms for \b \t \n \f \r, `\u00xx` otherwise); everything else,
/// non-ASCII included, is copied as is.
struct Json<'a>(&'a mut Vec<u8>);

impl Json<'_> {
    fn num(&mut self, n: u64) {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// `,"name":`
    fn key(&mut self, name: &str) {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn field(&mut self, name: &str, value: &str) {
        self.key(name);
        self.str(value);
    }

    fn opt_num(&mut self, n: Option<u64>) {
        match n {
            Some(n) => self.num(n),
            None => self.0.extend_from_slice(b"null"),
        }
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.0.extend_from_slice(b"null"),
        }
    }

    fn str(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let out = &mut *self.0;
        out.push(b'"');
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let short = match b {
                b'"' => b'"',
                b'\\' => b'\\',
                0x08 => b'b',
                0x09 => b't',
                0x0a => b'n',
                0x0c => b'f',
                0x0d => b'r',
                0..0x20 => b'u',
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..i]);
            out.push(b'\\');
            out.push(short);
            if short == b'u' {
                out.extend_from_slice(&[
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]);
            }
            start = i + 1;
        }
        out.extend_from_slice(&bytes[start..]);
        out.push(b'"');
    }
}

/// Streams a file's bytes and says whether they are the content a record names.
pub struct ContentCheck {
    /// Expected (size, sha256) pieces: one for a whole object, one per part otherwise.
    pieces: Vec<(u64, String)>,
    at: usize,
    filled: u64,
    hasher: sha2::Sha256,
    error: Option<String>,
}

impl ContentCheck {
    /// None when the record names no content (not a version, or no hash recorded).
    pub fn for_change(change: &Change) -> Option<Self> {
        let Change::VersionWritten {
            size,
            sha256,
            parts,
            ..
        } = change
        else {
            return None;
        };
        let pieces = match (sha256, parts.is_empty()) {
            (Some(h), _) => vec![(*size, h.clone())],
            (None, false) => parts.iter().map(|p| (p.size, p.sha256.clone())).collect(),
            (None, true) => return None,
        };
        let mut c = ContentCheck {
            pieces,
            at: 0,
            filled: 0,
            hasher: Default::default(),
            error: None,
        };
        c.close_empty_pieces();
        Some(c)
    }

    /// Hashes more bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        use sha2::Digest;
        while !data.is_empty() && self.error.is_none() {
            let Some((size, _)) = self.pieces.get(self.at) else {
                self.error = Some("the file is longer than the recorded object".into());
                return;
            };
            let take = ((size - self.filled) as usize).min(data.len());
            self.hasher.update(&data[..take]);
            self.filled += take as u64;
            data = &data[take..];
            if self.filled == *size {
                self.close_piece();
                self.close_empty_pieces();
            }
        }
    }

    /// Ok when every byte matched; otherwise what differs, in words.
    pub fn finish(self) -> crate::Result<()> {
        match self.error {
            Some(e) => Err(crate::LedgerError::Verification(e)),
            None if self.at < self.pieces.len() => Err(crate::LedgerError::Verification(
                "the file is shorter than the recorded object".into(),
            )),
            None => Ok(()),
        }
    }

    fn close_piece(&mut self) {
        use sha2::Digest;
        let got = hex(&std::mem::take(&mut self.hasher).finalize());
        let want = &self.pieces[self.at].1;
        if &got != want {
            let what = if self.pieces.len() == 1 {
                "the content".to_string()
            } else {
                format!("part {}", self.at + 1)
            };
            self.error = Some(format!("{what} has SHA-256 {got}, the record says {want}"));
        }
        self.at += 1;
        self.filled = 0;
    }

    /// Empty objects and parts are complete before any byte arrives.
    fn close_empty_pieces(&mut self) {
        while self.error.is_none() && self.pieces.get(self.at).is_some_and(|(s, _)| *s == 0) {
            self.close_piece();
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoding_is_canonical_and_documented() {
        let r = Record::new(
            7,
            Some("ECKEY".into()),
            Change::VersionWritten {
                bucket: "b".into(),
                key: "k".into(),
                version_id: "v1".into(),
                size: 3,
                sha256: Some("ab".into()),
                parts: vec![],
            },
        );
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"time_ns":7,"actor":"ECKEY","kind":"version_written","bucket":"b","key":"k","version_id":"v1","size":3,"sha256":"ab"}"#
        );
        assert_eq!(Record::from_bytes(text.as_bytes()).unwrap(), r);
    }

    fn any_change() -> impl proptest::strategy::Strategy<Value = Change> {
        use proptest::prelude::*;
        // Any text, and text dense in what JSON escapes (control characters, quotes,
        // backslashes) beside non-ASCII.
        let s = || {
            prop_oneof![
                any::<String>(),
                "[\\x00-\\x20\"\\\\\\x7fa\u{e9}\u{20ac}\u{1f600}]{0,16}"
            ]
        };
        let part = (any::<u64>(), s()).prop_map(|(size, sha256)| PartDigest { size, sha256 });
        prop_oneof![
            s().prop_map(|bucket| Change::BucketCreated { bucket }),
            s().prop_map(|bucket| Change::BucketDeleted { bucket }),
            (
                (s(), s(), s()),
                any::<u64>(),
                proptest::option::of(s()),
                proptest::collection::vec(part, 0..3)
            )
                .prop_map(|((bucket, key, version_id), size, sha256, parts)| {
                    Change::VersionWritten {
                        bucket,
                        key,
                        version_id,
                        size,
                        sha256,
                        parts,
                    }
                }),
            (s(), s(), s()).prop_map(|(bucket, key, version_id)| Change::DeleteMarker {
                bucket,
                key,
                version_id
            }),
            (s(), s(), s()).prop_map(|(bucket, key, version_id)| Change::VersionDeleted {
                bucket,
                key,
                version_id
            }),
            s().prop_map(|access_key| Change::KeyCreated { access_key }),
            s().prop_map(|access_key| Change::KeyRevoked { access_key }),
            (s(), s(), s()).prop_map(|(access_key, bucket, permission)| {
                Change::PermissionChanged {
                    access_key,
                    bucket,
                    permission,
                }
            }),
            (
                (s(), s(), s(), s(), s()),
                any::<u64>(),
                any::<u64>(),
                (s(), s(), s(), s(), s())
            )
                .prop_map(
                    |(
                        (job_id, runtime, code_sha256, bucket, prefix),
                        as_of_ns,
                        inputs,
                        (
                            inputs_sha256,
                            output_bucket,
                            output_key,
                            output_version_id,
                            output_sha256,
                        ),
                    )| {
                        Change::JobRun {
                            job_id,
                            runtime,
                            code_sha256,
                            bucket,
                            prefix,
                            as_of_ns,
                            inputs,
                            inputs_sha256,
                            output_bucket,
                            output_key,
                            output_version_id,
                            output_sha256,
                        }
                    }
                ),
            (
                s(),
                proptest::option::of(s()),
                proptest::option::of(any::<u32>()),
                proptest::option::of(any::<u32>())
            )
                .prop_map(|(bucket, mode, days, years)| Change::ObjectLockSet {
                    bucket,
                    mode,
                    days,
                    years
                }),
            (
                (s(), s(), s()),
                proptest::option::of(s()),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|((bucket, key, version_id), mode, retain_until_ns)| {
                    Change::RetentionSet {
                        bucket,
                        key,
                        version_id,
                        mode,
                        retain_until_ns,
                    }
                }),
            (s(), s(), s(), any::<bool>()).prop_map(|(bucket, key, version_id, on)| {
                Change::LegalHoldSet {
                    bucket,
                    key,
                    version_id,
                    on,
                }
            }),
            (s(), proptest::option::of(s()))
                .prop_map(|(bucket, rules)| Change::LifecycleSet { bucket, rules }),
            (
                (s(), proptest::option::of(s()), s()),
                (s(), proptest::option::of(s()), s())
            )
                .prop_map(
                    |((container_id, name, image), (image_id, manifest_digest, command_sha256))| {
                        Change::ContainerStarted {
                            container_id,
                            name,
                            image,
                            image_id,
                            manifest_digest,
                            command_sha256,
                        }
                    }
                ),
            (s(), s(), s(), s()).prop_map(
                |(image_sha256, kernel_version, kernel_sha256, initramfs_sha256)| {
                    Change::BootImageServed {
                        image_sha256,
                        kernel_version,
                        kernel_sha256,
                        initramfs_sha256,
                    }
                }
            ),
            (s(), s()).prop_map(|(node_id, image_sha256)| Change::NodeBooted {
                node_id,
                image_sha256
            }),
        ]
    }

    proptest::proptest! {
        /// The hand-written encoder writes byte for byte what serde_json writes for the
        /// derived `Serialize` (the documented format), and reads back.
        #[test]
        fn records_encode_exactly_as_serde_json_does(
            time_ns in proptest::prelude::any::<u64>(),
            actor in proptest::option::of(".*"),
            change in any_change(),
        ) {
            let r = Record::new(time_ns, actor, change);
            let bytes = r.to_bytes();
            proptest::prop_assert_eq!(
                String::from_utf8(bytes.clone()).unwrap(),
                serde_json::to_string(&r).unwrap()
            );
            proptest::prop_assert_eq!(Record::from_bytes(&bytes).unwrap(), r);
        }
    }

    fn sha(b: &[u8]) -> String {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(b))
    }

    fn multipart(parts: &[&[u8]]) -> Change {
        Change::VersionWritten {
            bucket: "b".into(),
            key: "k".into(),
            version_id: "v".into(),
            size: parts.iter().map(|p| p.len() as u64).sum(),
            sha256: None,
            parts: parts
                .iter()
                .map(|p| PartDigest {
                    size: p.len() as u64,
                    sha256: sha(p),
                })
                .collect(),
        }
    }

    fn check(change: &Change, file: &[u8], step: usize) -> std::result::Result<(), String> {
        let mut c = ContentCheck::for_change(change).unwrap();
        for piece in file.chunks(step.max(1)) {
            c.update(piece);
        }
        c.finish().map_err(|e| match e {
            crate::LedgerError::Verification(m) => m,
            other => other.to_string(),
        })
    }

    #[test]
    fn multipart_content_is_checked_part_by_part_whatever_the_read_size() {
        let ch = multipart(&[b"hello ", b"", b"multipart world"]);
        let text = String::from_utf8(Record::new(1, None, ch.clone()).to_bytes()).unwrap();
        assert!(
            text.contains(r#""sha256":null,"parts":[{"size":6,"sha256":"#),
            "{text}"
        );
        for step in [1, 2, 5, 6, 7, 100] {
            check(&ch, b"hello multipart world", step).unwrap();
            let e = check(&ch, b"hello multipart World", step).unwrap_err();
            assert!(e.starts_with("part 3 has SHA-256"), "{e}");
            assert!(
                check(&ch, b"hello multipart worl", step)
                    .unwrap_err()
                    .contains("shorter")
            );
            assert!(
                check(&ch, b"hello multipart world!", step)
                    .unwrap_err()
                    .contains("longer")
            );
        }
    }

    #[test]
    fn whole_objects_and_records_without_content() {
        let whole = Change::VersionWritten {
            bucket: "b".into(),
            key: "k".into(),
            version_id: "v".into(),
            size: 0,
            sha256: Some(sha(b"")),
            parts: vec![],
        };
        check(&whole, b"", 1).unwrap();
        assert!(check(&whole, b"x", 1).unwrap_err().contains("longer"));
        assert!(
            !String::from_utf8(Record::new(1, None, whole).to_bytes())
                .unwrap()
                .contains("parts")
        );
        assert!(ContentCheck::for_change(&Change::BucketCreated { bucket: "b".into() }).is_none());
    }
}
