//! The WebAssembly runtime (wasmi, an interpreter: it builds in seconds and needs no JIT).
//! A module compiled from Go (`GOOS=wasip1 -buildmode=c-shared`), Rust, C or written in
//! WAT offers the same host API as Lua and JavaScript through this ABI:
//!
//! Exports: `memory`; `alloc(len: i32) -> i32` (a buffer the host may write into and
//! the module keeps); `map(ptr: i32, len: i32)`, called per record; optionally
//! `combine(key_ptr, key_len, values_ptr, values_len) -> i32` and `reduce(...)` with the
//! values as a JSON array, which answer through `result` and return 1 (0: "I have no
//! combine/reduce"); optionally `_initialize` (a WASI reactor's start).
//!
//! Imports, module `edgecloud`: `emit(key_ptr, key_len, value_ptr, value_len)` (the value
//! is JSON text), `log(ptr, len)`, `result(ptr, len)` and `object(ptr, cap) -> i32`
//! (writes `{"key","version_id","size"}` as JSON when it fits in `cap`, returns its
//! length). Module `wasi_snapshot_preview1`: only what a language's runtime needs to
//! start (clocks, random, stdout and stderr as log lines, empty args and environment);
//! every file, socket or process call answers ENOSYS or EBADF. There is no file system
//! or network to reach.
//!
//! Limits: instructions (wasmi fuel; the wall-time limit and cancel are checked between
//! calls), memory (the store's limiter; growing past it traps),
//! output (counted in `emit`), and recursion depth (the engine's call stack limit).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use base64::Engine as _;
use wasmi::{
    Caller, Config, Engine, Extern, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder,
    TypedFunc, Val, WasmParams, WasmResults,
};

use crate::sandbox::{ObjectInfo, Sandbox};
use crate::{Emitted, JobError, Limits};

/// Fuel per instruction of `limits.instructions`. wasmi's fuel is not one per executed
/// instruction for every shape of code: a Go word count spent ~2 million fuel per
/// 80-byte line in 180 µs (~10 GFuel/s), far more than an interpreter executes in that
/// time, so Go's code is charged well beyond what it runs. A factor of 10 gives a
/// default Go task some 20 s of work.
const FUEL_PER_INSTRUCTION: u64 = 10;
/// Nested calls before a stack overflow (a Go program needs a few hundred).
const MAX_RECURSION: usize = 4096;
/// Compiled modules kept, by their code's SHA-256: a job's tasks compile once.
const MODULE_CACHE: usize = 16;

const WASI: &str = "wasi_snapshot_preview1";
const ERRNO_BADF: i32 = 8;
const ERRNO_NOSYS: i32 = 52;
const ERRNO_INVAL: i32 = 28;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut c = Config::default();
        c.consume_fuel(true);
        c.set_max_recursion_depth(MAX_RECURSION);
        Engine::new(&c)
    })
}

/// A module and the host functions it imports.
struct Compiled {
    module: Module,
    linker: Linker<Host>,
}

/// The module for `code`: base64 of a binary module (it starts with `AGFzbQ`, "\0asm"),
/// or WAT text. Compiled and linked once per distinct code.
fn compile(code: &str) -> Result<Arc<Compiled>, JobError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Compiled>>>> = OnceLock::new();
    let id = crate::sha256_hex(code.as_bytes());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(m) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return Ok(m.clone());
    }
    let trimmed = code.trim();
    let bytes = if trimmed.starts_with("AGFzbQ") {
        let compact: String = trimmed.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| JobError::Code(format!("the module is not valid base64: {e}")))?
    } else {
        trimmed.as_bytes().to_vec()
    };
    let module = Module::new(engine(), &bytes)
        .map_err(|e| JobError::Code(format!("not a valid WebAssembly module: {e}")))?;
    let linker = link(&module).map_err(|e| JobError::Code(e.to_string()))?;
    let m = Arc::new(Compiled { module, linker });
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= MODULE_CACHE {
        c.clear();
    }
    c.insert(id, m.clone());
    Ok(m)
}

