//! The `api` role: the HTTP server thread (a single-threaded tokio runtime) on the API
//! socket. It accepts connections, reads requests, writes replies, passes commands to the
//! control loop over a channel and reads host facts for `vmm.ping`/capabilities
//! (`/proc/self/status`, `/sys/module/...`, `stat` of `/dev/kvm`). It may open files only
//! for reading and issues no KVM ioctl.

use seccompiler::BackendError;

use super::Rules;

pub(super) fn rules() -> Result<Rules, BackendError> {
    let mut r = Rules::default();
    r.allow(&[
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_ctl,
        libc::SYS_eventfd2,
        libc::SYS_accept4,
        libc::SYS_read,
        libc::SYS_readv,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_shutdown,
        libc::SYS_getsockopt,
        libc::SYS_getsockname,
        libc::SYS_getpeername,
        libc::SYS_statx,
        libc::SYS_newfstatat,
        libc::SYS_fstat,
        libc::SYS_lseek,
    ]);
    r.allow_arg(libc::SYS_ioctl, 1, &[libc::FIONBIO])?;
    Ok(r)
}
