//! Pulling from a registry (the OCI distribution spec, Docker Hub's included): the
//! manifest (an index or manifest list picks this machine's platform), the config and
//! the layers are fetched, each checked against its digest as it streams to disk, laid
//! out as an OCI image layout and imported like any (`ImageStore::import`), which
//! checks them all again and stores every file once.
//!
//! Logins: a registry that answers 401 with `Basic` gets the user and password; one
//! that answers `Bearer realm=...,service=...,scope=...` (Docker Hub, GHCR, Harbor) gets
//! a token from its realm, anonymously or with the user and password.

use std::path::Path;

use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::layer::hex_of;
use crate::tarball::{OciDoc, host_platform, sha256_hex};
use crate::{ImageError, Result, reference};

/// What a manifest request accepts: indexes and manifests, OCI's and Docker's.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Manifests and configs are small; a bigger one is refused unread.
const MAX_DOCUMENT: u64 = 4 << 20;

/// Where an image is pulled from.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The registry's host\[:port\] (`registry-1.docker.io` for Docker Hub).
    pub host: String,
    /// The repository on it (`library/busybox`).
    pub repository: String,
    /// A tag, or a `sha256:` digest.
    pub reference: String,
    /// The name the image gets here (canonical, `busybox:1.36`).
    pub name: String,
}

/// Reads `NAME[:TAG][@sha256:DIGEST]` as `docker pull` does: no registry host means
/// Docker Hub, and a one-part Docker Hub name is under `library/`.
pub fn parse(text: &str) -> Result<Source> {
    let (name_part, digest) = match text.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (text, None),
    };
    if let Some(d) = digest
        && !(d.len() == 71
            && d.starts_with("sha256:")
            && d[7..].bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ImageError::InvalidName(text.into()));
    }
    let name = reference::canonical(name_part)?;
    let (path, tag) = name
        .rsplit_once(':')
        .unwrap_or((&name, reference::DEFAULT_TAG));
    let first = path.split('/').next().unwrap_or_default();
    let (host, repository) =
        if path.contains('/') && (first.contains(['.', ':']) || first == "localhost") {
            let repo = &path[first.len() + 1..];
            (first.to_string(), repo.to_string())
        } else if path.contains('/') {
            ("registry-1.docker.io".to_string(), path.to_string())
        } else {
            (
                "registry-1.docker.io".to_string(),
                format!("library/{path}"),
            )
        };
    Ok(Source {
        host,
        repository,
        reference: digest.map_or_else(|| tag.to_string(), str::to_string),
        name,
    })
}

/// A login for a registry.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Login {
    /// The user.
    pub username: String,
    /// Its password or access token.
    pub password: String,
}

/// A session with one registry repository.
struct Registry {
    http: reqwest::Client,
    base: String,
    source: Source,
    login: Option<Login>,
    /// What to send: a bearer token once one was given, or basic credentials.
    auth: Option<String>,
}

fn fail(what: impl std::fmt::Display) -> ImageError {
    ImageError::Registry(what.to_string())
}

