//! The `vmm` role: the main thread, the control loop (`vmm`), the thread running a VM in API
//! mode (`vm`) and `vmm-spawner`.
//!
//! These threads build and tear down VMs: they open the kernel, initramfs, IGVM and disk
//! files, create the API and vsock sockets, issue every KVM ioctl, map guest memory, and
//! start every other thread. A started thread keeps this filter under its own, so the list
//! also holds everything the other roles may do; what the other roles gain is that their
//! own, narrower filter is applied on top. Never allowed: creating processes (`execve`,
//! `fork`), `ptrace`, mounting, module loading, raw or network sockets.

use seccompiler::BackendError;

use super::{api, device, serial, signals, vcpu, Rules};

pub(super) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::default();
    r.merge(device::rules()?);
    r.merge(vcpu::rules()?);
    r.merge(api::rules()?);
    r.merge(serial::rules());
    r.merge(signals::rules());
    r.allow(&[
        // Threads: creation (pthread), naming, and the filters they install.
        libc::SYS_clone3,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_prctl,
        libc::SYS_seccomp,
        // Every KVM ioctl of building a VM, terminal queries on stdin/stdout.
        libc::SYS_ioctl,
        // Files given on the command line or in the API.
        libc::SYS_openat,
        libc::SYS_newfstatat,
        libc::SYS_access,
        libc::SYS_faccessat2,
        libc::SYS_readlink,
        libc::SYS_getcwd,
        libc::SYS_unlinkat,
        libc::SYS_ftruncate,
        libc::SYS_getdents64,
        // Sockets: the API socket and the vsock device's host socket, the agent dial.
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_socketpair,
        libc::SYS_pipe2,
        libc::SYS_close_range,
        libc::SYS_prlimit64,
        libc::SYS_sched_setaffinity,
        libc::SYS_uname,
        libc::SYS_sysinfo,
        libc::SYS_getuid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getegid,
        libc::SYS_memfd_create,
        // --landlock: the thread running the VM confines itself once it is built.
        libc::SYS_landlock_create_ruleset,
        libc::SYS_landlock_add_rule,
        libc::SYS_landlock_restrict_self,
        libc::SYS_timerfd_create,
        libc::SYS_timerfd_settime,
    ]);
    // pthread_create falls back to clone(2) where clone3 is missing; only threads, no
    // processes.
    r.allow_masked(
        libc::SYS_clone,
        0,
        libc::CLONE_THREAD as u64,
        libc::CLONE_THREAD as u64,
    )?;
    Ok(r)
}
