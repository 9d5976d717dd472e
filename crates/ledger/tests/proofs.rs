//! The ledger's proofs against the RFC 6962 test vectors of transparency-dev/merkle
//! (copied into tests/vectors with their licence), against trees built here, and
//! under damage: a stored hash flipped or the log truncated must make verification fail.
#![allow(clippy::unwrap_used)] // a panic is how a test or benchmark reports

use std::path::Path;

use base64::Engine;
use ledger::entries::{EntryStore, FileEntries};
use ledger::tree::Tree;
use ledger::{Hash, leaf_hash, verify};
use proptest::prelude::*;
use serde_json::Value;

fn b64(v: &Value) -> Option<Hash> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()?;
    Some(Hash(raw.try_into().ok()?))
}

fn proof(v: &Value) -> Option<Vec<Hash>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Array(a) => a.iter().map(b64).collect(),
        _ => None,
    }
}

fn raw(v: &Value) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

fn vectors(kind: &str) -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(kind);
    let mut files = Vec::new();
    walk(&dir, &mut files);
    let out: Vec<(String, Value)> = files
        .iter()
        .map(|f| {
            (
                f.strip_prefix(&dir).unwrap().display().to_string(),
                serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap(),
            )
        })
        .collect();
    assert!(
        out.len() > 50,
        "expected the test vectors in {}",
        dir.display()
    );
    out
}

#[test]
fn every_inclusion_vector_verifies_or_is_rejected_as_expected() {
    let mut checked = 0;
    for (name, v) in vectors("inclusion") {
        let want_err = v["wantErr"].as_bool().unwrap();
        let got = (|| {
            let (leaf, root, p) = (b64(&v["leafHash"])?, b64(&v["root"])?, proof(&v["proof"])?);
            let idx = v["leafIdx"].as_i64().filter(|i| *i >= 0)? as u64;
            let size = v["treeSize"].as_i64().filter(|i| *i >= 0)? as u64;
            Some(verify::inclusion(leaf, idx, size, &p, root))
        })();
        let ok = matches!(got, Some(Ok(())));
        assert_eq!(ok, !want_err, "{name}: got {got:?}");
        checked += 1;
    }
    assert!(checked > 80);
}

#[test]
fn every_consistency_vector_verifies_or_is_rejected_as_expected() {
    for (name, v) in vectors("consistency") {
        let want_err = v["wantErr"].as_bool().unwrap();
        let got = (|| {
            let (r1, r2, p) = (raw(&v["root1"])?, raw(&v["root2"])?, proof(&v["proof"])?);
            let s1 = v["size1"].as_i64().filter(|i| *i >= 0)? as u64;
            let s2 = v["size2"].as_i64().filter(|i| *i >= 0)? as u64;
            Some(verify::consistency(s1, s2, &r1, &r2, &p))
        })();
        let ok = matches!(got, Some(Ok(())));
        assert_eq!(ok, !want_err, "{name}: got {got:?}");
    }
}

/// RFC 6962's reference: MTH by recursion over the leaf hashes.
fn reference_root(leaves: &[Hash]) -> Hash {
    use sha2_free::node;
    match leaves.len() {
        0 => Hash(tlog_empty()),
        1 => leaves[0],
        n => {
            let k = n.next_power_of_two() / 2;
            node(reference_root(&leaves[..k]), reference_root(&leaves[k..]))
        }
    }
}

/// SHA-256 of the empty string: the root of the empty tree (RFC 6962 §2.1).
fn tlog_empty() -> [u8; 32] {
    [
        0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9,
        0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52,
        0xb8, 0x55,
    ]
}

mod sha2_free {
    use ledger::Hash;
    /// node = SHA-256(0x01 || left || right), through the crate under test's own
    /// dependency so this file needs no hashing crate.
    pub fn node(l: Hash, r: Hash) -> Hash {
        tlog_tiles::node_hash(l, r)
    }
}

