//! Imports into a real archive: docker save tarballs and OCI layouts built here, files
//! shared across images stored once, every digest checked, removal freeing what no
//! image holds.
#![allow(clippy::unwrap_used)] // a panic is how a test reports

use images::layer::Kind;
use images::{ImageError, ImageStore};
use sha2::{Digest, Sha256};

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Bytes no compressor shrinks, different for each seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A layer tar of `(path, bytes)` files; a path ending in '/' is a directory.
fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, path, std::io::empty()).unwrap();
        } else {
            h.set_size(body.len() as u64);
            b.append_data(&mut h, path, *body).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn config(diff_ids: &[String], cmd: &str) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(|d| format!("sha256:{d}")).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": [cmd]},
        "rootfs": {"type": "layers", "diff_ids": ids},
    }))
    .unwrap()
}

fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, body: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(body.len() as u64);
    b.append_data(&mut h, path, body).unwrap();
}

/// A `docker save` tarball (the format before Docker 25) of one image per item.
fn docker_save(images: &[(&str, Vec<Vec<u8>>, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut manifest = Vec::new();
    for (tag, layers, cmd) in images {
        let diff_ids: Vec<String> = layers.iter().map(|l| hex(l)).collect();
        let cfg = config(&diff_ids, cmd);
        let cfg_name = format!("{}.json", hex(&cfg));
        add(&mut b, &cfg_name, &cfg);
        let mut paths = Vec::new();
        for (l, d) in layers.iter().zip(&diff_ids) {
            let p = format!("{d}/layer.tar");
            add(&mut b, &p, l);
            paths.push(p);
        }
        manifest.push(serde_json::json!({"Config": cfg_name, "RepoTags": [tag], "Layers": paths}));
    }
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// An OCI image layout (as a tar) of one image with gzip layers, named by `name`;
/// `tamper` flips a byte of the last layer blob after its digest is taken.
fn oci_layout(layers: &[Vec<u8>], name: &str, tamper: bool) -> (Vec<u8>, String) {
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let diff_ids: Vec<String> = layers.iter().map(|l| hex(l)).collect();
    let mut descs = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let mut blob = gzip(l);
        let d = hex(&blob);
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{d}"), "size": blob.len()}));
        if tamper && i == layers.len() - 1 {
            let mid = blob.len() / 2;
            blob[mid] ^= 1;
        }
        add(&mut b, &format!("blobs/sha256/{d}"), &blob);
    }
    let cfg = config(&diff_ids, "/bin/sh");
    add(&mut b, &format!("blobs/sha256/{}", hex(&cfg)), &cfg);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", hex(&cfg)), "size": cfg.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = hex(&manifest);
    add(&mut b, &format!("blobs/sha256/{md}"), &manifest);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{md}"), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": name}}]});
    add(&mut b, "index.json", &serde_json::to_vec(&index).unwrap());
    (b.into_inner().unwrap(), md)
}

