//! S3 versioning, listing and multipart semantics of the catalog.
#![allow(clippy::unwrap_used)] // a panic is how a test or benchmark reports

use std::collections::BTreeMap;

use catalog::*;
use codec::Redundancy;

fn open() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(
        &dir.path().join("catalog.redb"),
        CatalogOptions {
            min_part_size: 10,
            ..Default::default()
        },
    )
    .unwrap();
    (dir, c)
}

fn bucket(name: &str, versioning: Versioning) -> Bucket {
    Bucket {
        name: name.into(),
        created_ns: now_ns(),
        versioning,
        policy: Redundancy::None,
        wrapped_key: vec![],
        wrapped_key_id: [0; 32],
        compression: 3,
        chunk_min: 1,
        chunk_avg: 2,
        chunk_max: 4,
        settings: BTreeMap::new(),
    }
}

fn nv(etag: &str) -> NewVersion {
    NewVersion {
        size: 1,
        etag: etag.into(),
        ..Default::default()
    }
}

fn chunk(n: u8) -> ChunkRef {
    ChunkRef {
        id: [n; 32],
        plain_len: 10,
        sealed_len: 40,
    }
}

#[tokio::test]
async fn versioning_enabled_keeps_every_version_and_delete_markers() {
    let (_d, c) = open();
    c.create_bucket(bucket("b", Versioning::Enabled))
        .await
        .unwrap();
    let v1 = c
        .put_version("b", "k", nv("1"), PutCondition::default())
        .await
        .unwrap();
    let v2 = c
        .put_version("b", "k", nv("2"), PutCondition::default())
        .await
        .unwrap();
    assert_ne!(v1.version_id, v2.version_id);
    assert_eq!(c.version("b", "k", &VersionSel::Latest).unwrap().etag, "2");
    let del = c.delete("b", "k", None).await.unwrap();
    assert!(del.delete_marker);
    assert!(
        c.version("b", "k", &VersionSel::Latest)
            .unwrap()
            .delete_marker
    );
    assert_eq!(
        c.version("b", "k", &VersionSel::Id(v1.version_id.clone()))
            .unwrap()
            .etag,
        "1"
    );
    let page = c
        .list_versions(
            "b",
            &VersionsQuery {
                max_keys: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.versions.len(), 3);
    assert!(page.versions[0].1 && page.versions[0].0.delete_marker);
    // Deleting the marker brings v2 back.
    c.delete("b", "k", del.version_id).await.unwrap();
    assert_eq!(c.version("b", "k", &VersionSel::Latest).unwrap().etag, "2");
    assert!(
        c.list(
            "b",
            &ListQuery {
                max_keys: 10,
                ..Default::default()
            }
        )
        .unwrap()
        .objects
        .len()
            == 1
    );
}

#[tokio::test]
async fn unversioned_overwrite_keeps_only_null_but_as_of_sees_the_past() {
    let (_d, c) = open();
    c.create_bucket(bucket("b", Versioning::Unversioned))
        .await
        .unwrap();
    let v1 = c
        .put_version("b", "k", nv("1"), PutCondition::default())
        .await
        .unwrap();
    let between = v1.mtime_ns;
    let v2 = c
        .put_version("b", "k", nv("2"), PutCondition::default())
        .await
        .unwrap();
    assert_eq!(
        (v1.version_id.as_str(), v2.version_id.as_str()),
        ("null", "null")
    );
    let page = c
        .list_versions(
            "b",
            &VersionsQuery {
                max_keys: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.versions.len(), 1);
    assert_eq!(
        c.version("b", "k", &VersionSel::AsOf(between))
            .unwrap()
            .etag,
        "1"
    );
    c.delete("b", "k", None).await.unwrap();
    assert!(matches!(
        c.version("b", "k", &VersionSel::Latest),
        Err(CatalogError::NoSuchKey(_))
    ));
    assert_eq!(
        c.version("b", "k", &VersionSel::AsOf(v2.mtime_ns))
            .unwrap()
            .etag,
        "2"
    );
    let now = c
        .list(
            "b",
            &ListQuery {
                max_keys: 10,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(now.objects.is_empty());
    let then = c
        .list(
            "b",
            &ListQuery {
                max_keys: 10,
                as_of: Some(between),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(then.objects[0].etag, "1");
    // Hidden history does not keep a bucket from being deleted.
    c.delete_bucket("b").await.unwrap();
}

#[tokio::test]
async fn listing_rolls_up_prefixes_and_pages() {
    let (_d, c) = open();
    c.create_bucket(bucket("b", Versioning::Unversioned))
        .await
        .unwrap();
    for k in ["a/1", "a/2", "b", "c/x/1", "c/y", "d"] {
        c.put_version("b", k, nv(k), PutCondition::default())
            .await
            .unwrap();
    }
    let q = ListQuery {
        delimiter: Some("/".into()),
        max_keys: 1000,
        ..Default::default()
    };
    let p = c.list("b", &q).unwrap();
    let keys: Vec<_> = p.objects.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(keys, ["b", "d"]);
    assert_eq!(p.common_prefixes, ["a/", "c/"]);
    // Pages of two, following the marker, see every entry once.
    let mut seen = Vec::new();
    let mut q = ListQuery {
        delimiter: Some("/".into()),
        max_keys: 2,
        ..Default::default()
    };
    loop {
        let p = c.list("b", &q).unwrap();
        seen.extend(p.common_prefixes.clone());
        seen.extend(p.objects.iter().map(|v| v.key.clone()));
        if !p.truncated {
            break;
        }
        q.start_after = p.next_marker;
    }
    seen.sort();
    assert_eq!(seen, ["a/", "b", "c/", "d"]);
    let p = c
        .list(
            "b",
            &ListQuery {
                prefix: "c/".into(),
                delimiter: Some("/".into()),
                max_keys: 9,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(p.common_prefixes, ["c/x/"]);
    assert_eq!(p.objects[0].key, "c/y");
    // A prefix whose keys are all deleted is no longer listed (as S3).
    c.delete("b", "c/x/1", None).await.unwrap();
    let p = c
        .list(
            "b",
            &ListQuery {
                delimiter: Some("/".into()),
                max_keys: 9,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(p.common_prefixes, ["a/", "c/"]);
    c.delete("b", "c/y", None).await.unwrap();
    let p = c
        .list(
            "b",
            &ListQuery {
                delimiter: Some("/".into()),
                max_keys: 9,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(p.common_prefixes, ["a/"]);
    // Also when the deletion left a delete marker.
    c.create_bucket(bucket("v", Versioning::Enabled))
        .await
        .unwrap();
    c.put_version("v", "p/k", nv("p/k"), PutCondition::default())
        .await
        .unwrap();
    c.delete("v", "p/k", None).await.unwrap();
    let p = c
        .list(
            "v",
            &ListQuery {
                delimiter: Some("/".into()),
                max_keys: 9,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(
        p.common_prefixes.is_empty() && p.objects.is_empty(),
        "{:?}",
        p.common_prefixes
    );
}

#[tokio::test]
async fn conditional_put_and_bucket_not_empty() {
    let (_d, c) = open();
    c.create_bucket(bucket("b", Versioning::Unversioned))
        .await
        .unwrap();
    let cond = PutCondition {
        if_none_match_any: true,
        ..Default::default()
    };
    c.put_version("b", "k", nv("1"), cond.clone())
        .await
        .unwrap();
    assert_eq!(
        c.put_version("b", "k", nv("2"), cond).await.unwrap_err(),
        CatalogError::PreconditionFailed
    );
    assert_eq!(
        c.delete_bucket("b").await.unwrap_err(),
        CatalogError::BucketNotEmpty("b".into())
    );
    assert!(matches!(
        c.put_version("nope", "k", nv("1"), PutCondition::default())
            .await,
        Err(CatalogError::NoSuchBucket(_))
    ));
}

#[tokio::test]
async fn chunk_refs_follow_versions_and_parts() {
    let (_d, c) = open();
    c.create_bucket(bucket("b", Versioning::Enabled))
        .await
        .unwrap();
    let body = Body::Chunks {
        policy: Redundancy::None,
        chunks: vec![chunk(1), chunk(2)],
    };
    let mut v = nv("x");
    v.body = Some(body.clone());
    // A chunk nobody stored cannot be referenced.
    assert_eq!(
        c.put_version("b", "k", v.clone(), PutCondition::default())
            .await
            .unwrap_err(),
        CatalogError::ChunkVanished
    );
    v.fresh = vec![[1; 32], [2; 32]];
    let a = c
        .put_version("b", "k", v.clone(), PutCondition::default())
        .await
        .unwrap();
    v.fresh.clear();
    let b2 = c
        .put_version("b", "k2", v, PutCondition::default())
        .await
        .unwrap();
    assert_eq!(c.chunk(&[1; 32]).unwrap().unwrap().refs, 2);
    c.delete("b", "k", Some(a.version_id)).await.unwrap();
    c.delete("b", "k2", Some(b2.version_id)).await.unwrap();
    assert_eq!(c.chunk(&[1; 32]).unwrap().unwrap().refs, 0);
    let gone = c.collect_chunks(now_ns() + 1, 100).await.unwrap();
    assert_eq!(gone.len(), 2);
    assert!(c.chunk(&[1; 32]).unwrap().is_none());

    // Multipart: parts hold references until completion moves them to the version.
    let up = c
        .create_upload("b", "mp", None, BTreeMap::new())
        .await
        .unwrap();
    for n in 1..=2u8 {
        let part = Part {
            number: n as u32,
            size: 20,
            etag: format!("e{n}"),
            sha256: format!("{n:064}"),
            mtime_ns: 0,
            body: Body::Chunks {
                policy: Redundancy::None,
                chunks: vec![chunk(10 + n)],
            },
        };
        c.put_part(&up.upload_id, part, vec![[10 + n; 32]])
            .await
            .unwrap();
    }
    let err = c
        .complete_upload(
            &up.upload_id,
            vec![(2, "e2".into()), (1, "e1".into())],
            PutCondition::default(),
            Redundancy::None,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::InvalidPart(_)));
    let v = c
        .complete_upload(
            &up.upload_id,
            vec![(1, "e1".into()), (2, "\"e2\"".into())],
            PutCondition::default(),
            Redundancy::None,
            Some("ECK".into()),
        )
        .await
        .unwrap();
    assert_eq!(v.size, 40);
    assert_eq!(v.parts, vec![20, 20]);
    assert!(v.etag.ends_with("-2"), "multipart ETag {}", v.etag);
    assert_eq!(v.body.chunk_refs().len(), 2);
    assert_eq!(c.chunk(&[11; 32]).unwrap().unwrap().refs, 1);
    assert!(matches!(
        c.parts(&up.upload_id),
        Err(CatalogError::NoSuchUpload(_))
    ));
}

#[tokio::test]
async fn deleting_a_bucket_drops_its_incomplete_uploads_and_their_chunks() {
    let (_d, c) = open();
    c.create_bucket(bucket("b", Versioning::Enabled))
        .await
        .unwrap();
    c.create_bucket(bucket("keep", Versioning::Enabled))
        .await
        .unwrap();
    let up = c
        .create_upload("b", "mp", None, BTreeMap::new())
        .await
        .unwrap();
    let other = c
        .create_upload("keep", "mp", None, BTreeMap::new())
        .await
        .unwrap();
    let part = Part {
        number: 1,
        size: 20,
        etag: "e1".into(),
        sha256: format!("{:064}", 1),
        mtime_ns: 0,
        body: Body::Chunks {
            policy: Redundancy::None,
            chunks: vec![chunk(30)],
        },
    };
    c.put_part(&up.upload_id, part, vec![[30; 32]])
        .await
        .unwrap();
    assert_eq!(c.chunk(&[30; 32]).unwrap().unwrap().refs, 1);
    c.delete_bucket("b").await.unwrap();
    assert!(matches!(
        c.upload(&up.upload_id),
        Err(CatalogError::NoSuchUpload(_))
    ));
    assert_eq!(c.chunk(&[30; 32]).unwrap().unwrap().refs, 0);
    // Another bucket's upload is untouched.
    assert_eq!(c.upload(&other.upload_id).unwrap().bucket, "keep");
}

#[tokio::test]
async fn many_concurrent_writes_share_commits_and_all_land() {
    let (_d, c) = open();
    c.create_bucket(bucket("b", Versioning::Unversioned))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.put_version("b", &format!("k{i:03}"), nv("e"), PutCondition::default())
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        c.list(
            "b",
            &ListQuery {
                max_keys: 1000,
                ..Default::default()
            }
        )
        .unwrap()
        .objects
        .len(),
        200
    );
}

/// Changes that share a commit get dense, distinct ledger indexes that name them; a
/// refused write in the same batch appends nothing; a snapshot taken among them holds a
/// record for every version it holds, and restores to the same log.
#[tokio::test]
async fn batched_changes_get_dense_ledger_indexes_and_snapshots_keep_them() {
    use ledger::record::{Change, Record};
    let (_d, c) = open();
    c.create_bucket(bucket("b", Versioning::Enabled))
        .await
        .unwrap();
    c.put_version("b", "taken", nv("e"), PutCondition::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            if i % 50 == 7 {
                // Refused (the key exists): must leave no record behind.
                let refused = c
                    .put_version(
                        "b",
                        "taken",
                        nv("x"),
                        PutCondition {
                            if_none_match_any: true,
                            ..Default::default()
                        },
                    )
                    .await;
                assert!(matches!(refused, Err(CatalogError::PreconditionFailed)));
                return None;
            }
            if i == 150 {
                return Some(c.dump_with(|_| ()).await.unwrap().0);
            }
            c.put_version("b", &format!("k{i:03}"), nv("e"), PutCondition::default())
                .await
                .unwrap();
            None
        }));
    }
    let mut snapshot = None;
    for t in tasks {
        if let Some(s) = t.await.unwrap() {
            snapshot = Some(s);
        }
    }
    let written = 300 - 6 - 1;
    // The bucket, "taken", then one record per accepted put.
    assert_eq!(c.ledger_size().unwrap(), 2 + written as u64);
    let mut seen = std::collections::BTreeSet::new();
    for i in (0..300).filter(|i| i % 50 != 7 && *i != 150) {
        let key = format!("k{i:03}");
        let v = c.version("b", &key, &VersionSel::Latest).unwrap();
        let index: u64 = v.meta[audit::LEDGER_INDEX].parse().unwrap();
        assert!(seen.insert(index), "index {index} given twice");
        let r = Record::from_bytes(&c.ledger_entry(index).unwrap().unwrap()).unwrap();
        match r.change {
            Change::VersionWritten {
                key: k, version_id, ..
            } => {
                assert_eq!((k, version_id), (key, v.version_id));
            }
            other => panic!("entry {index} is {other:?}"),
        }
    }
    // The snapshot: as many records as the changes it holds, each version's present.
    let (_d2, restored) = open();
    restored
        .restore(snapshot.unwrap(), |_| Ok(()))
        .await
        .unwrap();
    let size = restored.ledger_size().unwrap();
    let listed = restored
        .list(
            "b",
            &ListQuery {
                max_keys: 1000,
                ..Default::default()
            },
        )
        .unwrap()
        .objects;
    assert_eq!(
        size,
        1 + listed.len() as u64,
        "one record per change in the snapshot"
    );
    for o in listed {
        let v = restored.version("b", &o.key, &VersionSel::Latest).unwrap();
        let index: u64 = v.meta[audit::LEDGER_INDEX].parse().unwrap();
        assert!(index < size);
        assert_eq!(
            restored.ledger_entry(index).unwrap(),
            c.ledger_entry(index).unwrap()
        );
    }
    // Writes after the restore continue the restored log densely.
    let next = restored
        .put_version("b", "after", nv("e"), PutCondition::default())
        .await
        .unwrap();
    assert_eq!(next.meta[audit::LEDGER_INDEX], size.to_string());
}

/// Every change lands in the audit log, in the same transaction, in order.
#[tokio::test]
async fn every_mutation_appends_one_ledger_record() {
    use ledger::record::{Change, Record};
    let (_d, c) = open();
    c.create_bucket(bucket("audited", Versioning::Enabled))
        .await
        .unwrap();
    let mut w = nv("e1");
    w.sha256 = Some("ab".repeat(32));
    w.actor = Some("ECWRITER".into());
    let v = c
        .put_version("audited", "k", w, PutCondition::default())
        .await
        .unwrap();
    assert_eq!(
        v.meta.get(audit::LEDGER_INDEX).map(String::as_str),
        Some("1")
    );
    // a refused write appends nothing
    let refused = PutCondition {
        if_none_match_any: true,
        ..Default::default()
    };
    assert!(
        c.put_version("audited", "k", nv("e2"), refused)
            .await
            .is_err()
    );
    let marker = c.delete("audited", "k", None).await.unwrap();
    c.delete("audited", "k", Some(v.version_id.clone()))
        .await
        .unwrap();
    let key = AccessKey {
        access_key: "ECK".into(),
        secret: "s".into(),
        name: "n".into(),
        created_ns: 5,
        admin: false,
        create_buckets: false,
        buckets: BTreeMap::new(),
    };
    c.put_access_key(key, Some("@admin".into())).await.unwrap();
    c.update_access_key("ECK", Some("@admin".into()), |k| {
        k.buckets.insert("audited".into(), Permission::Write);
    })
    .await
    .unwrap();
    c.delete_access_key("ECK", Some("@admin".into()))
        .await
        .unwrap();
    c.delete("audited", "k", marker.version_id.clone())
        .await
        .unwrap();
    c.delete_bucket("audited").await.unwrap();

    let actors: Vec<Option<String>> = (0..c.ledger_size().unwrap())
        .map(|i| {
            Record::from_bytes(&c.ledger_entry(i).unwrap().unwrap())
                .unwrap()
                .actor
        })
        .collect();
    let admin = Some("@admin".to_string());
    assert_eq!(
        actors.iter().filter(|a| **a == admin).count(),
        3,
        "{actors:?}"
    );
    let kinds: Vec<Change> = (0..c.ledger_size().unwrap())
        .map(|i| {
            Record::from_bytes(&c.ledger_entry(i).unwrap().unwrap())
                .unwrap()
                .change
        })
        .collect();
    let id = v.version_id.clone();
    let mid = marker.version_id.clone().unwrap();
    let b = || "audited".to_string();
    assert_eq!(
        kinds,
        vec![
            Change::BucketCreated { bucket: b() },
            Change::VersionWritten {
                bucket: b(),
                key: "k".into(),
                version_id: id.clone(),
                size: 1,
                sha256: Some("ab".repeat(32)),
                parts: vec![]
            },
            Change::DeleteMarker {
                bucket: b(),
                key: "k".into(),
                version_id: mid.clone()
            },
            Change::VersionDeleted {
                bucket: b(),
                key: "k".into(),
                version_id: id
            },
            Change::KeyCreated {
                access_key: "ECK".into()
            },
            Change::PermissionChanged {
                access_key: "ECK".into(),
                bucket: b(),
                permission: "write".into()
            },
            Change::KeyRevoked {
                access_key: "ECK".into()
            },
            Change::VersionDeleted {
                bucket: b(),
                key: "k".into(),
                version_id: mid
            },
            Change::BucketDeleted { bucket: b() },
        ]
    );
    let second = Record::from_bytes(&c.ledger_entry(1).unwrap().unwrap()).unwrap();
    assert_eq!(
        (second.actor.as_deref(), second.time_ns),
        (Some("ECWRITER"), v.mtime_ns)
    );
}
