//! The little WebDAV client the mount needs: PROPFIND (depth 0 and 1), GET into a file,
//! PUT from a file, MKCOL, DELETE, MOVE. Paths are bucket-relative ("/dir/a.txt").

use std::time::SystemTime;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use reqwest::{Method, StatusCode};

/// Characters escaped in a path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A WebDAV failure as a POSIX error number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error(pub i32);

/// A file or folder as a WebDAV listing shows it.
#[derive(Debug, Clone)]
pub struct Item {
    /// Bucket-relative path without a trailing slash ("" for the bucket).
    pub path: String,
    /// True for a folder.
    pub dir: bool,
    /// Size in bytes.
    pub size: u64,
    /// When it last changed.
    pub modified: SystemTime,
}

/// A WebDAV client for one bucket.
pub struct Dav {
    http: reqwest::Client,
    /// http(s)://host:port/bucket
    base: String,
    user: String,
    password: String,
    /// The URL path of the bucket, to turn hrefs back into paths.
    base_path: String,
}

fn errno(status: StatusCode, read_only_place: bool) -> Error {
    Error(match status.as_u16() {
        404 | 409 => libc::ENOENT,
        401 => libc::EACCES,
        403 if read_only_place => libc::EROFS,
        403 => libc::EACCES,
        405 | 412 => libc::EEXIST,
        413 => libc::EFBIG,
        414 => libc::ENAMETOOLONG,
        507 => libc::ENOSPC,
        _ => libc::EIO,
    })
}

fn net(e: reqwest::Error) -> Error {
    tracing::warn!("mount: {e}");
    Error(libc::EIO)
}

impl Dav {
    /// A client of the bucket at `url`, logging in as `user`.
    pub fn new(url: &str, bucket: &str, user: &str, password: &str) -> Self {
        let base = format!(
            "{}/{}",
            url.trim_end_matches('/'),
            utf8_percent_encode(bucket, SEGMENT)
        );
        let base_path = reqwest::Url::parse(&base)
            .map(|u| u.path().to_string())
            .unwrap_or_default();
        Dav {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(16)
                .build()
                .expect("an HTTP client"),
            base,
            user: user.into(),
            password: password.into(),
            base_path,
        }
    }

    fn url(&self, path: &str, dir: bool) -> String {
        let enc: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        let mut u = format!("{}/{}", self.base, enc.join("/"));
        if dir && !u.ends_with('/') {
            u.push('/');
        }
        u
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        dir: bool,
        f: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let m = Method::from_bytes(method.as_bytes()).expect("a method name");
        let req = self
            .http
            .request(m, self.url(path, dir))
            .basic_auth(&self.user, Some(&self.password));
        let resp = f(req).send().await.map_err(net)?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(errno(
                resp.status(),
                path.contains("/.snapshots/") || path.starts_with(".snapshots/"),
            ))
        }
    }

    /// The item at `path` (depth 0) or it and its children (depth 1).
    pub async fn propfind(&self, path: &str, depth1: bool) -> Result<Vec<Item>, Error> {
        let resp = self
            .send("PROPFIND", path, depth1, |r| {
                r.header("Depth", if depth1 { "1" } else { "0" })
            })
            .await?;
        let text = resp.text().await.map_err(net)?;
        Ok(parse_multistatus(&text, &self.base_path))
    }

    /// Downloads `path` into `file`; answers the bytes written.
    pub async fn get_into(&self, path: &str, file: &mut tokio::fs::File) -> Result<u64, Error> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let mut s = self.send("GET", path, false, |r| r).await?.bytes_stream();
        let mut n = 0;
        while let Some(piece) = s.next().await {
            let piece = piece.map_err(net)?;
            file.write_all(&piece).await.map_err(|_| Error(libc::EIO))?;
            n += piece.len() as u64;
        }
        file.flush().await.map_err(|_| Error(libc::EIO))?;
        Ok(n)
    }

    /// Uploads `len` bytes of `file` to `path`.
    pub async fn put_from(&self, path: &str, file: tokio::fs::File, len: u64) -> Result<(), Error> {
        let body =
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
        self.send("PUT", path, false, |r| {
            r.header("content-length", len).body(body)
        })
        .await
        .map(drop)
    }

    /// Creates the folder `path`.
    pub async fn mkcol(&self, path: &str) -> Result<(), Error> {
        self.send("MKCOL", path, true, |r| r).await.map(drop)
    }

    /// Deletes the file or folder `path`.
    pub async fn delete(&self, path: &str, dir: bool) -> Result<(), Error> {
        self.send("DELETE", path, dir, |r| r).await.map(drop)
    }

    /// Moves `from` to `to`.
    pub async fn rename(&self, from: &str, to: &str, dir: bool) -> Result<(), Error> {
        let dest = self.url(to, dir);
        self.send("MOVE", from, dir, |r| {
            r.header("Destination", dest).header("Overwrite", "T")
        })
        .await
        .map(drop)
    }
}

/// Reads a PROPFIND answer: for each response, its href, whether it is a collection,
/// its length and modification time.
fn parse_multistatus(xml: &str, base_path: &str) -> Vec<Item> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let (mut href, mut dir, mut size, mut modified) =
        (String::new(), false, 0u64, SystemTime::UNIX_EPOCH);
    let mut field = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if name == "response" {
                    (href, dir, size, modified) = (String::new(), false, 0, SystemTime::UNIX_EPOCH);
                }
                if name == "collection" {
                    dir = true;
                }
                field = name;
            }
            Ok(Event::Empty(e)) if e.local_name().as_ref() == b"collection" => {
                dir = true;
            }
            Ok(Event::Text(t)) => {
                let v = String::from_utf8_lossy(t.as_ref()).into_owned();
                match field.as_str() {
                    "href" => href.push_str(&v),
                    "getcontentlength" => size = v.trim().parse().unwrap_or(0),
                    "getlastmodified" => {
                        modified =
                            httpdate::parse_http_date(v.trim()).unwrap_or(SystemTime::UNIX_EPOCH)
                    }
                    _ => {}
                }
            }
            Ok(Event::End(e)) => {
                if e.local_name().as_ref() == b"response" {
                    let p = reqwest::Url::parse(&href)
                        .map(|u| u.path().to_string())
                        .unwrap_or(href.clone());
                    let p = percent_decode_str(&p).decode_utf8_lossy().into_owned();
                    let rel = p
                        .strip_prefix(base_path.trim_end_matches('/'))
                        .unwrap_or(&p)
                        .trim_matches('/')
                        .to_string();
                    out.push(Item {
                        path: rel,
                        dir,
                        size,
                        modified,
                    });
                }
                field.clear();
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn multistatus_answers_are_read() {
        let xml = r#"<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">
<D:response><D:href>/b/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop></D:propstat></D:response>
<D:response><D:href>/b/dir%20x/a%C3%A9.txt</D:href><D:propstat><D:prop><D:getcontentlength>42</D:getcontentlength>
<D:getlastmodified>Wed, 25 Nov 2026 17:00:00 GMT</D:getlastmodified><D:resourcetype/></D:prop></D:propstat></D:response>
</D:multistatus>"#;
        let items = super::parse_multistatus(xml, "/b");
        assert_eq!(items.len(), 2);
        assert!(items[0].dir && items[0].path.is_empty());
        assert_eq!(
            (items[1].path.as_str(), items[1].dir, items[1].size),
            ("dir x/aé.txt", false, 42)
        );
        assert!(items[1].modified > std::time::SystemTime::UNIX_EPOCH);
    }
}
