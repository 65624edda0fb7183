//! System-call filters (seccomp-BPF) per thread role.
//!
//! Every thread of the VMM installs the filter of its role when it starts, after its own
//! setup and before it touches guest or client input; `PR_SET_NO_NEW_PRIVS` is set with it.
//! A system call outside the role's allow-list ends the whole process (`--seccomp true`,
//! so a violation is loud), is logged by the kernel and allowed (`--seccomp log`, for finding
//! what a list misses), or nothing is installed (`--seccomp false`).
//!
//! Filters stack: a thread keeps its creator's filter and adds its own, and the kernel applies
//! the strictest answer. That is why the `vmm` role, whose threads build VMs and start every
//! other thread, allows the union of all roles, and why device workers are started from a
//! dedicated `vmm-spawner` thread instead of the vCPU that activates the device
//! ([`devices::worker_thread`]).
//!
//! | role | threads |
//! | --- | --- |
//! | [`Role::Vmm`] | main, `vmm`, `vm` (API mode), `vmm-spawner` |
//! | [`Role::Vcpu`] | `vcpuN` |
//! | [`Role::Api`] | `api` |
//! | [`Role::Device`] | virtio workers (`blk-*`, `vsock-*`, `rng-*`, vhost-user front ends) |
//! | [`Role::Serial`] | `console-in` |
//! | [`Role::Signals`] | `signals` |

mod api;
mod device;
mod serial;
mod signals;
mod spawner;
mod vcpu;
mod vmm;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::OnceLock;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use crate::exit::EXIT_INTERNAL_ERROR;

/// What a filter does with a system call outside its allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompMode {
    /// `true`: kill the process (`SECCOMP_RET_KILL_PROCESS`).
    #[default]
    Enforce,
    /// `log`: let the call through and have the kernel log it (`SECCOMP_RET_LOG`).
    Log,
    /// `false`: install no filter.
    Off,
}

impl FromStr for SeccompMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "true" => Ok(Self::Enforce),
            "log" => Ok(Self::Log),
            "false" => Ok(Self::Off),
            other => Err(format!("{other:?}: expected true, false or log")),
        }
    }
}

/// `--seccomp` value parser.
pub fn parse_mode(s: &str) -> Result<SeccompMode, String> {
    s.parse()
}

/// The kinds of thread the VMM runs, each with its own allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Vmm,
    Vcpu,
    Api,
    Device,
    Serial,
    Signals,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Vmm,
        Role::Vcpu,
        Role::Api,
        Role::Device,
        Role::Serial,
        Role::Signals,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Vmm => "vmm",
            Role::Vcpu => "vcpu",
            Role::Api => "api",
            Role::Device => "device",
            Role::Serial => "serial",
            Role::Signals => "signals",
        }
    }

    fn rules(self) -> Result<Rules, BackendError> {
        let mut rules = common()?;
        let own = match self {
            Role::Vmm => vmm::rules()?,
            Role::Vcpu => vcpu::rules()?,
            Role::Api => api::rules()?,
            Role::Device => device::rules()?,
            Role::Serial => serial::rules(),
            Role::Signals => signals::rules(),
        };
        rules.merge(own);
        Ok(rules)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot compile the {role} system-call filter: {source}")]
    Compile {
        role: &'static str,
        source: BackendError,
    },
    #[error("cannot install the {role} system-call filter: {source}")]
    Install {
        role: &'static str,
        source: seccompiler::Error,
    },
    #[error("system-call filters are already set up in this process")]
    AlreadySetUp,
    #[error("cannot start the vmm-spawner thread: {0}")]
    Spawner(std::io::Error),
}

/// An allow-list: per system call, no rules (always allowed) or rules of which one must
/// match the arguments.
#[derive(Default)]
pub(crate) struct Rules(BTreeMap<i64, Vec<SeccompRule>>);

impl Rules {
    /// Allows `syscalls` whatever their arguments.
    pub(crate) fn allow(&mut self, syscalls: &[libc::c_long]) {
        for &nr in syscalls {
            self.0.insert(nr, Vec::new());
        }
    }

    /// Allows `syscall` when its argument `arg` (32 bits) is one of `values`.
    pub(crate) fn allow_arg(
        &mut self,
        syscall: libc::c_long,
        arg: u8,
        values: &[u64],
    ) -> Result<(), BackendError> {
        let mut rules = Vec::with_capacity(values.len());
        for &value in values {
            rules.push(SeccompRule::new(vec![SeccompCondition::new(
                arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                value,
            )?])?);
        }
        self.add(syscall, rules);
        Ok(())
    }

    /// Allows `syscall` when argument `arg` (32 bits) masked with `mask` equals `value`.
    pub(crate) fn allow_masked(
        &mut self,
        syscall: libc::c_long,
        arg: u8,
        mask: u64,
        value: u64,
    ) -> Result<(), BackendError> {
        let rule = SeccompRule::new(vec![SeccompCondition::new(
            arg,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(mask),
            value,
        )?])?;
        self.add(syscall, vec![rule]);
        Ok(())
    }

