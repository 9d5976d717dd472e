//! `edgecloud bench --webdav URL` and `--ftp HOST:PORT`: the same workload as
//! `--s3` (see `netbench`), in a new top-level folder (a bucket on edgecloud) that is
//! emptied afterwards.

use anyhow::Context;
use bytes::Bytes;
use reqwest::Method;
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use tokio::io::AsyncReadExt;

use crate::bench::net::{Store, bench_folder_name, drain, measure, send_checked, timed};

pub struct Login {
    pub user: String,
    pub password: String,
}

struct Dav {
    http: reqwest::Client,
    base: String,
    login: Login,
}

impl Dav {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<reqwest::Response> {
        let req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .basic_auth(&self.login.user, Some(&self.login.password));
        send_checked(req, body, "WebDAV", &self.base, &method, path).await
    }
}

struct DavStore<'a> {
    dav: &'a Dav,
    folder: &'a str,
}

impl Store for DavStore<'_> {
    async fn put(&self, name: &str, body: Bytes) -> anyhow::Result<()> {
        self.dav
            .send(Method::PUT, &format!("/{}/{name}", self.folder), Some(body))
            .await
            .map(|_| ())
    }
    async fn get(&self, name: &str) -> anyhow::Result<u64> {
        drain(
            self.dav
                .send(Method::GET, &format!("/{}/{name}", self.folder), None)
                .await?,
        )
        .await
    }
}

pub async fn run_webdav(url: &str, login: Login, quick: bool) -> anyhow::Result<()> {
    let dav = Dav {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?,
        base: url.trim_end_matches('/').to_string(),
        login,
    };
    let folder = bench_folder_name();
    println!("WebDAV server {url} (folder {folder}; random, incompressible data)");
    let mkcol = Method::from_bytes(b"MKCOL").expect("a method name");
    dav.send(mkcol, &format!("/{folder}/"), None)
        .await
        .context("cannot create the benchmark folder")?;
    let result = measure(
        &DavStore {
            dav: &dav,
            folder: &folder,
        },
        quick,
    )
    .await;
    // WebDAV deletes a folder with everything in it.
    if let Err(e) = dav.send(Method::DELETE, &format!("/{folder}/"), None).await {
        eprintln!("note: could not remove {folder}: {e}");
    }
    result
}

/// FTP transfers one file at a time per connection: a pool of logged-in connections,
/// as many as transfers in flight.
struct FtpStore {
    addr: String,
    login: Login,
    folder: String,
    pool: tokio::sync::Mutex<Vec<AsyncFtpStream>>,
}

impl FtpStore {
    async fn connect(&self) -> anyhow::Result<AsyncFtpStream> {
        let mut c = AsyncFtpStream::connect(&self.addr)
            .await
            .with_context(|| format!("no FTP server answers at {}", self.addr))?;
        c.login(self.login.user.as_str(), self.login.password.as_str())
            .await
            .context("FTP login refused")?;
        c.transfer_type(FileType::Binary).await?;
        Ok(c)
    }

    async fn conn(&self) -> anyhow::Result<AsyncFtpStream> {
        let pooled = self.pool.lock().await.pop();
        match pooled {
            Some(c) => Ok(c),
            None => self.connect().await,
        }
    }

    async fn give_back(&self, c: AsyncFtpStream) {
        self.pool.lock().await.push(c);
    }
}

impl Store for FtpStore {
    async fn put(&self, name: &str, body: Bytes) -> anyhow::Result<()> {
        let mut c = self.conn().await?;
        c.put_file(format!("/{}/{name}", self.folder), &mut &body[..])
            .await
            .with_context(|| format!("STOR {name}"))?;
        self.give_back(c).await;
        Ok(())
    }
    async fn get(&self, name: &str) -> anyhow::Result<u64> {
        let mut c = self.conn().await?;
        let mut s = c
            .retr_as_stream(format!("/{}/{name}", self.folder))
            .await
            .with_context(|| format!("RETR {name}"))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        s.finish().await?;
        self.give_back(c).await;
        Ok(n)
    }
}

pub async fn run_ftp(addr: &str, login: Login, quick: bool) -> anyhow::Result<()> {
    let store = FtpStore {
        addr: addr.to_string(),
        login,
        folder: bench_folder_name(),
        pool: Default::default(),
    };
    println!(
        "FTP server {addr} (folder {}; random, incompressible data)",
        store.folder
    );
    let mut c = store.connect().await?;
    c.mkdir(format!("/{}", store.folder))
        .await
        .context("cannot create the benchmark folder")?;
    store.give_back(c).await;
    let result = measure(&store, quick).await;
    // Empty the folder again.
    let mut c = store.conn().await?;
    let names = c
        .nlst(Some(&format!("/{}", store.folder)))
        .await
        .unwrap_or_default();
    store.give_back(c).await;
    let _ = timed(names.len(), 8, |i| {
        let store = &store;
        let name = names[i].rsplit('/').next().unwrap_or_default().to_string();
        async move {
            let mut c = store.conn().await?;
            c.rm(format!("/{}/{name}", store.folder)).await?;
            store.give_back(c).await;
            Ok(())
        }
    })
    .await;
    let mut c = store.conn().await?;
    if let Err(e) = c.rmdir(format!("/{}", store.folder)).await {
        eprintln!(
            "note: {} was emptied but not removed ({e}); a versioned bucket keeps its history",
            store.folder
        );
    }
    result
}
