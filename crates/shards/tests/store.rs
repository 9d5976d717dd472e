//! The shard store on real folders: writes, reads, bitrot, lost disks, compaction.
#![allow(clippy::unwrap_used)] // a panic is how a test or benchmark reports
use std::os::unix::fs::FileExt;

use codec::Redundancy;
use shards::{ShardKey, ShardMeta, ShardStore, StoreOptions};

fn key(n: u8, index: u8) -> ShardKey {
    ShardKey {
        chunk: [n; 32],
        index,
    }
}
fn meta(len: u32) -> ShardMeta {
    ShardMeta {
        policy: Redundancy::Ec { k: 4, m: 2 },
        sealed_len: len,
        written_ms: 0,
    }
}

#[tokio::test]
async fn written_shards_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let paths = vec![dir.path().join("d0"), dir.path().join("d1")];
    {
        let store = ShardStore::open(&paths, StoreOptions::default()).unwrap();
        // Many concurrent writes: they share group commits.
        let mut tasks = Vec::new();
        for n in 0..64u8 {
            let d = store.disk(n as usize).clone();
            tasks.push(tokio::spawn(async move {
                d.write(key(n, 0), meta(100), vec![n; 1000 + n as usize])
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        store.disk(0).delete(key(0, 0)).await.unwrap();
    }
    let store = ShardStore::open(&paths, StoreOptions::default()).unwrap();
    for n in 1..64u8 {
        let (m, data) = store.disk(n as usize).read(&key(n, 0)).unwrap();
        assert_eq!(data, vec![n; 1000 + n as usize]);
        assert_eq!(m.sealed_len, 100);
    }
    assert!(store.disk(0).read(&key(0, 0)).unwrap_err().is_missing());
}

#[tokio::test]
async fn a_flipped_byte_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let store = ShardStore::open(&[dir.path().to_path_buf()], StoreOptions::default()).unwrap();
    store
        .disk(0)
        .write(key(7, 1), meta(10), vec![1; 5000])
        .await
        .unwrap();
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_at(&[0xff], 8 + 64 + 2500).unwrap();
    let err = store.disk(0).read(&key(7, 1)).unwrap_err().to_string();
    assert!(
        err.contains("seg-00000001.ecs") && err.contains("checksum"),
        "{err}"
    );
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_earlier_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    let paths = vec![dir.path().to_path_buf()];
    {
        let store = ShardStore::open(&paths, StoreOptions::default()).unwrap();
        store
            .disk(0)
            .write(key(1, 0), meta(1), vec![1; 3000])
            .await
            .unwrap();
        store
            .disk(0)
            .write(key(2, 0), meta(1), vec![2; 3000])
            .await
            .unwrap();
    }
    let seg = dir.path().join("seg-00000001.ecs");
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let store = ShardStore::open(&paths, StoreOptions::default()).unwrap();
    assert_eq!(store.disk(0).read(&key(1, 0)).unwrap().1, vec![1; 3000]);
    assert!(store.disk(0).read(&key(2, 0)).is_err());
    // New writes go to a new segment and read back.
    store
        .disk(0)
        .write(key(3, 0), meta(1), vec![3; 10])
        .await
        .unwrap();
    assert_eq!(store.disk(0).read(&key(3, 0)).unwrap().1, vec![3; 10]);
}

#[tokio::test]
async fn a_wiped_disk_is_noticed_and_takes_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("disk");
    let store = ShardStore::open(std::slice::from_ref(&d), StoreOptions::default()).unwrap();
    store
        .disk(0)
        .write(key(1, 0), meta(1), vec![1; 100])
        .await
        .unwrap();
    std::fs::remove_dir_all(&d).unwrap();
    let health = store.check_disks();
    assert_eq!(health[0].lost, 1);
    assert!(store.disk(0).read(&key(1, 0)).unwrap_err().is_missing());
    store
        .disk(0)
        .write(key(1, 0), meta(1), vec![9; 100])
        .await
        .unwrap();
    assert_eq!(store.disk(0).read(&key(1, 0)).unwrap().1, vec![9; 100]);
}

#[tokio::test]
async fn a_damaged_record_header_hides_nothing_after_it_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let paths = vec![dir.path().to_path_buf()];
    {
        let store = ShardStore::open(&paths, StoreOptions::default()).unwrap();
        for n in 1..=3u8 {
            store
                .disk(0)
                .write(key(n, 0), meta(1), vec![n; 3000])
                .await
                .unwrap();
        }
    }
    // Smash the first record's header (its length field included).
    let seg = dir.path().join("seg-00000001.ecs");
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_at(&[0xee; 64], 8).unwrap();
    let store = ShardStore::open(&paths, StoreOptions::default()).unwrap();
    assert!(store.disk(0).read(&key(1, 0)).unwrap_err().is_missing());
    assert_eq!(store.disk(0).read(&key(2, 0)).unwrap().1, vec![2; 3000]);
    assert_eq!(store.disk(0).read(&key(3, 0)).unwrap().1, vec![3; 3000]);
}

#[tokio::test]
async fn compaction_reclaims_deleted_space_and_keeps_live_shards() {
    let dir = tempfile::tempdir().unwrap();
    let paths = vec![dir.path().to_path_buf()];
    let opts = StoreOptions {
        segment_bytes: 64 * 1024,
        ..Default::default()
    };
    {
        let store = ShardStore::open(&paths, opts.clone()).unwrap();
        let d = store.disk(0);
        for n in 0..40u8 {
            d.write(key(n, 0), meta(1), vec![n; 10_000]).await.unwrap();
        }
        for n in 0..40u8 {
            if n % 4 != 0 {
                d.delete(key(n, 0)).await.unwrap();
            }
        }
        let before: u64 = store.check_disks()[0].bytes;
        let r = d.compact(0.5).await.unwrap();
        assert!(
            r.segments_removed > 0 && r.bytes_reclaimed > 200_000,
            "{r:?}"
        );
        assert!(store.check_disks()[0].bytes < before);
        for n in (0..40u8).step_by(4) {
            assert_eq!(d.read(&key(n, 0)).unwrap().1, vec![n; 10_000]);
        }
    }
    // And after a restart.
    let store = ShardStore::open(&paths, opts).unwrap();
    for n in (0..40u8).step_by(4) {
        assert_eq!(store.disk(0).read(&key(n, 0)).unwrap().1, vec![n; 10_000]);
    }
    assert!(store.disk(0).read(&key(1, 0)).is_err());
}