/// What the host functions see and collect.
struct Host {
    limits: StoreLimits,
    emitted: Emitted,
    output_bytes: u64,
    max_output: u64,
    logs: Vec<String>,
    /// stdout and stderr bytes not yet ended by a newline.
    partial: Vec<u8>,
    object: Vec<u8>,
    /// What `combine`/`reduce` answered through `result`.
    result: Option<Vec<u8>>,
    /// Why a host function stopped the code (a limit, or bad arguments).
    failed: Option<JobError>,
}

impl Host {
    fn log(&mut self, line: String) {
        crate::sandbox::push_log(&mut self.logs, line);
    }

    /// Output written to stdout or stderr becomes log lines.
    fn write_stdio(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            self.log(String::from_utf8_lossy(&line[..nl]).into_owned());
        }
        if self.partial.len() > 64 * 1024 {
            let line = std::mem::take(&mut self.partial);
            self.log(String::from_utf8_lossy(&line).into_owned());
        }
    }

    /// Counts bytes emitted or written against the output limit.
    fn count_output(&mut self, bytes: usize) -> Result<(), wasmi::Error> {
        self.output_bytes += bytes as u64;
        if self.output_bytes > self.max_output {
            let max = self.max_output;
            return Err(self.stop(JobError::Limit(format!("output ({max} bytes)"))));
        }
        Ok(())
    }

    fn stop(&mut self, why: JobError) -> wasmi::Error {
        let m = why.to_string();
        self.failed.get_or_insert(why);
        wasmi::Error::new(m)
    }
}

fn memory(caller: &Caller<'_, Host>) -> Option<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

/// `len` bytes of the module's memory at `ptr`, or a stop for bad arguments.
fn read(caller: &mut Caller<'_, Host>, ptr: i32, len: i32) -> Result<Vec<u8>, wasmi::Error> {
    let bad = |c: &mut Caller<'_, Host>| {
        c.data_mut().stop(JobError::Code(format!(
            "a host call passed memory out of bounds ({ptr}, {len})"
        )))
    };
    let Some(mem) = memory(caller) else {
        return Err(bad(caller));
    };
    let mut buf = vec![0u8; len.max(0) as usize];
    if len < 0 || mem.read(&*caller, ptr as u32 as usize, &mut buf).is_err() {
        return Err(bad(caller));
    }
    Ok(buf)
}

fn write(caller: &mut Caller<'_, Host>, ptr: i32, bytes: &[u8]) -> bool {
    memory(caller).is_some_and(|m| m.write(&mut *caller, ptr as u32 as usize, bytes).is_ok())
}

/// The WASI functions defined here; a module's other WASI imports answer ENOSYS.
const WASI_DEFINED: &[&str] = &[
    "fd_write",
    "fd_read",
    "fd_fdstat_get",
    "fd_prestat_get",
    "clock_time_get",
    "clock_res_get",
    "random_get",
    "args_sizes_get",
    "args_get",
    "environ_sizes_get",
    "environ_get",
    "sched_yield",
    "proc_exit",
];

/// The host functions for `module`. Every WASI function it imports that is not
/// defined here answers ENOSYS: a language runtime links against calls (files, sockets)
/// it may never make, and each is refused if it does. Any other import is an error.
fn link(module: &Module) -> Result<Linker<Host>, JobError> {
    let fail = |e: wasmi::errors::LinkerError| JobError::Code(e.to_string());
    let mut l = Linker::new(engine());
    define_edgecloud(&mut l).map_err(fail)?;
    define_wasi(&mut l).map_err(fail)?;
    for import in module.imports() {
        let (m, name) = (import.module(), import.name());
        if m == WASI && !WASI_DEFINED.contains(&name) {
            let Some(ty) = import.ty().func() else {
                continue;
            };
            if ty.results() == [wasmi::ValType::I32] {
                l.func_new(m, name, ty.clone(), |_, _, out: &mut [Val]| {
                    out[0] = Val::I32(ERRNO_NOSYS);
                    Ok(())
                })
                .map_err(fail)?;
            }
        } else if m != WASI && m != "edgecloud" {
            return Err(JobError::Code(format!(
                "the module imports {m}.{name}; only the `edgecloud` and `{WASI}` functions exist (docs/jobs.md)"
            )));
        }
    }
    Ok(l)
}

