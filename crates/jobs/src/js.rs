//! The JavaScript runtime (QuickJS, through rquickjs). The same host API as Lua:
//!
//! ```js
//! function map(record, object) { ... emit(key, value) ... }   // required
//! function combine(key, values) { return value }              // optional, per task
//! function reduce(key, values) { return value }               // optional, per job
//! ```
//!
//! with `emit(key, value)`, `log(...)` and `console.log(...)`. `record` is a string
//! (invalid UTF-8 replaced), `object` is `{key, version_id, size}`. Values cross as JSON.
//!
//! The sandbox: QuickJS without its `std`/`os` modules (rquickjs does not add them) has
//! no file system, network, timers or module loading. Limits: memory (the runtime's
//! allocator limit), stack depth, and an interrupt handler QuickJS calls every ~10,000
//! operations that stops the code at the instruction or time limit or on cancel; an
//! interrupt cannot be caught by the code.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rquickjs::{Context, Ctx, Function, Object, Runtime};

use crate::sandbox::{ObjectInfo, Sandbox};
use crate::{Emitted, JobError, Limits};

/// Roughly how many operations QuickJS runs between two calls of the interrupt handler.
const OPS_PER_INTERRUPT: u64 = 10_000;

/// Host functions and helpers defined before the job's code.
const PRELUDE: &str = r#"
globalThis.emit = (k, v) => __emit(typeof k === "string" ? k : String(k), JSON.stringify(v === undefined ? null : v));
globalThis.log = (...a) => __log(a.map(x => typeof x === "string" ? x : JSON.stringify(x)).join("\t"));
globalThis.console = { log: globalThis.log };
globalThis.__fold = (name, k, vs) => { const r = globalThis.__fns[name](k, JSON.parse(vs)); return JSON.stringify(r === undefined ? null : r); };
"#;

/// Run after the job's code: finds its functions, whether declared with `function`,
/// `const` or `let` (top-level `const` and `let` are not properties of `globalThis`).
const FIND_FUNCTIONS: &str = r#"
globalThis.__fns = {};
for (const [n, f] of [["map", typeof map === "undefined" ? undefined : map],
                      ["combine", typeof combine === "undefined" ? undefined : combine],
                      ["reduce", typeof reduce === "undefined" ? undefined : reduce]]) {
  if (f === undefined || f === null) continue;
  if (typeof f !== "function") throw new TypeError("`" + n + "` must be a function");
  globalThis.__fns[n] = f;
}
"#;

#[derive(Default)]
struct State {
    emitted: Emitted,
    output_bytes: u64,
    logs: Vec<String>,
    /// A limit hit inside a host function: the code might catch the exception, so it
    /// is kept and reported at the end whatever the code did.
    over: Option<JobError>,
}

/// One task's JavaScript runtime with the job's code loaded.
pub struct JsTask {
    rt: Runtime,
    ctx: Context,
    state: Rc<RefCell<State>>,
    /// Why the interrupt handler stopped the code.
    stopped: Rc<RefCell<Option<JobError>>>,
    has_combine: bool,
    has_reduce: bool,
    object: ObjectInfo,
}

fn message(ctx: &Ctx<'_>, e: rquickjs::Error) -> String {
    match e {
        rquickjs::Error::Exception => {
            let v = ctx.catch();
            match v.as_exception() {
                Some(ex) => {
                    let name = ex
                        .get::<_, String>("name")
                        .unwrap_or_else(|_| "Error".into());
                    format!("{name}: {}", ex.message().unwrap_or_default())
                }
                None => v
                    .as_string()
                    .and_then(|s| s.to_string().ok())
                    .unwrap_or_else(|| format!("{v:?}")),
            }
        }
        other => other.to_string(),
    }
}

