//! The `vcpuN` threads: each runs `KVM_RUN` in a loop, hands port and MMIO exits to the
//! buses, and turns the exits that end the VM into an [`ExitReason`] for the control loop.
//!
//! Stopping: the control loop sets the shared stop flag and sends [`kick_signal`] to every
//! vCPU thread until each thread has finished. The signal handler does nothing; its only
//! effect is to make a blocked `KVM_RUN` (a halted vCPU, an AP waiting for SIPI) return
//! `EINTR`, after which the loop sees the flag. Because a signal that lands just before
//! `KVM_RUN` is entered would be lost, the control loop repeats it until the thread is gone.
// Reading the exit details KVM leaves in the `kvm_run` union (internal-error sub-code) needs
// one unsafe read; everything else goes through kvm-ioctls.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::bus::Bus;
use devices::GuestRequest;
use kvm_bindings::{
    KVM_INTERNAL_ERROR_EMULATION, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::clock::BootClock;
use crate::exit::ExitReason;

/// The real-time signal used to kick vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

/// Errors starting vCPU threads.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("cannot install the vCPU kick signal handler: {0}")]
    SignalHandler(vmm_sys_util::errno::Error),
    #[error("cannot start thread vcpu{index}: {source}")]
    Spawn { index: u32, source: std::io::Error },
}

/// What the vCPU threads and device callbacks tell the control loop.
#[derive(Debug)]
pub enum VmEvent {
    /// A device relayed a guest request (power off, reset).
    Guest(GuestRequest),
    /// The guest did something that ends the VM.
    Exit { index: u32, reason: ExitReason },
    /// The thread left its run loop and is about to return.
    Stopped { index: u32 },
    /// The host (API, signal) asked for the VM to stop.
    HostStop,
    /// The host asks to park every vCPU; the reply says whether all of them parked.
    Pause(Sender<bool>),
    /// The host asks parked vCPUs to run again; the reply comes once the request is set.
    Resume(Sender<bool>),
    /// A device is added or removed, or the guest released one.
    Hotplug(crate::hotplug::HotplugRequest),
}

/// Shared between the control loop, the vCPU threads and the device callbacks.
///
/// Stop is final; pause parks every vCPU thread outside `KVM_RUN` on a condition variable
/// until resume (or stop) — the state the API reports as `Paused`.
#[derive(Debug, Default)]
pub struct RunControl {
    stop: AtomicBool,
    pause: AtomicBool,
    /// Number of vCPU threads parked by a pause.
    parked: Mutex<usize>,
    /// Signalled whenever stop, pause or the parked count changes.
    changed: Condvar,
}

impl RunControl {
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.notify();
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sets or clears the pause request; vCPUs park at their next exit from `KVM_RUN`.
    pub fn set_paused(&self, paused: bool) {
        self.pause.store(paused, Ordering::Release);
        self.notify();
    }

    pub fn pause_requested(&self) -> bool {
        self.pause.load(Ordering::Acquire)
    }

    fn lock_parked(&self) -> MutexGuard<'_, usize> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taking the lock orders the flag store before any waiter's re-check.
    fn notify(&self) {
        let _guard = self.lock_parked();
        self.changed.notify_all();
    }

    /// Blocks the calling vCPU thread while a pause is requested and no stop is.
    pub fn park(&self) {
        let mut parked = self.lock_parked();
        *parked += 1;
        self.changed.notify_all();
        while self.pause_requested() && !self.stop_requested() {
            parked = self.changed.wait(parked).unwrap_or_else(|e| e.into_inner());
        }
        *parked -= 1;
        self.changed.notify_all();
    }

    /// Waits up to `timeout` until at least `count` vCPU threads are parked.
    pub fn wait_parked(&self, count: usize, timeout: Duration) -> bool {
        let guard = self.lock_parked();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |parked| *parked < count)
            .unwrap_or_else(|e| e.into_inner());
        *guard >= count
    }
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Intentionally empty: delivering the signal is what interrupts KVM_RUN.
}

/// Installs the (empty) kick handler for the process; harmless to call more than once.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
        .map_err(VcpuError::SignalHandler)
}

/// Everything one vCPU thread owns.
pub struct Vcpu {
    pub index: u32,
    pub fd: VcpuFd,
    pub pio: Bus,
    pub mmio: Bus,
    pub control: Arc<RunControl>,
    pub events: Sender<VmEvent>,
    pub clock: Arc<BootClock>,
    /// A confidential guest's private/shared conversions; `None` for ordinary VMs, where
    /// KVM never reports those exits.
    pub conversions: Option<Arc<crate::snp_memory::Conversions>>,
    /// A confidential guest's certificate requests (`KVM_EXIT_SNP_REQ_CERTS`); `None` where
    /// the exit is not enabled.
    pub certs: Option<Arc<crate::snp_certs::CertRequests>>,
}

