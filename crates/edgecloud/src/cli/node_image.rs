//! `edgecloud node-image build` and `edgecloud init` (crates/netboot): the image a
//! stateless node boots, and the binary as its PID 1.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

#[derive(clap::Subcommand)]
pub enum NodeImageCmd {
    /// Build a kernel and an initramfs that boot into edgecloud: OUT/vmlinuz,
    /// OUT/initramfs.img and OUT/manifest.json (hashes; the same inputs give the same
    /// bytes). Boot them with iPXE, PXELINUX or `qemu -kernel -initrd`
    /// (docs/netboot.md).
    Build(BuildArgs),
    /// Make a key for signing boot configurations: FILE gets the private key (keep it
    /// with the node that serves the image, `serve --boot-key FILE`); the public key is
    /// printed, and `build --signing-key FILE` puts it in the image.
    Keygen {
        /// Where the private key goes (created, mode 0600; never overwritten)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print ARGS, a kernel command line, signed with the key in FILE (`edgecloud.sig=`
    /// appended): for booting an image built with `--signing-key` without the boot
    /// server (`qemu -append`, a PXE menu).
    Sign {
        /// The private key (`node-image keygen`)
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The kernel command line
        args: String,
    },
}

#[derive(clap::Args)]
pub struct BuildArgs {
    /// Where the image goes
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A Debian linux-image-*.deb to take the kernel and modules from [default: the
    /// current linux-image-amd64, fetched with apt-get download]
    #[arg(long, value_name = "FILE")]
    kernel_deb: Option<PathBuf>,
    /// The edgecloud binary to put in the image [default: this one]
    #[arg(long, value_name = "FILE")]
    binary: Option<PathBuf>,
    /// A kernel module to load at boot, with what it needs; repeatable [default:
    /// network and disk drivers for common hardware and VMs, overlay, fuse, veth]
    #[arg(long = "module", value_name = "NAME")]
    modules: Vec<String>,
    /// e2fsprogs' mke2fs, with which a booted node formats blank disks [default:
    /// /usr/sbin/mke2fs or /sbin/mke2fs; without one the image formats no disk]
    #[arg(long, value_name = "FILE")]
    mke2fs: Option<PathBuf>,
    /// A boot signing key (`node-image keygen`): the image then starts a node only for
    /// a kernel command line signed with it (the boot server signs with `--boot-key`)
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
}

fn read_key(file: &Path) -> anyhow::Result<netboot::signing::SigningKey> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    netboot::signing::key_from(&text).with_context(|| file.display().to_string())
}

/// The current linux-image-amd64's package, downloaded into `dir` with apt.
fn fetch_kernel_deb(dir: &Path) -> anyhow::Result<PathBuf> {
    let depends = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .context("running apt-cache (give --kernel-deb on a machine without apt)")?;
    let text = String::from_utf8_lossy(&depends.stdout);
    let Some(package) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
        .map(|v| format!("linux-image-{v}"))
    else {
        bail!("apt knows no linux-image-amd64 package: give --kernel-deb");
    };
    std::fs::create_dir_all(dir)?;
    eprintln!("fetching {package} with apt-get download ...");
    let got = Command::new("apt-get")
        .args(["download", &package])
        .current_dir(dir)
        .status()
        .context("running apt-get download")?;
    if !got.success() {
        bail!("apt-get download {package} failed: give --kernel-deb");
    }
    std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| {
            format!(
                "apt-get download left no {package}_*.deb in {}",
                dir.display()
            )
        })
}

pub fn run(cmd: NodeImageCmd) -> anyhow::Result<()> {
    match cmd {
        NodeImageCmd::Keygen { out } => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let (private, public) = netboot::signing::generate()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| {
                    format!(
                        "creating {} (an existing key is never overwritten)",
                        out.display()
                    )
                })?;
            f.write_all(private.as_bytes())?;
            eprintln!("private key written to {} (keep it secret)", out.display());
            println!("{public}");
            Ok(())
        }
        NodeImageCmd::Sign { key, args } => {
            println!("{}", netboot::signing::sign(&read_key(&key)?, &args));
            Ok(())
        }
        NodeImageCmd::Build(a) => {
            let kernel_deb = match a.kernel_deb {
                Some(k) => k,
                None => fetch_kernel_deb(&a.out.join("kernel-package"))?,
            };
            let binary = match a.binary {
                Some(b) => b,
                None => std::env::current_exe()?,
            };
            eprintln!(
                "building from {} and {} ...",
                kernel_deb.display(),
                binary.display()
            );
            let mke2fs = a.mke2fs.or_else(|| {
                let found = ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
                    .into_iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists());
                if found.is_none() {
                    eprintln!(
                        "warning: no mke2fs here (install e2fsprogs): nodes booted from this image format no blank disk"
                    );
                }
                found
            });
            let config_key = match &a.signing_key {
                Some(file) => Some(netboot::signing::public_key(&read_key(file)?)),
                None => None,
            };
            let m = netboot::image::build(&netboot::image::BuildOptions {
                kernel_deb,
                binary,
                out: a.out.clone(),
                modules: a.modules,
                mke2fs,
                config_key,
            })?;
            println!(
                "kernel     {} (sha256 {})",
                m.kernel_version, m.kernel_sha256
            );
            println!(
                "initramfs  {:.1} MiB (sha256 {})",
                m.initramfs_bytes as f64 / (1 << 20) as f64,
                m.initramfs_sha256
            );
            println!("modules    {}", m.modules.join(" "));
            println!("image      sha256 {}", m.image_sha256);
            if let Some(key) = &m.config_key {
                println!("boots      configurations signed with {key} only");
            }
            println!("written to {}", a.out.display());
            Ok(())
        }
    }
}
