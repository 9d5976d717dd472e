//! Object lock as the catalog applies it: every gateway's deletes and metadata changes
//! pass here, so these are the rules every path obeys.
#![allow(clippy::unwrap_used)] // a panic is how a test or benchmark reports

use std::collections::BTreeMap;

use catalog::lock::{BUCKET_LOCK, LEGAL_HOLD, LOCK_MODE, LOCK_UNTIL};
use catalog::*;
use codec::Redundancy;
use ledger::record::{Change, Record};

fn open() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(&dir.path().join("catalog.redb"), CatalogOptions::default()).unwrap();
    (dir, c)
}

fn bucket(name: &str, versioning: Versioning, lock: Option<&str>) -> Bucket {
    let mut settings = BTreeMap::new();
    if let Some(l) = lock {
        settings.insert(BUCKET_LOCK.to_string(), l.to_string());
    }
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
        settings,
    }
}

fn nv(meta: &[(&str, String)]) -> NewVersion {
    NewVersion {
        size: 0,
        etag: "e".into(),
        meta: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Default::default()
    }
}

fn records(c: &Catalog) -> Vec<Change> {
    c.ledger_entries(0, c.ledger_size().unwrap())
        .unwrap()
        .iter()
        .map(|b| Record::from_bytes(b).unwrap().change)
        .collect()
}

const HOUR_NS: u64 = 3_600_000_000_000;

#[tokio::test]
async fn retained_versions_survive_every_delete_until_their_retention_ends() {
    let (_d, c) = open();
    c.create_bucket(bucket("b", Versioning::Enabled, Some("{}")))
        .await
        .unwrap();
    let later = (now_ns() + HOUR_NS).to_string();
    let gov = c
        .put_version(
            "b",
            "g",
            nv(&[
                (LOCK_MODE, "GOVERNANCE".into()),
                (LOCK_UNTIL, later.clone()),
            ]),
            PutCondition::default(),
        )
        .await
        .unwrap();
    let comp = c
        .put_version(
            "b",
            "c",
            nv(&[
                (LOCK_MODE, "COMPLIANCE".into()),
                (LOCK_UNTIL, later.clone()),
            ]),
            PutCondition::default(),
        )
        .await
        .unwrap();
    let held = c
        .put_version(
            "b",
            "h",
            nv(&[(LEGAL_HOLD, "ON".into())]),
            PutCondition::default(),
        )
        .await
        .unwrap();

    // Deleting the key only adds a delete marker; the locked version stays.
    let d = c.delete("b", "g", None).await.unwrap();
    assert!(d.delete_marker);
    c.version("b", "g", &VersionSel::Id(gov.version_id.clone()))
        .unwrap();
    // Removing the version is refused, and bypassing governance works for GOVERNANCE only.
    for (key, v) in [("g", &gov), ("c", &comp), ("h", &held)] {
        let e = c
            .delete("b", key, Some(v.version_id.clone()))
            .await
            .unwrap_err();
        assert!(matches!(e, CatalogError::Locked(_)), "{key}: {e}");
    }
    for (key, v) in [("c", &comp), ("h", &held)] {
        let e = c
            .delete_governed("b", key, Some(v.version_id.clone()), None, true)
            .await
            .unwrap_err();
        assert!(matches!(e, CatalogError::Locked(_)), "{key}: {e}");
    }
    c.delete_governed("b", "g", Some(gov.version_id.clone()), None, true)
        .await
        .unwrap();

    // COMPLIANCE cannot be shortened, even bypassing governance; it can be extended.
    let sooner = (now_ns() + HOUR_NS / 2).to_string();
    let s2 = sooner.clone();
    let e = c
        .update_version_meta_governed("b", "c", VersionSel::Latest, true, move |m| {
            m.insert(LOCK_UNTIL.into(), s2.clone());
        })
        .await
        .unwrap_err();
    assert!(matches!(e, CatalogError::Locked(_)), "{e}");
    let much_later = (now_ns() + 2 * HOUR_NS).to_string();
    let ml = much_later.clone();
    c.update_version_meta("b", "c", VersionSel::Latest, move |m| {
        m.insert(LOCK_UNTIL.into(), ml.clone());
    })
    .await
    .unwrap();
    // Tags and other metadata still change freely.
    c.update_version_meta("b", "c", VersionSel::Latest, |m| {
        m.insert(":tagging".into(), "a=b".into());
    })
    .await
    .unwrap();

    // A legal hold lifted lets the version go.
    c.update_version_meta("b", "h", VersionSel::Latest, |m| {
        m.insert(LEGAL_HOLD.into(), "OFF".into());
    })
    .await
    .unwrap();
    c.delete("b", "h", Some(held.version_id.clone()))
        .await
        .unwrap();

    // The ledger has each lock change.
    let recs = records(&c);
    let retention: Vec<_> = recs
        .iter()
        .filter_map(|r| match r {
            Change::RetentionSet {
                key,
                mode,
                retain_until_ns,
                ..
            } => Some((key.as_str(), mode.clone(), *retain_until_ns)),
            _ => None,
        })
        .collect();
    assert_eq!(
        retention,
        vec![
            ("g", Some("GOVERNANCE".into()), Some(later.parse().unwrap())),
            ("c", Some("COMPLIANCE".into()), Some(later.parse().unwrap())),
            (
                "c",
                Some("COMPLIANCE".into()),
                Some(much_later.parse().unwrap())
            ),
        ]
    );
    let holds: Vec<_> = recs
        .iter()
        .filter_map(|r| match r {
            Change::LegalHoldSet { key, on, .. } => Some((key.as_str(), *on)),
            _ => None,
        })
        .collect();
    assert_eq!(holds, vec![("h", true), ("h", false)]);
}

