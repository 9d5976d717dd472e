//! The Lua runtime (Lua 5.4, vendored through mlua). A job's code defines
//!
//! ```lua
//! function map(record, object) ... emit(key, value) ... end   -- required
//! function combine(key, values) return value end             -- optional, per task
//! function reduce(key, values) return value end              -- optional, per job
//! ```
//!
//! and may call `emit(key, value)` and `log(...)` (`print` logs too). `record` is a line
//! (without its newline) or a whole object, as the job asks; `object` is
//! `{key = ..., version_id = ..., size = ...}`.
//!
//! The sandbox: only the `string`, `table`, `math` and `utf8` libraries, and no
//! `load`, `dofile`, `loadfile`, `require` or `collectgarbage` (`pcall` and `xpcall`
//! rethrow limits): no file system, no network, no way to load other code. An instruction count, a memory limit, an output
//! limit, a wall-clock limit and the job's cancel flag are checked while code runs.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mlua::{Function, HookTriggers, Lua, LuaOptions, LuaSerdeExt, StdLib, Value, VmState};

use crate::{Emitted, JobError, Limits};

/// How often (in VM instructions) the hook checks the limits: rare enough to cost
/// nothing measurable, often enough to stop a loop within microseconds.
const CHECK_EVERY: u32 = 10_000;

/// What a running task shares with the hooks and host functions it installed.
struct TaskState {
    logs: Vec<String>,
}

/// `emit`, and the `take` function the chunk returns. Keys are strings, numbers or
/// booleans (as strings); a nil value is JSON null; going over the output limit raises
/// an error the code cannot hide (`take` reports it too).
const EMIT: &str = r#"
local max, null = ...
local type, tostring, error = type, tostring, error
local groups, bytes, over, combine_fn = {}, 0, false, nil
emit = function(k, v)
  local kt = type(k)
  if kt ~= "string" then
    if kt == "number" or kt == "boolean" then k = tostring(k)
    else error("emit: a key must be a string or a number, not a " .. kt, 2) end
  end
  if v == nil then v = null end
  local g = groups[k]
  if g == nil then g = {}; groups[k] = g end
  local n = #g + 1
  g[n] = v
  -- With a combine function, a key's values are folded as they pile up (in-mapper
  -- combining): a task's memory stays bounded by its distinct keys.
  if combine_fn ~= nil and n >= 256 then
    groups[k] = { combine_fn(k, g) }
  end
  bytes = bytes + #k + (type(v) == "string" and #v + 2 or 8)
  if bytes > max then
    over = true
    error("edgecloud-limit:output (" .. max .. " bytes)", 0)
  end
end
local function take()
  local out, o = groups, over
  groups, bytes = {}, 0
  return out, o
end
local function set_combine(f) combine_fn = f end
return take, set_combine
"#;

/// `pcall` and `xpcall` that catch the code's own errors but rethrow a limit: an error
/// from the host (a userdata: the instruction hook's limits, cancel), the output limit,
/// running out of memory, or a stack overflow.
const CATCH: &str = r#"
local raw_pcall, raw_xpcall = ...
local pack, unpack, type, find, error = table.pack, table.unpack, type, string.find, error
local function is_limit(e)
  if type(e) == "userdata" then return true end
  return type(e) == "string" and (find(e, "edgecloud-limit:", 1, true) ~= nil
    or find(e, "not enough memory", 1, true) ~= nil or find(e, "stack overflow", 1, true) ~= nil)
end
local function pass(r)
  if not r[1] and is_limit(r[2]) then error(r[2], 0) end
  return unpack(r, 1, r.n)
end
local function pcall(f, ...) return pass(pack(raw_pcall(f, ...))) end
local function xpcall(f, handler, ...)
  local limit
  local r = pack(raw_xpcall(f, function(e)
    if is_limit(e) then limit = e return e end
    return handler(e)
  end, ...))
  if not r[1] and limit ~= nil then error(limit, 0) end
  return unpack(r, 1, r.n)
end
return pcall, xpcall
"#;

