//! The `device` role: virtio worker threads (block, vsock, rng, and vhost-user front ends).
//!
//! A worker sleeps in `epoll` on its queue eventfds, reads and writes guest memory (already
//! mapped: no system call), and moves data to its backend: a disk file (positioned reads and
//! writes, flushes, hole punching), an entropy source (reads), Unix sockets (vsock
//! connections and listeners, vhost-user messages with descriptors attached), and the
//! irqfd / eventfd it signals. It opens no file for writing, creates nothing on disk, and
//! issues no KVM ioctl.

use seccompiler::BackendError;

use super::Rules;

pub(super) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::default();
    r.allow(&[
        // Queue notifications, the stop eventfd, socket readiness.
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_create1,
        libc::SYS_eventfd2,
        libc::SYS_poll,
        libc::SYS_ppoll,
        // Eventfds, the entropy source, the disk file.
        libc::SYS_read,
        libc::SYS_readv,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_preadv2,
        libc::SYS_pwritev2,
        libc::SYS_lseek,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_fallocate,
        libc::SYS_fstat,
        libc::SYS_statx,
        // vsock connections (guest-initiated connects are non-blocking) and vhost-user
        // messages, which carry descriptors in SCM_RIGHTS.
        libc::SYS_accept4,
        libc::SYS_connect,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_shutdown,
        libc::SYS_getsockopt,
        libc::SYS_setsockopt,
        libc::SYS_getsockname,
        libc::SYS_getpeername,
        libc::SYS_dup,
        libc::SYS_dup3,
    ]);
    r.allow_arg(libc::SYS_socket, 0, &[libc::AF_UNIX as u64])?;
    r.allow_arg(libc::SYS_ioctl, 1, &[libc::FIONBIO])?;
    Ok(r)
}
