//! `edgecloud ledger`: the audit log from the command line. `status` and `prove` ask
//! the node; `check` and `verify` check what they are given with only the public key.

use std::path::PathBuf;

use anyhow::{Context, bail};
use archive::audit::{ProofBundle, check_bundle};
use reqwest::Method;

use crate::cli::client::Client;

#[derive(clap::Subcommand)]
pub enum LedgerCmd {
    /// Show the log's size, root and public key.
    Status {
        /// Also save the signed checkpoint to FILE, for `ledger verify --since FILE` later
        #[arg(long, value_name = "FILE")]
        save: Option<PathBuf>,
    },
    /// Print a proof bundle (JSON) for BUCKET/KEY: its ledger record, inclusion proof and
    /// the signed checkpoint. Save it; `ledger check` verifies it offline.
    Prove {
        path: String,
        /// A version id [default: the latest version]
        #[arg(long)]
        version: Option<String>,
    },
    /// Verify a proof bundle offline with the log's public key (DATA/ledger.pub), and
    /// optionally that FILE is the content the record names (SHA-256).
    Check {
        bundle: PathBuf,
        /// The log's public key, or a file holding it
        #[arg(long)]
        key: String,
        /// The object's bytes, to check against the record's SHA-256
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        witnesses: Witnesses,
    },
    /// Check that the log now extends a checkpoint saved earlier: nothing before it was
    /// rewritten. Saves nothing; keep the new checkpoint with `status --save`.
    Verify {
        /// A checkpoint saved earlier (e.g. from `ledger status --save FILE`)
        #[arg(long)]
        since: PathBuf,
        /// The log's public key, or a file holding it
        #[arg(long)]
        key: String,
    },
    /// Check the whole published log, as a monitor would: the signed checkpoint, then
    /// every entry bundle and tile it covers, recomputed from the entries. Names the
    /// first damaged entry. Reads from the node, or from a copy of its published files.
    Audit {
        /// The log's public key, or a file holding it
        #[arg(long)]
        key: String,
        /// A directory holding a copy of the published log (`checkpoint`, `tile/...`,
        /// e.g. a copy of DATA/ledger) instead of asking the node
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        #[command(flatten)]
        witnesses: Witnesses,
    },
}

/// Cosigners a checkpoint must carry (C2SP tlog-cosignature): the log's voters.
#[derive(clap::Args)]
pub struct Witnesses {
    /// A cosigner's public key, or a file holding it (DATA/cosigner.pub); repeat for
    /// each voter
    #[arg(long = "cosigner", value_name = "KEY")]
    cosigners: Vec<String>,
    /// How many of the --cosigner keys must have cosigned [default: all of them]
    #[arg(long, value_name = "N")]
    quorum: Option<usize>,
}

impl Witnesses {
    fn check(&self, checkpoint: &[u8]) -> anyhow::Result<()> {
        if self.cosigners.is_empty() {
            return Ok(());
        }
        let keys = self
            .cosigners
            .iter()
            .map(|k| key_text(k))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let quorum = self.quorum.unwrap_or(keys.len());
        let n = ledger::cosign::check_quorum(checkpoint, &keys, quorum)
            .map_err(|e| anyhow::anyhow!("NOT VERIFIED: {e}"))?;
        println!(
            "cosigned: by {n} of {} voters (quorum {quorum})",
            keys.len()
        );
        Ok(())
    }
}

fn key_text(k: &str) -> anyhow::Result<String> {
    match std::fs::read_to_string(k) {
        Ok(t) => Ok(t.trim().to_string()),
        Err(_) if k.contains('+') => Ok(k.trim().to_string()),
        Err(e) => bail!("--key {k:?} is neither a public key nor a readable file: {e}"),
    }
}

