//! `edgecloud mount BUCKET DIR`: the bucket as a local folder until unmounted.

use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(clap::Args)]
pub struct MountArgs {
    /// The bucket to mount
    pub bucket: String,
    /// An empty folder to mount it on
    pub dir: PathBuf,
    /// The node's WebDAV URL
    #[arg(
        long,
        env = "EDGECLOUD_DAV_URL",
        default_value = "http://127.0.0.1:9401"
    )]
    pub url: String,
    /// Access key the mount acts as [default: the node's root key from DATA/s3-credentials]
    #[arg(long, env = "EDGECLOUD_ACCESS_KEY", value_name = "KEY")]
    pub access_key: Option<String>,
    /// Secret of --access-key
    #[arg(
        long,
        env = "EDGECLOUD_SECRET_KEY",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub secret_key: Option<String>,
    /// Where file copies are kept (read cache, files being written; plaintext, so the
    /// folder is made private to you) [default: a new folder with a random name under
    /// the system's temporary folder]
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Let other users of this machine use the mount (needs `user_allow_other` in
    /// /etc/fuse.conf unless you are root); e.g. for Samba serving it as another user
    #[arg(long)]
    pub allow_other: bool,
}

pub async fn run(a: MountArgs, data: &Path) -> anyhow::Result<()> {
    let (access_key, secret) = match (a.access_key, a.secret_key) {
        (Some(k), Some(s)) => (k, s),
        (None, None) => {
            let path = data.join("s3-credentials");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "give --access-key and --secret-key, or run on the node (no {})",
                    path.display()
                )
            })?;
            let (k, s) = text
                .trim()
                .split_once(':')
                .with_context(|| format!("{} must hold ACCESS:SECRET", path.display()))?;
            (k.to_string(), s.to_string())
        }
        _ => anyhow::bail!("give both --access-key and --secret-key"),
    };
    // The cache holds plaintext copies: files only this user may read.
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe { libc::umask(0o077) };
    // A fresh folder with a random name (created 0700, never an existing one another
    // user could have prepared), unless one is given.
    let cache = match a.cache {
        Some(c) => c,
        None => tempfile::Builder::new()
            .prefix("edgecloud-mount-")
            .tempdir()
            .context("cannot make a cache folder; give one with --cache")?
            .keep(),
    };
    let opts = mount::Options {
        url: a.url,
        bucket: a.bucket.clone(),
        access_key,
        secret,
        cache_dir: cache.clone(),
        allow_other: a.allow_other,
        owner: None,
    };
    eprintln!(
        "mounting bucket {} on {} (unmount with: umount {})",
        a.bucket,
        a.dir.display(),
        a.dir.display()
    );
    let dir = a.dir.clone();
    let result = tokio::task::spawn_blocking(move || mount::mount(opts, &dir)).await?;
    let _ = std::fs::remove_dir_all(&cache);
    result.with_context(|| format!("cannot mount on {}", a.dir.display()))
}
