//! The OCI runtime in this process: youki's libcontainer creates and starts the
//! container (no runtime binary, no shim process per container); the container's init
//! is this process's child, so waiting for it is a `waitpid`.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;

use crate::seccomp::Filtered;
use crate::{ContainerError, Result};

fn runtime_error(what: &str, e: impl std::fmt::Display) -> ContainerError {
    ContainerError::Runtime(format!("{what}: {e}"))
}

/// libcontainer changes this process's working directory while it creates a container
/// (to bind its notify socket by a short name) and starts one (to connect to it), then
/// changes it back: two at once in one process would each come back to the other's
/// folder, or connect to the other's socket. One at a time.
static SETTING_UP: Mutex<()> = Mutex::new(());

/// How long a container's setup processes (libcontainer's intermediate and init, before
/// its command runs) may take. They take milliseconds; one forked while another thread
/// of this process held a lock it then needs never finishes, so it is killed and the
/// setup tried once more.
const SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// The error of a setup that [`watched`] had to kill: `what` it was doing, and the
/// processes it killed.
fn setup_hung(what: &str, hung: &str) -> ContainerError {
    ContainerError::Runtime(format!(
        "{what} did not finish within {} s; its processes were killed: {hung}",
        SETUP_PATIENCE.as_secs()
    ))
}

/// Appends to the container's log, `log_path`.
fn open_log(log_path: &Path) -> Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)?)
}

/// Runs `setup`, which forks libcontainer's processes from this thread and waits for
/// them; if it takes longer than [`SETUP_PATIENCE`], kills those processes (so the
/// wait ends with an error) and says so. Returns whether it had to.
fn watched<T>(setup: impl FnOnce() -> T) -> (T, Option<String>) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    watched_from(children(std::process::id() as i32, tid), setup)
}

/// [`watched`], for a setup whose processes are `roots` and their descendants, found
/// when the time is up (a helper started by another thread, which `watched` would
/// not find among this thread's children).
fn watched_from<T>(
    roots: impl FnOnce() -> Vec<i32> + Send + 'static,
    setup: impl FnOnce() -> T,
) -> (T, Option<String>) {
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || match finished.recv_timeout(SETUP_PATIENCE) {
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Some(kill_setup_processes(roots())),
        _ => None,
    });
    let out = setup();
    let _ = done.send(());
    let killed = watchdog.join().unwrap_or(None);
    (out, killed)
}

