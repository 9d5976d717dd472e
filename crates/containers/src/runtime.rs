//! The OCI runtime in this process: youki's libcontainer creates and starts the
//! container (no runtime binary, no shim process per container); the container's init
//! is this process's child, so waiting for it is a `waitpid`.

use std::os::fd::OwnedFd;
use std::path::Path;

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;

use crate::{ContainerError, Result};

fn runtime_error(what: &str, e: impl std::fmt::Display) -> ContainerError {
    ContainerError::Runtime(format!("{what}: {e}"))
}

/// The errors libcontainer logged from inside the container's process (to its log,
/// which is that process's standard error) after byte `from`: what a failed create
/// says about why.
fn logged_errors(log: &Path, from: u64) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let _ = f.seek(std::io::SeekFrom::Start(from));
        let _ = f.take(64 << 10).read_to_string(&mut text);
    }
    let errors: Vec<String> = text
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(|l| {
            // Without the colour codes and the timestamp.
            let plain: String = l
                .split('\x1b')
                .enumerate()
                .map(|(n, part)| {
                    if n == 0 {
                        part
                    } else {
                        part.split_once('m').map_or("", |p| p.1)
                    }
                })
                .collect();
            plain
                .split_once(" ERROR ")
                .map_or(plain.clone(), |p| p.1.trim().to_string())
        })
        .collect();
    match errors.is_empty() {
        true => String::new(),
        false => format!(" ({})", errors.join("; ")),
    }
}

/// Makes the container's cgroup folders in every cgroup v1 hierarchy passable by
/// others (0755), before libcontainer creates them with the node's umask (077): a
/// container in a user namespace binds its own cgroups at `/sys/fs/cgroup` from inside
/// it, as an unprivileged user of the node. Nothing to do on a cgroup v2 host.
pub fn open_v1_cgroups(id: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for hierarchy in v1_controller_hierarchies()? {
        let parent = hierarchy.join("edgecloud");
        for dir in [parent.clone(), parent.join(id)] {
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

/// Removes what is left of the container's v1 cgroup folders (empty ones only; the
/// kernel refuses the rest), once libcontainer has deleted the container.
pub fn close_v1_cgroups(id: &str) {
    for hierarchy in v1_controller_hierarchies().unwrap_or_default() {
        let _ = std::fs::remove_dir(hierarchy.join("edgecloud").join(id));
    }
}

/// Where the cgroup v1 hierarchies with controllers are mounted (not named ones such
/// as `name=systemd`, which libcontainer does not manage).
fn v1_controller_hierarchies() -> Result<Vec<std::path::PathBuf>> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    Ok(mounts
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let named = f
                .get(3)
                .is_some_and(|o| o.split(',').any(|o| o.starts_with("name=")));
            (f.len() > 3 && f[2] == "cgroup" && !named).then(|| std::path::PathBuf::from(f[1]))
        })
        .collect())
}

/// Creates and starts container `id` from the bundle (`config.json`) in `bundle`, its
/// state under `state_root`, stdout and stderr to the file `log`; returns the init's
/// pid.
pub fn create_and_start(
    id: &str,
    bundle: &Path,
    state_root: &Path,
    log_path: &Path,
    before_start: &dyn Fn(i32) -> Result<()>,
) -> Result<i32> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)?;
    let logged_before = log.metadata()?.len();
    let stdin: OwnedFd = std::fs::File::open("/dev/null")?.into();
    let stderr: OwnedFd = log.try_clone()?.into();
    let stdout: OwnedFd = log.into();
    let mut container = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_executor(DefaultExecutor {})
        .with_root_path(state_root)
        .map_err(|e| runtime_error("the state directory", e))?
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| {
            let why = logged_errors(log_path, logged_before);
            runtime_error("creating the container", format!("{e}{why}"))
        })?;
    reap_intermediates();
    let created = container
        .pid()
        .ok_or_else(|| ContainerError::Runtime("the container has no process".into()))?;
    // Created, not started: its namespaces exist and its command has not run yet.
    if let Err(e) = before_start(created.as_raw()) {
        let _ = container.delete(true);
        return Err(e);
    }
    container
        .start()
        .map_err(|e| runtime_error("starting the container", e))?;
    let pid = container
        .pid()
        .ok_or_else(|| ContainerError::Runtime("the container has no process".into()))?;
    Ok(pid.as_raw())
}

