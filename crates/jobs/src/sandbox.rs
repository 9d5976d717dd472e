//! One interface over the runtimes: a task's code in a fresh sandbox, fed records, asked
//! for what it emitted. Lua ([`crate::lua`]) and JavaScript ([`crate::js`]) offer the same
//! host API (`map`, `combine`, `reduce`; `emit`, `log`).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::{Emitted, JobError, Limits};

/// The runtimes a job may ask for.
pub const RUNTIMES: &[&str] = &["lua", "javascript"];

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
        other => Err(JobError::Invalid(format!(
            "runtime {other:?}: use one of {} (WebAssembly and Python are planned, see docs/jobs.md)",
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