fn build(dir: &Path, n: usize) -> (FileEntries, Tree, Vec<Hash>) {
    let entries = FileEntries::open(dir).unwrap();
    let records: Vec<Vec<u8>> = (0..n).map(|i| format!("record {i}").into_bytes()).collect();
    if !records.is_empty() {
        entries.append(&records).unwrap();
    }
    let leaves: Vec<Hash> = records.iter().map(|r| leaf_hash(r)).collect();
    let tree = Tree::open(&dir.join("hashes.bin"), 0, |_| unreachable!()).unwrap();
    // Append in uneven batches, like a server would.
    let mut i = 0;
    while i < leaves.len() {
        let j = (i + 1 + i % 7).min(leaves.len());
        tree.append(&leaves[i..j], false).unwrap();
        i = j;
    }
    (entries, tree, leaves)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn roots_and_proofs_agree_with_the_rfc_and_verify(n in 1usize..300, a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let dir = tempfile::tempdir().unwrap();
        let (_e, tree, leaves) = build(dir.path(), n);
        let (s1, s2) = { let x = a.index(n) + 1; let y = b.index(n) + 1; (x.min(y) as u64, x.max(y) as u64) };
        let (r1, r2) = (tree.root(s1).unwrap(), tree.root(s2).unwrap());
        prop_assert_eq!(r1, reference_root(&leaves[..s1 as usize]));
        prop_assert_eq!(r2, reference_root(&leaves[..s2 as usize]));
        let idx = (a.index(n) as u64).min(s2 - 1);
        let p = tree.inclusion_proof(idx, s2).unwrap();
        prop_assert!(verify::inclusion(leaves[idx as usize], idx, s2, &p, r2).is_ok());
        // the same proof for another leaf, or another root, fails
        prop_assert!(verify::inclusion(leaf_hash(b"forged"), idx, s2, &p, r2).is_err());
        let c = tree.consistency_proof(s1, s2).unwrap();
        prop_assert!(verify::consistency(s1, s2, &r1.0, &r2.0, &c).is_ok());
        if s1 < s2 {
            prop_assert!(verify::consistency(s1, s2, &leaf_hash(b"other history").0, &r2.0, &c).is_err());
        }
    }
}

#[test]
fn appending_never_changes_earlier_roots() {
    let dir = tempfile::tempdir().unwrap();
    let (_e, tree, leaves) = build(dir.path(), 100);
    let before: Vec<Hash> = (1..=100).map(|s| tree.root(s).unwrap()).collect();
    let more: Vec<Hash> = (0..57)
        .map(|i| leaf_hash(format!("later {i}").as_bytes()))
        .collect();
    tree.append(&more, true).unwrap();
    for s in 1..=100u64 {
        assert_eq!(tree.root(s).unwrap(), before[s as usize - 1]);
        let c = tree.consistency_proof(s, 157).unwrap();
        verify::consistency(
            s,
            157,
            &before[s as usize - 1].0,
            &tree.root(157).unwrap().0,
            &c,
        )
        .unwrap();
    }
    assert_eq!(leaves.len(), 100);
}

#[test]
fn a_reopened_tree_rebuilds_missing_hashes_and_cuts_extra_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (entries, tree, _) = build(dir.path(), 70);
    let root = tree.root(70).unwrap();
    tree.append(&[leaf_hash(b"never acknowledged")], true)
        .unwrap(); // the hashes are ahead of the entries
    drop(tree);
    let fill = |i: u64| Ok(leaf_hash(&entries.get(i)?));
    let t = Tree::open(&dir.path().join("hashes.bin"), entries.len(), fill).unwrap();
    assert_eq!((t.size(), t.root(70).unwrap()), (70, root));
    // lose the last 1000 bytes of hashes (a torn write): rebuilt from the entries
    drop(t);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("hashes.bin"))
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - 1000).unwrap();
    let t = Tree::open(&dir.path().join("hashes.bin"), entries.len(), fill).unwrap();
    assert_eq!(t.root(70).unwrap(), root);
}

#[test]
fn a_flipped_stored_hash_makes_proofs_fail_to_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (_e, tree, leaves) = build(dir.path(), 64);
    let root = tree.root(64).unwrap();
    drop(tree);
    // flip one byte in the middle of the stored hashes (the hash of a leaf's sibling)
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join("hashes.bin"))
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 32 * 40 + 5).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], 32 * 40 + 5).unwrap();
    drop(f);
    let t = Tree::open(&dir.path().join("hashes.bin"), 64, |_| unreachable!()).unwrap();
    let failures = (0..64u64)
        .filter(|i| {
            let p = t.inclusion_proof(*i, 64).unwrap();
            verify::inclusion(leaves[*i as usize], *i, 64, &p, root).is_err()
        })
        .count();
    assert!(failures > 0, "a damaged hash went unnoticed");
}

#[test]
fn signed_checkpoints_verify_only_with_the_right_key() {
    let dir = tempfile::tempdir().unwrap();
    let (entries, tree, _) = build(dir.path(), 300);
    let (skey, vkey) = ledger::publish::generate_key("edgecloud.test/log");
    let p = ledger::publish::Publisher::new(&dir.path().join("pub"), &skey).unwrap();
    let cp = p.publish(&tree, &entries, 0).unwrap();
    let c = verify::checkpoint(&cp, &vkey).unwrap();
    assert_eq!((c.size(), *c.hash()), (300, tree.root(300).unwrap()));
    // tiles and bundles in the C2SP layout
    for f in [
        "checkpoint",
        "tile/0/000",
        "tile/0/001.p/44",
        "tile/1/000.p/1",
        "tile/entries/000",
        "tile/entries/001.p/44",
    ] {
        assert!(dir.path().join("pub").join(f).exists(), "{f} missing");
    }
    let (_, other) = ledger::publish::generate_key("edgecloud.test/log");
    assert!(
        verify::checkpoint(&cp, &other).is_err(),
        "a checkpoint verified under another key"
    );
    let mut forged = cp.clone();
    let at = forged.iter().position(|b| *b == b'\n').unwrap() + 1;
    forged[at] = if forged[at] == b'3' { b'4' } else { b'3' }; // change the size line
    assert!(
        verify::checkpoint(&forged, &vkey).is_err(),
        "a forged checkpoint verified"
    );
}