impl JsTask {
    /// Loads `code` into a fresh runtime with `limits`; `cancel` stops it from outside.
    pub fn new(
        code: &str,
        limits: &Limits,
        cancel: Arc<AtomicBool>,
        object: ObjectInfo,
    ) -> Result<Self, JobError> {
        let fail = |e: rquickjs::Error| JobError::Code(e.to_string());
        let rt = Runtime::new().map_err(fail)?;
        rt.set_memory_limit(limits.memory_bytes());
        rt.set_max_stack_size(512 * 1024);
        let stopped: Rc<RefCell<Option<JobError>>> = Rc::new(RefCell::new(None));
        let state: Rc<RefCell<State>> = Rc::default();
        // Code that catches the output limit's exception is stopped all the same.
        let over = state.clone();
        let (why, ticks, deadline) = (
            stopped.clone(),
            Cell::new(0u64),
            Instant::now() + limits.wall_time(),
        );
        let (instructions, seconds) = (limits.instructions, limits.seconds);
        rt.set_interrupt_handler(Some(Box::new(move || {
            ticks.set(ticks.get() + 1);
            let reason = if ticks.get() * OPS_PER_INTERRUPT > instructions {
                Some(JobError::Limit(format!("instructions ({instructions})")))
            } else if Instant::now() > deadline {
                Some(JobError::Limit(format!("time ({seconds} s)")))
            } else if cancel.load(Ordering::Relaxed) {
                Some(JobError::Cancelled)
            } else {
                None
            };
            if reason.is_none() && over.try_borrow().is_ok_and(|s| s.over.is_some()) {
                return true; // `failure` reports the limit recorded in `over`
            }
            match reason {
                Some(r) => {
                    why.borrow_mut().get_or_insert(r);
                    true
                }
                None => false,
            }
        })));
        let ctx = Context::full(&rt).map_err(fail)?;
        let max_output = limits.output_bytes();
        let mut task = JsTask {
            rt,
            ctx,
            state: state.clone(),
            stopped,
            has_combine: false,
            has_reduce: false,
            object,
        };
        let (has_combine, has_reduce) = task.ctx.with(|ctx| -> Result<(bool, bool), JobError> {
            let g = ctx.globals();
            let st = state.clone();
            let emit = Function::new(
                ctx.clone(),
                move |ctx: Ctx<'_>, key: String, value: String| {
                    let mut s = st.borrow_mut();
                    s.output_bytes += (key.len() + value.len()) as u64;
                    if s.output_bytes > max_output {
                        s.over
                            .get_or_insert(JobError::Limit(format!("output ({max_output} bytes)")));
                        return Err(rquickjs::Exception::throw_message(&ctx, "output limit"));
                    }
                    let value = serde_json::from_str(&value).unwrap_or(serde_json::Value::Null);
                    s.emitted.entry(key).or_default().push(value);
                    Ok(())
                },
            )
            .map_err(fail)?;
            g.set("__emit", emit).map_err(fail)?;
            let st = state.clone();
            let log = Function::new(ctx.clone(), move |line: String| {
                crate::sandbox::push_log(&mut st.borrow_mut().logs, line);
            })
            .map_err(fail)?;
            g.set("__log", log).map_err(fail)?;
            let stopped = task.stopped.clone();
            let load_error = |e: rquickjs::Error| match stopped.borrow_mut().take() {
                Some(why) => why,
                None => JobError::Code(message(&ctx, e)),
            };
            ctx.eval::<(), _>(PRELUDE).map_err(load_error)?;
            ctx.eval::<(), _>(code).map_err(load_error)?;
            ctx.eval::<(), _>(FIND_FUNCTIONS).map_err(load_error)?;
            let fns: Object = g.get("__fns").map_err(fail)?;
            let has = |name: &str| fns.contains_key(name).map_err(fail);
            if !has("map")? {
                return Err(JobError::Code(
                    "the code defines no `map(record, object)` function".into(),
                ));
            }
            Ok((has("combine")?, has("reduce")?))
        })?;
        task.has_combine = has_combine;
        task.has_reduce = has_reduce;
        Ok(task)
    }

    /// The error to report for a failed call: a limit the host saw first, else the
    /// exception (a memory or stack exhaustion is named as the limit it is).
    fn failure(&self, ctx: &Ctx<'_>, e: rquickjs::Error) -> JobError {
        if let Some(why) = self.stopped.borrow_mut().take() {
            let _ = ctx.catch();
            return why;
        }
        if let Some(over) = self.state.borrow_mut().over.take() {
            let _ = ctx.catch();
            return over;
        }
        let m = message(ctx, e);
        // Out of memory, QuickJS may throw null: no Error object could be allocated.
        if m.contains("out of memory") || m.starts_with("Null") {
            JobError::Limit("memory".into())
        } else if m.contains("stack overflow") || m.contains("call stack size exceeded") {
            JobError::Limit("stack depth (recursion too deep)".into())
        } else {
            JobError::Code(m)
        }
    }

    fn fold(
        &self,
        name: &str,
        key: &str,
        values: Vec<serde_json::Value>,
    ) -> Result<serde_json::Value, JobError> {
        let values = serde_json::to_string(&values).map_err(|e| JobError::Code(e.to_string()))?;
        self.ctx.with(|ctx| {
            let fold: Function = ctx
                .globals()
                .get("__fold")
                .map_err(|e| JobError::Code(e.to_string()))?;
            let out: String = fold
                .call((name, key, values))
                .map_err(|e| self.failure(&ctx, e))?;
            serde_json::from_str(&out).map_err(|e| JobError::Code(e.to_string()))
        })
    }
}