fn define_edgecloud(l: &mut Linker<Host>) -> Result<(), wasmi::errors::LinkerError> {
    l.func_wrap(
        "edgecloud",
        "emit",
        |mut c: Caller<'_, Host>, kp: i32, kl: i32, vp: i32, vl: i32| -> Result<(), wasmi::Error> {
            let key = read(&mut c, kp, kl)?;
            let value = read(&mut c, vp, vl)?;
            let h = c.data_mut();
            h.count_output(key.len() + value.len())?;
            let value = match serde_json::from_slice(&value) {
                Ok(v) => v,
                Err(e) => {
                    return Err(h.stop(JobError::Code(format!("emit: the value is not JSON: {e}"))));
                }
            };
            let key = String::from_utf8_lossy(&key).into_owned();
            h.emitted.entry(key).or_default().push(value);
            Ok(())
        },
    )?;
    l.func_wrap(
        "edgecloud",
        "log",
        |mut c: Caller<'_, Host>, p: i32, n: i32| -> Result<(), wasmi::Error> {
            let line = read(&mut c, p, n)?;
            c.data_mut()
                .log(String::from_utf8_lossy(&line).into_owned());
            Ok(())
        },
    )?;
    l.func_wrap(
        "edgecloud",
        "result",
        |mut c: Caller<'_, Host>, p: i32, n: i32| -> Result<(), wasmi::Error> {
            let r = read(&mut c, p, n)?;
            c.data_mut().result = Some(r);
            Ok(())
        },
    )?;
    l.func_wrap(
        "edgecloud",
        "object",
        |mut c: Caller<'_, Host>, p: i32, cap: i32| -> i32 {
            let o = c.data().object.clone();
            if o.len() <= cap.max(0) as usize && !write(&mut c, p, &o) {
                return -1;
            }
            o.len() as i32
        },
    )?;
    Ok(())
}

