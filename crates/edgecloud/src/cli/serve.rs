//! `edgecloud serve`: lays the flags over the config file, starts the node
//! (`node::Node::open`), says what it serves, and stops it on Ctrl-C / SIGTERM.

use std::path::PathBuf;

use node::{Node, NodeSettings};

/// Runs a node until Ctrl-C or SIGTERM.
pub async fn run(flags: NodeSettings, file: NodeSettings, data: PathBuf) -> anyhow::Result<()> {
    let settings = flags.overlay(file)?;
    init_logs(settings.log_format.unwrap_or_default());
    // Everything the node writes (catalog, Raft log and snapshots, keys, staging) is
    // for its own user only: the data directory holds secrets and plaintext.
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe { libc::umask(0o077) };
    raise_open_files_limit();
    let mut config = settings.resolve(&data)?;
    // Containers are set up by this binary's `container-setup` command and their lazy
    // roots served by its `lazy-root` command.
    config.helper_program = std::env::current_exe().ok();
    let node = Node::open(config).await?;
    print_summary(node.summary());
    shutdown_signal().await;
    node.stop().await?;
    eprintln!("edgecloud stopped");
    Ok(())
}

/// Log lines to standard error: `EDGECLOUD_LOG` filters them (default: info, Raft's
/// own at warn, the container runtime's at error), as text (coloured only on a terminal) or JSON.
fn init_logs(format: node::LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    // On a booted node, init's console lines come first.
    if let Some(path) = std::env::var_os(netboot::init::INIT_LOG_ENV)
        && let Ok(text) = std::fs::read_to_string(path)
    {
        admin::node_logs::recent().add(&text);
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGECLOUD_LOG")
                // libcontainer logs from inside a container's process too, where standard
                // error is the container's log: only its errors are shown.
                .unwrap_or_else(|_| {
                    "info,openraft=warn,libcontainer=error,libcgroups=error".into()
                }),
        )
        // Also kept in memory for `edgecloud cluster logs` (admin::node_logs).
        .with_writer(std::io::stderr.and(|| admin::node_logs::LogTee))
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        node::LogFormat::Text => logs.init(),
        node::LogFormat::Json => logs.json().init(),
    }
}

/// Prints what the node serves to standard error, and keeps it with the node's log
/// lines (`edgecloud cluster logs`).
fn print_summary(s: &node::Summary) {
    use std::fmt::Write;
    let mut out = String::new();
    let scheme = if s.tls { "https" } else { "http" };
    let _ = writeln!(
        out,
        "edgecloud {} serving\n  data:    {}\n  disks:   {} (new buckets: {})\n  admin:   {} (token in {})",
        env!("CARGO_PKG_VERSION"),
        s.data.display(),
        s.disks,
        s.default_policy,
        s.admin_url,
        s.token_file.display()
    );
    let _ = writeln!(
        out,
        "  s3:      {scheme}://{} (access key {}; secret in {})",
        s.s3,
        s.access_key,
        s.credentials_file.display()
    );
    let _ = writeln!(out, "  webdav:  {scheme}://{} (same keys as S3)", s.dav);
    let _ = writeln!(
        out,
        "  ftp:     {} (same keys as S3{})",
        s.ftp,
        if s.tls { "; AUTH TLS required" } else { "" }
    );
    let _ = writeln!(
        out,
        "  ledger:  {} entries (public key in {})",
        s.ledger_entries,
        s.ledger_pub.display()
    );
    let _ = writeln!(
        out,
        "  cluster: node {} in site {}, {} node(s) in {} site(s); node-to-node on {} (secret in {})",
        s.node_id,
        s.site,
        s.nodes,
        s.sites,
        s.rpc_addr,
        s.secret_file.display()
    );
    if let Some((addr, key)) = &s.nfs {
        let _ = writeln!(
            out,
            "  nfs:     {addr} (v3, as access key {key}; mount /BUCKET)"
        );
    }
    if let Some(addr) = &s.boot {
        let _ = writeln!(
            out,
            "  boot:    http://{addr}/boot.ipxe (the node image for machines booting over the network)"
        );
    }
    for warning in &s.cleartext {
        let _ = writeln!(out, "  warning: {warning}");
    }
    eprint!("{out}");
    admin::node_logs::recent().add(&out);
}

/// Raises the soft limit of open files to the hard limit: every connection, segment
/// file and peer link takes one, and the common soft default (1024) is what a modest
/// flood of connections exhausts first. Each listener caps its own connections.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, properly sized out-parameter.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(
                    "cannot raise the open-files limit; floods of connections reach it sooner"
                );
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        },
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
    eprintln!("shutting down: finishing requests in flight");
}
