//! The FTP gateway (port 9421): `libunftp` speaks the protocol (LIST/MLSD/NLST, RETR
//! with REST, STOR, DELE, MKD/RMD, RNFR/RNTO, passive mode, explicit FTPS with AUTH TLS,
//! required when a certificate is given); this crate maps it onto `files`. The user name is an
//! access key, the password its secret: the same keys and permissions as S3.
//!
//! FTP ends an upload by closing the data connection, so a client that stops cleanly in
//! the middle is indistinguishable from a finished upload; a reset connection or an
//! error stores nothing.

use std::fmt::{Debug, Display};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;
use files::{Entry, Files, Place, Session};
use futures::StreamExt;
use libunftp::ServerBuilder;
use unftp_core::auth::{
    AuthenticationError, Authenticator, Credentials, Principal, UserDetail, UserDetailError,
    UserDetailProvider,
};
use unftp_core::storage::{Error, ErrorKind, FEATURE_RESTART, Fileinfo, Metadata, StorageBackend};

/// How to run the FTP gateway.
#[derive(Clone)]
pub struct FtpConfig {
    /// Passive-mode data ports.
    pub passive_ports: std::ops::RangeInclusive<u16>,
    /// Certificate chain and key (PEM): explicit FTPS (AUTH TLS), then required.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Told of every file operation, failed ones too (for metrics).
    pub on_op: Option<OnOp>,
}

/// A file operation done: its FTP command (`LIST`, `RETR`, `STOR`, `DELE`, `MKD`,
/// `RMD`, `RNTO`, `CWD`, or `STAT` for the metadata look-ups of SIZE, MDTM, MLST and
/// the checks before other commands), the reply code it led to, the time until its
/// answer (for RETR: until the object was open and the transfer could start), and the
/// bytes it received (STOR) and sent (RETR, counted as the transfer goes).
pub type OnOp =
    std::sync::Arc<dyn Fn(&'static str, u16, std::time::Duration, u64, u64) + Send + Sync>;

/// The reply code libunftp answers a storage error with (RFC 959).
fn reply_code(e: &Error) -> u16 {
    match e.kind() {
        ErrorKind::TransientFileNotAvailable => 450,
        ErrorKind::LocalError => 451,
        ErrorKind::InsufficientStorageSpaceError => 452,
        ErrorKind::ConnectionClosed => 426,
        ErrorKind::CommandNotImplemented => 502,
        ErrorKind::PageTypeUnknown => 551,
        ErrorKind::ExceededStorageAllocationError => 552,
        ErrorKind::FileNameNotAllowedError => 553,
        _ => 550,
    }
}

/// FTP sessions served at once; more are closed at accept.
pub const MAX_SESSIONS: usize = 4096;

/// Serves FTP on `listener` until `stop` completes; sessions in progress finish.
pub async fn serve(
    files: Files,
    listener: tokio::net::TcpListener,
    cfg: FtpConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Our own accept loop rather than libunftp's: it sets TCP_NODELAY on the control
    // connection (without it every reply after a transfer waits ~40 ms for a delayed ACK).
    tokio::pin!(stop);
    let admission = cluster::server::Admission::new(MAX_SESSIONS);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors (EMFILE) or a connection reset before it
                    // was accepted: not a reason to stop serving.
                    tracing::warn!("ftp: cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => return Ok(()),
        };
        // Each session is counted: a flood of connections is turned away at accept
        // instead of exhausting the node's file descriptors or locking others out.
        let Some(admitted) = admission.admit("ftp", peer) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let server = match server(&files, &cfg) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("ftp: {e}");
                continue;
            }
        };
        tokio::spawn(async move {
            let _admitted = admitted;
            if let Err(e) = server.service(tcp).await {
                tracing::info!("ftp session from {peer}: {e:?}");
            }
        });
    }
}

fn server(files: &Files, cfg: &FtpConfig) -> Result<libunftp::Server<EdgeStorage, User>, String> {
    let auth = std::sync::Arc::new(KeyAuth(files.clone()));
    let users = std::sync::Arc::new(Users(files.clone()));
    let on_op = cfg.on_op.clone();
    let storage = Box::new(move || EdgeStorage {
        on_op: on_op.clone(),
    });
    let mut b = ServerBuilder::with_user_detail_provider(storage, users)
        .authenticator(auth)
        .greeting("Edgecloud FTP: log in with an access key and its secret")
        .passive_ports(cfg.passive_ports.clone());
    if let Some((cert, key)) = &cfg.tls {
        // With a certificate, TLS is required, not offered: passwords (secrets) and
        // data never cross in the clear.
        b = b.ftps(cert.clone(), key.clone()).ftps_required(true, true);
    }
    b.build()
        .map_err(|e| format!("cannot start an FTP session: {e}"))
}

