//! A container's seccomp filter, compiled once per node and installed by the container's
//! init right before it executes the command. libcontainer would compile the profile in
//! every container's init with libseccomp: 11 ms of a 30 ms start for Docker's profile
//! on x86-64 (its 32-bit architectures triple the work), so the node compiles it here,
//! once, with the same library and the same translation of the OCI profile, and each
//! container loads the result with one `seccomp` call. crun caches its filters too.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use libcontainer::oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, Spec,
};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};

use crate::{ContainerError, Result};

/// The compiled program's file, next to the bundle's `config.json`.
pub const PROGRAM_FILE: &str = "seccomp.bpf";

fn invalid(e: impl std::fmt::Display) -> ContainerError {
    ContainerError::Runtime(format!("compiling the seccomp profile: {e}"))
}

/// Compiles `profile` (an OCI `linux.seccomp` object) to a BPF program, as libcontainer
/// would in the container (its `seccomp::initialize_seccomp`): same actions, argument
/// comparisons, architectures and skipped unknown system calls; no-new-privileges left
/// to the spec. Notify actions are refused (nothing here listens).
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<u8>> {
    let action = |a: LinuxSeccompAction, errno: Option<u32>| {
        let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
        Ok(match a {
            LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
                ScmpAction::KillThread
            }
            LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
            LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
            LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
            LinuxSeccompAction::ScmpActTrace => {
                ScmpAction::Trace(u16::try_from(errno).map_err(invalid)?)
            }
            LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
            LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
            LinuxSeccompAction::ScmpActNotify => {
                return Err(invalid("SCMP_ACT_NOTIFY is not supported"));
            }
        })
    };
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(invalid)?;
    ctx.set_ctl_nnp(false).map_err(invalid)?;
    if profile.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(invalid("filter flags are not supported"));
    }
    for arch in profile.architectures().iter().flatten() {
        let name = serde_json::to_value(arch).map_err(invalid)?;
        let arch: ScmpArch = name.as_str().unwrap_or_default().parse().map_err(invalid)?;
        ctx.add_arch(arch).map_err(invalid)?;
    }
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue; // redundant, and libseccomp refuses it
        }
        let compares: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|arg| {
                let op = match arg.op() {
                    LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
                    LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
                    LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
                    LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
                    LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
                    LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
                    LinuxSeccompOperator::ScmpCmpMaskedEq => {
                        ScmpCompareOp::MaskedEqual(arg.value_two().unwrap_or(0))
                    }
                };
                ScmpArgCompare::new(arg.index() as u32, op, arg.value())
            })
            .collect();
        let mut indexes: Vec<usize> = rule.args().iter().flatten().map(|a| a.index()).collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            // A call this kernel's libseccomp does not know is skipped, as runc does.
            let Ok(call) = libseccomp::ScmpSyscall::from_name(name) else {
                continue;
            };
            let added = match (compares.is_empty(), repeated) {
                (true, _) => ctx.add_rule(act, call).map(drop),
                // One argument compared twice: a rule per comparison, as runc does.
                (false, true) => compares.iter().try_for_each(|c| {
                    ctx.add_rule_conditional(act, call, std::slice::from_ref(c))
                        .map(drop)
                }),
                (false, false) => ctx.add_rule_conditional(act, call, &compares).map(drop),
            };
            added.map_err(|e| invalid(format!("{name}: {e}")))?;
        }
    }
    let mut out = tempfile_in_memory()?;
    ctx.export_bpf(out.as_fd()).map_err(invalid)?;
    use std::io::{Read, Seek};
    out.rewind()?;
    let mut program = Vec::new();
    out.read_to_end(&mut program)?;
    if program.is_empty() || program.len() % std::mem::size_of::<libc::sock_filter>() != 0 {
        return Err(invalid(format!("{} bytes of BPF", program.len())));
    }
    Ok(program)
}