/// Tiles are synced in batches: a crash can tear tiles and lose bundles written since
/// the last sync, whether the checkpoint naming them survived or not. The restart
/// publishes again from `resume_size`, and the log checks whole.
#[test]
fn tiles_torn_in_a_crash_are_written_again_from_the_last_sync() {
    for new_checkpoint_survived in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (entries, tree, _) = build(dir.path(), 300);
        let (skey, vkey) = ledger::publish::generate_key("edgecloud.test/log");
        let out = dir.path().join("pub");
        let p = ledger::publish::Publisher::new(&out, &skey).unwrap();
        let first = p.publish(&tree, &entries, 0).unwrap();
        p.sync().unwrap();
        let more: Vec<Vec<u8>> = (300..700)
            .map(|i| format!("record {i}").into_bytes())
            .collect();
        entries.append(&more).unwrap();
        let hashes: Vec<Hash> = more.iter().map(|r| leaf_hash(r)).collect();
        tree.append(&hashes, false).unwrap();
        // Not synced yet: the next batch is due seconds later.
        p.publish(&tree, &entries, 300).unwrap();
        // The crash: a tile is torn, a bundle lost, and maybe the checkpoint too.
        if !new_checkpoint_survived {
            std::fs::write(out.join("checkpoint"), &first).unwrap();
        }
        let tile = out.join("tile/0/001");
        let len = std::fs::metadata(&tile).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&tile)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        std::fs::remove_file(out.join("tile/entries/001")).unwrap();
        let read = |path: &str| Ok(std::fs::read(out.join(path)).ok());
        let root = tree.root(700).unwrap();
        assert!(ledger::monitor::check_published(700, root, read).is_err());
        // The restart publishes from the last synced size.
        let from = ledger::publish::resume_size(&out, &vkey);
        assert_eq!(from, 300, "checkpoint survived: {new_checkpoint_survived}");
        let p = ledger::publish::Publisher::new(&out, &skey).unwrap();
        let cp = p.publish(&tree, &entries, from).unwrap();
        p.sync().unwrap();
        assert_eq!(verify::checkpoint(&cp, &vkey).unwrap().size(), 700);
        let got = ledger::monitor::check_published(700, root, read).unwrap();
        assert_eq!(got.len(), 700);
        assert_eq!(got[650], b"record 650");
        assert_eq!(ledger::publish::resume_size(&out, &vkey), 700);
        // A directory from before the marker synced tiles before each checkpoint.
        std::fs::remove_file(out.join(ledger::publish::TILES_SYNCED)).unwrap();
        assert_eq!(ledger::publish::resume_size(&out, &vkey), 700);
    }
}

/// Once a full tile or bundle is published, its partials are deleted; whoever asks for
/// one (a monitor holding an older checkpoint, the tile endpoint) gets it cut from the
/// full one, byte for byte; partials left from before are deleted at the next start.
#[test]
fn partials_go_once_their_full_tile_is_published_and_are_cut_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let (entries, _, leaves) = build(dir.path(), 300);
    let (skey, vkey) = ledger::publish::generate_key("edgecloud.test/log");
    let out = dir.path().join("pub");
    let p = ledger::publish::Publisher::new(&out, &skey).unwrap();
    let tree = Tree::open(&dir.path().join("growing.bin"), 0, |_| unreachable!()).unwrap();
    tree.append(&leaves[..100], false).unwrap();
    let early = verify::checkpoint(&p.publish(&tree, &entries, 0).unwrap(), &vkey).unwrap();
    let partials = ["tile/0/000.p/100", "tile/entries/000.p/100"];
    let early_bytes: Vec<Vec<u8>> = partials
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    tree.append(&leaves[100..], false).unwrap();
    p.publish(&tree, &entries, 100).unwrap();
    for gone in ["tile/0/000.p", "tile/entries/000.p"] {
        assert!(!out.join(gone).exists(), "{gone} is still there");
    }
    for kept in [
        "tile/0/000",
        "tile/0/001.p/44",
        "tile/entries/001.p/44",
        "tile/1/000.p/1",
    ] {
        assert!(out.join(kept).is_file(), "{kept} is missing");
    }
    for (f, bytes) in partials.iter().zip(&early_bytes) {
        assert_eq!(
            ledger::publish::read_published(&out, f).unwrap().as_ref(),
            Some(bytes),
            "{f}"
        );
    }
    for none in [
        "tile/0/002.p/3",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/x",
    ] {
        assert_eq!(
            ledger::publish::read_published(&out, none).unwrap(),
            None,
            "{none}"
        );
    }
    // A monitor holding the early checkpoint still checks it against the log.
    let read = |path: &str| Ok(std::fs::read(out.join(path)).ok());
    let got = ledger::monitor::check_published(early.size(), *early.hash(), read).unwrap();
    assert_eq!(got.len(), 100);
    assert_eq!(got[99], b"record 99");
    // A partial left behind (a log from before, a crash) goes at the next start.
    std::fs::create_dir_all(out.join("tile/0/000.p")).unwrap();
    std::fs::write(out.join(partials[0]), &early_bytes[0]).unwrap();
    ledger::publish::Publisher::new(&out, &skey).unwrap();
    assert!(!out.join("tile/0/000.p").exists());
    assert!(out.join("tile/0/001.p/44").is_file());
}