/// What lists the children that thread `tid` of process `pid` forked, when called.
fn children(pid: i32, tid: i32) -> impl FnOnce() -> Vec<i32> + Send + 'static {
    move || {
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

/// Kills processes `roots` and their descendants (a setup's processes) and describes
/// what each was waiting in, for the log.
fn kill_setup_processes(roots: Vec<i32>) -> String {
    let mut found = Vec::new();
    let mut todo = roots;
    while let Some(pid) = todo.pop() {
        todo.extend(children(pid, pid)());
        found.push(pid);
    }
    let mut said = Vec::new();
    for pid in found {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        said.push(format!(
            "{} (pid {pid}) waiting in {wchan}",
            comm.trim_end()
        ));
        // SAFETY: signalling a process by pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    said.join(", ")
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

/// Who forks a container's processes.
#[derive(Clone, Debug)]
pub enum Setup {
    /// A fresh process of `program` (this binary's `container-setup` command, see
    /// [`setup_main`]) per container: it has one thread, so the processes libcontainer
    /// forks from it inherit no lock. Forked from a node's many threads, one now and then
    /// inherits a lock (the allocator's) that another thread held at that instant, and
    /// waits for it forever: libcontainer forks with the raw clone3 call, which runs
    /// none of the C library's fork handlers.
    Helper(PathBuf),
    /// This process, one container at a time, with a watchdog: for tests and tools
    /// that run little else meanwhile.
    InProcess,
}

/// Creates and starts container `id` from the bundle (`config.json`) in `bundle`, its
/// state under `state_root`, stdout and stderr to the file `log`; `before_start` runs
/// with the init's pid once its namespaces exist and before its command runs. Returns
/// the init's pid, a child of this process.
pub fn create_and_start(
    setup: &Setup,
    id: &str,
    bundle: &Path,
    state_root: &Path,
    log_path: &Path,
    before_start: &dyn Fn(i32) -> Result<()>,
) -> Result<i32> {
    if let Setup::Helper(program) = setup {
        let helper = Helper::for_create(program)?;
        let pid = helper.child.id() as i32;
        let (created, hung) = watched_from(
            move || vec![pid],
            || create_by_helper(helper, id, bundle, state_root, log_path, before_start),
        );
        return match hung {
            None => created,
            Some(hung) => Err(setup_hung("the container's setup", &hung)),
        };
    }
    let _one = SETTING_UP.lock().unwrap_or_else(|p| p.into_inner());
    let (first, hung) =
        watched(|| create_and_start_now(id, bundle, state_root, log_path, before_start));
    let Some(hung) = hung else { return first };
    tracing::warn!(container = %id, "its setup hung and was killed: {hung}; trying once more");
    // Its processes are gone; its cgroup folders stay, opened for it as they were.
    let _ = std::fs::remove_dir_all(state_root.join(id));
    let (again, hung) =
        watched(|| create_and_start_now(id, bundle, state_root, log_path, before_start));
    match hung {
        None => again,
        Some(hung) => Err(setup_hung("the container's setup, tried twice,", &hung)),
    }
}

/// The node's side of `PROGRAM container-setup create`: the helper is told what to
/// create (a line of JSON: `[ID, BUNDLE, STATE_ROOT, LOG]`), says `created PID`, is
/// told `start` (or `stop`) once `before_start` ran, says `started PID` and ends; the
/// init it leaves behind comes to this process ([`Adopting`]).
fn create_by_helper(
    mut helper: Helper,
    id: &str,
    bundle: &Path,
    state_root: &Path,
    log_path: &Path,
    before_start: &dyn Fn(i32) -> Result<()>,
) -> Result<i32> {
    let _adopting = Adopting::start()?;
    let paths = [bundle, state_root, log_path].map(|p| {
        p.to_str()
            .map(str::to_owned)
            .ok_or_else(|| ContainerError::Invalid(format!("{}: not a UTF-8 path", p.display())))
    });
    let [bundle, state_root, log_path] = paths;
    let request = serde_json::json!([id, bundle?, state_root?, log_path?]);
    helper.tell(&request.to_string())?;
    let created = helper.said("created")?;
    if let Err(e) = before_start(created) {
        let _ = helper.tell("stop");
        let _ = helper.end();
        return Err(e);
    }
    helper.tell("start")?;
    let pid = helper.said("started")?;
    helper.end()?;
    Ok(pid)
}

/// A running `container-setup` helper and its standard input and output.
struct Helper {
    child: std::process::Child,
    from: std::io::BufReader<std::process::ChildStdout>,
    to: Option<std::process::ChildStdin>,
}

/// A `container-setup create` helper started ahead of the `run` that will use it: its
/// start (the exec and loading of this binary, about 6 ms) is then off the way of a
/// container's start. One per program; an idle one ends when its input does, so with
/// this process.
static SPARE: Mutex<Option<(PathBuf, Helper)>> = Mutex::new(None);

impl Helper {
    /// A `PROGRAM container-setup create` waiting to be told what to create: the spare
    /// if there is one (and another started for the next caller), else a new one.
    fn for_create(program: &Path) -> Result<Helper> {
        let start = |program: &Path| {
            Helper::spawn(
                std::process::Command::new(program)
                    .args(["container-setup", "create"])
                    .stderr(std::process::Stdio::null()),
            )
        };
        let spare = SPARE.lock().unwrap_or_else(|p| p.into_inner()).take();
        let waiting = spare.and_then(|(of, mut helper)| {
            let alive = matches!(helper.child.try_wait(), Ok(None));
            (of == program && alive).then_some(helper)
        });
        let helper = match waiting {
            Some(helper) => helper,
            None => start(program)?,
        };
        let program = program.to_path_buf();
        std::thread::spawn(move || {
            let Ok(next) = start(&program) else { return };
            let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
            if spare.is_none() {
                *spare = Some((program, next));
                return;
            }
            // Another caller's is there already: this one ends at the end of its input.
            drop(spare);
            let mut next = next;
            let _ = next.end();
        });
        Ok(helper)
    }

    fn spawn(command: &mut std::process::Command) -> Result<Helper> {
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| runtime_error("starting the container setup helper", e))?;
        let (Some(from), to) = (child.stdout.take(), child.stdin.take()) else {
            return Err(ContainerError::Runtime(
                "the setup helper has no pipes".into(),
            ));
        };
        Ok(Helper {
            child,
            from: std::io::BufReader::new(from),
            to,
        })
    }

    /// The pid in the helper's next line, which must be `WORD PID`; its error if it
    /// says `error: ...`.
    fn said(&mut self, word: &str) -> Result<i32> {
        use std::io::BufRead;
        let mut line = String::new();
        self.from.read_line(&mut line)?;
        let line = line.trim_end();
        if let Some(why) = line.strip_prefix("error: ") {
            let _ = self.end();
            return Err(ContainerError::Runtime(why.to_string()));
        }
        match line.strip_prefix(word).map(|pid| pid.trim().parse::<i32>()) {
            Some(Ok(pid)) => Ok(pid),
            _ => {
                let ended = self.end().err().map(|e| e.to_string()).unwrap_or_default();
                Err(ContainerError::Runtime(format!(
                    "the container setup helper said {line:?}, not `{word} PID` {ended}"
                )))
            }
        }
    }

    fn tell(&mut self, word: &str) -> Result<()> {
        use std::io::Write;
        let to = self
            .to
            .as_mut()
            .ok_or_else(|| ContainerError::Runtime("the setup helper's input is closed".into()))?;
        writeln!(to, "{word}")?;
        Ok(())
    }

    /// Waits for the helper to end (its orphans are this process's once it has).
    fn end(&mut self) -> Result<()> {
        self.to = None;
        let status = self.child.wait()?;
        match status.success() {
            true => Ok(()),
            false => Err(ContainerError::Runtime(format!(
                "(the setup helper ended: {status})"
            ))),
        }
    }
}

/// How many setup helpers run now: while any does, this process is a subreaper.
static ADOPTING: Mutex<usize> = Mutex::new(0);

/// While it lives, this process is the reaper of its orphaned descendants
/// (`PR_SET_CHILD_SUBREAPER`): the container's init, left by its setup helper, becomes
/// its child, so it learns how the container ends. Only while a helper runs: an orphan
/// of anything else (a sandbox killed mid-job, say) still goes to the system's init,
/// which reaps it, and none waits here as a zombie.
struct Adopting;

impl Adopting {
    fn start() -> Result<Adopting> {
        let mut running = ADOPTING.lock().unwrap_or_else(|p| p.into_inner());
        if *running == 0 {
            set_subreaper(true)?;
        }
        *running += 1;
        Ok(Adopting)
    }
}

impl Drop for Adopting {
    fn drop(&mut self) {
        let mut running = ADOPTING.lock().unwrap_or_else(|p| p.into_inner());
        *running -= 1;
        if *running == 0 {
            let _ = set_subreaper(false);
        }
    }
}

fn set_subreaper(on: bool) -> Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_CHILD_SUBREAPER,
            libc::c_ulong::from(on),
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(runtime_error(
            "adopting the container's process",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The `container-setup` command (`args` after it), run by [`Setup::Helper`] in a
/// process of its own: `create` (told what by a line of input, see
/// [`create_by_helper`]) or `exec ID STATE_ROOT [K=V]... -- ARGS...` (output to file
/// descriptor 3). Answers on standard output; returns the exit code.
pub fn setup_main(args: &[std::ffi::OsString]) -> i32 {
    let args: Vec<&Path> = args.iter().map(Path::new).collect();
    let said = match args.as_slice() {
        [cmd] if cmd.as_os_str() == "create" => create_as_told(),
        [cmd, id, state_root, rest @ ..] if cmd.as_os_str() == "exec" => {
            let split = rest.iter().position(|a| a.as_os_str() == "--");
            match split {
                Some(at) => {
                    let env = rest[..at]
                        .iter()
                        .filter_map(|kv| kv.to_str()?.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    let command = rest[at + 1..]
                        .iter()
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect();
                    // SAFETY: the node hands the output to this process as descriptor 3.
                    let output = unsafe { OwnedFd::from_raw_fd(3) };
                    exec_now(state_root, &id.to_string_lossy(), command, env, output)
                        .map(|pid| println!("pid {pid}"))
                }
                None => Err(ContainerError::Invalid("exec: no `--` before the command".into())),
            }
        }
        _ => Err(ContainerError::Invalid(
            "container-setup: use `create` (then a line `[ID, BUNDLE, STATE_ROOT, LOG]`) or `exec ID STATE_ROOT [K=V]... -- ARGS`".into(),
        )),
    };
    match said {
        Ok(()) => 0,
        Err(e) => {
            println!("error: {e}");
            1
        }
    }
}

/// `container-setup create`: reads `[ID, BUNDLE, STATE_ROOT, LOG]`, makes the
/// container's log its standard error (where libcontainer's errors go), creates it.
fn create_as_told() -> Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let [id, bundle, state_root, log]: [String; 4] = serde_json::from_str(&line)
        .map_err(|e| ContainerError::Invalid(format!("container-setup create: {e}")))?;
    let log_file = open_log(Path::new(&log))?;
    // SAFETY: dup2 onto standard error of a descriptor this process owns.
    if unsafe { libc::dup2(log_file.as_raw_fd(), 2) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    drop(log_file);
    let told = |pid: i32| -> Result<()> {
        println!("created {pid}");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        match line.trim_end() {
            "start" => Ok(()),
            _ => Err(ContainerError::Runtime(
                "the node called the start off".into(),
            )),
        }
    };
    create_and_start_now(
        &id,
        Path::new(&bundle),
        Path::new(&state_root),
        Path::new(&log),
        &told,
    )
    .map(|pid| println!("started {pid}"))
}

fn create_and_start_now(
    id: &str,
    bundle: &Path,
    state_root: &Path,
    log_path: &Path,
    before_start: &dyn Fn(i32) -> Result<()>,
) -> Result<i32> {
    let log = open_log(log_path)?;
    let logged_before = log.metadata()?.len();
    let stdin: OwnedFd = std::fs::File::open("/dev/null")?.into();
    let stderr: OwnedFd = log.try_clone()?.into();
    let stdout: OwnedFd = log.into();
    let mut container = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_executor(Filtered::of_bundle(bundle)?)
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
    setup: &Setup,
    state_root: &Path,
    id: &str,
    args: Vec<String>,
    env: std::collections::HashMap<String, String>,
    output: OwnedFd,
) -> Result<i32> {
    let Setup::Helper(program) = setup else {
        let _one = SETTING_UP.lock().unwrap_or_else(|p| p.into_inner());
        let (built, hung) = watched(|| exec_now(state_root, id, args, env, output));
        return match hung {
            None => built,
            Some(hung) => Err(setup_hung(
                "the setup of the command in the container",
                &hung,
            )),
        };
    };
    let mut command = std::process::Command::new(program);
    command
        .args([
            OsStr::new("container-setup"),
            OsStr::new("exec"),
            OsStr::new(id),
        ])
        .arg(state_root)
        .args(env.iter().map(|(k, v)| format!("{k}={v}")))
        .arg("--")
        .args(&args)
        .stderr(std::process::Stdio::null());
    let raw = output.as_raw_fd();
    // SAFETY: between fork and exec, only dup2 and fcntl (async-signal-safe).
    unsafe {
        command.pre_exec(move || {
            if raw == 3 {
                // Already there: keep it open across exec.
                let flags = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (ran, hung) = watched(|| {
        let _adopting = Adopting::start()?;
        let mut helper = Helper::spawn(&mut command)?;
        drop(output); // the helper and the process it starts hold it now
        let pid = helper.said("pid")?;
        helper.end()?;
        Ok(pid)
    });
    match hung {
        None => ran,
        Some(hung) => Err(setup_hung(
            "the setup of the command in the container",
            &hung,
        )),
    }
}

fn exec_now(
    state_root: &Path,
    id: &str,
    args: Vec<String>,
    env: std::collections::HashMap<String, String>,
    output: OwnedFd,
) -> Result<i32> {
    let stdin: OwnedFd = std::fs::File::open("/dev/null")?.into();
    let stderr = output.try_clone()?;
    let container = load(state_root, id)?
        .ok_or_else(|| ContainerError::NotFound(format!("container {id} is not running")))?;
    let mut tenant = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_executor(Filtered::of_bundle(container.bundle())?)
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
