// fork(2) and raw system calls in the child are what the enforcement tests are about.
#![allow(unsafe_code)]

use super::*;

#[test]
fn every_role_compiles_for_x86_64_in_both_modes() {
    for role in Role::ALL {
        for mode in [SeccompMode::Enforce, SeccompMode::Log] {
            let program = program(role, mode).unwrap().unwrap();
            assert!(!program.is_empty(), "{}", role.name());
            // The kernel refuses programs above BPF_MAXINSNS (4096) instructions.
            assert!(program.len() < 4096, "{}: {}", role.name(), program.len());
        }
        assert!(program(role, SeccompMode::Off).unwrap().is_none());
    }
}

#[test]
fn modes_parse_as_the_cli_spells_them() {
    assert_eq!("true".parse(), Ok(SeccompMode::Enforce));
    assert_eq!("log".parse(), Ok(SeccompMode::Log));
    assert_eq!("false".parse(), Ok(SeccompMode::Off));
    assert!("maybe".parse::<SeccompMode>().is_err());
}

#[test]
fn narrow_roles_leave_out_what_they_never_do() {
    for role in [
        Role::Vcpu,
        Role::Api,
        Role::Device,
        Role::Serial,
        Role::Signals,
    ] {
        let rules = role.rules().unwrap();
        for (nr, what) in [
            (libc::SYS_execve, "execve"),
            (libc::SYS_clone3, "clone3"),
            (libc::SYS_ptrace, "ptrace"),
            (libc::SYS_bind, "bind"),
            (libc::SYS_mount, "mount"),
            (libc::SYS_seccomp, "seccomp"),
        ] {
            assert!(!rules.allows(nr), "{} allows {what}", role.name());
        }
    }
    let vmm = Role::Vmm.rules().unwrap();
    for nr in [
        libc::SYS_execve,
        libc::SYS_fork,
        libc::SYS_ptrace,
        libc::SYS_mount,
    ] {
        assert!(!vmm.allows(nr), "vmm allows {nr}");
    }
    // Every role's list is inside the vmm list: threads keep their creator's filter.
    for role in Role::ALL {
        for nr in role.rules().unwrap().0.keys() {
            assert!(
                vmm.allows(*nr),
                "{} allows {nr} but vmm does not",
                role.name()
            );
        }
    }
}

/// Runs `forbidden` in a forked child confined to `role` (enforcing); returns how the child
/// ended: `Ok(exit status)` or `Err(signal)`.
fn run_confined(role: Role, forbidden: impl Fn()) -> Result<i32, i32> {
    run_confined_in(role, SeccompMode::Enforce, forbidden)
}

fn run_confined_in(role: Role, mode: SeccompMode, forbidden: impl Fn()) -> Result<i32, i32> {
    let program = program(role, mode).unwrap().unwrap();
    // SAFETY: the child only installs the filter (prctl + seccomp on a prepared program),
    // makes raw system calls and calls _exit: no allocation, no lock, async-signal-safe.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        if seccompiler::apply_filter(&program).is_err() {
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(100) };
        }
        // SAFETY: getpid is allowed in every role; a kill here would fail the test.
        unsafe { libc::syscall(libc::SYS_getpid) };
        forbidden();
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    if libc::WIFSIGNALED(status) {
        Err(libc::WTERMSIG(status))
    } else {
        Ok(libc::WEXITSTATUS(status))
    }
}

fn syscall0(nr: libc::c_long) -> impl Fn() {
    // SAFETY: the call is refused by the filter before the kernel looks at any argument.
    move || unsafe {
        libc::syscall(nr, 0, 0, 0);
    }
}

#[test]
fn a_forbidden_call_kills_the_process_in_each_role() {
    for role in Role::ALL {
        // Executing a program is outside every role.
        assert_eq!(
            run_confined(role, syscall0(libc::SYS_execve)),
            Err(libc::SIGSYS),
            "{}",
            role.name()
        );
        // An allowed call alone leaves the child alive.
        assert_eq!(run_confined(role, || {}), Ok(0), "{}", role.name());
    }
}

#[test]
fn argument_checks_refuse_the_wrong_ioctl_socket_and_open() {
    let kvm_create_vm = 0xae01;
    // SAFETY: ioctl on fd -1 touches no memory; the filter decides first.
    let create_vm = || unsafe {
        libc::ioctl(-1, kvm_create_vm, 0);
    };
    assert_eq!(run_confined(Role::Vcpu, create_vm), Err(libc::SIGSYS));
    assert_eq!(run_confined(Role::Device, create_vm), Err(libc::SIGSYS));
    // KVM_RUN itself passes the vcpu filter (and fails with EBADF on fd -1).
    let kvm_run = vcpu::ioctls()[0];
    // SAFETY: as above.
    let run = move || unsafe {
        libc::ioctl(-1, kvm_run, 0);
    };
    assert_eq!(run_confined(Role::Vcpu, run), Ok(0));
    assert_eq!(run_confined(Role::Api, run), Err(libc::SIGSYS));
    // Devices may create Unix sockets only.
    // SAFETY: creates (and leaks into the short-lived child) a socket descriptor.
    let inet = || unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
    };
    assert_eq!(run_confined(Role::Device, inet), Err(libc::SIGSYS));
    // SAFETY: as above.
    let unix = || unsafe {
        libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
    };
    assert_eq!(run_confined(Role::Device, unix), Ok(0));
    // Narrow roles may open files for reading only.
    let path = c"/dev/null";
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    let open_write = move || unsafe {
        libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_WRONLY);
    };
    // SAFETY: as above.
    let open_read = move || unsafe {
        libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY);
    };
    for role in [Role::Vcpu, Role::Device, Role::Api] {
        assert_eq!(run_confined(role, open_write), Err(libc::SIGSYS));
        assert_eq!(run_confined(role, open_read), Ok(0));
    }
    assert_eq!(run_confined(Role::Vmm, open_write), Ok(0));
}

#[test]
fn log_mode_lets_a_forbidden_call_through() {
    // SAFETY: a null path: the kernel fails the call with EFAULT after the filter logs it.
    let execve = || unsafe {
        libc::syscall(libc::SYS_execve, 0, 0, 0);
    };
    for role in Role::ALL {
        assert_eq!(
            run_confined_in(role, SeccompMode::Log, execve),
            Ok(0),
            "{}",
            role.name()
        );
    }
}