fn write(dir: &std::path::Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_share_their_files_and_removal_frees_only_what_no_image_holds() {
    let t = testkit::archive_with_bucket(7, "user-data").await;
    let store = ImageStore::new(t.archive.clone());
    let big = noise(1, 6 << 20); // streamed (over the small-file limit)
    let base = layer(&[
        ("bin/", b""),
        ("bin/busybox", &big),
        ("etc/motd", b"welcome\n"),
    ]);
    let app = layer(&[("etc/.wh.motd", b""), ("srv/app.conf", b"port=80\n")]);
    // Another base that happens to hold the same big file: stored once.
    let other = layer(&[("usr/bin/busybox", &big), ("etc/os-release", b"ID=other\n")]);
    let tarball = docker_save(&[
        ("app:1", vec![base.clone(), app.clone()], "/srv/app"),
        ("other", vec![other.clone()], "/bin/sh"),
    ]);
    let path = write(t.dir.path(), "save.tar", &tarball);
    let got = store
        .import(&path, None, Some("tester".into()))
        .await
        .unwrap();
    assert_eq!(got.images.len(), 2);
    assert_eq!((got.layers_read, got.layers_known), (3, 0));
    assert_eq!(got.files_stored, 4, "{got:?}"); // busybox once, motd, app.conf, os-release
    assert_eq!(
        got.files_known, 1,
        "the second busybox is the first's bytes"
    );

    let app_img = store.find("app:1").await.unwrap();
    assert_eq!(app_img.names, ["app:1"]);
    assert_eq!(app_img.config["config"]["Cmd"][0], "/srv/app");
    let tree = store.tree(&app_img).await.unwrap();
    let paths: Vec<(&str, Kind)> = tree.entries().map(|e| (e.path.as_str(), e.kind)).collect();
    assert_eq!(
        paths,
        [
            ("bin", Kind::Dir),
            ("bin/busybox", Kind::File),
            ("etc", Kind::Dir),
            ("srv", Kind::Dir),
            ("srv/app.conf", Kind::File)
        ],
        "the whiteout hides etc/motd"
    );
    assert_eq!(
        tree.get("bin/busybox").unwrap().digest.as_deref(),
        Some(hex(&big).as_str())
    );
    // The bytes come back from the store as they went in.
    let stored = t
        .archive
        .get_bytes(
            images::BUCKET,
            &format!("files/{}", hex(&big)),
            &archive::VersionSel::Latest,
        )
        .await
        .unwrap();
    assert!(stored == big);

    let usage = store.usage().await.unwrap();
    assert_eq!(usage.images, 2);
    // busybox is in both images and stored once; etc/motd is stored (its layer holds
    // it) though the whiteout above hides it from app:1.
    assert_eq!(usage.stored_bytes + big.len() as u64, usage.image_bytes + 8);

    // Importing again reads no layer; a new tag moves to the same image.
    let again = store.import(&path, None, None).await.unwrap();
    assert_eq!((again.layers_read, again.files_stored), (0, 0));

    // An image that shares the base layer reads only its own (`docker save | gzip`).
    let v2 = docker_save(&[(
        "app:2",
        vec![base.clone(), layer(&[("srv/v2", b"2")])],
        "/srv/app",
    )]);
    let got = store
        .import(&write(t.dir.path(), "v2.tar.gz", &gzip(&v2)), None, None)
        .await
        .unwrap();
    assert_eq!((got.layers_read, got.layers_known), (1, 1));

    // Removing app:1 frees app.conf only; removing `other` frees os-release but keeps
    // busybox, which app:2 still holds.
    let r = store.remove("app:1", None).await.unwrap();
    assert_eq!((r.files_freed, r.bytes_freed), (1, 8), "{r:?}");
    let r = store
        .remove(&store.find("other").await.unwrap().id, None)
        .await
        .unwrap();
    assert_eq!(r.files_freed, 1, "{r:?}");
    assert_eq!(r.untagged, ["other:latest"]);
    let left = store.list().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].names, ["app:2"]);
    let usage = store.usage().await.unwrap();
    assert_eq!(usage.files, 3, "busybox, motd, srv/v2");
    assert!(matches!(
        store.find("app:1").await,
        Err(ImageError::NoSuchImage(_))
    ));

    // Users cannot take the system bucket's name.
    let err = t
        .archive
        .create_bucket(images::BUCKET, None, archive::Versioning::Enabled)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("kept by edgecloud"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oci_layout_is_checked_digest_by_digest() {
    let t = testkit::archive_with_bucket(8, "user-data").await;
    let store = ImageStore::new(t.archive.clone());
    let layers = vec![
        layer(&[("etc/", b""), ("etc/a", b"a"), ("var/cache/x", b"x")]),
        layer(&[("var/cache/.wh..wh..opq", b""), ("var/cache/y", b"y")]),
    ];
    let (tarball, manifest) = oci_layout(&layers, "registry.local/team/web:v1", false);
    let got = store
        .import(&write(t.dir.path(), "oci.tar", &tarball), None, None)
        .await
        .unwrap();
    let img = &got.images[0];
    assert_eq!(img.names, ["registry.local/team/web:v1"]);
    assert_eq!(
        img.manifest_digest.as_deref(),
        Some(format!("sha256:{manifest}").as_str())
    );
    let tree = store.tree(img).await.unwrap();
    assert!(tree.get("var/cache/y").is_some() && tree.get("var/cache/x").is_none());

    // A flipped byte in a layer: refused, nothing of it left behind.
    let before = store.usage().await.unwrap();
    let (bad, _) = oci_layout(
        &[layers[0].clone(), layer(&[("new", &noise(2, 100_000))])],
        "evil:1",
        true,
    );
    let err = store
        .import(&write(t.dir.path(), "bad.tar", &bad), None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::DigestMismatch { .. } | ImageError::HostileLayer { .. }
        ),
        "{err}"
    );
    assert!(store.find("evil:1").await.is_err());
    let after = store.usage().await.unwrap();
    assert_eq!((after.images, after.files), (before.images, before.files));

    // A bare ref name (`oci:DIR:hello`) is a repository: hello:latest; `--tag` adds one.
    let (plain, _) = oci_layout(&[layer(&[("hello", b"hi")])], "hello", false);
    let p = write(t.dir.path(), "plain.tar", &plain);
    let got = store.import(&p, None, None).await.unwrap();
    assert_eq!(got.images[0].names, ["hello:latest"]);
    let got = store.import(&p, Some("hello:1"), None).await.unwrap();
    assert_eq!(got.images[0].names, ["hello:latest", "hello:1"]);
    assert!(store.find("hello:1").await.is_ok());
    assert!(
        store.find(&got.images[0].id[7..19]).await.is_ok(),
        "an id prefix finds it"
    );

    // Not an image at all.
    let err = store
        .import(
            &write(t.dir.path(), "junk.tar", &layer(&[("x", b"y")])),
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("neither manifest.json"), "{err}");
}