impl Registry {
    /// GET `path` (under /v2/REPOSITORY/), logging in when the registry asks for it.
    async fn get(&mut self, path: &str, accept: Option<&str>) -> Result<reqwest::Response> {
        let url = format!("{}/v2/{}/{path}", self.base, self.source.repository);
        for attempt in 0..2 {
            let mut req = self.http.get(&url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(auth) = &self.auth {
                req = req.header(AUTHORIZATION, auth);
            }
            let resp = req.send().await.map_err(|e| fail(format!("{url}: {e}")))?;
            if resp.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                return match resp.status() {
                    s if s.is_success() => Ok(resp),
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(fail(format!(
                        "{}: the registry refused {} ({}): give a login with --user",
                        self.source.host,
                        self.source.repository,
                        resp.status()
                    ))),
                    StatusCode::NOT_FOUND => Err(ImageError::NoSuchImage(format!(
                        "{}/{}:{} (the registry has no such image)",
                        self.source.host, self.source.repository, self.source.reference
                    ))),
                    s => Err(fail(format!("{url}: the registry answered {s}"))),
                };
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            self.auth = Some(self.log_in(&challenge).await?);
        }
        Err(fail("unreachable"))
    }

    /// The Authorization header a 401's challenge asks for.
    async fn log_in(&self, challenge: &str) -> Result<String> {
        let basic = |l: &Login| {
            use base64::Engine;
            let raw = format!("{}:{}", l.username, l.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        };
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return self.login.as_ref().map(basic).ok_or_else(|| {
                fail(format!(
                    "{} needs a login: give --user (and the password on standard input)",
                    self.source.host
                ))
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(fail(format!(
                "{}: unknown login scheme {scheme:?}",
                self.source.host
            )));
        }
        let param = |key: &str| challenge_param(params, key);
        let realm = param("realm").ok_or_else(|| fail("a Bearer challenge without a realm"))?;
        let mut req = self.http.get(&realm).query(&[(
            "scope",
            param("scope").unwrap_or_else(|| format!("repository:{}:pull", self.source.repository)),
        )]);
        if let Some(service) = param("service") {
            req = req.query(&[("service", service)]);
        }
        if let Some(l) = &self.login {
            req = req.header(AUTHORIZATION, basic(l));
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let resp = req
            .send()
            .await
            .map_err(|e| fail(format!("{realm}: {e}")))?;
        if !resp.status().is_success() {
            return Err(fail(format!(
                "{realm} refused a token ({}): check --user and the password",
                resp.status()
            )));
        }
        let t: Token = resp
            .json()
            .await
            .map_err(|e| fail(format!("{realm}: {e}")))?;
        let token = t
            .token
            .or(t.access_token)
            .ok_or_else(|| fail(format!("{realm} gave no token")))?;
        Ok(format!("Bearer {token}"))
    }

    /// A small document (manifest or config), read whole, its digest checked when known.
    async fn document(&mut self, path: &str, accept: Option<&str>) -> Result<(Vec<u8>, String)> {
        let resp = self.get(path, accept).await?;
        if resp.content_length().is_some_and(|l| l > MAX_DOCUMENT) {
            return Err(fail(format!("{path}: over {MAX_DOCUMENT} bytes")));
        }
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| fail(format!("{path}: {e}")))?;
            body.extend_from_slice(&piece);
            if body.len() as u64 > MAX_DOCUMENT {
                return Err(fail(format!("{path}: over {MAX_DOCUMENT} bytes")));
            }
        }
        Ok((body, media_type))
    }

    /// Streams blob `digest` (`size` bytes) to `to`, checking both.
    async fn blob(&mut self, digest: &str, size: u64, to: &Path) -> Result<()> {
        let want = digest_hex(digest)?;
        let resp = self.get(&format!("blobs/{digest}"), None).await?;
        let mut out = tokio::fs::File::create(to).await?;
        let (mut hasher, mut len) = (Sha256::new(), 0u64);
        let mut stream = resp.bytes_stream();
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| fail(format!("blob {digest}: {e}")))?;
            len += piece.len() as u64;
            if len > size {
                return Err(fail(format!(
                    "blob {digest} is longer than its {size} bytes"
                )));
            }
            hasher.update(&piece);
            out.write_all(&piece).await?;
        }
        out.flush().await?;
        let got = hex_of(hasher);
        if got != want || len != size {
            return Err(ImageError::DigestMismatch {
                what: format!("blob of {}", self.source.repository),
                expected: digest.to_string(),
                actual: format!("sha256:{got} ({len} bytes)"),
            });
        }
        Ok(())
    }
}

/// One `key="value"` (or `key=value`) of a challenge's parameters.
fn challenge_param(params: &str, key: &str) -> Option<String> {
    let mut rest = params;
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (
                &quoted[..end],
                quoted[end + 1..].trim_start_matches([',', ' ']),
            )
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v, n.trim_start()),
                None => (after, ""),
            }
        };
        if k.trim().eq_ignore_ascii_case(key) {
            return Some(value.to_string());
        }
        rest = next;
    }
    None
}

/// The hex of a `sha256:` digest a registry named (others are refused, as on import).
fn digest_hex(digest: &str) -> Result<String> {
    sha256_hex(digest).map_err(|_| fail(format!("digest {digest:?}: only sha256 is supported")))
}

