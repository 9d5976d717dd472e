//! File ids: NFS names files by number, objects have paths. Ids are handed out on
//! first sight and kept for the life of the process (the root is 1), and the path
//! helpers that turn NFS names into `files` places.

use super::*;

/// File ids for paths, stable while the server runs (handles expire on restart).
#[derive(Default)]
pub(crate) struct Ids {
    pub(crate) by_id: HashMap<u64, String>,
    pub(crate) by_path: HashMap<String, u64>,
    pub(crate) next: u64,
}

impl Ids {
    pub(crate) fn id(&mut self, path: &str) -> u64 {
        if let Some(id) = self.by_path.get(path) {
            return *id;
        }
        self.next += 1;
        let id = self.next;
        self.by_id.insert(id, path.to_string());
        self.by_path.insert(path.to_string(), id);
        id
    }
}

pub(crate) const ROOT: u64 = 1;

pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

pub(crate) fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((p, _)) => p.to_string(),
    }
}

pub(crate) fn name_of(f: &filename3<'_>) -> Result<String, nfsstat3> {
    let name = std::str::from_utf8(f.as_ref()).map_err(|_| nfsstat3::NFS3ERR_INVAL)?;
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err(nfsstat3::NFS3ERR_INVAL);
    }
    if name.len() > files::path::MAX_NAME {
        return Err(nfsstat3::NFS3ERR_NAMETOOLONG);
    }
    Ok(name.to_string())
}

pub(crate) fn place(path: &str) -> Result<Place, nfsstat3> {
    Place::parse(path).map_err(map_err)
}
