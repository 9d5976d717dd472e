//! The Python runtime: the system's CPython (`/usr/bin/python3`) in a sandboxed
//! subprocess per task, with the same host API as Lua and JavaScript:
//!
//! ```python
//! def map(record, object): ... emit(key, value) ...   # required
//! def combine(key, values): return value              # optional, per task
//! def reduce(key, values): return value               # optional, per job
//! ```
//!
//! with `emit(key, value)`, `log(...)` and `print(...)` (a log line). `record` is a str
//! (invalid UTF-8 replaced), `object` a dict `{key, version_id, size}`; values are JSON.
//!
//! The sandbox is bubblewrap (`bwrap`, Debian's `bubblewrap`), the tool Flatpak uses:
//! new user, PID, network, IPC and UTS namespaces (no network: only a loopback that is
//! down), nobody's uid, no capabilities, and a file system of `/usr` read-only plus an
//! empty `/tmp`: the node's data, keys and configuration are not there to read. Limits
//! are rlimits set before `bwrap` starts (address space = `memory_mb` + 64 MiB for the
//! interpreter, CPU seconds, no file writes, no core dumps) and a watchdog that kills the
//! process group at the wall-time limit or on cancel. CPython counts no instructions:
//! `limits.instructions` does not apply, `limits.seconds` bounds it. docs/decisions.md
//! says why a subprocess rather than CPython compiled to WebAssembly.
//!
//! The protocol on the child's stdin and stdout: frames of a type byte, a little-endian
//! u32 length and a payload (`C` config with the code, `M` a record, `F` finish, `R` a
//! reduce); the child answers `C`, `F` and `R` with one JSON line, and a failed `M` with
//! an error line before it exits.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::sandbox::{ObjectInfo, Sandbox};
use crate::{Emitted, JobError, Limits};

/// The interpreter: the system's, since only `/usr` is inside the sandbox.
pub const PYTHON: &str = "/usr/bin/python3";
/// Address space allowed beyond `memory_mb`: the interpreter and its libraries.
const INTERPRETER_BYTES: u64 = 64 << 20;

/// Runs in the child: reads frames, runs the job's functions, answers.
const PRELUDE: &str = r#"
import json, os, struct, sys
_in, _out = sys.stdin.buffer, sys.stdout.buffer
_logs, _emitted, _state = [], {}, {"size": 0, "max": 0}
def _log(line):
    if len(_logs) < MAX_LOG_LINES: _logs.append(line)
    elif len(_logs) == MAX_LOG_LINES: _logs.append("(further log lines dropped)")
class _Lines:
    def __init__(self): self.buf = ""
    def write(self, t):
        self.buf += t
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            _log(line)
        return len(t)
    def flush(self): pass
sys.stdout = _Lines()
def log(*a): _log("\t".join(x if isinstance(x, str) else json.dumps(x) for x in a))
def emit(key, value):
    key = key if isinstance(key, str) else str(key)
    text = json.dumps(value, separators=(",", ":"))
    _state["size"] += len(key.encode()) + len(text.encode())
    if _state["size"] > _state["max"]:
        # Stop here: code that catches exceptions must not go on.
        _reply({"limit": "output"})
        os._exit(0)
    values = _emitted.setdefault(key, [])
    values.append(value)
    if len(values) >= 256 and _fns.get("combine"):
        _emitted[key] = [_fns["combine"](key, values)]
def _reply(obj):
    _out.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
    _out.flush()
def _fail(e):
    if isinstance(e, RecursionError): _reply({"limit": "stack"})
    elif isinstance(e, MemoryError): _reply({"limit": "memory"})
    else: _reply({"error": "%s: %s" % (type(e).__name__, e)})
    sys.exit(0)
def _read(n):
    b = _in.read(n)
    if len(b) < n: sys.exit(0)
    return b