/// A logged-in FTP user: their files session.
pub struct User {
    name: String,
    session: Session,
}

impl Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "User({})", self.name)
    }
}

impl Display for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl UserDetail for User {}

#[derive(Debug)]
struct KeyAuth(Files);

#[async_trait]
impl Authenticator for KeyAuth {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        let password = creds.password.as_deref().unwrap_or("");
        match self.0.login_fresh(username, password).await {
            Ok(_) => Ok(Principal {
                username: username.to_string(),
            }),
            Err(files::FsError::Denied) => {
                tracing::info!(
                    "ftp: refused login for access key {username:?} from {}",
                    creds.source_ip
                );
                Err(AuthenticationError::BadPassword)
            }
            Err(e) => Err(AuthenticationError::new(e.to_string())),
        }
    }
}

#[derive(Debug)]
struct Users(Files);

#[async_trait]
impl UserDetailProvider for Users {
    type User = User;

    async fn provide_user_detail(&self, principal: &Principal) -> Result<User, UserDetailError> {
        let session = self
            .0
            .session_after_login(&principal.username)
            .map_err(|e| UserDetailError::new(e.to_string()))?;
        Ok(User {
            name: principal.username.clone(),
            session,
        })
    }
}

/// The libunftp storage back end over the file layer; it also measures each operation.
pub struct EdgeStorage {
    on_op: Option<OnOp>,
}

impl Debug for EdgeStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeStorage")
    }
}

impl EdgeStorage {
    /// Runs one operation and reports it: `ok` is the reply code of success, `moved`
    /// the (received, sent) bytes of a success.
    async fn measured<T>(
        &self,
        command: &'static str,
        ok: u16,
        op: impl std::future::Future<Output = unftp_core::storage::Result<T>>,
        moved: impl FnOnce(&T) -> (u64, u64),
    ) -> unftp_core::storage::Result<T> {
        let started = std::time::Instant::now();
        let result = op.await;
        if let Some(on_op) = &self.on_op {
            let (code, (received, sent)) = match &result {
                Ok(v) => (ok, moved(v)),
                Err(e) => (reply_code(e), (0, 0)),
            };
            on_op(command, code, started.elapsed(), received, sent);
        }
        result
    }
}

fn place<P: AsRef<Path>>(p: P) -> Result<Place, Error> {
    let s = p
        .as_ref()
        .to_str()
        .ok_or_else(|| Error::from(ErrorKind::FileNameNotAllowedError))?;
    Place::parse(s).map_err(map_err)
}

fn map_err(e: files::FsError) -> Error {
    use files::FsError as F;
    let kind = match &e {
        F::NotFound | F::Exists | F::IsADirectory => ErrorKind::PermanentFileNotAvailable,
        F::NotADirectory => ErrorKind::PermanentDirectoryNotAvailable,
        F::NotEmpty => ErrorKind::PermanentDirectoryNotEmpty,
        F::Denied | F::ReadOnly => ErrorKind::PermissionDenied,
        F::NameTooLong | F::Invalid(_) => ErrorKind::FileNameNotAllowedError,
        F::TooLarge(_) => ErrorKind::ExceededStorageAllocationError,
        F::Aborted => ErrorKind::ConnectionClosed,
        F::Storage(m) if m.contains("No space") => ErrorKind::InsufficientStorageSpaceError,
        F::Storage(_) => ErrorKind::LocalError,
    };
    Error::new(kind, e)
}

/// A file's metadata as libunftp asks for it.
#[derive(Debug, Clone)]
pub struct Meta(Entry);

impl Metadata for Meta {
    fn len(&self) -> u64 {
        self.0.size
    }
    fn is_dir(&self) -> bool {
        self.0.dir
    }
    fn is_file(&self) -> bool {
        !self.0.dir
    }
    fn is_symlink(&self) -> bool {
        false
    }
    fn modified(&self) -> unftp_core::storage::Result<SystemTime> {
        Ok(self.0.modified)
    }
    fn gid(&self) -> u32 {
        0
    }
    fn uid(&self) -> u32 {
        0
    }
}

#[async_trait]
impl StorageBackend<User> for EdgeStorage {
    type Metadata = Meta;

