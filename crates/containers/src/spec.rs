//! The OCI runtime spec (`config.json`) of a container: the image config's entrypoint,
//! command, environment, user and working directory, with what `run` asked for on top,
//! and Docker's defaults for what a container may do.

use std::path::Path;

use serde_json::{Value, json};

use crate::{ContainerError, Result, RunSpec};

/// The capabilities a process in a container keeps: Docker's default set. Everything
/// else (SYS_ADMIN, NET_ADMIN, SYS_MODULE, ...) is dropped.
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Docker's default seccomp profile for a container without extra capabilities: the
/// system calls a process may make (about 350), `clone` without namespace flags, `clone3`
/// answered ENOSYS (so libc falls back to `clone`), everything else EPERM. Derived from
/// libcontainer's copy of Docker's profile (both Apache-2.0), the blocks Docker adds
/// only for capabilities a container here never has (SYS_ADMIN, SYS_PTRACE, SYS_BOOT,
/// SYS_MODULE, SYS_TIME, ...) left out.
const SECCOMP_PROFILE: &str = include_str!("seccomp-default.json");

/// The profile with this machine's architectures (a 64-bit host's 32-bit ones too).
pub fn seccomp_profile() -> Value {
    let mut profile: Value = serde_json::from_str(SECCOMP_PROFILE).unwrap_or(Value::Null);
    let arches: &[&str] = match std::env::consts::ARCH {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => &[],
    };
    if !arches.is_empty() {
        profile["architectures"] = json!(arches);
    }
    profile
}

/// What the image config says about the process (Docker's `config` object).
#[derive(Default, Debug, Clone, PartialEq)]
pub struct ImageProcess {
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Cmd.
    pub cmd: Vec<String>,
    /// Env, as `K=V`.
    pub env: Vec<String>,
    /// WorkingDir.
    pub working_dir: Option<String>,
    /// User (`uid[:gid]` or a name).
    pub user: Option<String>,
}

impl ImageProcess {
    /// Reads the process fields of an image config.
    pub fn of(config: &Value) -> Self {
        let c = &config["config"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        ImageProcess {
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            env: strings(&c["Env"]),
            working_dir: text(&c["WorkingDir"]),
            user: text(&c["User"]),
        }
    }
}

/// The command line as Docker builds it: the entrypoint, then `run`'s command if given,
/// else the image's.
pub fn command_line(image: &ImageProcess, run: &RunSpec) -> Result<Vec<String>> {
    let mut args = image.entrypoint.clone();
    if run.command.is_empty() {
        args.extend(image.cmd.iter().cloned());
    } else {
        args.extend(run.command.iter().cloned());
    }
    if args.is_empty() {
        return Err(ContainerError::Invalid(
            "the image has no command: give one after the image name".into(),
        ));
    }
    Ok(args)
}

/// The environment: the image's, then `run`'s `-e` (which wins), with a PATH and
/// HOSTNAME when missing.
pub fn environment(image: &ImageProcess, run: &RunSpec, hostname: &str) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: &str| {
        let key = kv.split('=').next().unwrap_or(kv);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.to_string());
    };
    set("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    set(&format!("HOSTNAME={hostname}"));
    for kv in image.env.iter().chain(&run.env) {
        set(kv);
    }
    env
}

/// `user` (`uid[:gid]`, or a name looked up in the image's /etc/passwd and /etc/group)
/// as numbers.
pub fn resolve_user(user: Option<&str>, rootfs: &Path) -> Result<(u32, u32)> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok((0, 0));
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name) && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().unwrap_or(0))))
                .flatten()
        })
    };
    let (uid, default_gid) = match u.parse::<u32>() {
        Ok(n) => (n, lookup_uid_gid(rootfs, n).unwrap_or(n)),
        Err(_) => lookup("etc/passwd", u).ok_or_else(|| {
            ContainerError::Invalid(format!("user {u:?} is not in the image's /etc/passwd"))
        })?,
    };
    let gid = match g {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup("etc/group", g).map(|(gid, _)| gid).ok_or_else(|| {
                ContainerError::Invalid(format!("group {g:?} is not in the image's /etc/group"))
            })?,
        },
    };
    Ok((uid, gid))
}

/// The primary group of `uid` in the image's /etc/passwd.
fn lookup_uid_gid(rootfs: &Path, uid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[3].parse().ok())?
    })
}

/// Whether the node has cgroup v2 only (`/sys/fs/cgroup` is cgroup2, not a tmpfs of
/// v1 hierarchies).
fn unified_cgroups() -> bool {
    let Ok(c) = std::ffi::CString::new("/sys/fs/cgroup") else {
        return false;
    };
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path and s a properly sized out-parameter.
    unsafe { libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type == libc::CGROUP2_SUPER_MAGIC }
}