#[tokio::test]
async fn a_locked_bucket_stays_versioned_and_locked_and_applies_its_default() {
    let (_d, c) = open();
    // Lock needs versioning.
    let e = c
        .create_bucket(bucket("u", Versioning::Unversioned, Some("{}")))
        .await
        .unwrap_err();
    assert!(matches!(e, CatalogError::InvalidState(_)), "{e}");
    c.create_bucket(bucket(
        "b",
        Versioning::Enabled,
        Some(r#"{"default":{"mode":"Governance","days":1}}"#),
    ))
    .await
    .unwrap();
    for change in [
        Box::new(|b: &mut Bucket| b.versioning = Versioning::Suspended)
            as Box<dyn Fn(&mut Bucket) + Send + Sync>,
        Box::new(|b: &mut Bucket| {
            b.settings.remove(BUCKET_LOCK);
        }),
    ] {
        let e = c
            .update_bucket("b", move |b| {
                change(b);
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(matches!(e, CatalogError::InvalidState(_)), "{e}");
    }
    // A write that names no retention gets the bucket's default, counted from the write.
    let before = now_ns();
    let v = c
        .put_version("b", "k", nv(&[]), PutCondition::default())
        .await
        .unwrap();
    assert_eq!(v.meta.get(LOCK_MODE).unwrap(), "GOVERNANCE");
    let until: u64 = v.meta.get(LOCK_UNTIL).unwrap().parse().unwrap();
    assert!(until >= before + 24 * HOUR_NS && until <= now_ns() + 24 * HOUR_NS);
    assert!(records(&c).iter().any(|r| matches!(
        r,
        Change::ObjectLockSet { bucket, mode: Some(m), days: Some(1), years: None }
            if bucket == "b" && m == "GOVERNANCE"
    )));

    // Buckets without lock refuse retention and legal hold.
    c.create_bucket(bucket("plain", Versioning::Enabled, None))
        .await
        .unwrap();
    let e = c
        .put_version(
            "plain",
            "k",
            nv(&[(LEGAL_HOLD, "ON".into())]),
            PutCondition::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CatalogError::Invalid(_)), "{e}");
    c.put_version("plain", "k", nv(&[]), PutCondition::default())
        .await
        .unwrap();
    let e = c
        .update_version_meta("plain", "k", VersionSel::Latest, |m| {
            m.insert(LEGAL_HOLD.into(), "ON".into());
        })
        .await
        .unwrap_err();
    assert!(matches!(e, CatalogError::Invalid(_)), "{e}");
}
