//! Paths as file protocols show them: `/` lists the buckets, `/BUCKET/a/b.txt` is the
//! object `a/b.txt`, directories are key prefixes ending in `/`, and
//! `/BUCKET/.snapshots/INSTANT/...` is the bucket as it was at INSTANT (read-only).

use crate::FsError;

/// The folder of past instants inside every bucket.
pub const SNAPSHOTS: &str = ".snapshots";

/// Longest name of one path segment, as most file systems allow.
pub const MAX_NAME: usize = 255;

/// Where a path points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The list of buckets.
    Root,
    /// `/BUCKET/.snapshots`: the instants one can look at.
    /// `/BUCKET/.snapshots`: the instants one can look at.
    Snapshots {
        /// The bucket.
        bucket: String,
    },
    /// Inside a bucket, now (`at: None`) or as of an instant (read-only). `key` is the
    /// path below the bucket without a trailing slash; empty for the bucket itself.
    In {
        /// The bucket.
        bucket: String,
        /// The instant to look at; None for now.
        at: Option<Instant>,
        /// The path below the bucket, without a trailing slash.
        key: String,
    },
}

/// A past instant as a snapshot folder names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instant {
    /// The instant, ns since the Unix epoch.
    pub ns: u64,
    /// The folder name the user typed or was shown (RFC 3339).
    pub name: String,
}

impl Place {
    /// Parses a decoded path (`/bucket/dir/file`). Refuses `.` and `..` segments, NUL
    /// bytes and over-long names instead of interpreting them; empty segments (`a//b`)
    /// are skipped. A trailing slash is allowed (collections).
    pub fn parse(path: &str) -> Result<Place, FsError> {
        let mut segs = Vec::new();
        for s in path.split('/') {
            if s.is_empty() {
                continue;
            }
            if s == "." || s == ".." {
                return Err(FsError::Invalid(format!(
                    "{path:?}: '.' and '..' are not allowed in paths"
                )));
            }
            if s.contains('\0') {
                return Err(FsError::Invalid("paths must not contain NUL bytes".into()));
            }
            if s.len() > MAX_NAME {
                return Err(FsError::NameTooLong);
            }
            segs.push(s);
        }
        let Some((bucket, rest)) = segs.split_first() else {
            return Ok(Place::Root);
        };
        let bucket = bucket.to_string();
        match rest {
            [first, ..] if *first == SNAPSHOTS => match rest.get(1) {
                None => Ok(Place::Snapshots { bucket }),
                Some(name) => {
                    let ns = archive::parse_instant(name).map_err(|_| {
                        FsError::Invalid(format!(
                            "{name:?} is not an instant like 2026-11-25T10:00:00Z"
                        ))
                    })?;
                    let at = Some(Instant {
                        ns,
                        name: name.to_string(),
                    });
                    Ok(Place::In {
                        bucket,
                        at,
                        key: join(&rest[2..])?,
                    })
                }
            },
            _ => Ok(Place::In {
                bucket,
                at: None,
                key: join(rest)?,
            }),
        }
    }

    /// The bucket the place is in, if any.
    pub fn bucket(&self) -> Option<&str> {
        match self {
            Place::Root => None,
            Place::Snapshots { bucket } | Place::In { bucket, .. } => Some(bucket),
        }
    }

    /// The bucket when the place is a bucket itself, now (not a snapshot of it): where
    /// mkdir and rmdir create and delete buckets.
    pub fn live_bucket(&self) -> Option<&str> {
        match self {
            Place::In {
                bucket,
                at: None,
                key,
            } if key.is_empty() => Some(bucket),
            _ => None,
        }
    }

    /// Whether writes here must be refused (snapshots are the past).
    pub fn read_only(&self) -> bool {
        !matches!(self, Place::In { at: None, .. } | Place::Root)
    }

