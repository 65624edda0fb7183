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
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

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
}

/// Shared between the control loop, the vCPU threads and the device callbacks.
#[derive(Debug, Default)]
pub struct RunControl {
    stop: AtomicBool,
}

impl RunControl {
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
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
        let mut first_run = true;
        while !self.control.stop_requested() {
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
            Ok(VcpuExit::Shutdown) => Some(ExitReason::TripleFault { vcpu: index }),
            Ok(VcpuExit::SystemEvent(kind, _)) => Some(match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => ExitReason::PowerOff,
                KVM_SYSTEM_EVENT_RESET => ExitReason::Reboot,
                KVM_SYSTEM_EVENT_CRASH => {
                    ExitReason::InternalError(format!("vcpu{index}: guest reported a crash"))
                }
                other => ExitReason::InternalError(format!(
                    "vcpu{index}: unexpected system event {other}"
                )),
            }),
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

    fn where_is_rip(&self) -> String {
        match self.fd.get_regs() {
            Ok(regs) => format!("rip {:#x}", regs.rip),
            Err(e) => format!("unknown rip ({e})"),
        }
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