_fns, _object = {}, None
while True:
    kind = _read(1)
    payload = _read(struct.unpack("<I", _read(4))[0])
    try:
        if kind == b"C":
            cfg = json.loads(payload)
            _state["max"], _object = cfg["max_output"], cfg["object"]
            g = {"emit": emit, "log": log, "__name__": "job", "__builtins__": __builtins__}
            exec(compile(cfg["code"], "job.py", "exec"), g)
            for name in ("map", "combine", "reduce"):
                f = g.get(name)
                if f is not None and not callable(f): raise TypeError("`%s` must be a function" % name)
                _fns[name] = f
            if not _fns["map"]: raise NameError("the code defines no `map(record, object)` function")
            _reply({"ok": True})
        elif kind == b"M":
            _fns["map"](payload.decode("utf-8", "replace"), _object)
        elif kind == b"F":
            out = {}
            for key, values in _emitted.items():
                out[key] = [_fns["combine"](key, values)] if _fns.get("combine") else values
            _reply({"emitted": out, "logs": _logs})
            _emitted.clear(); _logs.clear()
        elif kind == b"R":
            key, values = json.loads(payload)
            _reply({"value": _fns["reduce"](key, values) if _fns.get("reduce") else values})
    except SystemExit:
        raise
    except BaseException as e:
        _fail(e)
"#;

/// Why the watchdog killed the child.
const KILLED_NONE: u8 = 0;
const KILLED_TIME: u8 = 1;
const KILLED_CANCEL: u8 = 2;

/// One task's Python process.
pub struct PythonTask {
    child: RefCell<Child>,
    stdin: RefCell<BufWriter<ChildStdin>>,
    stdout: RefCell<BufReader<ChildStdout>>,
    /// What the child wrote to stderr (an interpreter crash), capped.
    stderr: Arc<std::sync::Mutex<Vec<u8>>>,
    killed: Arc<AtomicU8>,
    /// Set when the task ends: stops the watchdog.
    done: Arc<AtomicBool>,
    limits: Limits,
}

