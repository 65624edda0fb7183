//! The host side of the GHCB protocol (GHCB spec 56421 v2), for the software SNP platform and
//! for hypervisors that forward VMGEXIT to userspace (data flow 5, "SNP run"). On KVM the
//! kernel terminates the GHCB and the VMM sees only the exits decoded by [`crate::exits`].
//!
//! A VMGEXIT arrives with the value of the GHCB MSR. If its low 12 bits are non-zero it is an
//! MSR-protocol request ([`msr`]); otherwise it is the GPA of the GHCB page, which must be the
//! registered one (§2.3.2: SNP guests register before use). The page is copied once
//! ([`page::GhcbPage`]) and the NAE event it names ([`nae`], [`psc`]) is validated and handled
//! on the copy (snp-notes §3.4). Guest mistakes become the spec's answers — SW_EXITINFO1 = 2
//! with a reason in SW_EXITINFO2 (§4.1.7, Linux `GHCB_ERR_*`), or an injected exception — and
//! a GHCB the host cannot even answer through ends the guest with a reason. The host reads and
//! writes only shared memory, through [`SharedMemory`].

pub mod guest;
pub mod msr;
pub mod nae;
pub mod page;
pub mod psc;

use crate::page_info::PAGE_SIZE;
use crate::page_state::memory::{MemoryError, ModelRam};
use crate::page_state::{PageSize, PageStateError, RmpState};
use crate::plan::PAGE_SIZE_U64;
use page::{Field, GhcbPage};

/// GHCB protocol versions this host speaks (SNP needs 2).
pub const GHCB_VERSION_MIN: u16 = 2;
/// Highest GHCB protocol version spoken.
pub const GHCB_VERSION_MAX: u16 = 2;

/// SW_EXITINFO2 reasons with SW_EXITINFO1 = 2 (Linux `GHCB_ERR_*`, GHCB spec §4.1.7).
pub mod reason {
    /// The GHCB was used before registration.
    pub const NOT_REGISTERED: u64 = 1;
    /// Usage or version not supported.
    pub const INVALID_USAGE: u64 = 2;
    /// The scratch area is outside the shared buffer and shared memory, or too large.
    pub const INVALID_SCRATCH_AREA: u64 = 3;
    /// An input's valid bit is clear.
    pub const MISSING_INPUT: u64 = 4;
    /// An input has a value the event does not accept.
    pub const INVALID_INPUT: u64 = 5;
    /// Unknown SW_EXITCODE.
    pub const INVALID_EVENT: u64 = 6;
}

/// Termination reason set 0 codes (GHCB spec §2.3.1, termination request).
pub mod term {
    /// General termination.
    pub const GENERAL: u8 = 0;
    /// Protocol version not supported.
    pub const PROTOCOL_RANGE: u8 = 1;
    /// SNP features not supported.
    pub const SNP_FEATURES: u8 = 2;
}