/// One task's Lua state: the job's code loaded into a fresh sandbox.
pub struct LuaTask {
    lua: Lua,
    take: Function,
    map: Function,
    combine: Option<Function>,
    reduce: Option<Function>,
    state: Rc<RefCell<TaskState>>,
    limits: Limits,
}

fn lua_err(e: mlua::Error) -> JobError {
    // A Rust error raised from a hook or host function comes back wrapped in Lua's
    // call-stack context: find the limit it names.
    match e {
        mlua::Error::CallbackError { cause, .. } => lua_err((*cause).clone()),
        mlua::Error::ExternalError(ext) => match ext.downcast_ref::<JobError>() {
            Some(j) => j.clone(),
            None => JobError::Code(ext.to_string()),
        },
        mlua::Error::MemoryError(_) => JobError::Limit("memory".into()),
        mlua::Error::SyntaxError { message, .. } => JobError::Code(message),
        mlua::Error::RuntimeError(m) if m.contains("edgecloud-limit:") => JobError::Limit(
            m.split("edgecloud-limit:")
                .nth(1)
                .and_then(|rest| rest.lines().next())
                .unwrap_or("output")
                .to_string(),
        ),
        mlua::Error::RuntimeError(m) if m.contains("stack overflow") => {
            JobError::Limit("stack depth (recursion too deep)".into())
        }
        other => JobError::Code(other.to_string()),
    }
}

impl LuaTask {
    /// Loads `code` into a fresh sandbox with `limits`; `cancel` stops it from outside.
    pub fn new(code: &str, limits: &Limits, cancel: Arc<AtomicBool>) -> Result<Self, JobError> {
        let lua = Lua::new_with(
            StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8,
            LuaOptions::default(),
        )
        .map_err(lua_err)?;
        lua.set_memory_limit(limits.memory_bytes())
            .map_err(lua_err)?;
        let state = Rc::new(RefCell::new(TaskState { logs: Vec::new() }));
        let g = lua.globals();
        for unsafe_global in ["load", "dofile", "loadfile", "require", "collectgarbage"] {
            g.set(unsafe_global, Value::Nil).map_err(lua_err)?;
        }
        // A limit is a Lua error raised from the instruction hook, an allocation or
        // `emit`: pcall and xpcall rethrow those, so code cannot catch a limit and go on.
        let (pcall, xpcall): (Function, Function) = lua
            .load(CATCH)
            .set_name("pcall")
            .call((
                g.get::<Function>("pcall").map_err(lua_err)?,
                g.get::<Function>("xpcall").map_err(lua_err)?,
            ))
            .map_err(lua_err)?;
        g.set("pcall", pcall).map_err(lua_err)?;
        g.set("xpcall", xpcall).map_err(lua_err)?;

        // emit(key, value) groups values by key inside the VM (no host call per value;
        // the memory limit covers what it keeps). Its state is local to the chunk, out
        // of the code's reach; `take` hands it over at the end of the task.
        let (take, set_combine): (Function, Function) = lua
            .load(EMIT)
            .set_name("emit")
            .call((limits.output_bytes(), lua.null()))
            .map_err(lua_err)?;
        let st = state.clone();
        let log = lua
            .create_function(move |_, args: mlua::Variadic<Value>| {
                let line = args
                    .iter()
                    .map(|v| v.to_string().unwrap_or_else(|_| v.type_name().to_string()))
                    .collect::<Vec<_>>()
                    .join("\t");
                crate::sandbox::push_log(&mut st.borrow_mut().logs, line);
                Ok(())
            })
            .map_err(lua_err)?;
        g.set("log", log.clone()).map_err(lua_err)?;
        g.set("print", log).map_err(lua_err)?;

        // The limits, checked every CHECK_EVERY instructions.
        let instructions = limits.instructions;
        let deadline = Instant::now() + limits.wall_time();
        let counted = std::cell::Cell::new(0u64);
        let seconds = limits.seconds;
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(CHECK_EVERY),
            move |_, _| {
                counted.set(counted.get() + u64::from(CHECK_EVERY));
                let over = if counted.get() > instructions {
                    Some(format!("instructions ({instructions})"))
                } else if Instant::now() > deadline {
                    Some(format!("time ({seconds} s)"))
                } else if cancel.load(Ordering::Relaxed) {
                    return Err(mlua::Error::external(JobError::Cancelled));
                } else {
                    None
                };
                match over {
                    Some(which) => Err(mlua::Error::external(JobError::Limit(which))),
                    None => Ok(VmState::Continue),
                }
            },
        )
        .map_err(lua_err)?;