    /// Allows `openat` for reading only: no write access, no creation.
    pub(crate) fn allow_open_read_only(&mut self) -> Result<(), BackendError> {
        let mask = (libc::O_ACCMODE | libc::O_CREAT | libc::O_TRUNC) as u64;
        self.allow_masked(libc::SYS_openat, 2, mask, libc::O_RDONLY as u64)
    }

    /// Adds conditional rules; a call already allowed without conditions stays so.
    fn add(&mut self, syscall: libc::c_long, rules: Vec<SeccompRule>) {
        match self.0.get_mut(&syscall) {
            Some(existing) if existing.is_empty() => {}
            Some(existing) => existing.extend(rules),
            None => {
                self.0.insert(syscall, rules);
            }
        }
    }

    fn merge(&mut self, other: Rules) {
        for (nr, rules) in other.0 {
            if rules.is_empty() {
                self.0.insert(nr, rules);
            } else {
                self.add(nr, rules);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn allows(&self, syscall: libc::c_long) -> bool {
        self.0.contains_key(&syscall)
    }
}

/// What every thread does whatever its role: allocate, wait on locks and clocks, log to
/// stderr, close descriptors, exit, and abort loudly (`tgkill` to itself) on a bug.
fn common() -> Result<Rules, BackendError> {
    let mut r = Rules::default();
    r.allow(&[
        libc::SYS_brk,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_nanosleep,
        libc::SYS_clock_nanosleep,
        libc::SYS_clock_gettime,
        libc::SYS_gettimeofday,
        libc::SYS_restart_syscall,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigaction,
        libc::SYS_sigaltstack,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_tgkill,
        libc::SYS_getrandom,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_close,
        libc::SYS_fcntl,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ]);
    // glibc's allocator reads /proc/sys/vm/overcommit_memory the first time it trims a heap.
    r.allow_open_read_only()?;
    Ok(r)
}

/// The BPF program of `role` in `mode`; `None` for [`SeccompMode::Off`].
pub fn program(role: Role, mode: SeccompMode) -> Result<Option<BpfProgram>, SeccompError> {
    let mismatch = match mode {
        SeccompMode::Enforce => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
        SeccompMode::Off => return Ok(None),
    };
    let compile = |source| SeccompError::Compile {
        role: role.name(),
        source,
    };
    let rules = role.rules().map_err(compile)?;
    let filter = SeccompFilter::new(rules.0, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(compile)?;
    BpfProgram::try_from(filter).map(Some).map_err(compile)
}

/// The compiled programs of this process, one per role in [`Role::ALL`] order.
static PROGRAMS: OnceLock<Vec<BpfProgram>> = OnceLock::new();

/// Compiles every role's filter for `mode` and routes device worker starts through the
/// `vmm-spawner` thread. Call once, on the main thread, before any other thread starts.
/// With [`SeccompMode::Off`] it does nothing and [`enter`] stays a no-op.
pub fn init(mode: SeccompMode) -> Result<(), SeccompError> {
    init_with(mode, false)
}

/// [`init`], with the calling thread confined to the `vmm` role first, so that the threads it
/// starts afterwards (the spawner, the `vmm` thread) inherit that filter instead of each
/// installing a copy: an install costs a few hundred microseconds (the kernel translates and
/// JIT-compiles the program), and at start-up they stand between launch and the guest's first
/// instruction.
pub fn init_confined(mode: SeccompMode) -> Result<(), SeccompError> {
    init_with(mode, true)
}

fn init_with(mode: SeccompMode, confine_caller: bool) -> Result<(), SeccompError> {
    let mut programs = Vec::with_capacity(Role::ALL.len());
    for role in Role::ALL {
        match program(role, mode)? {
            Some(p) => programs.push(p),
            None => return Ok(()),
        }
    }
    PROGRAMS
        .set(programs)
        .map_err(|_| SeccompError::AlreadySetUp)?;
    if confine_caller {
        install(Role::Vmm)?;
    }
    spawner::start(!confine_caller)
}

/// Confines the calling thread to `role` (once [`init`] has run with filters on).
pub fn install(role: Role) -> Result<(), SeccompError> {
    let Some(programs) = PROGRAMS.get() else {
        return Ok(());
    };
    let index = Role::ALL.iter().position(|&r| r == role).unwrap_or(0);
    let Some(program) = programs.get(index) else {
        return Ok(());
    };
    seccompiler::apply_filter(program).map_err(|source| SeccompError::Install {
        role: role.name(),
        source,
    })
}

/// [`install`] at a thread's start: a thread that was asked to be confined and cannot be
/// must not run at all, so a failure ends the process.
pub fn enter(role: Role) {
    if let Err(e) = install(role) {
        log::error!("{e}");
        eprintln!("podvisor: error: {e}");
        std::process::exit(i32::from(EXIT_INTERNAL_ERROR));
    }
}