/// Fetches `source` into an OCI image layout in `dir` (which must exist and be empty),
/// naming it `source.name`. `insecure` speaks plain HTTP.
pub async fn fetch_layout(
    source: &Source,
    login: Option<Login>,
    insecure: bool,
    dir: &Path,
) -> Result<()> {
    let http = reqwest::Client::builder()
        .user_agent(concat!("edgecloud/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(fail)?;
    let mut r = Registry {
        http,
        base: format!(
            "{}://{}",
            if insecure { "http" } else { "https" },
            source.host
        ),
        source: source.clone(),
        login,
        auth: None,
    };
    let blobs = dir.join("blobs/sha256");
    tokio::fs::create_dir_all(&blobs).await?;
    // The manifest: an index picks this machine's platform.
    let mut reference = source.reference.clone();
    let (manifest, media_type, manifest_digest) = loop {
        let (body, media_type) = r
            .document(&format!("manifests/{reference}"), Some(MANIFEST_TYPES))
            .await?;
        let digest = format!("sha256:{}", hex_of(Sha256::new_with_prefix(&body)));
        if reference.starts_with("sha256:") && digest != reference {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {}", source.repository),
                expected: reference,
                actual: digest,
            });
        }
        let doc: OciDoc = serde_json::from_slice(&body)
            .map_err(|e| ImageError::NotAnImage(format!("the manifest: {e}")))?;
        let Some(manifests) = doc.manifests else {
            break (body, media_type, digest);
        };
        let (os, arch) = host_platform();
        let pick = manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == os && p.architecture == arch)
            })
            .ok_or_else(|| {
                ImageError::NotAnImage(format!("{} has no image for {os}/{arch}", source.name))
            })?;
        if reference == pick.digest {
            return Err(ImageError::NotAnImage("an index that names itself".into()));
        }
        reference = pick.digest.clone();
    };
    let doc: OciDoc = serde_json::from_slice(&manifest)
        .map_err(|e| ImageError::NotAnImage(format!("the manifest: {e}")))?;
    let (Some(config), Some(layers)) = (doc.config, doc.layers) else {
        return Err(ImageError::NotAnImage(format!(
            "{}: the manifest ({media_type}) is not an image manifest (schema 1 manifests are not supported)",
            source.name
        )));
    };
    for d in std::iter::once(&config).chain(layers.iter()) {
        let hex = digest_hex(&d.digest)?;
        let path = blobs.join(&hex);
        if !tokio::fs::try_exists(&path).await? {
            r.blob(&d.digest, d.size, &path).await?;
        }
    }
    let manifest_hex = digest_hex(&manifest_digest)?;
    tokio::fs::write(blobs.join(&manifest_hex), &manifest).await?;
    let media_type = if media_type.is_empty() {
        "application/vnd.oci.image.manifest.v1+json".to_string()
    } else {
        media_type
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media_type,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"io.containerd.image.name": source.name},
        }],
    });
    tokio::fs::write(dir.join("index.json"), index.to_string()).await?;
    tokio::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_as_docker_pull_resolves_them() {
        let s = parse("busybox").unwrap();
        assert_eq!(
            (s.host.as_str(), s.repository.as_str(), s.reference.as_str()),
            ("registry-1.docker.io", "library/busybox", "latest")
        );
        let s = parse("grafana/grafana:10").unwrap();
        assert_eq!(s.repository, "grafana/grafana");
        let s = parse("localhost:5000/team/app:2").unwrap();
        assert_eq!(
            (s.host.as_str(), s.repository.as_str(), s.reference.as_str()),
            ("localhost:5000", "team/app", "2")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let s = parse(&format!("ghcr.io/o/r@{d}")).unwrap();
        assert_eq!(
            (s.host.as_str(), s.reference.as_str()),
            ("ghcr.io", d.as_str())
        );
        for bad in ["", "UPPER", "x@sha256:zz", "a/../b"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn challenges_are_read_with_and_without_quotes() {
        let c = r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            challenge_param(c, "realm").as_deref(),
            Some("https://auth.docker.io/token")
        );
        assert_eq!(
            challenge_param(c, "scope").as_deref(),
            Some("repository:library/busybox:pull")
        );
        assert_eq!(
            challenge_param("realm=x, service=y", "service").as_deref(),
            Some("y")
        );
        assert_eq!(challenge_param(c, "missing"), None);
    }
}
