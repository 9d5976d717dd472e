//! Builds a node image from a real Debian kernel package twice: the same bytes both
//! times, the modules with their dependencies in load order, the binary's libraries.
//! The package comes from `EDGECLOUD_KERNEL_DEB` or the tools cache that `.ci/run`
//! fills (`apt-get download`); without one the test says so and checks nothing.

use std::path::PathBuf;

fn kernel_deb() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("EDGECLOUD_KERNEL_DEB") {
        return Some(PathBuf::from(p));
    }
    let dir = std::fs::read_dir("/var/tmp/edgecloud-tools/kernel").ok()?;
    let mut debs: Vec<PathBuf> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    debs.pop()
}

#[test]
fn an_image_is_reproducible_and_holds_what_the_node_needs() {
    let Some(deb) = kernel_deb() else {
        eprintln!("no kernel package (set EDGECLOUD_KERNEL_DEB): nothing checked");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    // Any dynamically linked program stands in for edgecloud here.
    let binary = PathBuf::from("/bin/ls");
    let mke2fs = Some(PathBuf::from("/usr/sbin/mke2fs")).filter(|p| p.exists());
    let build = |out: &str| {
        netboot::image::build(&netboot::image::BuildOptions {
            kernel_deb: deb.clone(),
            binary: binary.clone(),
            out: tmp.path().join(out),
            modules: vec!["virtio_net".into(), "virtio_blk".into(), "e1000".into()],
            mke2fs: mke2fs.clone(),
            config_key: None,
        })
        .expect("build")
    };
    let a = build("a");
    let b = build("b");
    assert_eq!(a, b, "the same inputs, the same image");
    for f in ["vmlinuz", "initramfs.img", "manifest.json"] {
        assert_eq!(
            std::fs::read(tmp.path().join("a").join(f)).expect("read"),
            std::fs::read(tmp.path().join("b").join(f)).expect("read"),
            "{f} differs between two builds"
        );
    }
    // virtio_net needs virtio and virtio_ring (and net_failover, failover): first.
    let at = |m: &str| a.modules.iter().position(|x| x == m);
    assert!(
        at("virtio_net").is_some() && at("virtio").is_some(),
        "{:?}",
        a.modules
    );
    assert!(at("virtio") < at("virtio_net") && at("failover") < at("net_failover"));
    assert!(
        a.libraries.iter().any(|l| l.contains("libc.so")),
        "{:?}",
        a.libraries
    );
    assert!(a.initramfs_bytes < 40 << 20);
    if mke2fs.is_some() {
        // The formatter comes with the libraries it links (libext2fs is its own).
        assert_eq!(a.tools, vec!["/sbin/mke2fs"]);
        assert!(
            a.libraries.iter().any(|l| l.contains("libext2fs.so")),
            "{:?}",
            a.libraries
        );
    }
}