/// Everything the runtime needs to know to build `config.json`.
pub struct SpecInput<'a> {
    /// The container's id (its cgroup's name).
    pub id: &'a str,
    /// Its host name.
    pub hostname: &'a str,
    /// The merged root file system.
    pub rootfs: &'a Path,
    /// argv.
    pub args: Vec<String>,
    /// `K=V`.
    pub env: Vec<String>,
    /// The working directory.
    pub cwd: String,
    /// uid, gid.
    pub user: (u32, u32),
    /// What `run` asked for (limits, network).
    pub run: &'a RunSpec,
    /// The node's id of its root, when it has a user namespace of its own.
    pub user_namespace: Option<u32>,
    /// Folders of the node bound into the container: from, to, read-only.
    pub binds: Vec<(std::path::PathBuf, String, bool)>,
}

/// The runtime spec, as runc's `spec` writes it, with the container's process,
/// limits and namespaces.
pub fn runtime_spec(i: &SpecInput<'_>) -> Value {
    let caps: Vec<&str> = CAPABILITIES.to_vec();
    // As many open files as the node itself may have (Docker asks for 1048576, which a
    // host with a lower hard limit refuses).
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let nofile = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
        0 => limit.rlim_max,
        _ => 1024,
    };
    // A user namespace may mount cgroup v2 in its cgroup namespace, but no v1
    // hierarchy: on a v1 or hybrid host such a container has no cgroup namespace, and
    // libcontainer binds its own cgroups' folders at /sys/fs/cgroup instead.
    let cgroup_namespace = i.user_namespace.is_none() || unified_cgroups();
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if cgroup_namespace {
        namespaces.push(json!({"type": "cgroup"}));
    }
    if i.run.network != "host" {
        namespaces.push(json!({"type": "network"}));
    }
    let mut id_maps = json!([]);
    if let Some(root) = i.user_namespace {
        namespaces.push(json!({"type": "user"}));
        id_maps =
            json!([{"containerID": 0, "hostID": root, "size": crate::lazy_root::USERNS_SIZE}]);
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    if i.run.network == "host" {
        for f in ["/etc/resolv.conf", "/etc/hosts"] {
            if Path::new(f).exists() {
                mounts.push(json!({"destination": f, "type": "bind", "source": f,
                                   "options": ["rbind", "ro"]}));
            }
        }
    }
    for (from, to, read_only) in &i.binds {
        let mode = if *read_only { "ro" } else { "rw" };
        mounts.push(json!({"destination": to, "type": "bind", "source": from,
                           "options": ["rbind", mode]}));
    }
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(bytes) = i.run.memory {
        resources["memory"] = json!({"limit": bytes});
    }
    if let Some(cpus) = i.run.cpus {
        let period = 100_000u64;
        resources["cpu"] = json!({"quota": (cpus * period as f64) as i64, "period": period});
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": i.user.0, "gid": i.user.1},
            "args": i.args,
            "env": i.env,
            "cwd": i.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": true
        },
        "root": {"path": i.rootfs, "readonly": false},
        "hostname": i.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": format!("/edgecloud/{}", i.id),
            "uidMappings": id_maps,
            "gidMappings": id_maps,
            "resources": resources,
            "namespaces": namespaces,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
            "seccomp": seccomp_profile()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(command: &[&str], env: &[&str]) -> RunSpec {
        RunSpec {
            image: "x".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_command_line_is_the_entrypoint_then_the_command() {
        let img = ImageProcess::of(&json!({"config": {
            "Entrypoint": ["/init"], "Cmd": ["--serve"], "Env": ["A=1", "PATH=/opt"]}}));
        assert_eq!(
            command_line(&img, &run(&[], &[])).unwrap(),
            ["/init", "--serve"]
        );
        assert_eq!(
            command_line(&img, &run(&["-v"], &[])).unwrap(),
            ["/init", "-v"]
        );
        let none = ImageProcess::default();
        assert!(command_line(&none, &run(&[], &[])).is_err());
        let env = environment(&img, &run(&[], &["A=2", "B=3"]), "h");
        assert_eq!(env, ["HOSTNAME=h", "PATH=/opt", "A=2", "B=3"]);
    }

    #[test]
    fn the_seccomp_profile_parses_and_refuses_what_docker_refuses() {
        let p = seccomp_profile();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed: Vec<&str> = p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
            .flat_map(|r| {
                r["names"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap())
            })
            .collect();
        assert!(allowed.len() > 300 && allowed.contains(&"read") && allowed.contains(&"chroot"));
        for refused in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "bpf",
            "keyctl",
            "reboot",
            "kexec_load",
            "init_module",
            "open_by_handle_at",
            "pivot_root",
            "clone",
        ] {
            assert!(!allowed.contains(&refused), "{refused} allowed");
        }
    }

    #[test]
    fn users_are_numbers_or_names_of_the_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let r = |u| resolve_user(Some(u), dir.path());
        assert_eq!(r("www").unwrap(), (33, 34));
        assert_eq!(r("33").unwrap(), (33, 34));
        assert_eq!(r("1000:50").unwrap(), (1000, 50));
        assert_eq!(r("www:staff").unwrap(), (33, 50));
        assert!(r("nobody-here").is_err());
        assert_eq!(resolve_user(None, dir.path()).unwrap(), (0, 0));
    }
}
