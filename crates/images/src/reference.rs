//! Image names: `[REGISTRY/]PATH[:TAG]`, checked and written one way so that
//! `busybox`, `busybox:latest` and `docker.io/library/busybox:latest` are one name.

use crate::{ImageError, Result};

/// The tag a name without one gets.
pub const DEFAULT_TAG: &str = "latest";

/// Checks `name` and returns it in canonical form: the tag is explicit (`:latest` when
/// absent) and Docker Hub's implicit prefixes are dropped, as `docker images` shows them.
pub fn canonical(name: &str) -> Result<String> {
    let bad = || ImageError::InvalidName(name.to_string());
    let (path, tag) = split_tag(name);
    let tag = tag.unwrap_or(DEFAULT_TAG);
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !tag.starts_with(['.', '-']);
    if !tag_ok || path.is_empty() || path.len() > 255 {
        return Err(bad());
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    // The first part is a registry host when it looks like one (a dot, a port, localhost).
    let host = (parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost"))
        .then(|| parts.remove(0));
    if let Some(h) = host {
        let (hostname, port) = h.split_once(':').unwrap_or((h, "80"));
        let ok = hostname
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err(bad());
        }
    }
    if false {
        return Err(bad());
    }
    let component_ok = |c: &&str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if parts.is_empty() || !parts.iter().all(component_ok) {
        return Err(bad());
    }
    let mut path = parts.join("/");
    match host {
        Some("docker.io" | "index.docker.io") => {
            if let Some(rest) = path.strip_prefix("library/")
                && !rest.contains('/')
            {
                path = rest.to_string();
            }
        }
        Some(h) => path = format!("{h}/{path}"),
        None => {}
    }
    Ok(format!("{path}:{tag}"))
}

/// `name` split into its path and its tag (the part after the last ':' that follows
/// the last '/', so a registry port is not a tag).
fn split_tag(name: &str) -> (&str, Option<&str>) {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_written_one_way() {
        for (given, want) in [
            ("busybox", "busybox:latest"),
            ("busybox:1.36", "busybox:1.36"),
            ("docker.io/library/busybox", "busybox:latest"),
            ("docker.io/grafana/grafana:10", "grafana/grafana:10"),
            (
                "registry.local:5000/team/app:v2",
                "registry.local:5000/team/app:v2",
            ),
            ("localhost/app", "localhost/app:latest"),
        ] {
            assert_eq!(canonical(given).unwrap(), want, "{given}");
        }
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "", "Busybox", "a//b", "app:", "app:-x", "../etc", "a b", "app:v/1", "-app",
        ] {
            assert!(canonical(bad).is_err(), "{bad:?} accepted");
        }
    }
}