        lua.load(code).set_name("job").exec().map_err(lua_err)?;
        let function = |name: &str| -> Result<Option<Function>, JobError> {
            match g.get::<Value>(name).map_err(lua_err)? {
                Value::Function(f) => Ok(Some(f)),
                Value::Nil => Ok(None),
                other => Err(JobError::Code(format!(
                    "`{name}` must be a function, not a {}",
                    other.type_name()
                ))),
            }
        };
        let map = function("map")?.ok_or_else(|| {
            JobError::Code("the code defines no `map(record, object)` function".into())
        })?;
        let combine = function("combine")?;
        if let Some(c) = &combine {
            set_combine.call::<()>(c.clone()).map_err(lua_err)?;
        }
        let reduce = function("reduce")?;
        Ok(LuaTask {
            lua,
            take,
            map,
            combine,
            reduce,
            state,
            limits: limits.clone(),
        })
    }

    /// The object a task reads, as `map`'s second argument.
    pub fn object(&self, key: &str, version_id: &str, size: u64) -> Result<Value, JobError> {
        let t = self.lua.create_table().map_err(lua_err)?;
        t.set("key", key).map_err(lua_err)?;
        t.set("version_id", version_id).map_err(lua_err)?;
        t.set("size", size).map_err(lua_err)?;
        Ok(Value::Table(t))
    }

    /// Calls `map(record, object)`.
    pub fn map(&self, record: &[u8], object: &Value) -> Result<(), JobError> {
        let record = self.lua.create_string(record).map_err(|e| self.error(e))?;
        self.map
            .call::<()>((record, object.clone()))
            .map_err(|e| self.error(e))
    }

    /// An error of the code, named as the memory limit when the state is (nearly) out
    /// of memory: an allocation failing inside a library or a metamethod does not
    /// always come back as Lua's memory error.
    fn error(&self, e: mlua::Error) -> JobError {
        let limit = self.limits.memory_bytes();
        match lua_err(e) {
            JobError::Code(_) if limit > 0 && self.lua.used_memory() >= limit / 10 * 9 => {
                JobError::Limit("memory".into())
            }
            other => other,
        }
    }

    fn fold(
        &self,
        f: &Function,
        key: &str,
        values: Vec<serde_json::Value>,
    ) -> Result<serde_json::Value, JobError> {
        let values = self.lua.to_value(&values).map_err(lua_err)?;
        let out: Value = f.call((key, values)).map_err(lua_err)?;
        self.lua.from_value(out).map_err(lua_err)
    }

    /// What the task emitted, each key's values folded by `combine` when there is one;
    /// and its log lines. Leaves the task empty.
    pub fn finish(&self) -> Result<(Emitted, Vec<String>), JobError> {
        let logs = std::mem::take(&mut self.state.borrow_mut().logs);
        let (groups, over): (mlua::Table, bool) = self.take.call(()).map_err(lua_err)?;
        if over {
            return Err(JobError::Limit(format!(
                "output ({} bytes)",
                self.limits.output_bytes()
            )));
        }
        let mut out = Emitted::default();
        for pair in groups.pairs::<String, mlua::Table>() {
            let (key, values) = pair.map_err(lua_err)?;
            let values = match &self.combine {
                Some(combine) => {
                    let v: Value = combine.call((key.as_str(), values)).map_err(lua_err)?;
                    vec![self.lua.from_value(v).map_err(lua_err)?]
                }
                None => self.lua.from_value(Value::Table(values)).map_err(lua_err)?,
            };
            out.insert(key, values);
        }
        Ok((out, logs))
    }

    /// `reduce(key, values)` for one key of the whole job.
    pub fn reduce(
        &self,
        key: &str,
        values: Vec<serde_json::Value>,
    ) -> Result<serde_json::Value, JobError> {
        match &self.reduce {
            Some(f) => self.fold(f, key, values),
            None => Ok(serde_json::Value::Array(values)),
        }
    }

    /// Bytes the task's Lua state uses now.
    pub fn memory_used(&self) -> usize {
        self.lua.used_memory()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(code: &str, limits: Limits) -> Result<LuaTask, JobError> {
        LuaTask::new(code, &limits, Arc::new(AtomicBool::new(false)))
    }

    fn run(code: &str, records: &[&str], limits: Limits) -> Result<Emitted, JobError> {
        let t = task(code, limits)?;
        let o = t.object("k", "v1", 3)?;
        for r in records {
            t.map(r.as_bytes(), &o)?;
        }
        Ok(t.finish()?.0)
    }

    const WORDS: &str = r#"
        function map(line, object)
            for w in line:gmatch("%a+") do emit(w:lower(), 1) end
        end
        function combine(key, values)
            local n = 0
            for _, v in ipairs(values) do n = n + v end
            return n
        end
        reduce = combine
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
        assert_eq!(out["dog"], vec![serde_json::json!(1)]);
    }

    #[test]
    fn the_object_is_passed_and_logs_are_kept() {
        let t = task(
            r#"function map(r, o) log("saw", o.key, o.version_id, o.size); emit(o.key, #r) end"#,
            Limits::default(),
        )
        .unwrap();
        let o = t.object("a/b.txt", "v9", 11).unwrap();
        t.map(b"hello", &o).unwrap();
        let (out, logs) = t.finish().unwrap();
        assert_eq!(out["a/b.txt"], vec![serde_json::json!(5)]);
        assert_eq!(logs, vec!["saw\ta/b.txt\tv9\t11"]);
    }

    #[test]
    fn the_sandbox_has_no_files_network_or_loading() {
        for code in [
            "function map() io.open('/etc/passwd') end",
            "function map() os.execute('true') end",
            "function map() load('return 1')() end",
            "function map() dofile('/etc/passwd') end",
            "function map() require('socket') end",
            "function map() debug.getinfo(1) end",
        ] {
            let e = run(code, &["x"], Limits::default()).unwrap_err();
            assert!(matches!(e, JobError::Code(_)), "{code}: {e:?}");
        }
    }

    /// pcall and xpcall catch the code's errors, and rethrow every limit.
    #[test]
    fn pcall_catches_errors_but_not_limits() {
        let out = run(
            "function map(l) local ok, e = pcall(error, 'caught', 0) emit('p', {ok, e}) \
             local ok2, e2 = xpcall(function() error({code = 7}) end, function(x) return x.code end) \
             emit('x', {ok2, e2}) end",
            &["x"],
            Limits::default(),
        )
        .unwrap();
        assert_eq!(out["p"], vec![serde_json::json!([false, "caught"])]);
        assert_eq!(out["x"], vec![serde_json::json!([false, 7])]);
        let tight = Limits {
            instructions: 1_000_000,
            memory_mb: 8,
            output_mb: 1,
            ..Limits::default()
        };
        for (code, limit) in [
            (
                "function map() while true do pcall(function() while true do end end) end end",
                "instructions",
            ),
            (
                "function map() while true do xpcall(function() while true do end end, function() end) end end",
                "instructions",
            ),
            (
                "function map() local t = {} while true do pcall(function() t[#t + 1] = string.rep('x', 4096) .. #t end) end end",
                "memory",
            ),
            (
                "function map() for i = 1, 1e7 do pcall(emit, 'k' .. i, string.rep('v', 100)) end end",
                "output",
            ),
        ] {
            let e = run(code, &["x"], tight.clone()).unwrap_err();
            assert!(
                matches!(&e, JobError::Limit(m) if m.starts_with(limit)),
                "{code}: {e:?}"
            );
        }
    }

    #[test]
    fn values_group_by_key_and_nil_is_null() {
        let out = run(
            "function map(l) emit(1, nil) emit('1', {a = 2}) emit(true, l) end",
            &["x"],
            Limits::default(),
        )
        .unwrap();
        assert_eq!(
            out["1"],
            vec![serde_json::Value::Null, serde_json::json!({"a": 2})]
        );
        assert_eq!(out["true"], vec![serde_json::json!("x")]);
    }
}