fn define_wasi(l: &mut Linker<Host>) -> Result<(), wasmi::errors::LinkerError> {
    l.func_wrap(
        WASI,
        "fd_write",
        |mut c: Caller<'_, Host>,
         fd: i32,
         iovs: i32,
         n: i32,
         written: i32|
         -> Result<i32, wasmi::Error> {
            if fd != 1 && fd != 2 {
                return Ok(ERRNO_BADF);
            }
            let mut total = 0u32;
            for i in 0..n.max(0) {
                let iov = read(&mut c, iovs + i * 8, 8)?;
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                let bytes = read(&mut c, ptr, len)?;
                total += bytes.len() as u32;
                let h = c.data_mut();
                h.count_output(bytes.len())?;
                h.write_stdio(&bytes);
            }
            Ok(if write(&mut c, written, &total.to_le_bytes()) {
                0
            } else {
                ERRNO_INVAL
            })
        },
    )?;
    l.func_wrap(
        WASI,
        "fd_read",
        |mut c: Caller<'_, Host>, fd: i32, _iovs: i32, _n: i32, read: i32| -> i32 {
            // stdin is empty: records come through `map`.
            if fd != 0 {
                return ERRNO_BADF;
            }
            if write(&mut c, read, &0u32.to_le_bytes()) {
                0
            } else {
                ERRNO_INVAL
            }
        },
    )?;
    l.func_wrap(
        WASI,
        "fd_fdstat_get",
        |mut c: Caller<'_, Host>, fd: i32, out: i32| -> i32 {
            if !(0..=2).contains(&fd) {
                return ERRNO_BADF;
            }
            // A character device with no flags; rights: read (0) or write (6).
            let mut stat = [0u8; 24];
            stat[0] = 2;
            let rights: u64 = if fd == 0 { 1 << 1 } else { 1 << 6 };
            stat[8..16].copy_from_slice(&rights.to_le_bytes());
            if write(&mut c, out, &stat) {
                0
            } else {
                ERRNO_INVAL
            }
        },
    )?;
    l.func_wrap(
        WASI,
        "fd_prestat_get",
        |_: Caller<'_, Host>, _: i32, _: i32| -> i32 {
            ERRNO_BADF // no preopened directories: no file system
        },
    )?;
    l.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Caller<'_, Host>, _id: i32, _precision: i64, out: i32| -> i32 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            if write(&mut c, out, &now.to_le_bytes()) {
                0
            } else {
                ERRNO_INVAL
            }
        },
    )?;
    l.func_wrap(
        WASI,
        "clock_res_get",
        |mut c: Caller<'_, Host>, _id: i32, out: i32| -> i32 {
            if write(&mut c, out, &1u64.to_le_bytes()) {
                0
            } else {
                ERRNO_INVAL
            }
        },
    )?;
    l.func_wrap(
        WASI,
        "random_get",
        |mut c: Caller<'_, Host>, p: i32, n: i32| -> Result<i32, wasmi::Error> {
            let mut buf = vec![0u8; n.clamp(0, 1 << 20) as usize];
            if getrandom::fill(&mut buf).is_err() {
                return Ok(ERRNO_NOSYS);
            }
            Ok(if write(&mut c, p, &buf) {
                0
            } else {
                ERRNO_INVAL
            })
        },
    )?;
    for (sizes, _) in [
        ("args_sizes_get", "args_get"),
        ("environ_sizes_get", "environ_get"),
    ] {
        l.func_wrap(
            WASI,
            sizes,
            |mut c: Caller<'_, Host>, count: i32, size: i32| -> i32 {
                let ok = write(&mut c, count, &0u32.to_le_bytes())
                    && write(&mut c, size, &0u32.to_le_bytes());
                if ok { 0 } else { ERRNO_INVAL }
            },
        )?;
    }
    for get in ["args_get", "environ_get"] {
        l.func_wrap(WASI, get, |_: Caller<'_, Host>, _: i32, _: i32| -> i32 {
            0
        })?;
    }
    l.func_wrap(WASI, "sched_yield", |_: Caller<'_, Host>| -> i32 { 0 })?;
    l.func_wrap(
        WASI,
        "proc_exit",
        |mut c: Caller<'_, Host>, code: i32| -> Result<(), wasmi::Error> {
            Err(c.data_mut().stop(JobError::Code(format!(
                "the module exited with status {code}"
            ))))
        },
    )?;
    Ok(())
}

/// One task's module instance.
pub struct WasmTask {
    store: RefCell<Store<Host>>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    map: TypedFunc<(i32, i32), ()>,
    combine: Option<TypedFunc<(i32, i32, i32, i32), i32>>,
    reduce: Option<TypedFunc<(i32, i32, i32, i32), i32>>,
    /// A buffer in the module's memory the host reuses for records: (pointer, capacity).
    buffer: RefCell<(i32, usize)>,
    /// Fuel left for the whole task.
    fuel: RefCell<u64>,
    deadline: Instant,
    limits: Limits,
    cancel: Arc<AtomicBool>,
}