impl PythonTask {
    /// Starts the sandboxed interpreter and loads `code` into it.
    pub fn new(
        code: &str,
        limits: &Limits,
        cancel: Arc<AtomicBool>,
        object: &ObjectInfo,
    ) -> Result<Self, JobError> {
        let prelude = PRELUDE.replace("MAX_LOG_LINES", &crate::sandbox::MAX_LOG_LINES.to_string());
        let mut cmd = Command::new("bwrap");
        cmd.args([
            "--unshare-all",
            "--uid",
            "65534",
            "--gid",
            "65534",
            "--cap-drop",
            "ALL",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--setenv",
            "PYTHONDONTWRITEBYTECODE",
            "1",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/bin",
            "/bin",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--chdir",
            "/tmp",
            "--",
            PYTHON,
            "-I",
            "-S",
            "-c",
            &prelude,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let address_space = limits.memory_bytes() as u64 + INTERPRETER_BYTES;
        let cpu = limits.seconds.max(1);
        // SAFETY: only async-signal-safe calls (setsid, setrlimit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                let set = |what, n: u64| {
                    let l = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    libc::setrlimit(what, &l)
                };
                set(libc::RLIMIT_AS, address_space);
                // SIGXCPU at the soft limit (SIGKILL would come at the hard one).
                let l = libc::rlimit {
                    rlim_cur: cpu,
                    rlim_max: cpu + 1,
                };
                libc::setrlimit(libc::RLIMIT_CPU, &l);
                set(libc::RLIMIT_FSIZE, 0);
                set(libc::RLIMIT_CORE, 0);
                set(libc::RLIMIT_NOFILE, 64);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            JobError::Invalid(format!(
                "cannot start the Python sandbox ({e}): Python jobs need bubblewrap \
                 (`apt install bubblewrap`) and {PYTHON}"
            ))
        })?;
        let stdin = BufWriter::with_capacity(64 * 1024, child.stdin.take().expect("piped"));
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let stderr = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut err_pipe = child.stderr.take().expect("piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                if s.len() < 16 * 1024 {
                    s.extend_from_slice(&buf[..n]);
                }
            }
        });
        let (killed, done) = (
            Arc::new(AtomicU8::new(KILLED_NONE)),
            Arc::new(AtomicBool::new(false)),
        );
        let (k, d, pid) = (killed.clone(), done.clone(), child.id() as i32);
        let deadline = Instant::now() + limits.wall_time();
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                let why = if Instant::now() > deadline {
                    KILLED_TIME
                } else if cancel.load(Ordering::Relaxed) {
                    KILLED_CANCEL
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                k.store(why, Ordering::Relaxed);
                // SAFETY: kill(2) on the child's own process group (setsid above).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                break;
            }
        });
        let task = PythonTask {
            child: RefCell::new(child),
            stdin: RefCell::new(stdin),
            stdout: RefCell::new(stdout),
            stderr,
            killed,
            done,
            limits: limits.clone(),
        };
        let config = serde_json::json!({
            "code": code,
            "max_output": limits.output_bytes(),
            "object": {"key": object.key, "version_id": object.version_id, "size": object.size},
        });
        task.send(b'C', config.to_string().as_bytes())?;
        task.answer()?;
        Ok(task)
    }

    fn send(&self, kind: u8, payload: &[u8]) -> Result<(), JobError> {
        let len = u32::try_from(payload.len())
            .map_err(|_| JobError::Limit(format!("memory ({} MiB)", self.limits.memory_mb)))?;
        let mut w = self.stdin.borrow_mut();
        let sent = w
            .write_all(&[kind])
            .and_then(|_| w.write_all(&len.to_le_bytes()))
            .and_then(|_| w.write_all(payload))
            .and_then(|_| if kind == b'M' { Ok(()) } else { w.flush() });
        match sent {
            Ok(()) => Ok(()),
            // The child stopped: its last line says why.
            Err(_) => Err(self.answer().err().unwrap_or_else(|| self.died())),
        }
    }

    /// The child's JSON answer, or the error it reported.
    fn answer(&self) -> Result<serde_json::Value, JobError> {
        let mut line = String::new();
        let read = self.stdout.borrow_mut().read_line(&mut line);
        if read.is_err() || line.is_empty() {
            return Err(self.died());
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| JobError::Code(format!("the Python sandbox answered nonsense: {e}")))?;
        if let Some(limit) = v.get("limit").and_then(|l| l.as_str()) {
            return Err(match limit {
                "output" => {
                    JobError::Limit(format!("output ({} bytes)", self.limits.output_bytes()))
                }
                "memory" => JobError::Limit(format!("memory ({} MiB)", self.limits.memory_mb)),
                _ => JobError::Limit("stack depth (recursion too deep)".into()),
            });
        }
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            return Err(JobError::Code(e.to_string()));
        }
        Ok(v)
    }

    /// Why the child ended without an answer.
    fn died(&self) -> JobError {
        let status = self.child.borrow_mut().wait().ok();
        match self.killed.load(Ordering::Relaxed) {
            KILLED_TIME => return JobError::Limit(format!("time ({} s)", self.limits.seconds)),
            KILLED_CANCEL => return JobError::Cancelled,
            _ => {}
        }
        use std::os::unix::process::ExitStatusExt;
        // bwrap exits with 128 + the signal that ended the interpreter.
        let signal = status.and_then(|s| {
            s.signal()
                .or(s.code().filter(|c| *c > 128).map(|c| c - 128))
        });
        match signal {
            Some(libc::SIGXCPU) => JobError::Limit(format!("time ({} s)", self.limits.seconds)),
            Some(libc::SIGKILL | libc::SIGSEGV | libc::SIGABRT) => {
                JobError::Limit(format!("memory ({} MiB)", self.limits.memory_mb))
            }
            _ => {
                let err = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
                let text = String::from_utf8_lossy(&err);
                let last = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                JobError::Code(format!("the Python process ended ({status:?}): {last}"))
            }
        }
    }
}

impl Sandbox for PythonTask {
    fn map(&self, record: &[u8]) -> Result<(), JobError> {
        self.send(b'M', record)
    }

