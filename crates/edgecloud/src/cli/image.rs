//! `edgecloud image`: import container images (a `docker save` tarball or an OCI
//! layout), list, inspect and remove them. The node keeps them (crates/images).

use std::path::PathBuf;

use anyhow::Context;
use futures::StreamExt;
use indicatif::HumanBytes;
use reqwest::Method;

use crate::cli::client::Client;

#[derive(clap::Subcommand)]
pub enum ImageCmd {
    /// Import the images of FILE: a `docker save` tarball (gzip or zstd compressed too),
    /// an OCI image layout (a directory, or a tar of one), or - for standard input.
    /// Every file of every layer is stored once in the archive, however many images
    /// hold it; manifest, config and layer digests are checked.
    Import {
        /// The tarball, OCI layout directory, or -.
        path: PathBuf,
        /// Name the image NAME[:TAG] (the file must hold exactly one image).
        #[arg(long)]
        tag: Option<String>,
        /// Print the node's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pull NAME[:TAG][@sha256:DIGEST] from its registry (Docker Hub when no registry
    /// host is named; this machine's platform from a multi-platform image), then store
    /// it as `import` does. The node does the pulling: it must reach the registry.
    Pull {
        reference: String,
        /// Log in to the registry as USER (the password from --password-stdin or
        /// EDGECLOUD_REGISTRY_PASSWORD)
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Read the registry password from standard input
        #[arg(long, requires = "user")]
        password_stdin: bool,
        /// Speak plain HTTP to the registry (one on the local network without TLS)
        #[arg(long)]
        insecure: bool,
        /// Print the node's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the images, newest first, and what the store holds.
    Ls {
        /// Print the node's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an image (by name, id or id prefix) as JSON: names, config, layers.
    Inspect {
        reference: String,
        /// Also list its root file system (every path, layers applied).
        #[arg(long)]
        files: bool,
    },
    /// Remove names; an image goes with its last name (or when given by id), and with it
    /// every file no other image holds.
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
}

fn short_id(id: &str) -> &str {
    let hex = id.trim_start_matches("sha256:");
    &hex[..hex.len().min(12)]
}

pub async fn run(c: &Client, cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Import { path, tag, json } => import(c, path, tag, json).await,
        ImageCmd::Pull {
            reference,
            user,
            password_stdin,
            insecure,
            json,
        } => {
            let password = if password_stdin {
                let mut p = String::new();
                std::io::stdin()
                    .read_line(&mut p)
                    .context("reading the password from standard input")?;
                Some(p.trim_end_matches(['\r', '\n']).to_string())
            } else {
                std::env::var("EDGECLOUD_REGISTRY_PASSWORD").ok()
            };
            let body = serde_json::json!({
                "reference": reference, "username": user, "password": password,
                "insecure": insecure,
            });
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_message(format!("pulling {reference}"));
            spinner.enable_steady_tick(std::time::Duration::from_millis(200));
            let done: serde_json::Value = c
                .json(c.request(Method::POST, &["image-pulls"]).json(&body))
                .await?;
            spinner.finish_and_clear();
            print_imported(done, json)
        }
        ImageCmd::Ls { json } => {
            let v: serde_json::Value = c.json(c.request(Method::GET, &["images"])).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let images: Vec<images::Image> = serde_json::from_value(v["images"].clone())?;
            let usage: images::Usage = serde_json::from_value(v["usage"].clone())?;
            println!(
                "{:<40} {:<12} {:>6} {:>8} {:>10}",
                "NAME", "IMAGE ID", "LAYERS", "FILES", "SIZE"
            );
            for i in &images {
                let names = if i.names.is_empty() {
                    vec!["<none>".to_string()]
                } else {
                    i.names.clone()
                };
                for n in names {
                    println!(
                        "{:<40} {:<12} {:>6} {:>8} {:>10}",
                        n,
                        short_id(&i.id),
                        i.layers.len(),
                        i.files,
                        HumanBytes(i.size).to_string()
                    );
                }
            }
            let saved = match usage.image_bytes {
                0 => 0.0,
                n => 100.0 * (1.0 - usage.stored_bytes as f64 / n as f64),
            };
            println!(
                "{} images hold {} of files; {} distinct files store {} ({saved:.0}% saved by storing each file once)",
                usage.images,
                HumanBytes(usage.image_bytes),
                usage.files,
                HumanBytes(usage.stored_bytes)
            );
            Ok(())
        }
        ImageCmd::Inspect { reference, files } => {
            let mut req = c.request(Method::GET, &["images", &reference]);
            if files {
                req = req.query(&[("files", "true")]);
            }
            let v: serde_json::Value = c.json(req).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        ImageCmd::Rm { references } => {
            for r in references {
                let done: images::Removed =
                    c.json(c.request(Method::DELETE, &["images", &r])).await?;
                for n in &done.untagged {
                    println!("Untagged: {n}");
                }
                if let Some(id) = &done.deleted {
                    println!(
                        "Deleted: {id} ({} files, {} freed)",
                        done.files_freed,
                        HumanBytes(done.bytes_freed)
                    );
                }
            }
            Ok(())
        }
    }
}

async fn import(c: &Client, path: PathBuf, tag: Option<String>, json: bool) -> anyhow::Result<()> {
    // An OCI layout directory travels as a tar of it, made in a temporary file.
    let mut _packed = None;
    let (body, len) = if path.as_os_str() == "-" {
        let s = tokio_util::io::ReaderStream::with_capacity(tokio::io::stdin(), 1 << 20);
        (reqwest::Body::wrap_stream(s), None)
    } else {
        let file_path = if path.is_dir() {
            let tmp = tempfile::NamedTempFile::new().context("creating a temporary file")?;
            let mut b = tar::Builder::new(tmp.reopen()?);
            b.follow_symlinks(false);
            b.append_dir_all(".", &path)
                .with_context(|| format!("cannot pack the directory {}", path.display()))?;
            b.finish()?;
            let p = tmp.path().to_path_buf();
            _packed = Some(tmp);
            p
        } else {
            path.clone()
        };
        let f = tokio::fs::File::open(&file_path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        let len = f.metadata().await?.len();
        let pb = crate::cli::objects::progress(Some(len), "uploading");
        let s = tokio_util::io::ReaderStream::with_capacity(f, 1 << 20).inspect(move |r| {
            if let Ok(b) = r {
                pb.inc(b.len() as u64);
            }
        });
        (reqwest::Body::wrap_stream(s), Some(len))
    };
    let mut req = c.request(Method::POST, &["images"]).body(body);
    if let Some(len) = len {
        req = req.header(reqwest::header::CONTENT_LENGTH, len);
    }
    if let Some(t) = &tag {
        req = req.query(&[("tag", t)]);
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message("importing (checking digests, storing new files)");
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let done: serde_json::Value = c.json(req).await?;
    spinner.finish_and_clear();
    print_imported(done, json)
}

/// What an import or a pull stored.
fn print_imported(done: serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&done)?);
        return Ok(());
    }
    let d: images::Imported = serde_json::from_value(done)?;
    for i in &d.images {
        let name = match i.names.is_empty() {
            true => "<none>".to_string(),
            false => i.names.join(", "),
        };
        println!("Loaded image: {name} ({})", short_id(&i.id));
    }
    println!(
        "{} layers read, {} already stored; {} files stored ({}), {} already stored",
        d.layers_read,
        d.layers_known,
        d.files_stored,
        HumanBytes(d.bytes_stored),
        d.files_known
    );
    Ok(())
}
