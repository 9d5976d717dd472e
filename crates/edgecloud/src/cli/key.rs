//! `edgecloud key`: S3 access keys and their per-bucket permissions.

use std::collections::BTreeMap;

use admin::types::{Grant, KeyInfo, NewKey};
use reqwest::Method;

use crate::cli::client::Client;

#[derive(clap::Subcommand)]
pub enum KeyCmd {
    /// Create an S3 access key and print it with its secret (shown only this once).
    ///
    /// Example: edgecloud key create backup-job --write backups --read photos
    Create {
        /// A name to recognise the key by (who or what uses it)
        name: String,
        /// Buckets the key may list and read (repeatable)
        #[arg(long, value_name = "BUCKET")]
        read: Vec<String>,
        /// Buckets the key may also write and delete in (repeatable)
        #[arg(long, value_name = "BUCKET")]
        write: Vec<String>,
        /// Buckets the key may also configure and delete (repeatable)
        #[arg(long, value_name = "BUCKET")]
        owner: Vec<String>,
        /// The key may create buckets, and owns those it creates
        #[arg(long)]
        create_buckets: bool,
        /// The key may do everything in every bucket (like the root key)
        #[arg(long)]
        full_access: bool,
    },
    /// List access keys and what each may do (secrets are never shown again).
    List,
    /// Revoke an access key: requests signed with it fail from now on.
    Delete { access_key: String },
    /// Set a key's permission in a bucket: read, write, owner, or none to remove it.
    Allow {
        access_key: String,
        bucket: String,
        permission: String,
    },
}

fn describe(k: &KeyInfo) -> String {
    let mut what: Vec<String> = Vec::new();
    if k.admin {
        what.push("full-access".into());
    }
    if k.create_buckets {
        what.push("create-buckets".into());
    }
    what.extend(k.buckets.iter().map(|(b, p)| format!("{b}:{p}")));
    if what.is_empty() {
        what.push("(no access)".into());
    }
    what.join(" ")
}

pub async fn run(c: &Client, cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::Create {
            name,
            read,
            write,
            owner,
            create_buckets,
            full_access,
        } => {
            let mut buckets = BTreeMap::new();
            for (list, p) in [(read, "read"), (write, "write"), (owner, "owner")] {
                for b in list {
                    buckets.insert(b, p.to_string());
                }
            }
            let body = NewKey {
                name,
                admin: full_access,
                create_buckets,
                buckets,
            };
            let k: KeyInfo = c
                .json(c.request(Method::POST, &["keys"]).json(&body))
                .await?;
            println!("access key: {}", k.access_key);
            println!("secret:     {}", k.secret.as_deref().unwrap_or("?"));
            println!("may:        {}", describe(&k));
            eprintln!("keep the secret now: it is not shown again");
        }
        KeyCmd::List => {
            let keys: Vec<KeyInfo> = c.json(c.request(Method::GET, &["keys"])).await?;
            for k in keys {
                println!(
                    "{:<22} {:<20} {:<22} {}",
                    k.access_key,
                    k.name,
                    k.created,
                    describe(&k)
                );
            }
        }
        KeyCmd::Delete { access_key } => {
            c.send(c.request(Method::DELETE, &["keys", &access_key]))
                .await?;
            println!("revoked {access_key}");
        }
        KeyCmd::Allow {
            access_key,
            bucket,
            permission,
        } => {
            let k: KeyInfo = c
                .json(
                    c.request(Method::PUT, &["keys", &access_key, "buckets", &bucket])
                        .json(&Grant { permission }),
                )
                .await?;
            println!("{}: {}", k.access_key, describe(&k));
        }
    }
    Ok(())
}