impl Sandbox for JsTask {
    fn map(&self, record: &[u8]) -> Result<(), JobError> {
        self.ctx.with(|ctx| {
            let fns: Object = ctx
                .globals()
                .get("__fns")
                .map_err(|e| JobError::Code(e.to_string()))?;
            let f: Function = fns.get("map").map_err(|e| JobError::Code(e.to_string()))?;
            let fail = |e: rquickjs::Error| JobError::Code(e.to_string());
            let o = Object::new(ctx.clone()).map_err(fail)?;
            o.set("key", self.object.key.as_str()).map_err(fail)?;
            o.set("version_id", self.object.version_id.as_str())
                .map_err(fail)?;
            o.set("size", self.object.size as f64).map_err(fail)?;
            let record = String::from_utf8_lossy(record);
            f.call::<_, ()>((record.as_ref(), o))
                .map_err(|e| self.failure(&ctx, e))
        })?;
        match self.state.borrow_mut().over.take() {
            Some(over) => Err(over),
            None => Ok(()),
        }
    }

    fn finish(&self) -> Result<(Emitted, Vec<String>), JobError> {
        let (emitted, logs) = {
            let mut s = self.state.borrow_mut();
            if let Some(over) = s.over.take() {
                return Err(over);
            }
            (std::mem::take(&mut s.emitted), std::mem::take(&mut s.logs))
        };
        if !self.has_combine {
            return Ok((emitted, logs));
        }
        let mut out = Emitted::default();
        for (key, values) in emitted {
            let v = self.fold("combine", &key, values)?;
            out.insert(key, vec![v]);
        }
        Ok((out, logs))
    }

    fn reduce(
        &self,
        key: &str,
        values: Vec<serde_json::Value>,
    ) -> Result<serde_json::Value, JobError> {
        if self.has_reduce {
            self.fold("reduce", key, values)
        } else {
            Ok(serde_json::Value::Array(values))
        }
    }

    fn memory_used(&self) -> usize {
        self.rt.memory_usage().memory_used_size.max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(code: &str, limits: Limits) -> Result<JsTask, JobError> {
        JsTask::new(
            code,
            &limits,
            Arc::new(AtomicBool::new(false)),
            ObjectInfo {
                key: "k".into(),
                version_id: "v1".into(),
                size: 3,
            },
        )
    }

    fn run(code: &str, records: &[&str], limits: Limits) -> Result<Emitted, JobError> {
        let t = task(code, limits)?;
        for r in records {
            t.map(r.as_bytes())?;
        }
        Ok(t.finish()?.0)
    }

    const WORDS: &str = r#"
        function map(line, object) { for (const w of line.split(/\s+/).filter(Boolean)) emit(w.toLowerCase(), 1); }
        function combine(key, values) { return values.reduce((a, b) => a + b, 0); }
        const reduce = combine;
    "#;

    #[test]
    fn word_count_emits_and_combines() {
        let out = run(
            WORDS,
            &["the cat", "The dog and the cat"],
            Limits::default(),
        )
        .unwrap();
        assert_eq!(out["the"], vec![serde_json::json!(3)]);
        assert_eq!(out["cat"], vec![serde_json::json!(2)]);
        let t = task(WORDS, Limits::default()).unwrap();
        assert_eq!(
            t.reduce("x", vec![serde_json::json!(2), serde_json::json!(5)])
                .unwrap(),
            serde_json::json!(7)
        );
    }

    #[test]
    fn the_object_and_logs_and_json_values_cross() {
        let t = task(
            r#"function map(r, o) { console.log("saw", o.key, o.version_id, o.size); emit(o.key, {len: r.length, tags: ["a", 1]}); }"#,
            Limits::default(),
        )
        .unwrap();
        t.map(b"hello").unwrap();
        let (out, logs) = t.finish().unwrap();
        assert_eq!(
            out["k"],
            vec![serde_json::json!({"len": 5, "tags": ["a", 1]})]
        );
        assert_eq!(logs, vec!["saw\tk\tv1\t3"]);
    }

    #[test]
    fn there_is_no_file_system_network_or_loading() {
        for code in [
            "function map() { std.open('/etc/passwd', 'r'); }",
            "function map() { os.exec(['true']); }",
            "function map() { require('fs'); }",
            "function map() { fetch('http://example.com'); }",
        ] {
            let e = run(code, &["x"], Limits::default()).unwrap_err();
            assert!(
                matches!(e, JobError::Code(ref m) if m.contains("ReferenceError")),
                "{code}: {e:?}"
            );
        }
    }
}