    fn supported_features(&self) -> u32 {
        FEATURE_RESTART
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        path: P,
    ) -> unftp_core::storage::Result<Meta> {
        let op = async {
            user.session.catch_up().await.map_err(map_err)?;
            Ok(Meta(user.session.stat(&place(path)?).map_err(map_err)?))
        };
        self.measured("STAT", 213, op, |_| (0, 0)).await
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        path: P,
    ) -> unftp_core::storage::Result<Vec<Fileinfo<PathBuf, Meta>>> {
        let op = async {
            user.session.catch_up().await.map_err(map_err)?;
            let entries = user.session.list(&place(path)?).map_err(map_err)?;
            Ok(entries
                .into_iter()
                .map(|e| Fileinfo {
                    path: PathBuf::from(&e.name),
                    metadata: Meta(e),
                })
                .collect())
        };
        self.measured("LIST", 226, op, |_| (0, 0)).await
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        path: P,
        start_pos: u64,
    ) -> unftp_core::storage::Result<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>> {
        let started = std::time::Instant::now();
        let opened = async {
            user.session.catch_up().await.map_err(map_err)?;
            let (_, stream) = user
                .session
                .read(&place(path)?, start_pos)
                .await
                .map_err(map_err)?;
            Ok(stream.map(|r| r.map_err(std::io::Error::other)).boxed())
        }
        .await;
        match opened {
            // The transfer reports itself when it ends, with the bytes it sent.
            Ok(stream) => Ok(Box::new(ObjectReader {
                inner: sync_wrapper::SyncWrapper::new(tokio_util::io::StreamReader::new(stream)),
                on_op: self.on_op.clone(),
                took: started.elapsed(),
                sent: 0,
                failed: false,
            })),
            Err(e) => {
                if let Some(on_op) = &self.on_op {
                    on_op("RETR", reply_code(&e), started.elapsed(), 0, 0);
                }
                Err(e)
            }
        }
    }

    async fn put<
        P: AsRef<Path> + Send + Debug,
        R: tokio::io::AsyncRead + Send + Sync + Unpin + 'static,
    >(
        &self,
        user: &User,
        input: R,
        path: P,
        start_pos: u64,
    ) -> unftp_core::storage::Result<u64> {
        let op = async {
            if start_pos > 0 {
                // Objects are written whole: resuming an upload in the middle is not offered.
                return Err(Error::from(ErrorKind::CommandNotImplemented));
            }
            let body = tokio_util::io::ReaderStream::with_capacity(input, 1 << 20);
            let e = user
                .session
                .write(&place(path)?, body, Default::default())
                .await
                .map_err(map_err)?;
            Ok(e.size)
        };
        self.measured("STOR", 226, op, |size| (*size, 0)).await
    }

    async fn del<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        path: P,
    ) -> unftp_core::storage::Result<()> {
        let op = async {
            user.session
                .remove_file(&place(path)?)
                .await
                .map_err(map_err)
        };
        self.measured("DELE", 250, op, |_| (0, 0)).await
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        path: P,
    ) -> unftp_core::storage::Result<()> {
        let op = async { user.session.mkdir(&place(path)?).await.map_err(map_err) };
        self.measured("MKD", 257, op, |_| (0, 0)).await
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        from: P,
        to: P,
    ) -> unftp_core::storage::Result<()> {
        let op = async {
            user.session
                .rename(&place(from)?, &place(to)?)
                .await
                .map_err(map_err)
        };
        self.measured("RNTO", 250, op, |_| (0, 0)).await
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        path: P,
    ) -> unftp_core::storage::Result<()> {
        let op = async {
            user.session
                .remove_dir(&place(path)?)
                .await
                .map_err(map_err)
        };
        self.measured("RMD", 250, op, |_| (0, 0)).await
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &User,
        path: P,
    ) -> unftp_core::storage::Result<()> {
        let op = async {
            user.session.catch_up().await.map_err(map_err)?;
            match user.session.stat(&place(path)?) {
                Ok(e) if e.dir => Ok(()),
                Ok(_) => Err(Error::from(ErrorKind::PermanentDirectoryNotAvailable)),
                Err(e) => Err(map_err(e)),
            }
        };
        self.measured("CWD", 250, op, |_| (0, 0)).await
    }
}

type ByteStream = futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// An object's bytes as the `AsyncRead` libunftp copies to the data connection, counting
/// what it hands over; when the transfer ends (the reader is dropped) it reports the RETR.
/// libunftp wants it `Sync`; the archive's stream is only `Send`, which `SyncWrapper`
/// bridges (the reader is only ever used through `&mut`).
struct ObjectReader {
    inner: sync_wrapper::SyncWrapper<tokio_util::io::StreamReader<ByteStream, bytes::Bytes>>,
    on_op: Option<OnOp>,
    took: std::time::Duration,
    sent: u64,
    failed: bool,
}

impl tokio::io::AsyncRead for ObjectReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(this.inner.get_mut()).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) => this.sent += (buf.filled().len() - before) as u64,
            Poll::Ready(Err(_)) => this.failed = true,
            Poll::Pending => {}
        }
        r
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        if let Some(on_op) = &self.on_op {
            let code = if self.failed { 451 } else { 226 };
            on_op("RETR", code, self.took, 0, self.sent);
        }
    }
}