    fn finish(&self) -> Result<(Emitted, Vec<String>), JobError> {
        self.send(b'F', &[])?;
        let mut v = self.answer()?;
        let emitted = serde_json::from_value(v["emitted"].take())
            .map_err(|e| JobError::Code(format!("the task's emitted values: {e}")))?;
        let logs = serde_json::from_value(v["logs"].take()).unwrap_or_default();
        Ok((emitted, logs))
    }

    fn reduce(
        &self,
        key: &str,
        values: Vec<serde_json::Value>,
    ) -> Result<serde_json::Value, JobError> {
        let payload =
            serde_json::to_vec(&(key, values)).map_err(|e| JobError::Code(e.to_string()))?;
        self.send(b'R', &payload)?;
        Ok(self.answer()?["value"].take())
    }

    fn memory_used(&self) -> usize {
        // The interpreter is bwrap's grandchild: add up the resident pages of the tree.
        fn rss(pid: u32) -> usize {
            let own = std::fs::read_to_string(format!("/proc/{pid}/statm"))
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
                .map_or(0, |pages| pages * 4096);
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            own + children
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .map(rss)
                .sum::<usize>()
        }
        rss(self.child.borrow().id())
    }
}

impl Drop for PythonTask {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        let child = self.child.get_mut();
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on the child's own process group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(code: &str) -> PythonTask {
        let object = ObjectInfo {
            key: "k".into(),
            version_id: "v1".into(),
            size: 3,
        };
        PythonTask::new(
            code,
            &Limits::default(),
            Arc::new(AtomicBool::new(false)),
            &object,
        )
        .unwrap()
    }

    const WORDS: &str = r#"
import re
def map(line, object):
    for w in re.findall(r"[A-Za-z]+", line):
        emit(w.lower(), 1)
def combine(key, values):
    return sum(values)
reduce = combine
"#;

    #[test]
    fn word_count_emits_combines_and_reduces() {
        let t = task(WORDS);
        t.map(b"the cat").unwrap();
        t.map(b"The dog and the cat").unwrap();
        let (out, _) = t.finish().unwrap();
        assert_eq!(out["the"], vec![serde_json::json!(3)]);
        assert_eq!(out["cat"], vec![serde_json::json!(2)]);
        assert_eq!(
            t.reduce("x", vec![serde_json::json!(2), serde_json::json!(5)])
                .unwrap(),
            serde_json::json!(7)
        );
    }

    #[test]
    fn the_object_logs_and_print_cross() {
        let t = task(
            "def map(r, o):\n    print('saw', o['key'], o['size'])\n    log('n', len(r))\n    emit(o['version_id'], {'r': r})",
        );
        t.map(b"hi\xff").unwrap();
        let (out, logs) = t.finish().unwrap();
        assert_eq!(out["v1"], vec![serde_json::json!({"r": "hi\u{fffd}"})]);
        assert_eq!(logs, vec!["saw k 3", "n\t3"]);
    }

    /// The node's files, the network and writing files are out of reach.
    #[test]
    fn the_sandbox_has_no_node_files_network_or_writes() {
        let here = std::env::current_dir().unwrap();
        let code = format!(
            r#"
import os, socket
def map(r, o):
    for path in ["/etc/passwd", "/root", {here:?}, "/var/tmp"]:
        emit("exists " + path, os.path.exists(path))
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=1)
        emit("net", True)
    except OSError as e:
        emit("net", False)
    try:
        with open("/tmp/x", "w") as f:
            f.write("x" * 10)
        emit("wrote", True)
    except OSError:
        emit("wrote", False)
    emit("uid", os.getuid())
"#,
            here = here.display().to_string()
        );
        let t = task(&code);
        t.map(b"x").unwrap();
        let (out, _) = t.finish().unwrap();
        for (k, v) in &out {
            if k == "uid" {
                assert_eq!(v, &vec![serde_json::json!(65534)]);
            } else {
                assert_eq!(v, &vec![serde_json::json!(false)], "{k}");
            }
        }
    }
}
