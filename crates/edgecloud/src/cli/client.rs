//! The admin API client the CLI commands use.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use reqwest::{Method, RequestBuilder, Response, Url};

pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl Client {
    /// `admin` defaults to what the node wrote to DATA/admin.url, `ca` (for https) to
    /// DATA/admin-cert.pem.
    pub fn new(
        admin: Option<String>,
        ca: Option<PathBuf>,
        token: Option<String>,
        data: &Path,
    ) -> anyhow::Result<Self> {
        let base = admin
            .or_else(|| {
                let url = std::fs::read_to_string(data.join(admin::URL_FILE)).ok()?;
                Some(url.trim().to_string())
            })
            .unwrap_or_else(|| "http://127.0.0.1:9410".into());
        let base = Url::parse(&base)
            .with_context(|| format!("--admin {base:?} is not a URL like http://127.0.0.1:9410"))?;
        let http = match base.scheme() {
            "https" => {
                let ca = ca.unwrap_or_else(|| data.join(admin::CERT_FILE));
                if !ca.is_file() {
                    bail!(
                        "the admin API at {base} speaks TLS: give --admin-ca with its certificate \
                         (DATA/{} on the node), or --data with the node's data directory",
                        admin::CERT_FILE
                    );
                }
                reqwest::Client::builder()
                    .tls_backend_preconfigured(crate::cli::admin_tls::admin_client_config(&ca)?)
                    .build()?
            }
            _ => reqwest::Client::new(),
        };
        let token = match token {
            Some(t) => t,
            None => {
                let path = data.join(admin::TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no admin token at {}: start a node with `edgecloud serve`, or point --data at the running node's \
                             data directory, or pass --token",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(Client { http, base, token })
    }

    /// A request to /v1/<segments...>, each segment percent-encoded.
    pub fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http URL")
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        self.http.request(method, url).bearer_auth(&self.token)
    }

    /// Sends and turns failures into messages that say what to do.
    pub async fn send(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() && !cluster::client::error_chain(&e).contains("certificate") {
                anyhow::anyhow!(
                    "no edgecloud node answers at {}: start one with `edgecloud serve`, or point --admin at a running node",
                    self.base
                )
            } else {
                anyhow::anyhow!("request to {} failed: {}", self.base, cluster::client::error_chain(&e))
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<admin::types::ErrorBody>(&text) {
            Ok(e) => bail!("{} ({})", e.message, e.error),
            Err(_) if text.is_empty() => bail!("the node answered {status}"),
            Err(_) => bail!("the node answered {status}: {text}"),
        }
    }

    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        req: RequestBuilder,
    ) -> anyhow::Result<T> {
        self.send(req)
            .await?
            .json()
            .await
            .context("the node sent a reply this CLI cannot read")
    }
}
