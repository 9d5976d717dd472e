//! `edgecloud bench --s3 URL | --webdav URL | --ftp HOST:PORT`: throughput and latency
//! of any server speaking the protocol, measured the same way for all: large-file
//! PUT/GET in MB/s and 4 KiB PUT/GET in ops/s, each at concurrency 1, 8 and 32, plus GET
//! latency percentiles. S3 requests are signed with SigV4 (UNSIGNED-PAYLOAD, path style),
//! WebDAV uses HTTP Basic, FTP one connection per transfer in flight (passive, binary),
//! so the figures compare servers, not client libraries.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Method, Url};

use crate::bench::{Rng, mbps, row};

pub struct S3Target {
    pub url: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

pub struct S3Client {
    http: reqwest::Client,
    base: Url,
    host: String,
    signer: s3::sign::Signer,
}

impl S3Client {
    pub fn new(t: &S3Target) -> anyhow::Result<Self> {
        let base = Url::parse(&t.url)
            .with_context(|| format!("--s3 {:?} is not a URL like http://127.0.0.1:9400", t.url))?;
        let host = match (base.host_str(), base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => bail!("--s3 {:?} has no host", t.url),
        };
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?;
        let signer = s3::sign::Signer {
            access_key: t.access_key.clone(),
            secret_key: t.secret_key.clone(),
            region: t.region.clone(),
        };
        Ok(S3Client {
            http,
            base,
            host,
            signer,
        })
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut url = self.base.clone();
        url.set_path(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut req = self.http.request(method.clone(), url);
        for (k, v) in self
            .signer
            .headers(method.as_str(), &self.host, path, query)
        {
            req = req.header(k, v);
        }
        send_checked(req, body, "S3", self.base.as_str(), &method, path).await
    }

    async fn get(&self, path: &str) -> anyhow::Result<u64> {
        drain(self.send(Method::GET, path, &[], None).await?).await
    }
}

/// Sends `req` (with `body` and its length); an answer other than 2xx is an error
/// naming the request and what the server said.
pub async fn send_checked(
    mut req: reqwest::RequestBuilder,
    body: Option<Bytes>,
    protocol: &str,
    server: &str,
    method: &Method,
    path: &str,
) -> anyhow::Result<reqwest::Response> {
    if let Some(b) = body {
        req = req.header("content-length", b.len()).body(b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("no {protocol} server answers at {server}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        bail!("{method} {path}: the server answered {status}: {text}");
    }
    Ok(resp)
}

/// Reads (and drops) an answer's body as it streams; returns its length.
pub async fn drain(resp: reqwest::Response) -> anyhow::Result<u64> {
    let mut s = resp.bytes_stream();
    let mut n = 0;
    while let Some(piece) = s.next().await {
        n += piece?.len() as u64;
    }
    Ok(n)
}

/// A fresh name for the benchmark's bucket or folder.
pub fn bench_folder_name() -> String {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    format!("edgecloud-bench-{:08x}", Rng::new(seed).next() as u32)
}

/// What the benchmark needs of a server: store a file under a flat name in the
/// benchmark's bucket or folder, and read it back.
pub trait Store {
    async fn put(&self, name: &str, body: Bytes) -> anyhow::Result<()>;
    /// Reads (and drops) the whole file; returns its length.
    async fn get(&self, name: &str) -> anyhow::Result<u64>;
}

pub struct S3Store<'a> {
    c: &'a S3Client,
    bucket: &'a str,
}

impl<'a> S3Store<'a> {
    pub fn new(c: &'a S3Client, bucket: &'a str) -> Self {
        S3Store { c, bucket }
    }
}

impl Store for S3Store<'_> {
    async fn put(&self, name: &str, body: Bytes) -> anyhow::Result<()> {
        self.c
            .send(
                Method::PUT,
                &format!("/{}/{name}", self.bucket),
                &[],
                Some(body),
            )
            .await
            .map(|_| ())
    }
    async fn get(&self, name: &str) -> anyhow::Result<u64> {
        self.c.get(&format!("/{}/{name}", self.bucket)).await
    }
}

/// Runs `count` operations `op(i)` with `conc` in flight; returns elapsed time and the
/// latency of each.
pub async fn timed<F, Fut>(
    count: usize,
    conc: usize,
    op: F,
) -> anyhow::Result<(Duration, Vec<Duration>)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let start = Instant::now();
    let mut lat: Vec<Duration> = futures::stream::iter(0..count)
        .map(|i| {
            let f = op(i);
            async move {
                let t = Instant::now();
                f.await.map(|_| t.elapsed())
            }
        })
        .buffer_unordered(conc)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    lat.sort();
    Ok((start.elapsed(), lat))
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

pub fn ops(n: usize, d: Duration) -> String {
    format!("{:8.0} ops/s", n as f64 / d.as_secs_f64().max(1e-9))
}

pub async fn run_s3(t: S3Target, quick: bool) -> anyhow::Result<()> {
    let c = S3Client::new(&t)?;
    let bucket = bench_folder_name();
    println!(
        "S3 server {} (bucket {bucket}; random, incompressible data)",
        t.url
    );
    c.send(Method::PUT, &format!("/{bucket}"), &[], None)
        .await
        .context("cannot create the benchmark bucket")?;
    let result = measure(
        &S3Store {
            c: &c,
            bucket: &bucket,
        },
        quick,
    )
    .await;
    // Clean up whatever was written, even after a failure.
    let mut keys = Vec::new();
    let listing = c
        .send(
            Method::GET,
            &format!("/{bucket}"),
            &[("list-type", "2")],
            None,
        )
        .await;
    if let Ok(r) = listing {
        let text = r.text().await.unwrap_or_default();
        keys.extend(
            text.split("<Key>")
                .skip(1)
                .filter_map(|s| s.split("</Key>").next())
                .map(str::to_string),
        );
    }
    let _ = timed(keys.len(), 16, |i| {
        let path = format!("/{bucket}/{}", keys[i]);
        let c = &c;
        async move { c.send(Method::DELETE, &path, &[], None).await.map(|_| ()) }
    })
    .await;
    let _ = c
        .send(Method::DELETE, &format!("/{bucket}"), &[], None)
        .await;
    result
}

pub async fn measure(c: &impl Store, quick: bool) -> anyhow::Result<()> {
    // Large objects: the same total at each concurrency, split across that many objects.
    let total: usize = if quick { 48 << 20 } else { 768 << 20 };
    let data = Bytes::from(Rng::new(7).bytes(total));
    println!("large objects ({} MiB in total per run):", total >> 20);
    for conc in [1usize, 8, 32] {
        let size = total / conc;
        let path = |i: usize| format!("large-{conc}-{i}");
        let (put, _) = timed(conc, conc, |i| {
            let body = data.slice(i * size..(i + 1) * size);
            let path = path(i);
            async move { c.put(&path, body).await }
        })
        .await?;
        row(
            &format!("PUT {} x {} MiB (concurrency {conc})", conc, size >> 20),
            mbps((size * conc) as u64, put.as_secs_f64()),
        );
        let (get, _) = timed(conc, conc, |i| {
            let path = path(i);
            async move {
                let n = c.get(&path).await?;
                anyhow::ensure!(
                    n == size as u64,
                    "GET {path} returned {n} bytes, expected {size}"
                );
                Ok(())
            }
        })
        .await?;
        row(
            &format!("GET {} x {} MiB (concurrency {conc})", conc, size >> 20),
            mbps((size * conc) as u64, get.as_secs_f64()),
        );
    }
    drop(data);

    let count = if quick { 300 } else { 3000 };
    let small: Vec<Bytes> = {
        let mut rng = Rng::new(11);
        (0..count).map(|_| Bytes::from(rng.bytes(4096))).collect()
    };
    println!("4 KiB objects ({count} per run):");
    for conc in [1usize, 8, 32] {
        let path = |i: usize| format!("small-{conc}-{i:06}");
        let (put, _) = timed(count, conc, |i| {
            let (path, body) = (path(i), small[i].clone());
            async move { c.put(&path, body).await }
        })
        .await?;
        row(&format!("PUT 4 KiB (concurrency {conc})"), ops(count, put));
        small_gets(c, count, conc, path).await?;
    }
    Ok(())
}

/// Reads `count` 4 KiB objects named `path(i)` with `conc` in flight and prints ops/s
/// with the median and 99th-percentile latency.
pub async fn small_gets(
    c: &impl Store,
    count: usize,
    conc: usize,
    path: impl Fn(usize) -> String,
) -> anyhow::Result<()> {
    let (get, lat) = timed(count, conc, |i| {
        let path = path(i);
        async move {
            let n = c.get(&path).await?;
            anyhow::ensure!(n == 4096, "GET {path} returned {n} bytes");
            Ok(())
        }
    })
    .await?;
    row(
        &format!("GET 4 KiB (concurrency {conc})"),
        format!(
            "{}   p50 {:.2} ms  p99 {:.2} ms",
            ops(count, get),
            percentile(&lat, 0.50).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3
        ),
    );
    Ok(())
}