/// What a damaged published file should make the monitor name: the first entry whose
/// bytes or hash the damage at byte `at` of `path` touches.
fn first_damaged_entry(path: &str, original: &[u8], at: usize) -> u64 {
    let number = |s: &str| s.split('.').next().unwrap().parse::<u64>().unwrap();
    let parts: Vec<&str> = path.split('/').collect();
    if parts[1] == "entries" {
        let mut offset = 0;
        let mut k = 0;
        loop {
            let len = u16::from_be_bytes([original[offset], original[offset + 1]]) as usize;
            if at < offset + 2 + len {
                return number(parts[2]) * 256 + k;
            }
            offset += 2 + len;
            k += 1;
        }
    }
    let level: u32 = parts[1].parse().unwrap();
    (number(parts[2]) * 256 + at as u64 / 32) * 256u64.pow(level)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Flipping any byte of any published tile or entry bundle, or cutting one short, is
    /// caught by a monitor reading the log from its checkpoint, and the error names the
    /// first entry the damage touches.
    #[test]
    fn damaged_published_files_are_caught_and_the_entry_named(
        n in 1usize..700,
        first_publish in any::<prop::sample::Index>(),
        file in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        truncate in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (entries, tree, _) = build(dir.path(), n);
        let (skey, vkey) = ledger::publish::generate_key("edgecloud.test/log");
        let out = dir.path().join("pub");
        let p = ledger::publish::Publisher::new(&out, &skey).unwrap();
        // Publish twice, like a growing log: partials of tiles completed by the second
        // are deleted, and the monitor must not need them.
        let early = first_publish.index(n) as u64;
        let early_tree = Tree::open(&dir.path().join("early.bin"), 0, |_| unreachable!()).unwrap();
        if early > 0 {
            let leaves: Vec<Hash> = (0..early).map(|i| leaf_hash(&entries.get(i).unwrap())).collect();
            early_tree.append(&leaves, false).unwrap();
            p.publish(&early_tree, &entries, 0).unwrap();
        }
        let cp = verify::checkpoint(&p.publish(&tree, &entries, early).unwrap(), &vkey).unwrap();

        let read_from = |base: &Path, seen: &mut Vec<String>, path: &str| -> ledger::Result<Option<Vec<u8>>> {
            seen.push(path.to_string());
            Ok(std::fs::read(base.join(path)).ok())
        };
        let mut seen = Vec::new();
        let all = ledger::monitor::check_published(cp.size(), *cp.hash(), |f| read_from(&out, &mut seen, f)).unwrap();
        prop_assert_eq!(all.len(), n);
        prop_assert_eq!(&all[n - 1], &entries.get(n as u64 - 1).unwrap());

        let victim = seen[file.index(seen.len())].clone();
        let original = std::fs::read(out.join(&victim)).unwrap();
        let at = at.index(original.len());
        let mut damaged = original.clone();
        if truncate {
            damaged.truncate(at);
        } else {
            damaged[at] ^= flip;
        }
        std::fs::write(out.join(&victim), &damaged).unwrap();
        let err = ledger::monitor::check_published(cp.size(), *cp.hash(), |f| read_from(&out, &mut Vec::new(), f));
        let want = first_damaged_entry(&victim, &original, at);
        match err {
            Err(ledger::LedgerError::Damaged { index, reason }) => {
                prop_assert_eq!(index, want, "{} at byte {}: {}", victim, at, reason);
            }
            other => prop_assert!(false, "{victim} damaged at byte {at}: {other:?}"),
        }
    }
}
