//! Open files: a reader that streams the object from the archive (re-opening the
//! stream only after a seek), and an upload that streams the request body into a new
//! version, committed only when the whole body arrived.

use std::io::SeekFrom;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use dav_server::fs::{DavFile, DavMetaData, FsError, FsFuture, FsResult};
use files::{Entry, Place, Session, WriteOptions};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use sync_wrapper::SyncWrapper;
use tokio::sync::mpsc;

use crate::fs::{Meta, map_err, seek_to};

pub(crate) struct Reader {
    session: Session,
    place: Place,
    entry: Entry,
    pos: u64,
    /// The open stream, the position it is at, and bytes it gave beyond the last read.
    stream: Option<(u64, SyncWrapper<BoxStream<'static, Result<Bytes, String>>>)>,
    pending: Bytes,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reader({:?} at {})", self.place, self.pos)
    }
}

impl Reader {
    pub(crate) fn new(session: Session, place: Place, entry: Entry) -> Self {
        Reader {
            session,
            place,
            entry,
            pos: 0,
            stream: None,
            pending: Bytes::new(),
        }
    }
}

impl DavFile for Reader {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(Meta(self.entry.clone()));
        Box::pin(futures::future::ready(Ok(m)))
    }

    fn write_buf(&mut self, _: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        Box::pin(futures::future::ready(Err(FsError::Forbidden)))
    }

    fn write_bytes(&mut self, _: Bytes) -> FsFuture<'_, ()> {
        Box::pin(futures::future::ready(Err(FsError::Forbidden)))
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        async move {
            if !matches!(&self.stream, Some((at, _)) if *at == self.pos) {
                let (_, s) = self
                    .session
                    .read(&self.place, self.pos)
                    .await
                    .map_err(map_err)?;
                self.stream = Some((
                    self.pos,
                    SyncWrapper::new(s.map(|r| r.map_err(|e| e.to_string())).boxed()),
                ));
                self.pending = Bytes::new();
            }
            let (at, stream) = self.stream.as_mut().expect("opened above");
            let mut out = BytesMut::new();
            while out.len() < count {
                if self.pending.is_empty() {
                    match stream.get_mut().next().await {
                        Some(Ok(b)) => self.pending = b,
                        Some(Err(e)) => {
                            tracing::warn!("webdav read of {:?}: {e}", self.place);
                            return Err(FsError::GeneralFailure);
                        }
                        None => break,
                    }
                }
                let take = (count - out.len()).min(self.pending.len());
                out.extend_from_slice(&self.pending.split_to(take));
            }
            *at += out.len() as u64;
            self.pos = *at;
            Ok(out.freeze())
        }
        .boxed()
    }

    fn seek(&mut self, to: SeekFrom) -> FsFuture<'_, u64> {
        let r = seek_to(self.pos, self.entry.size, to).inspect(|&p| self.pos = p);
        Box::pin(futures::future::ready(r))
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        Box::pin(futures::future::ready(Ok(())))
    }
}

type Job = tokio::task::JoinHandle<files::Result<Entry>>;

/// A PUT in progress: bytes go through a bounded channel into `Session::write` running
/// beside the request. The body stream ends cleanly only after `flush` said the upload
/// is complete; any other end (an error, a dropped connection, a short body) makes the
/// write fail, so nothing partial is ever stored.
pub(crate) struct Upload {
    place: Place,
    tx: Option<mpsc::Sender<std::io::Result<Bytes>>>,
    job: Option<Job>,
    complete: Arc<AtomicBool>,
    written: u64,
    expected: Option<u64>,
    done: Option<Entry>,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upload({:?}, {} bytes)", self.place, self.written)
    }
}

impl Upload {
    pub(crate) fn start(
        session: Session,
        place: Place,
        opts: WriteOptions,
        expected: Option<u64>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
        let complete = Arc::new(AtomicBool::new(false));
        let body = futures::stream::unfold(
            (rx, complete.clone(), false),
            |(mut rx, complete, ended)| async move {
                if ended {
                    return None;
                }
                match rx.recv().await {
                    Some(item) => Some((item, (rx, complete, false))),
                    None if complete.load(Ordering::Acquire) => None,
                    None => Some((
                        Err(std::io::Error::other("the upload was cut short")),
                        (rx, complete, true),
                    )),
                }
            },
        );
        let p = place.clone();
        let job = tokio::spawn(async move { session.write(&p, Box::pin(body), opts).await });
        Upload {
            place,
            tx: Some(tx),
            job: Some(job),
            complete,
            written: 0,
            expected,
            done: None,
        }
    }

    async fn send(&mut self, b: Bytes) -> FsResult<()> {
        self.written += b.len() as u64;
        let tx = self.tx.as_ref().ok_or(FsError::GeneralFailure)?;
        if tx.send(Ok(b)).await.is_err() {
            // The write ended early: say why.
            return Err(self.finish().await.err().unwrap_or(FsError::GeneralFailure));
        }
        Ok(())
    }

    async fn finish(&mut self) -> FsResult<Entry> {
        self.tx = None;
        let job = self.job.take().ok_or(FsError::GeneralFailure)?;
        match job.await {
            Ok(r) => r.map_err(map_err),
            Err(_) => Err(FsError::GeneralFailure),
        }
    }
}

impl DavFile for Upload {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let e = self.done.clone().unwrap_or(Entry {
            name: self.place.name().to_string(),
            dir: false,
            size: self.written,
            modified: std::time::SystemTime::now(),
            etag: None,
            read_only: false,
        });
        let m: Box<dyn DavMetaData> = Box::new(Meta(e));
        Box::pin(futures::future::ready(Ok(m)))
    }

    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        let b = buf.copy_to_bytes(buf.remaining());
        self.send(b).boxed()
    }

    fn write_bytes(&mut self, b: Bytes) -> FsFuture<'_, ()> {
        self.send(b).boxed()
    }

    fn read_bytes(&mut self, _: usize) -> FsFuture<'_, Bytes> {
        Box::pin(futures::future::ready(Err(FsError::Forbidden)))
    }

    fn seek(&mut self, to: SeekFrom) -> FsFuture<'_, u64> {
        // Uploads are streamed: only "where am I" is answerable (partial PUTs are not).
        let r = match to {
            SeekFrom::Current(0) => Ok(self.written),
            SeekFrom::Start(n) if n == self.written => Ok(n),
            _ => Err(FsError::NotImplemented),
        };
        Box::pin(futures::future::ready(r))
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        async move {
            if self.done.is_some() {
                return Ok(());
            }
            if self.expected.is_some_and(|n| n != self.written) {
                // A short or long body: end the stream with an error; nothing is stored.
                return Err(self.finish().await.err().unwrap_or(FsError::GeneralFailure));
            }
            self.complete.store(true, Ordering::Release);
            self.done = Some(self.finish().await?);
            Ok(())
        }
        .boxed()
    }
}
