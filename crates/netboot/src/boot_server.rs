//! The boot server in a node (`serve --boot-image DIR`): machines that boot over the
//! network get an iPXE script at `/boot.ipxe`, which loads the image's kernel and
//! initramfs from the same server (paths relative to the script, so it works behind
//! any address), with the node's `--boot-args` and the image's hash on the kernel
//! command line. Point DHCP's boot file at `http://NODE:9403/boot.ipxe` (iPXE), or
//! chainload iPXE first.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use sha2::{Digest, Sha256};

use crate::image::Manifest;

#[derive(Clone)]
struct Served {
    dir: PathBuf,
    script: String,
}

/// The iPXE script for an image with `manifest`, giving the kernel `args`.
pub fn script(manifest: &Manifest, args: &str) -> String {
    format!(
        "#!ipxe\n\
         echo edgecloud node image {image} (kernel {kernel})\n\
         kernel vmlinuz initrd=initramfs.img {args} edgecloud.image={image}\n\
         initrd initramfs.img\n\
         boot\n",
        image = manifest.image_sha256,
        kernel = manifest.kernel_version,
    )
}

/// The image in `dir`: its `manifest.json`, with the kernel's and the initramfs's
/// SHA-256 checked against it (read at start: a folder that is no image, or whose files
/// are not the ones its manifest names, is refused then, not when a machine boots).
pub fn load(dir: &Path) -> crate::Result<Manifest> {
    let text = std::fs::read(dir.join("manifest.json")).map_err(|e| {
        crate::NetbootError::Image(format!(
            "{} is no node image (no manifest.json: {e}); make one with `edgecloud node-image build --out {}`",
            dir.display(),
            dir.display()
        ))
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| crate::NetbootError::Image(format!("{}/manifest.json: {e}", dir.display())))?;
    for (name, expected) in [
        ("vmlinuz", &manifest.kernel_sha256),
        ("initramfs.img", &manifest.initramfs_sha256),
    ] {
        let mut f = std::fs::File::open(dir.join(name))
            .map_err(|e| crate::NetbootError::Image(format!("{}/{name}: {e}", dir.display())))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut f, &mut hasher)?;
        let actual: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if &actual != expected {
            return Err(crate::NetbootError::Image(format!(
                "{}/{name} is not the file its manifest.json names (SHA-256 {actual}, not {expected}): build the image again",
                dir.display()
            )));
        }
    }
    Ok(manifest)
}

/// The routes for the image in `dir`, described by `manifest` ([`load`]).
pub fn router(dir: PathBuf, manifest: &Manifest, args: &str) -> Router {
    let served = Served {
        script: script(manifest, args),
        dir,
    };
    Router::new()
        .route("/boot.ipxe", get(boot_script))
        .route("/vmlinuz", get(|s| file(s, "vmlinuz")))
        .route("/initramfs.img", get(|s| file(s, "initramfs.img")))
        .route("/manifest.json", get(|s| file(s, "manifest.json")))
        .with_state(served)
}

async fn boot_script(State(s): State<Served>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], s.script).into_response()
}

/// One of the image's files, streamed.
async fn file(State(s): State<Served>, name: &'static str) -> Response {
    match tokio::fs::File::open(s.dir.join(name)).await {
        Ok(f) => {
            let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
            let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, len.to_string()),
                ],
                body,
            )
                .into_response()
        }
        Err(e) => (StatusCode::NOT_FOUND, format!("{name}: {e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_loads_the_kernel_and_initramfs_with_the_args_and_the_hash() {
        let m = Manifest {
            kernel_version: "6.1.0-57-amd64".into(),
            kernel_sha256: "k".into(),
            initramfs_sha256: "i".into(),
            initramfs_bytes: 1,
            binary_sha256: "b".into(),
            modules: vec![],
            built_in: vec![],
            libraries: vec![],
            tools: vec![],
            image_sha256: "abc123".into(),
        };
        let s = script(&m, "console=ttyS0 edgecloud.serve=\"--site lab\"");
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains(
            "\nkernel vmlinuz initrd=initramfs.img console=ttyS0 edgecloud.serve=\"--site lab\" edgecloud.image=abc123\n"
        ));
        assert!(s.contains("\ninitrd initramfs.img\nboot\n"));
        assert!(load(Path::new("/nonexistent")).is_err());
    }

    #[test]
    fn an_image_whose_files_are_not_its_manifests_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let hex = |b: &[u8]| -> String {
            Sha256::digest(b)
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect()
        };
        std::fs::write(t.path().join("vmlinuz"), b"kernel").unwrap();
        std::fs::write(t.path().join("initramfs.img"), b"initramfs").unwrap();
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "kernel_version": "6.1.0-57-amd64", "kernel_sha256": hex(b"kernel"),
            "initramfs_sha256": hex(b"initramfs"), "initramfs_bytes": 9,
            "binary_sha256": "b", "modules": [], "built_in": [], "libraries": [],
            "image_sha256": "abc"
        }))
        .unwrap();
        let write = |m: &Manifest| {
            std::fs::write(
                t.path().join("manifest.json"),
                serde_json::to_vec(m).unwrap(),
            )
            .unwrap()
        };
        write(&m);
        assert_eq!(load(t.path()).unwrap(), m);
        m.initramfs_sha256 = hex(b"another initramfs");
        write(&m);
        let e = load(t.path()).unwrap_err().to_string();
        assert!(
            e.contains("initramfs.img is not the file its manifest.json names"),
            "{e}"
        );
    }
}
