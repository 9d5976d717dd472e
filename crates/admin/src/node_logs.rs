//! A node's recent log lines, kept in memory so that any member can show them
//! (`edgecloud cluster logs NODE`, `GET /v1/cluster/nodes/{node}/logs`): a booted node
//! has no disk for logs, and its console is on a machine nobody sits at. The process's
//! log writer copies each line here ([`LogTee`]); on a booted node, init's own console
//! lines come first (`serve` adds them from the file init keeps in memory).

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use crate::AdminState;
use crate::error::ApiError;

/// The lines kept; older ones are dropped.
pub const KEPT_LINES: usize = 2000;
/// Lines shown when the caller does not say.
const DEFAULT_LINES: usize = 200;
/// A longer line is cut (a log line is not a data channel).
const LONGEST_LINE: usize = 4096;
/// Path of a node's recent lines on the node-to-node API (members only).
pub const PEER_PATH: &str = "/v1/node/logs";

/// The last [`KEPT_LINES`] lines this process logged.
#[derive(Default)]
pub struct RecentLogs {
    lines: Mutex<VecDeque<String>>,
}

/// The process's lines (one log per process, as the log subscriber is).
pub fn recent() -> &'static RecentLogs {
    static RECENT: OnceLock<RecentLogs> = OnceLock::new();
    RECENT.get_or_init(RecentLogs::default)
}

impl RecentLogs {
    /// Adds the lines of `text` (terminal colour codes removed, long lines cut).
    pub fn add(&self, text: &str) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut line = without_colours(line);
            if line.len() > LONGEST_LINE {
                let mut end = LONGEST_LINE;
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                line.truncate(end);
                line.push_str(" [cut]");
            }
            if lines.len() == KEPT_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }

    /// The last `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

/// A log writer that copies what it is given into [`recent`] (pair it with standard
/// error: `std::io::stderr.and(|| LogTee)`). The log formatter writes each event in one
/// call, so each call is taken as whole lines.
pub struct LogTee;

impl std::io::Write for LogTee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        recent().add(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`), which a terminal's log has.
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Deserialize, Serialize)]
pub(crate) struct LogsQuery {
    lines: Option<usize>,
}

/// A node's recent log lines.
#[derive(Serialize, Deserialize)]
pub struct NodeLogs {
    /// The node's id.
    pub node: String,
    /// Its last lines, oldest first.
    pub lines: Vec<String>,
}

/// `GET /v1/cluster/nodes/{node}/logs[?lines=N]`: this node's lines (`self` or its
/// id), or another member's, asked over the node-to-node API.
pub(crate) async fn get(
    State(s): State<AdminState>,
    Path(node): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<NodeLogs>, ApiError> {
    let n = q.lines.unwrap_or(DEFAULT_LINES).min(KEPT_LINES);
    let invalid = |m: String| ApiError(archive::ArchiveError::Invalid(m));
    let m = match s.archive.cluster() {
        Some(m) if node != "self" && node != m.me().0 => m,
        // This node ("self", its id, or any name on a node outside a cluster).
        other => {
            return Ok(Json(NodeLogs {
                node: other.map_or(node, |m| m.me().0.clone()),
                lines: recent().last(n),
            }));
        }
    };
    let layout = m.layout();
    let Some(info) = layout.node(&cluster::NodeId(node.clone())) else {
        return Err(invalid(format!(
            "no node {node} in the cluster (see `edgecloud cluster status`)"
        )));
    };
    let body = serde_json::to_vec(&LogsQuery { lines: Some(n) }).expect("a query serializes");
    let answer = m
        .client()
        .call(&info.rpc_addr, PEER_PATH, body, Duration::from_secs(10))
        .await
        .map_err(|e| unavailable(format!("node {node} ({}): {e}", info.rpc_addr)))?;
    let lines: Vec<String> = serde_json::from_slice(&answer)
        .map_err(|e| unavailable(format!("node {node}: unreadable answer: {e}")))?;
    Ok(Json(NodeLogs { node, lines }))
}

fn unavailable(m: String) -> ApiError {
    ApiError(archive::ArchiveError::Catalog(
        catalog::CatalogError::Unavailable(m),
    ))
}

/// The node-to-node side: this node's last lines.
pub(crate) async fn peer(body: axum::body::Bytes) -> Json<Vec<String>> {
    let n = serde_json::from_slice::<LogsQuery>(&body)
        .ok()
        .and_then(|q| q.lines)
        .unwrap_or(DEFAULT_LINES)
        .min(KEPT_LINES);
    Json(recent().last(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_without_colours_and_cuts_long_ones() {
        let r = RecentLogs::default();
        r.add("\u{1b}[2m2026-12-08T00:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m started\n\n");
        assert_eq!(r.last(5), vec!["2026-12-08T00:00:00Z  INFO started"]);
        r.add(&format!("{}\n", "é".repeat(LONGEST_LINE)));
        let long = r.last(1).pop().unwrap();
        assert!(long.ends_with(" [cut]") && long.len() <= LONGEST_LINE + 6);
        for i in 0..KEPT_LINES + 10 {
            r.add(&format!("line {i}\nline {i} again\n"));
        }
        let all = r.last(usize::MAX);
        assert_eq!(all.len(), KEPT_LINES);
        assert_eq!(
            all.last().unwrap(),
            &format!("line {} again", KEPT_LINES + 9)
        );
        assert_eq!(r.last(2)[0], format!("line {}", KEPT_LINES + 9));
    }
}