impl WasmTask {
    /// Instantiates `code` for one task.
    pub fn new(
        code: &str,
        limits: &Limits,
        cancel: Arc<AtomicBool>,
        object: &ObjectInfo,
    ) -> Result<Self, JobError> {
        let compiled = compile(code)?;
        let host = Host {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes())
                .trap_on_grow_failure(true)
                .build(),
            emitted: Emitted::default(),
            output_bytes: 0,
            max_output: limits.output_bytes(),
            logs: Vec::new(),
            partial: Vec::new(),
            object: serde_json::to_vec(&serde_json::json!({
                "key": object.key, "version_id": object.version_id, "size": object.size,
            }))
            .unwrap_or_default(),
            result: None,
            failed: None,
        };
        let mut store = Store::new(engine(), host);
        store.limiter(|h| &mut h.limits);
        let instance = compiled
            .linker
            .instantiate_and_start(&mut store, &compiled.module)
            .map_err(|e| {
                if e.to_string().contains("limit") || e.to_string().contains("memory") {
                    JobError::Limit(format!("memory ({} MiB)", limits.memory_mb))
                } else {
                    JobError::Code(format!("cannot start the module: {e}"))
                }
            })?;
        let missing =
            |what: &str| JobError::Code(format!("the module exports no {what} (docs/jobs.md)"));
        let memory = instance
            .get_memory(&store, "memory")
            .ok_or_else(|| missing("`memory`"))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&store, "alloc")
            .map_err(|_| missing("`alloc(len: i32) -> i32`"))?;
        let map = instance
            .get_typed_func::<(i32, i32), ()>(&store, "map")
            .map_err(|_| missing("`map(ptr: i32, len: i32)`"))?;
        let fold = |name: &str| {
            instance
                .get_typed_func::<(i32, i32, i32, i32), i32>(&store, name)
                .ok()
        };
        let (combine, reduce) = (fold("combine"), fold("reduce"));
        let init = instance
            .get_typed_func::<(), ()>(&store, "_initialize")
            .ok();
        let task = WasmTask {
            store: RefCell::new(store),
            memory,
            alloc,
            map,
            combine,
            reduce,
            buffer: RefCell::new((0, 0)),
            fuel: RefCell::new(limits.instructions.saturating_mul(FUEL_PER_INSTRUCTION)),
            deadline: Instant::now() + limits.wall_time(),
            limits: limits.clone(),
            cancel,
        };
        if let Some(init) = init {
            task.call(&init, ())?;
        }
        Ok(task)
    }

    /// Calls `f` with the fuel the task has left. The time limit and cancel are checked
    /// before each call, not during one: wasmi cannot be interrupted from outside, and
    /// in wasmi 2.0.0 running out of fuel inside `memory.grow` or a bulk memory operation
    /// is not resumable, so fuel cannot be handed out in slices (docs/decisions.md). The
    /// instruction limit bounds every call.
    fn call<P: WasmParams, R: WasmResults>(
        &self,
        f: &TypedFunc<P, R>,
        params: P,
    ) -> Result<R, JobError> {
        if Instant::now() > self.deadline {
            return Err(JobError::Limit(format!("time ({} s)", self.limits.seconds)));
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(JobError::Cancelled);
        }
        let mut store = self.store.borrow_mut();
        let mut fuel = self.fuel.borrow_mut();
        store
            .set_fuel(*fuel)
            .map_err(|e| JobError::Code(e.to_string()))?;
        let result = f.call(&mut *store, params);
        *fuel = store.get_fuel().unwrap_or(0);
        result.map_err(|e| self.failure(&mut store, e))
    }

    fn failure(&self, store: &mut Store<Host>, e: wasmi::Error) -> JobError {
        if let Some(why) = store.data_mut().failed.take() {
            return why;
        }
        match e.as_trap_code() {
            Some(wasmi::TrapCode::StackOverflow) => {
                JobError::Limit("stack depth (recursion too deep)".into())
            }
            Some(wasmi::TrapCode::GrowthOperationLimited) => {
                JobError::Limit(format!("memory ({} MiB)", self.limits.memory_mb))
            }
            Some(wasmi::TrapCode::OutOfFuel) => {
                JobError::Limit(format!("instructions ({})", self.limits.instructions))
            }
            _ if matches!(e.kind(), wasmi::errors::ErrorKind::ResumableOutOfFuel(_)) => {
                JobError::Limit(format!("instructions ({})", self.limits.instructions))
            }
            _ => JobError::Code(format!("the module trapped: {e}")),
        }
    }

    /// Copies `parts` one after the other into the module's buffer (grown with `alloc`
    /// when too small) and returns where each starts.
    fn place(&self, parts: &[&[u8]]) -> Result<Vec<(i32, i32)>, JobError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > i32::MAX as usize {
            return Err(JobError::Limit(format!(
                "memory ({} MiB)",
                self.limits.memory_mb
            )));
        }
        let (mut ptr, cap) = *self.buffer.borrow();
        if len > cap || cap == 0 {
            let want = len.max(cap * 2).max(4096);
            ptr = self.call(&self.alloc, want as i32)?;
            *self.buffer.borrow_mut() = (ptr, want);
        }
        let mut store = self.store.borrow_mut();
        let mut at = ptr;
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            self.memory
                .write(&mut *store, at as u32 as usize, p)
                .map_err(|_| {
                    JobError::Code("`alloc` returned a buffer outside the module's memory".into())
                })?;
            out.push((at, p.len() as i32));
            at += p.len() as i32;
        }
        Ok(out)
    }

    /// Runs `combine` or `reduce`; None when the module has none (or says so).
    fn fold(
        &self,
        f: Option<&TypedFunc<(i32, i32, i32, i32), i32>>,
        key: &str,
        values: &[serde_json::Value],
    ) -> Result<Option<serde_json::Value>, JobError> {
        let Some(f) = f else { return Ok(None) };
        let values = serde_json::to_vec(values).map_err(|e| JobError::Code(e.to_string()))?;
        let at = self.place(&[key.as_bytes(), &values])?;
        self.store.borrow_mut().data_mut().result = None;
        let answered = self.call(f, (at[0].0, at[0].1, at[1].0, at[1].1))?;
        if answered == 0 {
            return Ok(None);
        }
        let r = self
            .store
            .borrow_mut()
            .data_mut()
            .result
            .take()
            .unwrap_or_default();
        serde_json::from_slice(&r).map(Some).map_err(|e| {
            JobError::Code(format!(
                "combine/reduce passed `result` something not JSON: {e}"
            ))
        })
    }
}

