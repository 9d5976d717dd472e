//! The node's copies of image files, fetched from the store when a lazy root file system
//! first reads them (`DATA/containers/files/<sha256>`), each checked against its digest.
//!
//! Lazy roots run in their own processes (`lazy_root`), so they outlive a restart of the
//! node; they ask for a file over a Unix socket (`DATA/containers/fetch.sock`): one line
//! `<sha256> <size>` in, `ok` or `error: <why>` out. The node also fetches ahead the
//! files an image's first start read (`prefetch`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use images::ImageStore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::{ContainerError, Result};

/// Files fetched at once by a prefetch.
const PREFETCH_PARALLEL: usize = 4;

/// The node's copies of image files.
#[derive(Clone)]
pub struct FileCache {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    store: ImageStore,
    /// One fetch per file at a time: a second asker waits for the first.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Whether `digest` names a file: 64 lowercase hex digits (it becomes a path).
pub fn is_digest(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl FileCache {
    /// The copies kept in `dir`, fetched from `store`.
    pub fn new(dir: PathBuf, store: ImageStore) -> Result<Self> {
        std::fs::create_dir_all(&dir)?;
        // A fetch cut short by the node's stop leaves its temporary copy behind.
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".partial") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(FileCache {
            inner: Arc::new(Inner {
                dir,
                store,
                fetching: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Where the copy of `digest` is (or will be).
    pub fn path(&self, digest: &str) -> PathBuf {
        self.inner.dir.join(digest)
    }

    /// Whether a whole copy of the file is here.
    pub fn has(&self, digest: &str, size: u64) -> bool {
        std::fs::metadata(self.path(digest)).is_ok_and(|m| m.len() == size)
    }

    /// Makes sure the copy of `digest` (`size` bytes) is here; fetches it if not.
    /// Returns whether it fetched.
    pub async fn ensure(&self, digest: &str, size: u64) -> Result<bool> {
        if !is_digest(digest) {
            return Err(ContainerError::Invalid(format!(
                "{digest:?} is not a file digest"
            )));
        }
        if self.has(digest, size) {
            return Ok(false);
        }
        let lock = {
            let mut f = self
                .inner
                .fetching
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            f.entry(digest.to_string()).or_default().clone()
        };
        let _one = lock.lock().await;
        let fetched = if self.has(digest, size) {
            Ok(false)
        } else {
            self.fetch(digest, size).await.map(|()| true)
        };
        self.inner
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest);
        fetched
    }

    /// Streams the file from the store into a temporary copy, checks its length and
    /// SHA-256, and only then gives it its name.
    async fn fetch(&self, digest: &str, size: u64) -> Result<()> {
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).map_err(|e| ContainerError::Runtime(e.to_string()))?;
        let tmp = self.inner.dir.join(format!(
            ".{digest}.{:016x}.partial",
            u64::from_le_bytes(raw)
        ));
        let result = async {
            let mut body = self.inner.store.read_file(digest).await?;
            let mut out = tokio::fs::File::create(&tmp).await?;
            let (mut hasher, mut len) = (Sha256::new(), 0u64);
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|e| ContainerError::Image(e.to_string()))?;
                hasher.update(&piece);
                len += piece.len() as u64;
                out.write_all(&piece).await?;
            }
            out.flush().await?;
            let actual: String = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if actual != digest || len != size {
                return Err(ContainerError::Image(format!(
                    "the store's file {digest} reads back as {len} bytes with SHA-256 {actual}, not {size} bytes: run `edgecloud scrub` and import the image again"
                )));
            }
            tokio::fs::rename(&tmp, self.path(digest)).await?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Fetches the listed files (digest, size) that are not here, a few at once, in
    /// list order; returns how many it fetched. Failures are logged, not returned: a
    /// lazy root fetches what it reads anyway.
    pub async fn prefetch(&self, files: Vec<(String, u64)>) -> u64 {
        let fetched = futures::stream::iter(files)
            .map(|(digest, size)| {
                let this = self.clone();
                async move {
                    match this.ensure(&digest, size).await {
                        Ok(fetched) => u64::from(fetched),
                        Err(e) => {
                            tracing::warn!("prefetching image file {digest}: {e}");
                            0
                        }
                    }
                }
            })
            .buffered(PREFETCH_PARALLEL)
            .collect::<Vec<u64>>()
            .await;
        fetched.iter().sum()
    }

    /// Answers lazy roots' requests on the Unix socket at `path` until the returned task
    /// is aborted (a stale socket file from an earlier run is replaced). Aborting it
    /// also ends the requests in flight without an answer, so that a node's stop is not
    /// taken for a failed fetch: the lazy root asks again, and the next node answers.
    pub fn listen(&self, path: &Path) -> Result<tokio::task::JoinHandle<()>> {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        let this = self.clone();
        Ok(tokio::spawn(async move {
            let mut answering = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let this = this.clone();
                        answering.spawn(async move {
                            if let Err(e) = this.answer(stream).await {
                                tracing::debug!("a lazy root's request: {e}");
                            }
                        });
                    }
                    // Reaps the answered ones (the set holds those still in flight).
                    Some(_) = answering.join_next(), if !answering.is_empty() => {}
                }
            }
        }))
    }

    /// One request: `<sha256> <size>\n` in, `ok\n` or `error: <why>\n` out. Lines are
    /// short: a longer one is refused unread.
    async fn answer(&self, stream: tokio::net::UnixStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut limited = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, 128));
        limited.read_line(&mut line).await?;
        let answer = match line.trim_end().split_once(' ') {
            Some((digest, size)) => match size.parse::<u64>() {
                Ok(size) => match self.ensure(digest, size).await {
                    Ok(_) => "ok\n".to_string(),
                    Err(e) => format!("error: {e}\n"),
                },
                Err(_) => "error: the size is not a number\n".to_string(),
            },
            None => "error: send `<sha256> <size>`\n".to_string(),
        };
        write.write_all(answer.as_bytes()).await
    }
}
