//! `docker-compose.yml`, the common subset: services with `image`, `command`,
//! `environment`, `ports`, `volumes`, `depends_on`, `restart`, `container_name`,
//! `mem_limit`, `cpus` and `userns_mode`, turned into run specs in the order their dependencies ask.
//! A key outside the subset is refused by name rather than ignored, since ignoring
//! `build:` or `networks:` would run something other than what the file says.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{ContainerError, Result, RunSpec};

/// The keys of a service this reads.
const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "environment",
    "ports",
    "volumes",
    "depends_on",
    "restart",
    "container_name",
    "mem_limit",
    "cpus",
    "userns_mode",
];

/// A compose file's project: its services as run specs, dependencies first.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// The project's name (container names start with it).
    pub name: String,
    /// (service, what to run), each after the services it depends on.
    pub services: Vec<(String, RunSpec)>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Words {
    Line(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Environment {
    Map(BTreeMap<String, Option<Scalar>>),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, serde_norway::Value>),
}

#[derive(Deserialize)]
struct Service {
    image: Option<String>,
    command: Option<Words>,
    environment: Option<Environment>,
    #[serde(default)]
    ports: Vec<Scalar>,
    #[serde(default)]
    volumes: Vec<String>,
    depends_on: Option<DependsOn>,
    restart: Option<String>,
    container_name: Option<String>,
    mem_limit: Option<Scalar>,
    cpus: Option<Scalar>,
    userns_mode: Option<String>,
}

fn invalid(why: String) -> ContainerError {
    ContainerError::Invalid(why)
}

/// A project name as Compose makes one: lowercase letters, digits, `-` and `_`.
pub fn project_name(raw: &str) -> String {
    raw.to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect::<String>()
        .trim_start_matches(['-', '_'])
        .to_string()
}

/// Reads a compose file. `project` is the name when none is given (`-p`) and the file
/// names none (`name:`).
pub fn parse(text: &str, project: &str) -> Result<Project> {
    let doc: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| invalid(format!("the compose file: {e}")))?;
    let top = doc
        .as_mapping()
        .ok_or_else(|| invalid("the compose file is not a mapping".into()))?;
    for key in top.keys() {
        let k = key.as_str().unwrap_or_default();
        if !["services", "version", "name", "volumes"].contains(&k) {
            return Err(invalid(format!(
                "the compose file's `{k}` is not supported (services, name and volumes are)"
            )));
        }
    }
    let name = top
        .get("name")
        .and_then(|n| n.as_str())
        .map(project_name)
        .unwrap_or_else(|| project_name(project));
    if name.is_empty() {
        return Err(invalid(
            "the project has no name: give one with -p NAME".into(),
        ));
    }
    let services = top
        .get("services")
        .and_then(|s| s.as_mapping())
        .ok_or_else(|| invalid("the compose file has no services".into()))?;
    let mut specs: BTreeMap<String, (RunSpec, Vec<String>)> = BTreeMap::new();
    for (key, body) in services {
        let service = key
            .as_str()
            .ok_or_else(|| invalid("a service name is not text".into()))?
            .to_string();
        if let Some(m) = body.as_mapping() {
            for k in m.keys() {
                let k = k.as_str().unwrap_or_default();
                if !SERVICE_KEYS.contains(&k) {
                    return Err(invalid(format!(
                        "service {service}: `{k}` is not supported (supported: {})",
                        SERVICE_KEYS.join(", ")
                    )));
                }
            }
        }
        let s: Service = serde_norway::from_value(body.clone())
            .map_err(|e| invalid(format!("service {service}: {e}")))?;
        let spec = service_spec(&name, &service, s)?;
        specs.insert(service, spec);
    }
    for (s, (_, deps)) in &specs {
        if let Some(d) = deps.iter().find(|d| !specs.contains_key(*d)) {
            return Err(invalid(format!(
                "service {s} depends on {d}, which is not a service"
            )));
        }
    }
    // Dependencies first (Kahn's order, names breaking ties), cycles refused.
    let mut ordered = Vec::new();
    let mut placed = std::collections::BTreeSet::new();
    while placed.len() < specs.len() {
        let ready: Vec<String> = specs
            .iter()
            .filter(|(s, (_, deps))| {
                !placed.contains(*s) && deps.iter().all(|d| placed.contains(d))
            })
            .map(|(s, _)| s.clone())
            .collect();
        if ready.is_empty() {
            let left: Vec<&String> = specs.keys().filter(|s| !placed.contains(*s)).collect();
            return Err(invalid(format!(
                "services {left:?} depend on one another in a circle"
            )));
        }
        for s in ready {
            placed.insert(s.clone());
            ordered.push(s);
        }
    }
    let services = ordered
        .into_iter()
        .filter_map(|s| specs.remove(&s).map(|(spec, _)| (s, spec)))
        .collect();
    Ok(Project { name, services })
}

