//! The boot server in a node (`serve --boot-image DIR`): machines that boot over the
//! network get an iPXE script at `/boot.ipxe`, which loads the image's kernel and
//! initramfs from the same server (paths relative to the script, so it works behind
//! any address), with the node's `--boot-args` and the image's hash on the kernel
//! command line. Point DHCP's boot file at `http://NODE:9403/boot.ipxe` (iPXE), or
//! chainload iPXE first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use ring::signature::Ed25519KeyPair;
use sha2::{Digest, Sha256};

use crate::image::Manifest;

/// The address of the machine a request came from; the server that accepts the
/// connection adds it to the router (`layer(Extension(Machine(addr)))`), so what each
/// machine fetched is in the node's log.
#[derive(Clone, Copy, Debug)]
pub struct Machine(pub SocketAddr);

#[derive(Clone)]
struct Served {
    dir: PathBuf,
    script: String,
}

/// The iPXE script for an image with `manifest`, giving the kernel `args` (and the
/// image's hash), signed with `key` when there is one (`signing`).
pub fn script(manifest: &Manifest, args: &str, key: Option<&Ed25519KeyPair>) -> String {
    let mut kernel_args = format!(
        "initrd=initramfs.img {args} edgecloud.image={}",
        manifest.image_sha256
    );
    if let Some(key) = key {
        kernel_args = crate::signing::sign(key, &kernel_args);
    }
    format!(
        "#!ipxe\n\
         echo edgecloud node image {image} (kernel {kernel})\n\
         kernel vmlinuz {kernel_args}\n\
         initrd initramfs.img\n\
         boot\n",
        image = manifest.image_sha256,
        kernel = manifest.kernel_version,
    )
}

/// Whether `key` may serve the image of `manifest`: an image built with a boot key
/// boots only configurations signed with it.
pub fn check_key(manifest: &Manifest, key: Option<&Ed25519KeyPair>) -> crate::Result<()> {
    let given = key.map(crate::signing::public_key);
    match (&manifest.config_key, given) {
        (Some(_), None) => Err(crate::NetbootError::Image(
            "the image takes signed boot configurations only: give --boot-key, the key it was built with".into(),
        )),
        (Some(wanted), Some(given)) if *wanted != given => Err(crate::NetbootError::Image(format!(
            "--boot-key is not the key the image was built with (its public key is {given}; the image's is {wanted})"
        ))),
        _ => Ok(()),
    }
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

/// The routes for the image in `dir`, described by `manifest` ([`load`]), its boot
/// configuration signed with `key` ([`check_key`]). Each connection's router needs the
/// [`Machine`] extension.
pub fn router(
    dir: PathBuf,
    manifest: &Manifest,
    args: &str,
    key: Option<&Ed25519KeyPair>,
) -> crate::Result<Router> {
    check_key(manifest, key)?;
    let served = Served {
        script: script(manifest, args, key),
        dir,
    };
    Ok(Router::new()
        .route("/boot.ipxe", get(boot_script))
        .route("/vmlinuz", get(|s, m| file(s, m, "vmlinuz")))
        .route("/initramfs.img", get(|s, m| file(s, m, "initramfs.img")))
        .route("/manifest.json", get(|s, m| file(s, m, "manifest.json")))
        .with_state(served))
}

/// Serves the image folder `dir` read-only over TFTP on `socket` (RFC 1350 with the
/// block size, transfer size and window options), for firmware that fetches iPXE by
/// TFTP before anything else: put iPXE's `undionly.kpxe` or `ipxe.efi` in the folder
/// and point DHCP's boot file at it. Paths that leave the folder are refused. Runs
/// until dropped.
pub async fn serve_tftp(dir: PathBuf, socket: std::net::UdpSocket) -> crate::Result<()> {
    let tftp = |e: async_tftp::Error| crate::NetbootError::Image(format!("TFTP: {e}"));
    let server = async_tftp::server::TftpServerBuilder::with_dir_ro(&dir)
        .map_err(tftp)?
        .std_socket(socket)
        .map_err(tftp)?
        .build()
        .await
        .map_err(tftp)?;
    server.serve().await.map_err(tftp)
}

async fn boot_script(State(s): State<Served>, Extension(m): Extension<Machine>) -> Response {
    tracing::info!(machine = %m.0.ip(), "boot server: boot.ipxe");
    ([(header::CONTENT_TYPE, "text/plain")], s.script).into_response()
}

/// One of the image's files, streamed.
async fn file(
    State(s): State<Served>,
    Extension(m): Extension<Machine>,
    name: &'static str,
) -> Response {
    match tokio::fs::File::open(s.dir.join(name)).await {
        Ok(f) => {
            tracing::info!(machine = %m.0.ip(), "boot server: {name}");
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
            config_key: None,
            image_sha256: "abc123".into(),
        };
        let s = script(&m, "console=ttyS0 edgecloud.serve=\"--site lab\"", None);
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains(
            "\nkernel vmlinuz initrd=initramfs.img console=ttyS0 edgecloud.serve=\"--site lab\" edgecloud.image=abc123\n"
        ));
        assert!(s.contains("\ninitrd initramfs.img\nboot\n"));
        // Signed: the same line and the signature, which init accepts.
        let (file, public) = crate::signing::generate().unwrap();
        let key = crate::signing::key_from(&file).unwrap();
        let signed = script(&m, "console=ttyS0", Some(&key));
        let line = signed.lines().find(|l| l.starts_with("kernel ")).unwrap();
        let cmdline = line.strip_prefix("kernel vmlinuz ").unwrap();
        crate::signing::verify(&public, cmdline).unwrap();
        // An image built with a key is served only with that key.
        let mut keyed = m.clone();
        keyed.config_key = Some(public);
        assert!(check_key(&keyed, Some(&key)).is_ok());
        assert!(
            check_key(&keyed, None)
                .unwrap_err()
                .to_string()
                .contains("--boot-key")
        );
        let other = crate::signing::key_from(&crate::signing::generate().unwrap().0).unwrap();
        assert!(check_key(&keyed, Some(&other)).is_err());
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