/// Why a VMGEXIT could not be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GhcbError {
    /// Guest fault: an unknown MSR-protocol request.
    #[error("unknown GHCB MSR request {value:#x}")]
    UnknownMsrRequest { value: u64 },
    /// Guest fault: the GHCB is used before registration or at another GPA.
    #[error("GHCB at {gpa:#x} is not the registered one ({registered:?})")]
    NotRegistered { gpa: u64, registered: Option<u64> },
    /// Guest fault: unsupported usage or version.
    #[error("GHCB usage {usage} / version {version} not supported")]
    InvalidUsage { usage: u32, version: u16 },
    /// Guest fault: the scratch area is not acceptable.
    #[error("scratch area {gpa:#x}+{len:#x} is neither in the shared buffer nor shared RAM")]
    InvalidScratch { gpa: u64, len: u64 },
    /// Guest fault: a required input's valid bit is clear.
    #[error("GHCB input {field:?} is not marked valid")]
    MissingInput { field: Field },
    /// Guest fault: an input has a value the event refuses.
    #[error("invalid {what}: {value:#x}")]
    InvalidInput { what: &'static str, value: u64 },
    /// Guest fault: unknown SW_EXITCODE.
    #[error("unknown NAE event {code:#x}")]
    InvalidEvent { code: u64 },
    /// Guest fault: a page-state operation was refused.
    #[error(transparent)]
    PageState(#[from] PageStateError),
    /// Host fault: the memory layer failed where the guest's input was acceptable.
    #[error("host memory access failed: {0}")]
    Memory(MemoryError),
}

impl GhcbError {
    /// The SW_EXITINFO2 reason of a bad request.
    pub fn reason(&self) -> u64 {
        match self {
            GhcbError::NotRegistered { .. } => reason::NOT_REGISTERED,
            GhcbError::InvalidUsage { .. } => reason::INVALID_USAGE,
            GhcbError::InvalidScratch { .. } => reason::INVALID_SCRATCH_AREA,
            GhcbError::MissingInput { .. } => reason::MISSING_INPUT,
            GhcbError::InvalidEvent { .. } | GhcbError::UnknownMsrRequest { .. } => {
                reason::INVALID_EVENT
            }
            GhcbError::InvalidInput { .. } | GhcbError::PageState(_) | GhcbError::Memory(_) => {
                reason::INVALID_INPUT
            }
        }
    }
}

/// Guest memory as the host may touch it: shared pages only, plus the host's page-state
/// updates (RMPUPDATE / KVM_SET_MEMORY_ATTRIBUTES).
pub trait SharedMemory {
    /// Read shared memory; anything else is refused.
    fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError>;
    /// Write shared memory; anything else is refused.
    fn write_shared(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError>;
    /// Whether `[gpa, gpa + len)` is guest RAM.
    fn in_ram(&self, gpa: u64, len: u64) -> bool;
    /// Whether `[gpa, gpa + len)` is shared guest RAM.
    fn is_shared(&self, gpa: u64, len: u64) -> bool;
    /// RMP state of the page holding `gpa`.
    fn page_state(&self, gpa: u64) -> Option<RmpState>;
    /// Make one page of `size` private or shared; contents are lost when the owner changes.
    fn convert(&mut self, gpa: u64, size: PageSize, private: bool) -> Result<(), GhcbError>;
    /// Split the 2 MiB entry at `gpa`.
    fn psmash(&mut self, gpa: u64) -> Result<(), GhcbError>;
    /// Join the 512 entries at `gpa`.
    fn unsmash(&mut self, gpa: u64) -> Result<(), GhcbError>;
}

impl SharedMemory for ModelRam {
    fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.host_read(gpa, buf)
    }
    fn write_shared(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.host_write(gpa, data)
    }
    fn in_ram(&self, gpa: u64, len: u64) -> bool {
        self.states().in_ram(gpa, len)
    }
    fn is_shared(&self, gpa: u64, len: u64) -> bool {
        self.states().is_shared(gpa, len)
    }
    fn page_state(&self, gpa: u64) -> Option<RmpState> {
        self.states().state(gpa)
    }
    fn convert(&mut self, gpa: u64, size: PageSize, private: bool) -> Result<(), GhcbError> {
        match ModelRam::convert(self, gpa, size, private) {
            Ok(_) => Ok(()),
            Err(MemoryError::PageState(e)) => Err(GhcbError::PageState(e)),
            Err(e) => Err(GhcbError::Memory(e)),
        }
    }
    fn psmash(&mut self, gpa: u64) -> Result<(), GhcbError> {
        Ok(self.states_mut().psmash(gpa)?)
    }
    fn unsmash(&mut self, gpa: u64) -> Result<(), GhcbError> {
        Ok(self.states_mut().unsmash(gpa)?)
    }
}

/// Port and MMIO dispatch: the device bus the host emulates for the guest. Unclaimed reads
/// return all-ones, unclaimed writes are dropped — the bus decides, as on a PC.
pub trait IoBus {
    /// Port read of `data.len()` (1, 2 or 4) bytes.
    fn pio_read(&mut self, port: u16, data: &mut [u8]);
    /// Port write.
    fn pio_write(&mut self, port: u16, data: &[u8]);
    /// MMIO read (1..=8 bytes) of a non-RAM address.
    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]);
    /// MMIO write of a non-RAM address.
    fn mmio_write(&mut self, gpa: u64, data: &[u8]);
}

/// An AP creation request (NAE 0x8000_0013) the handler has validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApCreate {
    /// 0 create on INIT, 1 create now, 2 destroy.
    pub op: nae::ApOp,
    /// Target APIC ID.
    pub apic_id: u32,
    /// GPA of the VMSA page (a VMSA in the RMP for creation).
    pub vmsa_gpa: u64,
    /// SEV_FEATURES of the new VMSA.
    pub sev_features: u64,
}

/// Platform services behind NAE events that are neither memory nor devices.
pub trait GuestPlatform {
    /// CPUID values (EAX, EBX, ECX, EDX) for `leaf`/`subleaf` with the guest's XCR0 and XSS.
    fn cpuid(&mut self, leaf: u32, subleaf: u32, xcr0: u64, xss: u64) -> [u32; 4];
    /// RDMSR; `None` injects #GP.
    fn rdmsr(&mut self, index: u32) -> Option<u64>;
    /// WRMSR; `false` injects #GP.
    fn wrmsr(&mut self, index: u32, value: u64) -> bool;
    /// C-bit position reported in SEV_INFO.
    fn c_bit(&self) -> u8;
    /// Create or destroy an AP; `Err` names why it is refused.
    fn ap_create(&mut self, req: ApCreate) -> Result<(), &'static str>;
    /// One SNP guest request: `request` is the guest's message page; the platform writes the
    /// response page and returns the firmware status.
    fn guest_request(&mut self, request: &[u8; PAGE_SIZE], response: &mut [u8; PAGE_SIZE]) -> u32;
    /// The certificate table for extended guest requests (may be empty).
    fn certificates(&self) -> &[u8];
}

