//! Prometheus metrics at `GET /metrics` on the admin port (no token: the figures name
//! no bucket, key or access key; the admin port listens on 127.0.0.1 unless told
//! otherwise).
//!
//! Two kinds: request metrics, counted as requests pass one axum layer on every HTTP
//! gateway (requests by gateway, operation and status, latency histograms, bytes in and
//! out as the bodies stream); and the node's state, read when Prometheus scrapes (disks,
//! shards, repair and scrub progress, Raft, the ledger, the cluster's nodes).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    gateway: &'static str,
    /// The method and what it addressed: "GET object", "PUT bucket", "GET service".
    operation: String,
    /// The HTTP status, FTP reply code or NFS status.
    status: String,
}

/// A gateway's label, for byte counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GatewayLabel {
    gateway: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The request metrics every HTTP gateway shares.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    seconds: Family<RequestLabels, Histogram, fn() -> Histogram>,
    received: Family<GatewayLabel, Counter>,
    sent: Family<GatewayLabel, Counter>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            requests: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram),
            received: Family::default(),
            sent: Family::default(),
        }
    }
}

/// What a request addressed, from its path: the service (`/`), a bucket (`/b`) or an
/// object (`/b/k...`). Virtual-hosted S3 requests count as their path says.
fn target(path: &str) -> &'static str {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some(""), _) => "service",
        (Some(_), None) | (Some(_), Some("")) => "bucket",
        _ => "object",
    }
}

impl RequestMetrics {
    /// `app` with its requests counted under `gateway`.
    pub fn around(&self, gateway: &'static str, app: axum::Router) -> axum::Router {
        app.layer(axum::middleware::from_fn_with_state(
            (self.clone(), gateway),
            count,
        ))
    }

    /// Counts FTP's file operations: a request labelled with the command and its reply
    /// code, its time, and the bytes STOR received and RETR sent.
    pub fn ftp_events(&self) -> ftp::OnOp {
        let m = self.clone();
        Arc::new(
            move |command: &'static str,
                  code: u16,
                  took: std::time::Duration,
                  received: u64,
                  sent: u64| {
                m.finished("FTP", command, code, Some(took), received, sent);
            },
        )
    }

    /// Counts NFS operations: a request labelled with the operation and its NFS status,
    /// its time, and the bytes READ sent and WRITE received.
    pub fn nfs_events(&self) -> nfs::OnOp {
        let m = self.clone();
        Arc::new(
            move |op: &'static str,
                  status: &'static str,
                  took: std::time::Duration,
                  received: u64,
                  sent: u64| {
                m.finished("NFS", op, status, Some(took), received, sent);
            },
        )
    }

    /// Records one finished request of `gateway`: its count, its time when known, and
    /// the bytes it moved (HTTP bodies are counted as they stream instead).
    fn finished(
        &self,
        gateway: &'static str,
        operation: impl ToString,
        status: impl ToString,
        took: Option<std::time::Duration>,
        received: u64,
        sent: u64,
    ) {
        let labels = RequestLabels {
            gateway,
            operation: operation.to_string(),
            status: status.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        if let Some(took) = took {
            self.seconds
                .get_or_create(&labels)
                .observe(took.as_secs_f64());
        }
        let gateway = GatewayLabel { gateway };
        self.received.get_or_create(&gateway).inc_by(received);
        self.sent.get_or_create(&gateway).inc_by(sent);
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "edgecloud_requests",
            "Requests by gateway, operation and status",
            self.requests.clone(),
        );
        r.register(
            "edgecloud_request_duration_seconds",
            "Time to the response's head, by gateway, operation and status",
            self.seconds.clone(),
        );
        r.register(
            "edgecloud_received_bytes",
            "Request body bytes received, by gateway",
            self.received.clone(),
        );
        r.register(
            "edgecloud_sent_bytes",
            "Response body bytes sent, by gateway",
            self.sent.clone(),
        );
    }
}