/// One service's run spec and the services it depends on.
fn service_spec(project: &str, service: &str, s: Service) -> Result<(RunSpec, Vec<String>)> {
    let image = s.image.ok_or_else(|| {
        invalid(format!(
            "service {service}: no `image` (build is not supported)"
        ))
    })?;
    let command = match s.command {
        None => Vec::new(),
        Some(Words::List(v)) => v,
        // A command given as one line is split as a shell would split plain words.
        Some(Words::Line(l)) => l.split_whitespace().map(str::to_string).collect(),
    };
    let env = match s.environment {
        None => Vec::new(),
        Some(Environment::List(v)) => v,
        Some(Environment::Map(m)) => m
            .into_iter()
            .map(|(k, v)| format!("{k}={}", v.map(|v| v.text()).unwrap_or_default()))
            .collect(),
    };
    let publish = s
        .ports
        .iter()
        .map(|p| {
            let p = p.text();
            if p.contains(':') {
                Ok(p)
            } else {
                Err(invalid(format!(
                    "service {service}: port {p:?}: give the host port too (HOST:CONTAINER)"
                )))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let deps = match s.depends_on {
        None => Vec::new(),
        Some(DependsOn::List(v)) => v,
        Some(DependsOn::Map(m)) => m.into_keys().collect(),
    };
    let memory = match s.mem_limit {
        None => None,
        Some(m) => Some(
            parse_size(&m.text())
                .ok_or_else(|| invalid(format!("service {service}: mem_limit {:?}", m.text())))?,
        ),
    };
    let cpus = match s.cpus {
        None => None,
        Some(c) => Some(
            c.text()
                .parse::<f64>()
                .map_err(|_| invalid(format!("service {service}: cpus {:?}", c.text())))?,
        ),
    };
    let spec = RunSpec {
        image,
        name: Some(
            s.container_name
                .unwrap_or_else(|| format!("{project}-{service}-1")),
        ),
        command,
        env,
        memory,
        cpus,
        network: "bridge".into(),
        publish,
        volumes: s.volumes,
        restart: s.restart.unwrap_or_default(),
        remove: false,
        aliases: vec![service.to_string()],
        userns: s.userns_mode.unwrap_or_default(),
        site: None,
        node: None,
    };
    Ok((spec, deps))
}

/// `512m`, `1.5g`, `1048576` (bytes): a memory size as Docker's `--memory` and
/// Compose's `mem_limit` take it.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (number, unit) = match t
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
    {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(mult);
    }
    // As Docker, a fraction of a unit: 1.5g.
    let n: f64 = number.parse().ok()?;
    let bytes = n * mult as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FILE: &str = r#"
services:
  web:
    image: localhost/app:1
    command: httpd -f -p 8080
    ports: ["127.0.0.1:8080:8080"]
    environment:
      MODE: prod
      WORKERS: 4
    depends_on: [cache, db]
    restart: unless-stopped
  db:
    image: postgres:16
    environment: ["POSTGRES_PASSWORD=x"]
    volumes: ["pgdata/db1:/var/lib/postgresql/data"]
    mem_limit: 256m
    cpus: 1.5
    userns_mode: host
  cache:
    image: redis:7
    depends_on:
      db: {condition: service_started}
    container_name: the-cache
"#;

    #[test]
    fn memory_sizes_read_as_docker_reads_them() {
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size(" 2GB "), Some(2 << 30));
        for bad in ["", "m", "-1m", "1.2.3g", "5t", "1e400"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn services_come_out_dependencies_first_with_their_settings() {
        let p = parse(FILE, "My Shop").unwrap();
        assert_eq!(p.name, "myshop");
        let order: Vec<&str> = p.services.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(order, ["db", "cache", "web"]);
        let web = &p.services[2].1;
        assert_eq!(web.name.as_deref(), Some("myshop-web-1"));
        assert_eq!(web.command, ["httpd", "-f", "-p", "8080"]);
        assert_eq!(web.env, ["MODE=prod", "WORKERS=4"]);
        assert_eq!(web.publish, ["127.0.0.1:8080:8080"]);
        assert_eq!(web.restart, "unless-stopped");
        assert_eq!(web.aliases, ["web"]);
        let db = &p.services[0].1;
        assert_eq!((db.memory, db.cpus), (Some(256 << 20), Some(1.5)));
        assert_eq!((db.userns.as_str(), web.userns.as_str()), ("host", ""));
        assert_eq!(db.volumes, ["pgdata/db1:/var/lib/postgresql/data"]);
        assert_eq!(p.services[1].1.name.as_deref(), Some("the-cache"));
    }

    #[test]
    fn what_it_cannot_do_is_refused_by_name() {
        let cases = [
            (
                "services:\n  a:\n    build: .\n",
                "`build` is not supported",
            ),
            (
                "services:\n  a:\n    image: x\n    networks: [n]\n",
                "`networks`",
            ),
            ("networks: {}\nservices: {}\n", "`networks`"),
            (
                "services:\n  a:\n    image: x\n    depends_on: [b]\n",
                "not a service",
            ),
            (
                "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: y, depends_on: [a]}\n",
                "circle",
            ),
            (
                "services:\n  a:\n    image: x\n    ports: [80]\n",
                "host port",
            ),
            ("services:\n  a:\n    command: x\n", "no `image`"),
            ("- a list\n", "not a mapping"),
            ("services: [\n", "compose file"),
        ];
        for (text, want) in cases {
            let e = parse(text, "p").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