impl Vcpu {
    /// Starts the thread `vcpu<index>`.
    pub fn spawn(self) -> Result<JoinHandle<()>, VcpuError> {
        let index = self.index;
        std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || self.run())
            .map_err(|source| VcpuError::Spawn { index, source })
    }

    fn run(mut self) {
        crate::seccomp::enter(crate::seccomp::Role::Vcpu);
        let mut first_run = true;
        while !self.control.stop_requested() {
            if self.control.pause_requested() {
                self.control.park();
                continue;
            }
            if first_run && self.index == 0 {
                self.clock.record_first_instruction(Instant::now());
            }
            first_run = false;
            if let Some(reason) = self.run_once() {
                log::debug!("vcpu{}: {reason}", self.index);
                self.control.request_stop();
                let _ = self.events.send(VmEvent::Exit {
                    index: self.index,
                    reason,
                });
                break;
            }
        }
        // The receiver only disappears once the VM is torn down; nothing is left to tell then.
        let _ = self.events.send(VmEvent::Stopped { index: self.index });
    }

    /// One `KVM_RUN`; returns a reason if the exit ends the VM.
    fn run_once(&mut self) -> Option<ExitReason> {
        let index = self.index;
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                if !self.pio.read(u64::from(port), data) {
                    // Nothing decodes the port: an undriven ISA bus reads all-ones.
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                self.pio.write(u64::from(port), data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !self.mmio.read(addr, data) {
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                self.mmio.write(addr, data);
                None
            }
            Ok(VcpuExit::Intr) => None,
            Ok(VcpuExit::Hypercall(exit)) => match &self.conversions {
                Some(c) => match c.on_hypercall(exit.nr, &exit.args) {
                    Ok(ret) => {
                        *exit.ret = ret;
                        None
                    }
                    Err(e) => Some(ExitReason::InternalError(format!("vcpu{index}: {e}"))),
                },
                None => Some(ExitReason::InternalError(format!(
                    "vcpu{index}: hypercall {} in a VM that enabled none",
                    exit.nr
                ))),
            },
            Ok(VcpuExit::MemoryFault { flags, gpa, size }) => match &self.conversions {
                Some(c) => c
                    .on_memory_fault(flags, gpa, size)
                    .err()
                    .map(|e| ExitReason::InternalError(format!("vcpu{index}: memory fault: {e}"))),
                None => Some(ExitReason::InternalError(format!(
                    "vcpu{index}: memory fault at {gpa:#x}+{size:#x} (flags {flags:#x})"
                ))),
            },
            Ok(VcpuExit::Unsupported(crate::snp_certs::KVM_EXIT_SNP_REQ_CERTS))
                if self.certs.is_some() =>
            {
                self.answer_cert_request();
                None
            }
            Ok(VcpuExit::Shutdown) => Some(ExitReason::TripleFault { vcpu: index }),
            Ok(VcpuExit::SystemEvent(kind, data)) => Some(system_event(index, kind, data)),
            Ok(VcpuExit::InternalError) => {
                let suberror = self.internal_suberror();
                let what = if suberror == KVM_INTERNAL_ERROR_EMULATION {
                    ", emulation failure"
                } else {
                    ""
                };
                Some(ExitReason::InternalError(format!(
                    "vcpu{index}: KVM internal error (suberror {suberror}{what}) at {}",
                    self.where_is_rip()
                )))
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(ExitReason::InternalError(format!(
                "vcpu{index}: KVM entry failed, hardware reason {reason:#x} on host CPU {cpu}"
            ))),
            Ok(other) => {
                let what = format!("{other:?}");
                Some(ExitReason::InternalError(format!(
                    "vcpu{index}: unexpected KVM exit {what} at {}",
                    self.where_is_rip()
                )))
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(ExitReason::InternalError(format!(
                "vcpu{index}: KVM_RUN failed: {e}"
            ))),
        }
    }

    /// `kvm_run.internal.suberror` after a `KVM_EXIT_INTERNAL_ERROR`.
    fn internal_suberror(&mut self) -> u32 {
        let run = self.fd.get_kvm_run();
        // SAFETY: only called right after KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, for which
        // the kernel fills the `internal` member of the union; reading a u32 from it is
        // valid for any bit pattern.
        unsafe { run.__bindgen_anon_1.internal.suberror }
    }

    /// Reads `kvm_run.snp_req_certs {gpa, npages, ret}` (not in kvm-bindings yet: the first
    /// three u64 of the exit union), answers, and writes `ret` and `npages` back.
    fn answer_cert_request(&mut self) {
        let Some(certs) = self.certs.clone() else {
            return;
        };
        let run = self.fd.get_kvm_run();
        // SAFETY: right after KVM_RUN returned KVM_EXIT_SNP_REQ_CERTS the kernel has filled
        // the union's first 24 bytes with `snp_req_certs`; the 256-byte padding member covers
        // them and any bit pattern is a valid byte.
        let area = unsafe { &mut run.__bindgen_anon_1.padding };
        let word = |area: &[std::os::raw::c_char], i: usize| {
            let mut b = [0u8; 8];
            for (d, s) in b.iter_mut().zip(area.iter().skip(i * 8)) {
                *d = *s as u8;
            }
            u64::from_le_bytes(b)
        };
        let (gpa, npages) = (word(area, 0), word(area, 1));
        let reply = certs.on_request(gpa, npages);
        for (i, value) in [(1usize, reply.npages), (2, reply.ret)] {
            for (d, s) in area.iter_mut().skip(i * 8).zip(value.to_le_bytes()) {
                *d = s as std::os::raw::c_char;
            }
        }
    }

    fn where_is_rip(&self) -> String {
        match self.fd.get_regs() {
            Ok(regs) => format!("rip {:#x}", regs.rip),
            Err(e) => format!("unknown rip ({e})"),
        }
    }
}

/// How a `KVM_EXIT_SYSTEM_EVENT` of vCPU `index` ends the VM. An SEV-SNP guest's GHCB
/// termination request arrives as its own type with the request's MSR value in `data[0]`.
fn system_event(index: u32, kind: u32, data: &[u64]) -> ExitReason {
    if let Some(term) = snp::exits::decode_system_event(kind, data) {
        log::warn!("vcpu{index}: {term}");
        return ExitReason::GuestTerminated {
            vcpu: index,
            set: term.set,
            code: term.code,
        };
    }
    match kind {
        KVM_SYSTEM_EVENT_SHUTDOWN => ExitReason::PowerOff,
        KVM_SYSTEM_EVENT_RESET => ExitReason::Reboot,
        KVM_SYSTEM_EVENT_CRASH => ExitReason::GuestPanic { vcpu: index },
        other => ExitReason::InternalError(format!("vcpu{index}: unexpected system event {other}")),
    }
}

/// Kicks every thread in `threads` that `pending(index)` says has not stopped yet.
pub fn kick(threads: &[(u32, JoinHandle<()>)], pending: impl Fn(u32) -> bool) {
    use vmm_sys_util::signal::Killable;
    for (index, handle) in threads {
        if pending(*index) {
            if let Err(e) = handle.kill(kick_signal()) {
                log::warn!("cannot signal vcpu{index}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_events_map_to_their_endings() {
        use snp::exits::SYSTEM_EVENT_SEV_TERM;
        assert_eq!(
            system_event(0, KVM_SYSTEM_EVENT_SHUTDOWN, &[]),
            ExitReason::PowerOff
        );
        assert_eq!(
            system_event(0, KVM_SYSTEM_EVENT_RESET, &[]),
            ExitReason::Reboot
        );
        assert_eq!(
            system_event(1, KVM_SYSTEM_EVENT_CRASH, &[]),
            ExitReason::GuestPanic { vcpu: 1 }
        );
        // GHCB MSR termination request: 0x100, reason set 1 in [15:12], code 3 in [23:16].
        let msr = 0x100 | (1 << 12) | (3 << 16);
        assert_eq!(
            system_event(2, SYSTEM_EVENT_SEV_TERM, &[msr]),
            ExitReason::GuestTerminated {
                vcpu: 2,
                set: 1,
                code: 3
            }
        );
        // A hostile or truncated event still ends cleanly.
        assert!(matches!(
            system_event(0, SYSTEM_EVENT_SEV_TERM, &[]),
            ExitReason::GuestTerminated {
                set: 0,
                code: 0,
                ..
            }
        ));
        assert!(matches!(
            system_event(0, 0xdead, &[1, 2]),
            ExitReason::InternalError(_)
        ));
    }

    #[test]
    fn pause_parks_until_resume_and_stop_releases() {
        let control = Arc::new(RunControl::default());
        control.set_paused(true);
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let c = control.clone();
                std::thread::spawn(move || c.park())
            })
            .collect();
        assert!(control.wait_parked(3, Duration::from_secs(30)));
        assert!(threads.iter().all(|t| !t.is_finished()));
        control.set_paused(false);
        for t in threads {
            t.join().unwrap();
        }
        assert!(!control.wait_parked(1, Duration::from_millis(10)));

        control.set_paused(true);
        let c = control.clone();
        let parked = std::thread::spawn(move || c.park());
        assert!(control.wait_parked(1, Duration::from_secs(30)));
        control.request_stop();
        parked.join().unwrap();
    }
}
