//! One interface over the runtimes: a task's code in a fresh sandbox, fed records, asked
//! for what it emitted. Lua ([`crate::lua`]) and JavaScript ([`crate::js`]) offer the same
//! host API (`map`, `combine`, `reduce`; `emit`, `log`).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::{Emitted, JobError, Limits};

/// The runtimes a job may ask for.
pub const RUNTIMES: &[&str] = &["lua", "javascript", "wasm", "python"];

/// Lines a task may log before the rest are dropped (with a note).
pub const MAX_LOG_LINES: usize = 1000;

/// Adds a log line, or the note that further lines are dropped.
pub(crate) fn push_log(logs: &mut Vec<String>, line: String) {
    if logs.len() < MAX_LOG_LINES {
        logs.push(line);
    } else if logs.len() == MAX_LOG_LINES {
        logs.push("(further log lines dropped)".into());
    }
}

/// The input object a task reads, as `map`'s second argument.
#[derive(Debug, Clone, Default)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Its version id.
    pub version_id: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A task's code, loaded.
pub trait Sandbox {
    /// Calls `map(record, object)`.
    fn map(&self, record: &[u8]) -> Result<(), JobError>;
    /// What the task emitted (each key's values folded by `combine` when the code has
    /// one) and logged. Leaves the sandbox empty.
    fn finish(&self) -> Result<(Emitted, Vec<String>), JobError>;
    /// `reduce(key, values)`, or the values as a list when the code has no `reduce`.
    fn reduce(
        &self,
        key: &str,
        values: Vec<serde_json::Value>,
    ) -> Result<serde_json::Value, JobError>;
    /// Bytes the sandbox uses now.
    fn memory_used(&self) -> usize;
}

/// Loads `code` for `runtime` ("lua", "javascript" or "js").
pub fn open(
    runtime: &str,
    code: &str,
    limits: &Limits,
    cancel: Arc<AtomicBool>,
    object: ObjectInfo,
) -> Result<Box<dyn Sandbox>, JobError> {
    match runtime {
        "lua" => Ok(Box::new(LuaSandbox::new(code, limits, cancel, &object)?)),
        "javascript" | "js" => Ok(Box::new(crate::js::JsTask::new(
            code, limits, cancel, object,
        )?)),
        "wasm" | "webassembly" => Ok(Box::new(crate::wasm::WasmTask::new(
            code, limits, cancel, &object,
        )?)),
        "python" | "py" => Ok(Box::new(crate::python::PythonTask::new(
            code, limits, cancel, &object,
        )?)),
        other => Err(JobError::Invalid(format!(
            "runtime {other:?}: use one of {} (see docs/jobs.md)",
            RUNTIMES.join(", ")
        ))),
    }
}

struct LuaSandbox {
    task: crate::lua::LuaTask,
    object: mlua::Value,
}

impl LuaSandbox {
    fn new(
        code: &str,
        limits: &Limits,
        cancel: Arc<AtomicBool>,
        o: &ObjectInfo,
    ) -> Result<Self, JobError> {
        let task = crate::lua::LuaTask::new(code, limits, cancel)?;
        let object = task.object(&o.key, &o.version_id, o.size)?;
        Ok(LuaSandbox { task, object })
    }
}