    /// The last segment's name ("" for the root).
    pub fn name(&self) -> &str {
        match self {
            Place::Root => "",
            Place::Snapshots { .. } => SNAPSHOTS,
            Place::In { bucket, at, key } => match key.rsplit('/').next().filter(|n| !n.is_empty())
            {
                Some(n) => n,
                None => at.as_ref().map_or(bucket.as_str(), |i| i.name.as_str()),
            },
        }
    }

    /// The place of a child named `name`.
    pub fn child(&self, name: &str) -> Place {
        match self {
            Place::Root => Place::In {
                bucket: name.to_string(),
                at: None,
                key: String::new(),
            },
            Place::Snapshots { bucket } => {
                let ns = archive::parse_instant(name).unwrap_or(0);
                Place::In {
                    bucket: bucket.clone(),
                    at: Some(Instant {
                        ns,
                        name: name.into(),
                    }),
                    key: String::new(),
                }
            }
            Place::In { bucket, at, key } => {
                let key = if key.is_empty() {
                    name.to_string()
                } else {
                    format!("{key}/{name}")
                };
                Place::In {
                    bucket: bucket.clone(),
                    at: at.clone(),
                    key,
                }
            }
        }
    }

    /// The containing folder (the root's parent is the root).
    pub fn parent(&self) -> Place {
        match self {
            Place::Root => Place::Root,
            Place::Snapshots { bucket } => Place::In {
                bucket: bucket.clone(),
                at: None,
                key: String::new(),
            },
            Place::In { bucket, at, key } if key.is_empty() => match at {
                Some(_) => Place::Snapshots {
                    bucket: bucket.clone(),
                },
                None => Place::Root,
            },
            Place::In { bucket, at, key } => {
                let key = key.rsplit_once('/').map_or("", |(p, _)| p).to_string();
                Place::In {
                    bucket: bucket.clone(),
                    at: at.clone(),
                    key,
                }
            }
        }
    }
}

fn join(segs: &[&str]) -> Result<String, FsError> {
    let key = segs.join("/");
    // The folder marker adds a '/', and S3 keys stop at 1024 bytes.
    if key.len() >= 1024 {
        return Err(FsError::NameTooLong);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_buckets_keys_and_snapshots() {
        assert_eq!(Place::parse("/").unwrap(), Place::Root);
        assert_eq!(Place::parse("").unwrap(), Place::Root);
        let p = Place::parse("/b/dir//f.txt").unwrap();
        assert_eq!(
            p,
            Place::In {
                bucket: "b".into(),
                at: None,
                key: "dir/f.txt".into()
            }
        );
        assert_eq!(p.name(), "f.txt");
        assert_eq!(p.parent(), Place::parse("/b/dir/").unwrap());
        assert_eq!(p.parent().parent(), Place::parse("/b").unwrap());
        assert_eq!(Place::parse("/b").unwrap().parent(), Place::Root);
        assert_eq!(
            Place::parse("/b/.snapshots").unwrap(),
            Place::Snapshots { bucket: "b".into() }
        );
        let s = Place::parse("/b/.snapshots/2026-11-25T10:00:00Z/x").unwrap();
        assert!(s.read_only());
        assert!(matches!(&s, Place::In { at: Some(i), key, .. } if key == "x" && i.ns > 0));
        assert_eq!(s.parent().parent(), Place::Snapshots { bucket: "b".into() });
    }

    #[test]
    fn hostile_paths_are_refused() {
        for p in [
            "/b/../etc/passwd",
            "/b/./x",
            "/b/a\0b",
            "/b/.snapshots/yesterday",
        ] {
            assert!(matches!(Place::parse(p), Err(FsError::Invalid(_))), "{p}");
        }
        assert!(matches!(
            Place::parse(&format!("/b/{}", "n".repeat(256))),
            Err(FsError::NameTooLong)
        ));
        let deep = format!("/b/{}", vec!["d".repeat(200); 6].join("/"));
        assert!(matches!(Place::parse(&deep), Err(FsError::NameTooLong)));
    }
}
