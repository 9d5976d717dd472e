//! An image's root file system: its layers applied in order, whiteouts and opaque
//! directories hiding what lower layers hold, as a container sees it.

use std::collections::BTreeMap;

use crate::layer::{Entry, Kind};

/// The root file system being built: every path below the root, in byte order (so a
/// directory's subtree is one contiguous range).
#[derive(Debug, Default, Clone)]
pub struct Tree(BTreeMap<String, Entry>);

impl Tree {
    /// Applies one layer on top; why not if it writes through a symbolic link or a
    /// file, or hard-links to a path no layer holds.
    pub fn apply(&mut self, layer: &[Entry]) -> Result<(), String> {
        for e in layer {
            match e.kind {
                Kind::Whiteout => self.remove(&e.path, true),
                Kind::Opaque => self.remove(&e.path, false),
                _ => {}
            }
        }
        for e in layer {
            if matches!(e.kind, Kind::Whiteout | Kind::Opaque) {
                continue;
            }
            self.make_parents(e)?;
            if e.kind != Kind::Dir && self.0.get(&e.path).is_some_and(|o| o.kind == Kind::Dir) {
                self.remove(&e.path, false); // a file replaces a directory and its contents
            }
            let mut e = e.clone();
            if e.kind == Kind::Hardlink {
                let target = e.link.as_deref().unwrap_or_default();
                let Some(t) = self.0.get(target).filter(|t| t.digest.is_some()) else {
                    return Err(format!(
                        "{}: a hard link to {target:?}, which is not a file of this image",
                        e.path
                    ));
                };
                (e.size, e.digest) = (t.size, t.digest.clone());
            }
            self.0.insert(e.path.clone(), e);
        }
        Ok(())
    }

    /// Creates missing parent directories of `e` (as tar does); refuses a parent that is
    /// a symbolic link (writing through it could land outside the root) or a file.
    fn make_parents(&mut self, e: &Entry) -> Result<(), String> {
        let mut end = 0;
        while let Some(i) = e.path[end..].find('/') {
            end += i;
            let parent = &e.path[..end];
            match self.0.get(parent).map(|p| p.kind) {
                Some(Kind::Dir) => {}
                Some(Kind::Symlink) => {
                    return Err(format!(
                        "{}: written through the symbolic link {parent:?}",
                        e.path
                    ));
                }
                Some(_) => {
                    return Err(format!(
                        "{}: its parent {parent:?} is not a directory",
                        e.path
                    ));
                }
                None => {
                    let dir = Entry {
                        path: parent.to_string(),
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        mtime: e.mtime,
                        size: 0,
                        digest: None,
                        link: None,
                        device: None,
                    };
                    self.0.insert(parent.to_string(), dir);
                }
            }
            end += 1;
        }
        Ok(())
    }

    /// Removes what is under `path`, and `path` itself when `with_self`.
    fn remove(&mut self, path: &str, with_self: bool) {
        if with_self {
            self.0.remove(path);
        }
        let prefix = format!("{path}/");
        let under: Vec<String> = self
            .0
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in under {
            self.0.remove(&k);
        }
    }

    /// Every path, in byte order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.0.values()
    }

    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.0.get(path)
    }

    /// The regular files (hard links included) and their total length.
    pub fn file_totals(&self) -> (u64, u64) {
        self.0
            .values()
            .filter(|e| e.digest.is_some())
            .fold((0, 0), |(n, b), e| (n + 1, b + e.size))
    }

    /// The tree as a list, in byte order.
    pub fn into_entries(self) -> Vec<Entry> {
        self.0.into_values().collect()
    }

    /// A tree from a list written by [`Tree::into_entries`].
    pub fn from_entries(entries: Vec<Entry>) -> Self {
        Tree(entries.into_iter().map(|e| (e.path.clone(), e)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tests::{MemorySink, TarBuilder};
    use crate::layer::{Limits, read_layer};

    fn layer(tar: Vec<u8>) -> Vec<Entry> {
        read_layer(&tar[..], "t", Limits::default(), &mut MemorySink::default())
            .unwrap()
            .entries
    }

    fn paths(t: &Tree) -> Vec<&str> {
        t.entries().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_lower_layers_only() {
        let base = layer(
            TarBuilder::new()
                .file("etc/motd", b"hi")
                .file("etc/passwd", b"root")
                .file("var/cache/a", b"a")
                .file("var/cache/b/c", b"c")
                .file("var-x", b"sorts between var and var/")
                .finish(),
        );
        let top = layer(
            TarBuilder::new()
                .file("etc/.wh.motd", b"")
                .file("var/cache/.wh..wh..opq", b"")
                .file("var/cache/new", b"n")
                .finish(),
        );
        let mut t = Tree::default();
        t.apply(&base).unwrap();
        t.apply(&top).unwrap();
        assert_eq!(
            paths(&t),
            [
                "etc",
                "etc/passwd",
                "var",
                "var-x",
                "var/cache",
                "var/cache/new"
            ]
        );
    }

    #[test]
    fn a_whiteout_of_a_directory_removes_its_subtree_and_a_file_may_replace_it() {
        let mut t = Tree::default();
        t.apply(&layer(
            TarBuilder::new()
                .file("a/b/c", b"1")
                .file("d/e", b"2")
                .finish(),
        ))
        .unwrap();
        t.apply(&layer(
            TarBuilder::new()
                .file(".wh.a", b"")
                .file("d", b"now a file")
                .finish(),
        ))
        .unwrap();
        assert_eq!(paths(&t), ["d"]);
        assert_eq!(t.get("d").unwrap().size, 10);
    }

    #[test]
    fn writing_through_a_symbolic_link_is_refused() {
        let mut t = Tree::default();
        t.apply(&layer(
            TarBuilder::new()
                .link("etc", tar::EntryType::Symlink, "/host/etc")
                .finish(),
        ))
        .unwrap();
        let err = t
            .apply(&layer(TarBuilder::new().file("etc/shadow", b"x").finish()))
            .unwrap_err();
        assert!(err.contains("symbolic link \"etc\""), "{err}");
    }

    #[test]
    fn hard_links_share_their_targets_bytes() {
        let mut t = Tree::default();
        t.apply(&layer(
            TarBuilder::new()
                .file("bin/busybox", b"elf")
                .link("bin/sh", tar::EntryType::Link, "bin/busybox")
                .finish(),
        ))
        .unwrap();
        let (sh, bb) = (t.get("bin/sh").unwrap(), t.get("bin/busybox").unwrap());
        assert_eq!((sh.digest.clone(), sh.size), (bb.digest.clone(), 3));
        assert_eq!(t.file_totals(), (2, 6));
        let err = Tree::default()
            .apply(&layer(
                TarBuilder::new()
                    .link("x", tar::EntryType::Link, "nowhere")
                    .finish(),
            ))
            .unwrap_err();
        assert!(err.contains("not a file of this image"), "{err}");
    }
}