/// What the vCPU loop does after a VMGEXIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Write `msr` into the GHCB MSR and resume the guest.
    MsrResponse(u64),
    /// The GHCB page was answered; resume the guest.
    Resume,
    /// Park the AP until it is woken (SEV-ES AP reset hold); resume with `msr` then.
    ApHold { msr: u64 },
    /// End the guest: `set`/`code` are the reason; `by_guest` says whether the guest asked.
    Terminate { set: u8, code: u8, by_guest: bool },
}

/// Per-vCPU GHCB state.
#[derive(Debug, Clone, Default)]
pub struct GhcbHandler {
    registered: Option<u64>,
    /// Exits handled (for counters and benchmarks).
    pub exits: u64,
}

/// The three host services a handler uses for one exit.
pub struct Env<'a> {
    /// Guest memory (shared only).
    pub mem: &'a mut dyn SharedMemory,
    /// Port and MMIO dispatch.
    pub bus: &'a mut dyn IoBus,
    /// Other platform services.
    pub platform: &'a mut dyn GuestPlatform,
}

impl GhcbHandler {
    /// A vCPU with no GHCB registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// The registered GHCB GPA.
    pub fn registered(&self) -> Option<u64> {
        self.registered
    }

    /// Handle one VMGEXIT given the GHCB MSR value.
    pub fn vmgexit(&mut self, msr_value: u64, env: &mut Env<'_>) -> Outcome {
        self.exits += 1;
        if msr_value & 0xFFF != 0 {
            return self.msr_protocol(msr_value, env);
        }
        if self.registered != Some(msr_value) {
            log::warn!(
                "GHCB used at {msr_value:#x}, registered {:?}: terminating",
                self.registered
            );
            return host_terminate(term::GENERAL);
        }
        self.page_exit(msr_value, env)
    }

    fn msr_protocol(&mut self, value: u64, env: &mut Env<'_>) -> Outcome {
        match msr::decode(value) {
            Ok(req) => nae::msr_request(self, req, env),
            Err(e) => {
                log::warn!("GHCB MSR protocol: {e}; terminating");
                host_terminate(term::GENERAL)
            }
        }
    }

    fn page_exit(&mut self, gpa: u64, env: &mut Env<'_>) -> Outcome {
        let mut bytes = [0u8; PAGE_SIZE];
        if let Err(e) = env.mem.read_shared(gpa, &mut bytes) {
            log::warn!("GHCB page {gpa:#x} unreadable ({e}): terminating");
            return host_terminate(term::GENERAL);
        }
        let mut page = GhcbPage::from_bytes(&bytes);
        let result = nae::dispatch(&mut page, gpa, env);
        let terminate = match &result {
            Ok(nae::Done::Terminate { set, code }) => Some((*set, *code)),
            _ => None,
        };
        if let Some((set, code)) = terminate {
            log::info!("guest requested termination: set {set} code {code:#x}");
            return Outcome::Terminate {
                set,
                code,
                by_guest: true,
            };
        }
        let out = match result {
            Ok(nae::Done::Answered(out)) => out,
            Ok(nae::Done::Terminate { .. }) => nae::Answer::ok(),
            Err(e) => {
                log::debug!("GHCB request refused: {e}");
                nae::Answer::error(e.reason())
            }
        };
        out.apply(&mut page);
        if let Err(e) = env.mem.write_shared(gpa, page.bytes()) {
            log::warn!("GHCB page {gpa:#x} became unwritable ({e}): terminating");
            return host_terminate(term::GENERAL);
        }
        Outcome::Resume
    }

    pub(crate) fn register(&mut self, gfn: u64, env: &Env<'_>) -> bool {
        let Some(gpa) = gfn.checked_mul(PAGE_SIZE_U64) else {
            return false;
        };
        if !env.mem.in_ram(gpa, PAGE_SIZE_U64) {
            return false;
        }
        self.registered = Some(gpa);
        true
    }
}

fn host_terminate(code: u8) -> Outcome {
    Outcome::Terminate {
        set: 0,
        code,
        by_guest: false,
    }
}

#[cfg(test)]
mod guest_tests;
#[cfg(test)]
mod tests;