impl Sandbox for LuaSandbox {
    fn map(&self, record: &[u8]) -> Result<(), JobError> {
        self.task.map(record, &self.object)
    }
    fn finish(&self) -> Result<(Emitted, Vec<String>), JobError> {
        self.task.finish()
    }
    fn reduce(
        &self,
        key: &str,
        values: Vec<serde_json::Value>,
    ) -> Result<serde_json::Value, JobError> {
        self.task.reduce(key, values)
    }
    fn memory_used(&self) -> usize {
        self.task.memory_used()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    fn load(
        runtime: &str,
        code: &str,
        limits: &Limits,
        cancel: Arc<AtomicBool>,
    ) -> Result<Box<dyn Sandbox>, JobError> {
        open(runtime, code, limits, cancel, ObjectInfo::default())
    }

    fn run(runtime: &str, code: &str, limits: &Limits) -> Result<Emitted, JobError> {
        let s = load(runtime, code, limits, Arc::new(AtomicBool::new(false)))?;
        s.map(b"x")?;
        Ok(s.finish()?.0)
    }

    /// A WebAssembly module (WAT) whose `map` runs `body`; `$emit` is imported, and memory
    /// holds the key "k1" at 16 and the JSON value "\"v\"" at 32.
    pub(crate) fn wat(body: &str) -> String {
        format!(
            r#"(module
  (import "edgecloud" "emit" (func $emit (param i32 i32 i32 i32)))
  (import "edgecloud" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "k1")
  (data (i32.const 32) "\"v\"")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func $map (export "map") (param i32 i32) {body}))"#
        )
    }

    fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
        let mut l = Limits::default();
        f(&mut l);
        l
    }

    /// Endless loops (also inside try/catch), memory bombs, huge outputs (also
    /// with the limit's error caught) and deep recursion each stop with the limit named.
    #[test]
    fn hostile_code_stops_at_the_limit_it_hits_in_every_runtime() {
        let instructions = limits(|l| l.instructions = 5_000_000);
        let memory = limits(|l| l.memory_mb = 16);
        let output = limits(|l| l.output_mb = 1);
        let out_err = JobError::Limit("output (1048576 bytes)".into());
        let defaults = Limits::default();
        let w_loop = wat("(loop $l (br $l))");
        let w_grow = wat("(loop $l (drop (memory.grow (i32.const 16))) (br $l))");
        let w_emit = wat(
            "(loop $l (call $emit (i32.const 16) (i32.const 2) (i32.const 32) (i32.const 3)) (br $l))",
        );
        let w_deep = wat("(call $map (local.get 0) (local.get 1))");
        let seconds = limits(|l| l.seconds = 2);
        let cases: Vec<(&str, &str, &Limits, JobError)> = vec![
            (
                "python",
                "def map(r, o):\n    while True: pass",
                &seconds,
                JobError::Limit("time (2 s)".into()),
            ),
            (
                "python",
                "def map(r, o):\n    a = []\n    while True: a.append('x' * 1000000)",
                &memory,
                JobError::Limit("memory (16 MiB)".into()),
            ),
            (
                "python",
                "def map(r, o):\n    for i in range(10**7):\n        try: emit('k%d' % i, 'v' * 100)\n        except Exception: pass",
                &output,
                out_err.clone(),
            ),
            (
                "python",
                "def f(n): return 1 + f(n + 1)\ndef map(r, o): f(1)",
                &defaults,
                JobError::Limit("stack depth (recursion too deep)".into()),
            ),
            (
                "lua",
                "function map() while true do end end",
                &instructions,
                JobError::Limit("instructions (5000000)".into()),
            ),
            (
                "javascript",
                "function map() { for (;;) { try { for (;;) {} } catch (e) {} } }",
                &instructions,
                JobError::Limit("instructions (5000000)".into()),
            ),
            (
                "lua",
                "function map() local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1000) .. i end end",
                &memory,
                JobError::Limit("memory".into()),
            ),
            (
                "javascript",
                "function map() { const a = []; for (let i = 0; ; i++) a.push('x'.repeat(1000) + i); }",
                &memory,
                JobError::Limit("memory".into()),
            ),
            (
                "lua",
                "function map() for i = 1, 1e7 do emit('k' .. i, string.rep('v', 100)) end end",
                &output,
                out_err.clone(),
            ),
            (
                "javascript",
                "function map() { for (let i = 0; i < 1e7; i++) { try { emit('k' + i, 'v'.repeat(100)); } catch (e) {} } }",
                &output,
                out_err.clone(),
            ),
            (
                "lua",
                "local function f(n) return 1 + f(n + 1) end function map() f(1) end",
                &defaults,
                JobError::Limit("stack depth (recursion too deep)".into()),
            ),
            (
                "javascript",
                "function f(n) { return 1 + f(n + 1); } function map() { f(1); }",
                &defaults,
                JobError::Limit("stack depth (recursion too deep)".into()),
            ),
            (
                "wasm",
                &w_loop,
                &instructions,
                JobError::Limit("instructions (5000000)".into()),
            ),
            (
                "wasm",
                &w_grow,
                &memory,
                JobError::Limit("memory (16 MiB)".into()),
            ),
            ("wasm", &w_emit, &output, out_err.clone()),
            (
                "wasm",
                &w_deep,
                &defaults,
                JobError::Limit("stack depth (recursion too deep)".into()),
            ),
        ];
        for (runtime, code, limits, want) in cases {
            let got = run(runtime, code, limits).unwrap_err();
            assert_eq!(got, want, "{runtime}: {code}");
            assert!(got.to_string().contains("limit"), "{got}");
        }
    }

    #[test]
    fn cancelling_stops_running_code_in_every_runtime() {
        let w_loop = wat("(loop $l (br $l))");
        for (runtime, code) in [
            ("lua", "function map() while true do end end"),
            ("javascript", "function map() { for (;;) {} }"),
            ("wasm", w_loop.as_str()),
            ("python", "def map(r, o):\n    while True: pass"),
        ] {
            let cancel = Arc::new(AtomicBool::new(false));
            let s = load(runtime, code, &Limits::default(), cancel.clone()).unwrap();
            cancel.store(true, Ordering::Relaxed);
            // A subprocess takes records without waiting: it may only say so at the end.
            let stopped = s.map(b"x").and_then(|_| s.finish().map(|_| ()));
            assert_eq!(stopped.unwrap_err(), JobError::Cancelled, "{runtime}");
        }
    }

    #[test]
    fn code_without_map_or_that_does_not_parse_is_refused_at_load() {
        for (runtime, code, says) in [
            ("lua", "x = 1", "map"),
            ("lua", "function map(", "job"),
            ("javascript", "let x = 1;", "map"),
            ("javascript", "function map( {", "SyntaxError"),
            ("javascript", "const map = 3;", "must be a function"),
            ("wasm", "(module (memory (export \"memory\") 1))", "alloc"),
            ("wasm", "(module", "not a valid WebAssembly module"),
            ("wasm", "AGFzbQEAAAA=", "memory"), // an empty binary module, as base64
            ("wasm", "AGFzbQ!!", "base64"),
            ("python", "x = 1", "map"),
            ("python", "def map(:", "SyntaxError"),
            ("python", "map = 3", "must be a function"),
        ] {
            let e = load(
                runtime,
                code,
                &Limits::default(),
                Arc::new(AtomicBool::new(false)),
            )
            .err()
            .unwrap();
            assert!(
                matches!(&e, JobError::Code(m) if m.contains(says)),
                "{runtime} {code}: {e:?}"
            );
        }
        let e = load(
            "cobol",
            "",
            &Limits::default(),
            Arc::new(AtomicBool::new(false)),
        )
        .err()
        .unwrap();
        assert!(matches!(e, JobError::Invalid(m) if m.contains("lua, javascript")));
    }
}