pub async fn run(c: Option<&Client>, cmd: LedgerCmd) -> anyhow::Result<()> {
    let node = || c.context("this command talks to a node: start one with `edgecloud serve`");
    match cmd {
        LedgerCmd::Status { save } => {
            let c = node()?;
            let cp = c
                .send(c.request(Method::GET, &["ledger", "checkpoint"]))
                .await?
                .text()
                .await?;
            if let Some(f) = save {
                std::fs::write(&f, &cp).with_context(|| format!("cannot write {}", f.display()))?;
            }
            let key = c
                .send(c.request(Method::GET, &["ledger", "public-key"]))
                .await?
                .text()
                .await?;
            let lines: Vec<&str> = cp.lines().collect();
            println!("origin:     {}", lines.first().unwrap_or(&"?"));
            println!("entries:    {}", lines.get(1).unwrap_or(&"?"));
            println!("root:       {}", lines.get(2).unwrap_or(&"?"));
            println!("public key: {key}");
            println!("\n{cp}");
        }
        LedgerCmd::Prove { path, version } => {
            let c = node()?;
            let (bucket, key) = path.split_once('/').context("give BUCKET/KEY")?;
            let mut segs = vec!["ledger", "prove", bucket];
            segs.extend(key.split('/'));
            let mut req = c.request(Method::GET, &segs);
            if let Some(v) = &version {
                req = req.query(&[("version", v)]);
            }
            let bundle: ProofBundle = c.json(req).await?;
            println!("{}", serde_json::to_string_pretty(&bundle)?);
        }
        LedgerCmd::Check {
            bundle,
            key,
            file,
            witnesses,
        } => {
            let b: ProofBundle = serde_json::from_slice(
                &std::fs::read(&bundle)
                    .with_context(|| format!("cannot read {}", bundle.display()))?,
            )
            .context("not a proof bundle (from `edgecloud ledger prove`)")?;
            let record = check_bundle(&b, &key_text(&key)?)
                .map_err(|e| anyhow::anyhow!("NOT VERIFIED: {e}"))?;
            println!(
                "verified: entry {} is in the log signed by this key",
                b.index
            );
            witnesses.check(b.checkpoint.as_bytes())?;
            println!("record:   {}", b.entry);
            if let Some(f) = file {
                let Some(mut check) = ledger::record::ContentCheck::for_change(&record.change)
                else {
                    bail!(
                        "the record names no content hash to compare {} with",
                        f.display()
                    );
                };
                read_file_into(&f, |piece| check.update(piece))?;
                check
                    .finish()
                    .map_err(|e| anyhow::anyhow!("NOT VERIFIED: {}: {e}", f.display()))?;
                println!("content:  {} matches the record's SHA-256", f.display());
            }
        }
        LedgerCmd::Audit {
            key,
            from,
            witnesses,
        } => {
            let key = key_text(&key)?;
            let cp = match published_file(c, from.as_deref(), "checkpoint").await? {
                Some(cp) => cp,
                None => bail!("no checkpoint found: has the node published its log yet?"),
            };
            witnesses.check(&cp)?;
            let cp = ledger::verify::checkpoint(&cp, &key)
                .map_err(|e| anyhow::anyhow!("NOT VERIFIED: the checkpoint: {e}"))?;
            let bar = indicatif::ProgressBar::new_spinner()
                .with_message("reading tiles and entry bundles");
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            // The monitor reads synchronously; each read waits on the runtime here.
            let read = |path: &str| {
                let path = path.to_string();
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(published_file(
                        c,
                        from.as_deref(),
                        &path,
                    ))
                })
            };
            let result = ledger::monitor::check_published(cp.size(), *cp.hash(), read);
            bar.finish_and_clear();
            let entries = result.map_err(|e| anyhow::anyhow!("NOT VERIFIED: {e}"))?;
            println!(
                "verified: all {} entries, their bundles and tiles match the checkpoint signed by this key",
                entries.len()
            );
        }
        LedgerCmd::Verify { since, key } => {
            let c = node()?;
            let key = key_text(&key)?;
            let old = std::fs::read(&since)
                .with_context(|| format!("cannot read {}", since.display()))?;
            let old = ledger::verify::checkpoint(&old, &key)
                .map_err(|e| anyhow::anyhow!("the saved checkpoint: {e}"))?;
            let now = c
                .send(c.request(Method::GET, &["ledger", "checkpoint"]))
                .await?
                .bytes()
                .await?;
            let now = ledger::verify::checkpoint(&now, &key)
                .map_err(|e| anyhow::anyhow!("the node's checkpoint: {e}"))?;
            let p: admin::ledger::Proof = c
                .json(
                    c.request(Method::GET, &["ledger", "proof", "consistency"])
                        .query(&[("from", old.size()), ("to", now.size())]),
                )
                .await?;
            let proof = ledger::verify::hashes_from_base64(&p.proof)?;
            ledger::verify::consistency(
                old.size(),
                now.size(),
                &old.hash().0,
                &now.hash().0,
                &proof,
            )
            .map_err(|e| anyhow::anyhow!("NOT VERIFIED: {e}"))?;
            println!(
                "verified: the log of {} entries extends the saved one of {} entries",
                now.size(),
                old.size()
            );
        }
    }
    Ok(())
}

/// Feeds a file to `f` in 1 MiB pieces (objects can be larger than memory).
/// One published file of the log, from a directory copy or the node's admin API.
async fn published_file(
    c: Option<&Client>,
    dir: Option<&std::path::Path>,
    path: &str,
) -> ledger::Result<Option<Vec<u8>>> {
    if let Some(d) = dir {
        return match std::fs::read(d.join(path)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        };
    }
    let c = c.ok_or_else(|| ledger::LedgerError::Invalid("no node to read the log from".into()))?;
    let mut segs = vec!["ledger"];
    segs.extend(path.split('/'));
    let resp = c
        .request(Method::GET, &segs)
        .send()
        .await
        .map_err(|e| ledger::LedgerError::Invalid(format!("reading {path}: {e}")))?;
    if !resp.status().is_success() {
        return Ok(None);
    }
    let b = resp
        .bytes()
        .await
        .map_err(|e| ledger::LedgerError::Invalid(format!("reading {path}: {e}")))?;
    Ok(Some(b.to_vec()))
}

fn read_file_into(p: &std::path::Path, mut f: impl FnMut(&[u8])) -> anyhow::Result<()> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", p.display()))?;
        if n == 0 {
            return Ok(());
        }
        f(&buf[..n]);
    }
}