async fn count(
    State((m, gateway)): State<(RequestMetrics, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let operation = format!("{} {}", req.method(), target(req.uri().path()));
    let received = m.received.get_or_create(&GatewayLabel { gateway }).clone();
    let req = req.map(|inner| {
        Body::new(Counted {
            inner,
            bytes: received,
        })
    });
    let resp = next.run(req).await;
    m.finished(
        gateway,
        operation,
        resp.status().as_u16(),
        Some(started.elapsed()),
        0,
        0,
    );
    let sent = m.sent.get_or_create(&GatewayLabel { gateway }).clone();
    resp.map(|inner| Body::new(Counted { inner, bytes: sent }))
}

/// A body that counts its bytes as they pass, and keeps the inner body's size hint
/// (gateways read the request's length from it).
struct Counted {
    inner: Body,
    bytes: Counter,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the scrape reads besides the request counters.
#[derive(Clone)]
pub struct NodeState {
    pub(crate) requests: RequestMetrics,
    pub(crate) archive: archive::Archive,
    pub(crate) replica: Arc<consensus::Replica>,
    pub(crate) auditor: Arc<archive::audit::Auditor>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DiskLabel {
    disk: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// A running total kept elsewhere, exposed as a counter (a fresh one per scrape).
fn total(r: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    r.register(name, help, c);
}

fn gauge(r: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    r.register(name, help, g);
}

/// This process's resident memory: `VmRSS` of `/proc/self/status` (0 where there is
/// none).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// `GET /metrics`: the Prometheus text format.
pub async fn scrape(State(s): State<NodeState>) -> Response {
    let text = tokio::task::spawn_blocking(move || render(&s)).await;
    match text {
        Ok(Ok(body)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn render(s: &NodeState) -> Result<String, std::fmt::Error> {
    let mut r = Registry::default();
    s.requests.register(&mut r);

    let disks = s.archive.disk_health();
    let shards: Family<DiskLabel, Gauge> = Family::default();
    let bytes: Family<DiskLabel, Gauge> = Family::default();
    let lost: Family<DiskLabel, Gauge> = Family::default();
    let size: Family<DiskLabel, Gauge> = Family::default();
    let free: Family<DiskLabel, Gauge> = Family::default();
    let ok: Family<DiskLabel, Gauge> = Family::default();
    for d in &disks {
        let l = DiskLabel {
            disk: d.path.display().to_string(),
        };
        shards.get_or_create(&l).set(d.shards as i64);
        bytes.get_or_create(&l).set(d.bytes as i64);
        lost.get_or_create(&l).set(d.lost as i64);
        let (total, available) = cluster::rpc::fs_space(&d.path);
        size.get_or_create(&l).set(total as i64);
        free.get_or_create(&l).set(available as i64);
        ok.get_or_create(&l).set(d.path.is_dir() as i64);
    }
    r.register(
        "edgecloud_disk_size_bytes",
        "Size of the file system holding each disk",
        size,
    );
    r.register(
        "edgecloud_disk_free_bytes",
        "Bytes free for the node on the file system holding each disk",
        free,
    );
    r.register(
        "edgecloud_disk_ok",
        "1 while the disk's folder is there (0: the disk is gone, its shards are rebuilt elsewhere)",
        ok,
    );
    gauge(
        &mut r,
        "process_resident_memory_bytes",
        "The node process's resident memory (RSS)",
        resident_bytes() as i64,
    );
    gauge(
        &mut r,
        "edgecloud_chunks",
        "Chunks the catalog holds (each stored as its policy's shards)",
        s.archive.chunk_count().unwrap_or(0) as i64,
    );
    r.register(
        "edgecloud_disk_shards",
        "Shards on each of this node's disks",
        shards,
    );
    r.register(
        "edgecloud_disk_bytes",
        "Bytes of segment files on each disk",
        bytes,
    );
    r.register(
        "edgecloud_disk_lost_shards",
        "Shards forgotten because their disk folder or segment file vanished",
        lost,
    );

    let repair = s.archive.repair_state();
    gauge(
        &mut r,
        "edgecloud_repair_running",
        "1 while a repair or scrub pass runs on this node",
        repair.running as i64,
    );
    total(
        &mut r,
        "edgecloud_repair_passes",
        "Repair passes since the node started",
        repair.passes,
    );
    gauge(
        &mut r,
        "edgecloud_redundancy_healthy",
        "1 once a whole pass found every shard where it belongs",
        repair.healthy as i64,
    );
    total(
        &mut r,
        "edgecloud_shards_repaired",
        "Shards rebuilt or moved home since the node started",
        repair.shards_repaired_total,
    );
    // Zero until the first pass reports, so the series always exist.
    let report = repair.report.clone().unwrap_or_default();
    {
        gauge(
            &mut r,
            "edgecloud_scrub_chunks_checked",
            "Chunks looked at by the pass in progress (or the last one)",
            report.chunks_checked as i64,
        );
        gauge(
            &mut r,
            "edgecloud_scrub_shards_missing",
            "Shards found missing by the pass in progress (or the last one)",
            report.shards_missing as i64,
        );
        gauge(
            &mut r,
            "edgecloud_scrub_shards_corrupt",
            "Shards found corrupt by the pass in progress (or the last one)",
            report.shards_corrupt as i64,
        );
        gauge(
            &mut r,
            "edgecloud_repair_queue_chunks",
            "Chunks below full redundancy or away from their place, queued by the repair pass in progress (or the last one)",
            report.chunks_queued as i64,
        );
        gauge(
            &mut r,
            "edgecloud_chunks_unrecoverable",
            "Chunks with fewer intact shards than needed, found by the last pass",
            report.chunks_unrecoverable.len() as i64,
        );
    }

    let raft = s.replica.raft.metrics().borrow().clone();
    gauge(
        &mut r,
        "edgecloud_raft_term",
        "The catalog's Raft term",
        raft.current_term as i64,
    );
    gauge(
        &mut r,
        "edgecloud_raft_leader",
        "1 when this node leads the catalog's Raft group",
        (raft.current_leader == Some(s.replica.id())) as i64,
    );
    let last_log = raft.last_log_index.unwrap_or(0);
    let applied = raft.last_applied.map_or(0, |l| l.index);
    gauge(
        &mut r,
        "edgecloud_raft_last_log_index",
        "The last entry in this replica's Raft log",
        last_log as i64,
    );
    gauge(
        &mut r,
        "edgecloud_raft_applied_index",
        "The last entry this replica applied to its catalog",
        applied as i64,
    );
    gauge(
        &mut r,
        "edgecloud_raft_apply_lag",
        "Entries in this replica's log not yet applied",
        last_log.saturating_sub(applied) as i64,
    );
    gauge(
        &mut r,
        "edgecloud_raft_voters",
        "Voters of the catalog's Raft group",
        s.replica.voters().len() as i64,
    );

    if let Ok(entries) = s.archive.catalog().ledger_size() {
        gauge(
            &mut r,
            "edgecloud_ledger_entries",
            "Entries in the audit log",
            entries as i64,
        );
    }
    gauge(
        &mut r,
        "edgecloud_ledger_published_entries",
        "Entries covered by the latest signed checkpoint (published every second)",
        s.auditor.size() as i64,
    );
    if let Ok(buckets) = s.archive.buckets() {
        gauge(&mut r, "edgecloud_buckets", "Buckets", buckets.len() as i64);
    }
    if let Some(m) = s.archive.cluster() {
        let layout = m.layout();
        let nodes: Family<StateLabel, Gauge> = Family::default();
        for n in &layout.nodes {
            let state = match n.state {
                cluster::NodeState::Active => "active",
                cluster::NodeState::Down => "down",
                cluster::NodeState::Draining => "draining",
                cluster::NodeState::Removed => "removed",
            };
            nodes.get_or_create(&StateLabel { state }).inc();
        }
        r.register(
            "edgecloud_cluster_nodes",
            "The cluster's nodes by state",
            nodes,
        );
        gauge(
            &mut r,
            "edgecloud_cluster_sites",
            "Sites with a node that is not removed",
            layout.sites().len() as i64,
        );
        gauge(
            &mut r,
            "edgecloud_layout_epoch",
            "The cluster layout's epoch",
            layout.epoch as i64,
        );
    }

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &r)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn targets_follow_the_path() {
        assert_eq!(super::target("/"), "service");
        assert_eq!(super::target("/photos"), "bucket");
        assert_eq!(super::target("/photos/"), "bucket");
        assert_eq!(super::target("/photos/2026/a.jpg"), "object");
    }
}
