//! How a VM run ended, and the process exit status each ending maps to.
//!
//! The statuses are a fixed contract with scripts and shims (documented in `podvisor run
//! --help` and docs/ARCHITECTURE.md):
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | the guest powered off (ACPI sleep, `KVM_SYSTEM_EVENT_SHUTDOWN`), or the host stopped it (API, SIGINT/SIGTERM) |
//! | 1 | VMM internal error, including KVM internal errors and emulation failures |
//! | 2 | invalid configuration or arguments |
//! | 3 | the guest asked for a reboot (ACPI reset, keyboard controller, `KVM_SYSTEM_EVENT_RESET`) |
//! | 4 | triple fault (`KVM_EXIT_SHUTDOWN`) |
//! | 5 | the guest gave up: it reported a crash (`KVM_SYSTEM_EVENT_CRASH`) or, as an SEV-SNP guest, asked to be terminated (`KVM_SYSTEM_EVENT_SEV_TERM`) |

use std::fmt;

/// Guest powered off.
pub const EXIT_POWER_OFF: u8 = 0;
/// Something failed inside the VMM or KVM.
pub const EXIT_INTERNAL_ERROR: u8 = 1;
/// The configuration or the command line was refused.
pub const EXIT_INVALID_CONFIG: u8 = 2;
/// Guest asked for a reboot; a supervisor may start a fresh VM.
pub const EXIT_REBOOT: u8 = 3;
/// A vCPU triple-faulted.
pub const EXIT_TRIPLE_FAULT: u8 = 4;
/// The guest reported a crash or asked to be terminated.
pub const EXIT_GUEST_FAILED: u8 = 5;

/// Why a running VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    PowerOff,
    Reboot,
    /// The host asked the VM to stop (API request, SIGINT/SIGTERM).
    HostStop,
    /// `KVM_EXIT_SHUTDOWN` on the given vCPU.
    TripleFault {
        vcpu: u32,
    },
    /// The guest reported a crash (`KVM_SYSTEM_EVENT_CRASH`) on the given vCPU.
    GuestPanic {
        vcpu: u32,
    },
    /// A confidential guest asked to be terminated through the GHCB protocol; the reason set
    /// and code are its own (GHCB spec §2.3.1; set 0 is the standard one).
    GuestTerminated {
        vcpu: u32,
        set: u8,
        code: u8,
    },
    /// The VMM could not keep the guest running: a KVM internal error, an emulation failure,
    /// a failed ioctl. The text says which vCPU and what happened.
    InternalError(String),
}

impl ExitReason {
    /// The process exit status for this ending.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExitReason::PowerOff | ExitReason::HostStop => EXIT_POWER_OFF,
            ExitReason::Reboot => EXIT_REBOOT,
            ExitReason::TripleFault { .. } => EXIT_TRIPLE_FAULT,
            ExitReason::GuestPanic { .. } | ExitReason::GuestTerminated { .. } => EXIT_GUEST_FAILED,
            ExitReason::InternalError(_) => EXIT_INTERNAL_ERROR,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::PowerOff => f.write_str("guest powered off"),
            ExitReason::Reboot => f.write_str("guest requested a reboot"),
            ExitReason::HostStop => f.write_str("stopped by the host"),
            ExitReason::TripleFault { vcpu } => write!(f, "vCPU {vcpu} triple-faulted"),
            ExitReason::GuestPanic { vcpu } => write!(f, "the guest reported a crash on vCPU {vcpu}"),
            ExitReason::GuestTerminated { vcpu, set, code } => write!(
                f,
                "the guest asked to be terminated on vCPU {vcpu} (GHCB reason set {set}, code {code:#x})"
            ),
            ExitReason::InternalError(what) => write!(f, "internal error: {what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ending_has_its_own_status() {
        let codes = [
            ExitReason::PowerOff.exit_code(),
            ExitReason::InternalError("x".into()).exit_code(),
            EXIT_INVALID_CONFIG,
            ExitReason::Reboot.exit_code(),
            ExitReason::TripleFault { vcpu: 0 }.exit_code(),
            ExitReason::GuestTerminated {
                vcpu: 0,
                set: 0,
                code: 0,
            }
            .exit_code(),
        ];
        assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
        assert_eq!(ExitReason::GuestPanic { vcpu: 1 }.exit_code(), 5);
    }
}