/// libcontainer's intermediate process (named `youki:[1:INTER]`) exits once it has
/// forked the container's init; nobody else waits for it, so this process does. It is
/// a child of the calling thread, which the kernel lists in `/proc/thread-self/children`
/// (cheaper than a scan of /proc).
fn reap_intermediates() {
    let Ok(children) = std::fs::read_to_string("/proc/thread-self/children") else {
        return;
    };
    for pid in children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim_end() == "youki:[1:INTER]" {
            let mut status = 0;
            // SAFETY: waiting for a child of this process by pid.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
}

/// Waits for `pid` (a child of this process) to end; its exit code, or 128 + the
/// signal that killed it.
pub fn wait(pid: i32) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waiting for a child of this process by pid.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                return 128 + libc::WTERMSIG(status);
            }
            continue;
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // Not our child (adopted after a restart): poll until it is gone.
        while Path::new(&format!("/proc/{pid}")).exists() {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        return -1;
    }
}

fn load(state_root: &Path, id: &str) -> Result<Option<Container>> {
    let dir = state_root.join(id);
    if !dir.exists() {
        return Ok(None);
    }
    Container::load(dir)
        .map(Some)
        .map_err(|e| runtime_error("loading the container's state", e))
}

/// Sends `signal` to every process of container `id`.
pub fn kill(state_root: &Path, id: &str, signal: i32) -> Result<()> {
    let Some(mut c) = load(state_root, id)? else {
        return Ok(());
    };
    let sig = Signal::try_from(signal).map_err(|e| runtime_error("the signal", e))?;
    let gone = |c: &Container| {
        c.pid()
            .is_none_or(|p| !Path::new(&format!("/proc/{}", p.as_raw())).exists())
    };
    if gone(&c) {
        return Ok(()); // it ended on its own meanwhile
    }
    match c.kill(sig, true) {
        Ok(()) => Ok(()),
        // It ended between the look and the signal: nothing left to signal.
        Err(_) if gone(&c) => Ok(()),
        Err(libcontainer::error::LibcontainerError::IncorrectStatus(_)) => Ok(()),
        Err(e) => Err(runtime_error("signalling the container", e)),
    }
}

/// Deletes container `id`'s runtime state and cgroup (killing what is left).
pub fn delete(state_root: &Path, id: &str) -> Result<()> {
    let Some(mut c) = load(state_root, id)? else {
        return Ok(());
    };
    c.delete(true)
        .map_err(|e| runtime_error("deleting the container", e))
}

/// Runs `args` inside running container `id` (its namespaces, cgroup, root, and the
/// same capabilities and seccomp profile), standard output and error to `output`;
/// returns the process's pid (a child of this process).
pub fn exec(
    state_root: &Path,
    id: &str,
    args: Vec<String>,
    env: std::collections::HashMap<String, String>,
    output: OwnedFd,
) -> Result<i32> {
    let stdin: OwnedFd = std::fs::File::open("/dev/null")?.into();
    let stderr = output.try_clone()?;
    let mut tenant = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_executor(DefaultExecutor {})
        .with_root_path(state_root)
        .map_err(|e| runtime_error("the state directory", e))?
        .with_stdin(stdin)
        .with_stdout(output)
        .with_stderr(stderr)
        .as_tenant()
        .with_container_args(args)
        .with_detach(true);
    if !env.is_empty() {
        tenant = tenant.with_env(env);
    }
    let pid = tenant
        .build()
        .map_err(|e| runtime_error("running the command in the container", e))?;
    reap_intermediates();
    Ok(pid.as_raw())
}