/// An anonymous file in memory (`memfd_create`), for libseccomp to export into.
fn tempfile_in_memory() -> Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: a constant name; the descriptor returned is owned by the File.
    let fd = unsafe { libc::memfd_create(c"seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a descriptor just created and owned by nobody else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Programs compiled by this process, by profile: a node compiles each profile once.
static COMPILED: Mutex<Option<HashMap<String, Arc<Vec<u8>>>>> = Mutex::new(None);

/// Takes the seccomp profile out of the bundle's `config` (so libcontainer does not
/// compile it in the container) and writes its compiled program to
/// `bundle/seccomp.bpf`, which [`Filtered`] installs. Nothing to do without a profile.
pub fn compile_into_bundle(config: &mut serde_json::Value, bundle: &Path) -> Result<()> {
    let Some(profile) = config
        .get_mut("linux")
        .and_then(|l| l.as_object_mut())
        .and_then(|l| l.remove("seccomp"))
    else {
        let _ = std::fs::remove_file(bundle.join(PROGRAM_FILE));
        return Ok(());
    };
    let key = profile.to_string();
    let known = COMPILED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&key)
        .cloned();
    let program = match known {
        Some(p) => p,
        None => {
            let parsed: LinuxSeccomp = serde_json::from_value(profile).map_err(invalid)?;
            let p = Arc::new(compile(&parsed)?);
            COMPILED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(HashMap::new)
                .insert(key, p.clone());
            p
        }
    };
    std::fs::write(bundle.join(PROGRAM_FILE), &program[..])?;
    Ok(())
}

/// libcontainer's executor, which first installs the bundle's compiled seccomp program
/// (in the container's init, after its capabilities were dropped and no-new-privileges
/// set, as libcontainer does with a profile): the last thing before the command runs.
#[derive(Clone)]
pub struct Filtered {
    program: Option<Arc<Vec<u8>>>,
}

impl Filtered {
    /// The executor for the container whose bundle is `bundle` (no filter if the bundle
    /// has no program: a bundle from before the node compiled them has its profile in
    /// `config.json`, and libcontainer applies it).
    pub fn of_bundle(bundle: &Path) -> Result<Filtered> {
        let program = match std::fs::read(bundle.join(PROGRAM_FILE)) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        Ok(Filtered { program })
    }
}

/// The instructions of a compiled program.
fn instructions(program: &[u8]) -> Vec<libc::sock_filter> {
    program
        .chunks_exact(std::mem::size_of::<libc::sock_filter>())
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect()
}

/// Installs `filter` as this thread's seccomp filter (no allocation: safe between fork
/// and exec). Needs no-new-privileges (or CAP_SYS_ADMIN), which the container's spec
/// sets.
fn install(filter: &[libc::sock_filter]) -> std::io::Result<()> {
    let len = u16::try_from(filter.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prog points at `filter`, alive for the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

impl Executor for Filtered {
    fn exec(&self, spec: &Spec) -> std::result::Result<(), ExecutorError> {
        if let Some(program) = &self.program {
            install(&instructions(program))
                .map_err(|e| ExecutorError::Other(format!("installing the seccomp filter: {e}")))?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> std::result::Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_profile_compiles_to_a_program_of_whole_instructions() {
        let profile: LinuxSeccomp = serde_json::from_value(crate::spec::seccomp_profile()).unwrap();
        let program = compile(&profile).unwrap();
        assert_eq!(program.len() % 8, 0);
        // Docker's profile over three architectures: several hundred instructions.
        assert!(
            program.len() / 8 > 300,
            "{} instructions",
            program.len() / 8
        );
        assert_eq!(compile(&profile).unwrap(), program, "the same every time");
    }

    /// The program installed in a child process answers as Docker's profile does: a
    /// plain call goes through, `keyctl` (not in the profile) gets EPERM, `clone3` gets
    /// ENOSYS (so the C library falls back to `clone`).
    #[test]
    fn the_installed_program_refuses_what_docker_refuses() {
        let profile: LinuxSeccomp = serde_json::from_value(crate::spec::seccomp_profile()).unwrap();
        let filter = instructions(&compile(&profile).unwrap());
        // SAFETY: the child makes system calls only (no allocation) and ends with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            // SAFETY: plain system calls with no pointers the kernel keeps.
            let code = unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if install(&filter).is_err() {
                    10
                } else if libc::getppid() <= 0 {
                    11
                } else if libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) != -1
                    || errno() != libc::EPERM
                {
                    12
                } else if libc::syscall(libc::SYS_clone3, 0, 0) != -1 || errno() != libc::ENOSYS {
                    13
                } else {
                    0
                }
            };
            // SAFETY: ending the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child just forked.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "10 install, 12 keyctl, 13 clone3"
        );
    }
}