impl Sandbox for WasmTask {
    fn map(&self, record: &[u8]) -> Result<(), JobError> {
        let at = self.place(&[record])?;
        self.call(&self.map, at[0])
    }

    fn finish(&self) -> Result<(Emitted, Vec<String>), JobError> {
        let (emitted, logs) = {
            let mut store = self.store.borrow_mut();
            let h = store.data_mut();
            if !h.partial.is_empty() {
                let line = std::mem::take(&mut h.partial);
                h.log(String::from_utf8_lossy(&line).into_owned());
            }
            (std::mem::take(&mut h.emitted), std::mem::take(&mut h.logs))
        };
        let mut out = Emitted::default();
        for (key, values) in emitted {
            match self.fold(self.combine.as_ref(), &key, &values)? {
                Some(v) => out.insert(key, vec![v]),
                None => out.insert(key, values),
            };
        }
        Ok((out, logs))
    }

    fn reduce(
        &self,
        key: &str,
        values: Vec<serde_json::Value>,
    ) -> Result<serde_json::Value, JobError> {
        Ok(match self.fold(self.reduce.as_ref(), key, &values)? {
            Some(v) => v,
            None => serde_json::Value::Array(values),
        })
    }

    fn memory_used(&self) -> usize {
        self.memory.data_size(&*self.store.borrow())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(code: &str) -> Result<WasmTask, JobError> {
        let object = ObjectInfo {
            key: "logs/a.txt".into(),
            version_id: "v1".into(),
            size: 3,
        };
        WasmTask::new(
            code,
            &Limits::default(),
            Arc::new(AtomicBool::new(false)),
            &object,
        )
    }

    /// `map` emits the record as the key with the value 1, logs the object's JSON, and
    /// writes "hi\n" to stdout; `combine` answers the JSON `[key length, values]`.
    const ECHO: &str = r#"(module
  (import "edgecloud" "emit" (func $emit (param i32 i32 i32 i32)))
  (import "edgecloud" "log" (func $log (param i32 i32)))
  (import "edgecloud" "object" (func $object (param i32 i32) (result i32)))
  (import "edgecloud" "result" (func $result (param i32 i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "1")
  (data (i32.const 32) "hi\n")
  (data (i32.const 48) "\20\00\00\00\03\00\00\00")
  (data (i32.const 64) "42")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "map") (param $p i32) (param $n i32)
    (call $emit (local.get $p) (local.get $n) (i32.const 16) (i32.const 1))
    (call $log (i32.const 512) (call $object (i32.const 512) (i32.const 256)))
    (drop (call $fd_write (i32.const 1) (i32.const 48) (i32.const 1) (i32.const 56))))
  (func (export "combine") (param i32 i32 i32 i32) (result i32)
    (call $result (i32.const 64) (i32.const 2))
    (i32.const 1))
  (func (export "opens") (result i32)
    (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0))))"#;

    #[test]
    fn records_emits_logs_stdout_and_combine_cross_the_abi() {
        let t = task(ECHO).unwrap();
        t.map(b"apple").unwrap();
        t.map(b"apple").unwrap();
        t.map(b"pear").unwrap();
        let (out, logs) = t.finish().unwrap();
        assert_eq!(out["apple"], vec![serde_json::json!(42)]);
        assert_eq!(out["pear"], vec![serde_json::json!(42)]);
        assert_eq!(
            logs[0],
            r#"{"key":"logs/a.txt","size":3,"version_id":"v1"}"#
        );
        assert_eq!(logs[1], "hi");
        // No `reduce` export: the values, as a list.
        assert_eq!(
            t.reduce("x", vec![serde_json::json!(1), serde_json::json!(2)])
                .unwrap(),
            serde_json::json!([1, 2])
        );
    }

    #[test]
    fn there_is_no_file_system_and_no_other_imports() {
        let inst_call = {
            let compiled = compile(ECHO).unwrap();
            let mut store = Store::new(
                engine(),
                Host {
                    limits: StoreLimitsBuilder::new().build(),
                    emitted: Emitted::default(),
                    output_bytes: 0,
                    max_output: 1 << 20,
                    logs: Vec::new(),
                    partial: Vec::new(),
                    object: Vec::new(),
                    result: None,
                    failed: None,
                },
            );
            store.set_fuel(1_000_000).unwrap();
            let i = compiled
                .linker
                .instantiate_and_start(&mut store, &compiled.module)
                .unwrap();
            let opens = i.get_typed_func::<(), i32>(&store, "opens").unwrap();
            opens.call(&mut store, ()).unwrap()
        };
        assert_eq!(inst_call, ERRNO_NOSYS, "path_open must answer ENOSYS");
        let e = task(
            r#"(module (import "env" "system" (func (param i32))) (memory (export "memory") 1))"#,
        )
        .err()
        .unwrap();
        assert!(
            matches!(&e, JobError::Code(m) if m.contains("env.system")),
            "{e:?}"
        );
    }

    #[test]
    fn a_value_that_is_not_json_or_memory_out_of_bounds_is_the_codes_error() {
        let bad_json = crate::sandbox::tests::wat(
            "(call $emit (i32.const 16) (i32.const 2) (i32.const 16) (i32.const 2))",
        );
        let e = task(&bad_json).unwrap().map(b"x").unwrap_err();
        assert!(
            matches!(&e, JobError::Code(m) if m.contains("not JSON")),
            "{e:?}"
        );
        let oob = crate::sandbox::tests::wat(
            "(call $emit (i32.const 16) (i32.const 2) (i32.const 65530) (i32.const 100))",
        );
        let e = task(&oob).unwrap().map(b"x").unwrap_err();
        assert!(
            matches!(&e, JobError::Code(m) if m.contains("out of bounds")),
            "{e:?}"
        );
    }
}
