//! NAE events named by SW_EXITCODE (GHCB spec 56421 §4.1 "Non-Automatic Exits") and the
//! MSR-protocol requests. Each handler reads its inputs from the page copy (refusing any
//! whose valid bit is clear), bounds every length, and returns an [`Answer`] that becomes the
//! page's outputs.

use super::msr::{self, MsrRequest, PscOp};
use super::page::{Field, GhcbPage, SHARED_BUFFER, SHARED_BUFFER_SIZE};
use super::{
    host_terminate, term, ApCreate, Env, GhcbError, GhcbHandler, Outcome, GHCB_VERSION_MAX,
    GHCB_VERSION_MIN,
};
use crate::exits::CertAnswer;
use crate::page_info::PAGE_SIZE;
use crate::page_state::{PageSize, RmpState};
use crate::plan::PAGE_SIZE_U64;

/// SW_EXITCODE values (GHCB spec §4.1, table 5; Linux `SVM_EXIT_*`/`SVM_VMGEXIT_*`).
pub mod code {
    /// CPUID.
    pub const CPUID: u64 = 0x72;
    /// Port IO.
    pub const IOIO: u64 = 0x7B;
    /// RDMSR/WRMSR.
    pub const MSR: u64 = 0x7C;
    /// MMIO read.
    pub const MMIO_READ: u64 = 0x8000_0001;
    /// MMIO write.
    pub const MMIO_WRITE: u64 = 0x8000_0002;
    /// SNP page state change.
    pub const PSC: u64 = 0x8000_0010;
    /// SNP guest request.
    pub const GUEST_REQUEST: u64 = 0x8000_0011;
    /// SNP extended guest request.
    pub const EXT_GUEST_REQUEST: u64 = 0x8000_0012;
    /// SNP AP creation.
    pub const AP_CREATION: u64 = 0x8000_0013;
    /// Hypervisor features.
    pub const HV_FEATURES: u64 = 0x8000_FFFD;
    /// Termination request.
    pub const TERMINATE: u64 = 0x8000_FFFE;
}

/// Largest scratch area outside the GHCB page (KVM's `GHCB_SCRATCH_AREA_LIMIT`, 16 pages).
pub const MAX_SCRATCH: u64 = 16 * PAGE_SIZE_U64;

/// IOIO EXITINFO1 bits (APM vol. 2 §15.10.2, "IN/OUT intercept information").
mod ioio {
    pub const TYPE_IN: u64 = 1 << 0;
    pub const STRING: u64 = 1 << 2;
    pub const REP: u64 = 1 << 3;
    pub const SZ8: u64 = 1 << 4;
    pub const SZ16: u64 = 1 << 5;
    pub const SZ32: u64 = 1 << 6;
}

/// Outputs of a handled event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// SW_EXITINFO1: 0 ok, 1 inject the exception in SW_EXITINFO2, 2 bad request.
    pub info1: u64,
    /// SW_EXITINFO2.
    pub info2: u64,
    /// Register outputs.
    pub regs: Vec<(Field, u64)>,
}

impl Answer {
    /// Success without outputs.
    pub fn ok() -> Self {
        Self::with(0, Vec::new())
    }

    /// Success with SW_EXITINFO2 and register outputs.
    pub fn with(info2: u64, regs: Vec<(Field, u64)>) -> Self {
        Self {
            info1: 0,
            info2,
            regs,
        }
    }

    /// A bad request with `reason`.
    pub fn error(reason: u64) -> Self {
        Self {
            info1: 2,
            info2: reason,
            regs: Vec::new(),
        }
    }

    /// Inject #GP(0) (GHCB spec §4.1.7: vector, type 3 = exception, error code valid, valid).
    pub fn gp() -> Self {
        Self {
            info1: 1,
            info2: 13 | (3 << 8) | (1 << 11) | (1 << 31),
            regs: Vec::new(),
        }
    }

    /// Write the outputs into the page copy: the valid bitmap shows exactly what the host set.
    pub fn apply(&self, page: &mut GhcbPage) {
        page.clear_valid();
        for &(f, v) in &self.regs {
            page.set(f, v);
        }
        page.set(Field::ExitInfo1, self.info1);
        page.set(Field::ExitInfo2, self.info2);
    }
}

/// How an event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// Outputs to write back.
    Answered(Answer),
    /// The guest asked to be terminated.
    Terminate { set: u8, code: u8 },
}

/// Where a scratch area lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scratch {
    /// Inside the GHCB page copy at this page offset.
    Page { off: usize },
    /// Other shared guest memory.
    Guest { gpa: u64 },
}

/// Resolve SW_SCRATCH for `len` bytes: inside the shared buffer, or wholly in other shared
/// RAM and at most [`MAX_SCRATCH`] (snp-notes §3.4 item 5).
pub(crate) fn scratch(
    page: &GhcbPage,
    ghcb: u64,
    len: u64,
    env: &Env<'_>,
) -> Result<Scratch, GhcbError> {
    let gpa = page.get(Field::Scratch)?;
    let bad = GhcbError::InvalidScratch { gpa, len };
    let end = gpa.checked_add(len).ok_or(bad.clone())?;
    let buf = ghcb + SHARED_BUFFER as u64;
    let buf_end = buf + SHARED_BUFFER_SIZE as u64;
    if gpa >= buf && end <= buf_end {
        return Ok(Scratch::Page {
            off: (gpa - ghcb) as usize,
        });
    }
    let overlaps_ghcb = gpa < ghcb + PAGE_SIZE_U64 && end > ghcb;
    if overlaps_ghcb || len == 0 || len > MAX_SCRATCH || !env.mem.is_shared(gpa, len) {
        return Err(bad);
    }
    Ok(Scratch::Guest { gpa })
}

pub(crate) fn read_scratch(
    page: &GhcbPage,
    s: Scratch,
    buf: &mut [u8],
    env: &Env<'_>,
) -> Result<(), GhcbError> {
    match s {
        Scratch::Page { off } => {
            let src = page
                .bytes()
                .get(off..off + buf.len())
                .ok_or(GhcbError::InvalidScratch {
                    gpa: off as u64,
                    len: buf.len() as u64,
                })?;
            buf.copy_from_slice(src);
            Ok(())
        }
        Scratch::Guest { gpa } => env.mem.read_shared(gpa, buf).map_err(GhcbError::Memory),
    }
}

pub(crate) fn write_scratch(
    page: &mut GhcbPage,
    s: Scratch,
    data: &[u8],
    env: &mut Env<'_>,
) -> Result<(), GhcbError> {
    match s {
        Scratch::Page { off } => {
            let rel = off - SHARED_BUFFER;
            let dst = page.buffer_mut().get_mut(rel..rel + data.len()).ok_or(
                GhcbError::InvalidScratch {
                    gpa: off as u64,
                    len: data.len() as u64,
                },
            )?;
            dst.copy_from_slice(data);
            Ok(())
        }
        Scratch::Guest { gpa } => env.mem.write_shared(gpa, data).map_err(GhcbError::Memory),
    }
}

/// Check usage and version, then run the event.
pub fn dispatch(page: &mut GhcbPage, ghcb: u64, env: &mut Env<'_>) -> Result<Done, GhcbError> {
    let (usage, version) = (page.usage(), page.version());
    if usage != super::page::USAGE_STANDARD
        || !(GHCB_VERSION_MIN..=GHCB_VERSION_MAX).contains(&version)
    {
        return Err(GhcbError::InvalidUsage { usage, version });
    }
    let exit = page.get(Field::ExitCode)?;
    let info1 = page.get(Field::ExitInfo1)?;
    let info2 = page.get(Field::ExitInfo2)?;
    let answer = match exit {
        code::IOIO => ioio_event(page, ghcb, info1, info2, env)?,
        code::MMIO_READ | code::MMIO_WRITE => {
            mmio_event(page, ghcb, exit == code::MMIO_READ, info1, info2, env)?
        }
        code::MSR => msr_event(page, info1, env)?,
        code::CPUID => cpuid_event(page, env)?,
        code::PSC => super::psc::psc_event(page, ghcb, env)?,
        code::GUEST_REQUEST => guest_request(page, info1, info2, false, env)?,
        code::EXT_GUEST_REQUEST => guest_request(page, info1, info2, true, env)?,
        code::AP_CREATION => ap_creation(page, info1, info2, env)?,
        code::HV_FEATURES => Answer::with(hv_features(), Vec::new()),
        code::TERMINATE => {
            return Ok(Done::Terminate {
                set: (info1 & 0xF) as u8,
                code: ((info1 >> 4) & 0xFF) as u8,
            })
        }
        other => return Err(GhcbError::InvalidEvent { code: other }),
    };
    Ok(Done::Answered(answer))
}

/// The hypervisor feature bitmap offered.
pub fn hv_features() -> u64 {
    msr::features::SNP | msr::features::SNP_AP_CREATION
}

/// Handle a decoded MSR-protocol request.
pub(crate) fn msr_request(h: &mut GhcbHandler, req: MsrRequest, env: &mut Env<'_>) -> Outcome {
    use msr::info;
    let reply = match req {
        MsrRequest::SevInfo => {
            msr::sev_info(GHCB_VERSION_MAX, GHCB_VERSION_MIN, env.platform.c_bit())
        }
        MsrRequest::Cpuid { leaf, reg } => {
            let v = env.platform.cpuid(leaf, 0, 1, 0);
            let i = match reg {
                msr::CpuidReg::Eax => 0,
                msr::CpuidReg::Ebx => 1,
                msr::CpuidReg::Ecx => 2,
                msr::CpuidReg::Edx => 3,
            };
            msr::cpuid(reg, v[i])
        }
        MsrRequest::ApResetHold => {
            return Outcome::ApHold {
                msr: msr::with_data(info::AP_RESET_HOLD_RESP, 1),
            }
        }
        MsrRequest::PreferredGhcb => msr::with_data(info::PREFERRED_GHCB_RESP, (1 << 52) - 1),
        MsrRequest::RegisterGhcb { gfn } => {
            let data = if h.register(gfn, env) {
                gfn
            } else {
                log::warn!("GHCB registration at GFN {gfn:#x} refused");
                (1 << 52) - 1
            };
            msr::with_data(info::REGISTER_GHCB_RESP, data)
        }
        MsrRequest::PageState { gfn, op } => {
            let private = op == PscOp::Private;
            match env.mem.convert(gfn << 12, PageSize::Size4K, private) {
                Ok(()) => msr::psc(0),
                Err(e) => {
                    log::debug!("MSR page state change of GFN {gfn:#x}: {e}");
                    msr::psc(1)
                }
            }
        }
        MsrRequest::HvFeatures => msr::with_data(info::HV_FEATURES_RESP, hv_features()),
        MsrRequest::Terminate { set, code } => {
            log::info!("guest requested termination: set {set} code {code:#x}");
            return Outcome::Terminate {
                set,
                code,
                by_guest: true,
            };
        }
    };
    Outcome::MsrResponse(reply)
}

fn ioio_event(
    page: &mut GhcbPage,
    ghcb: u64,
    info1: u64,
    count: u64,
    env: &mut Env<'_>,
) -> Result<Answer, GhcbError> {
    let port = (info1 >> 16) as u16;
    let size = match info1 & (ioio::SZ8 | ioio::SZ16 | ioio::SZ32) {
        ioio::SZ8 => 1usize,
        ioio::SZ16 => 2,
        ioio::SZ32 => 4,
        _ => {
            return Err(GhcbError::InvalidInput {
                what: "IOIO operand size",
                value: info1,
            })
        }
    };
    let input = info1 & ioio::TYPE_IN != 0;
    if info1 & ioio::STRING == 0 {
        if input {
            let mut d = [0u8; 4];
            env.bus.pio_read(port, &mut d[..size]);
            return Ok(Answer::with(
                0,
                vec![(Field::Rax, u64::from(u32::from_le_bytes(d)))],
            ));
        }
        let rax = page.get(Field::Rax)?;
        env.bus.pio_write(port, &rax.to_le_bytes()[..size]);
        return Ok(Answer::ok());
    }
    // String IO: `count` elements through the scratch area; without REP exactly one.
    if count == 0 || (info1 & ioio::REP == 0 && count != 1) {
        return Err(GhcbError::InvalidInput {
            what: "IOIO string count",
            value: count,
        });
    }
    let len = count
        .checked_mul(size as u64)
        .filter(|&l| l <= MAX_SCRATCH)
        .ok_or(GhcbError::InvalidInput {
            what: "IOIO string count",
            value: count,
        })?;
    let s = scratch(page, ghcb, len, env)?;
    let mut data = vec![0u8; len as usize];
    if input {
        for chunk in data.chunks_mut(size) {
            env.bus.pio_read(port, chunk);
        }
        write_scratch(page, s, &data, env)?;
    } else {
        read_scratch(page, s, &mut data, env)?;
        for chunk in data.chunks(size) {
            env.bus.pio_write(port, chunk);
        }
    }
    Ok(Answer::with(count, Vec::new()))
}

fn mmio_event(
    page: &mut GhcbPage,
    ghcb: u64,
    read: bool,
    gpa: u64,
    len: u64,
    env: &mut Env<'_>,
) -> Result<Answer, GhcbError> {
    if !(1..=8).contains(&len) {
        return Err(GhcbError::InvalidInput {
            what: "MMIO length",
            value: len,
        });
    }
    // Emulating "MMIO" on RAM would let a guest make the host read private memory.
    if env.mem.in_ram(gpa & !(PAGE_SIZE_U64 - 1), PAGE_SIZE_U64)
        || gpa.checked_add(len).is_none()
        || env
            .mem
            .in_ram((gpa + len - 1) & !(PAGE_SIZE_U64 - 1), PAGE_SIZE_U64)
    {
        return Err(GhcbError::InvalidInput {
            what: "MMIO address (guest RAM)",
            value: gpa,
        });
    }
    let s = scratch(page, ghcb, len, env)?;
    let mut data = [0u8; 8];
    let data = &mut data[..len as usize];
    if read {
        env.bus.mmio_read(gpa, data);
        write_scratch(page, s, data, env)?;
    } else {
        read_scratch(page, s, data, env)?;
        env.bus.mmio_write(gpa, data);
    }
    Ok(Answer::ok())
}

fn msr_event(page: &GhcbPage, write: u64, env: &mut Env<'_>) -> Result<Answer, GhcbError> {
    let index = page.get(Field::Rcx)?;
    let index = u32::try_from(index).map_err(|_| GhcbError::InvalidInput {
        what: "MSR index",
        value: index,
    })?;
    match write {
        0 => Ok(match env.platform.rdmsr(index) {
            Some(v) => Answer::with(
                0,
                vec![(Field::Rax, v & 0xFFFF_FFFF), (Field::Rdx, v >> 32)],
            ),
            None => Answer::gp(),
        }),
        1 => {
            let lo = page.get(Field::Rax)? & 0xFFFF_FFFF;
            let hi = page.get(Field::Rdx)? & 0xFFFF_FFFF;
            Ok(if env.platform.wrmsr(index, (hi << 32) | lo) {
                Answer::ok()
            } else {
                Answer::gp()
            })
        }
        other => Err(GhcbError::InvalidInput {
            what: "MSR direction",
            value: other,
        }),
    }
}

fn cpuid_event(page: &GhcbPage, env: &mut Env<'_>) -> Result<Answer, GhcbError> {
    let leaf = page.get(Field::Rax)?;
    let subleaf = page.get(Field::Rcx)?;
    // Leaf 0xD depends on the enabled XSAVE features, so XCR0 is a required input there.
    let xcr0 = if leaf == 0xD {
        page.get(Field::Xcr0)?
    } else {
        1
    };
    let xss = if page.is_valid(Field::Xss) {
        page.raw(Field::Xss)
    } else {
        0
    };
    let [a, b, c, d] = env.platform.cpuid(leaf as u32, subleaf as u32, xcr0, xss);
    Ok(Answer::with(
        0,
        vec![
            (Field::Rax, a.into()),
            (Field::Rbx, b.into()),
            (Field::Rcx, c.into()),
            (Field::Rdx, d.into()),
        ],
    ))
}

/// AP creation operations (EXITINFO1 bits 31:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApOp {
    /// Create when the AP receives INIT.
    CreateOnInit,
    /// Create and run now.
    Create,
    /// Destroy the AP's VMSA.
    Destroy,
}

fn ap_creation(
    page: &GhcbPage,
    info1: u64,
    vmsa_gpa: u64,
    env: &mut Env<'_>,
) -> Result<Answer, GhcbError> {
    let op = match info1 & 0xFFFF_FFFF {
        0 => ApOp::CreateOnInit,
        1 => ApOp::Create,
        2 => ApOp::Destroy,
        other => {
            return Err(GhcbError::InvalidInput {
                what: "AP creation operation",
                value: other,
            })
        }
    };
    let sev_features = if op == ApOp::Destroy {
        0
    } else {
        if vmsa_gpa % PAGE_SIZE_U64 != 0 || env.mem.page_state(vmsa_gpa) != Some(RmpState::Vmsa) {
            return Err(GhcbError::InvalidInput {
                what: "AP VMSA page (not a VMSA in the RMP)",
                value: vmsa_gpa,
            });
        }
        page.get(Field::Rax)?
    };
    let req = ApCreate {
        op,
        apic_id: (info1 >> 32) as u32,
        vmsa_gpa,
        sev_features,
    };
    env.platform
        .ap_create(req)
        .map_err(|what| GhcbError::InvalidInput { what, value: info1 })?;
    Ok(Answer::ok())
}

/// VMM status in SW_EXITINFO2 bits 63:32 of an extended request whose buffer is too small.
pub const EXT_REQ_INVALID_LEN: u64 = 1;

fn guest_request(
    page: &GhcbPage,
    req_gpa: u64,
    resp_gpa: u64,
    extended: bool,
    env: &mut Env<'_>,
) -> Result<Answer, GhcbError> {
    for gpa in [req_gpa, resp_gpa] {
        if gpa % PAGE_SIZE_U64 != 0 || !env.mem.is_shared(gpa, PAGE_SIZE_U64) {
            return Err(GhcbError::InvalidInput {
                what: "guest request page (not a shared page)",
                value: gpa,
            });
        }
    }
    if req_gpa == resp_gpa {
        return Err(GhcbError::InvalidInput {
            what: "guest request and response pages are the same",
            value: req_gpa,
        });
    }
    let mut regs = Vec::new();
    if extended {
        let certs_gpa = page.get(Field::Rax)?;
        let pages = page.get(Field::Rbx)?;
        let bad_buffer = GhcbError::InvalidInput {
            what: "certificate buffer (not shared pages)",
            value: certs_gpa,
        };
        // The same answer KVM's certificate-request exit gets: the table, or an empty table
        // (the 24-byte terminator) when no certificates are configured.
        let answer =
            crate::exits::answer_cert_request(certs_gpa, pages, env.platform.certificates())
                .map_err(|_| bad_buffer.clone())?;
        let table = match answer {
            CertAnswer::TooSmall { needed } => {
                return Ok(Answer::with(
                    EXT_REQ_INVALID_LEN << 32,
                    vec![(Field::Rbx, needed)],
                ))
            }
            CertAnswer::Write { table, .. } => table,
        };
        let need = (table.len() as u64).div_ceil(PAGE_SIZE_U64);
        if !env.mem.is_shared(certs_gpa, need * PAGE_SIZE_U64) {
            return Err(bad_buffer);
        }
        env.mem
            .write_shared(certs_gpa, &table)
            .map_err(GhcbError::Memory)?;
        regs.push((Field::Rbx, need));
    }
    let mut request = [0u8; PAGE_SIZE];
    env.mem
        .read_shared(req_gpa, &mut request)
        .map_err(GhcbError::Memory)?;
    let mut response = [0u8; PAGE_SIZE];
    let status = env.platform.guest_request(&request, &mut response);
    env.mem
        .write_shared(resp_gpa, &response)
        .map_err(GhcbError::Memory)?;
    Ok(Answer::with(u64::from(status), regs))
}

/// Convenience for the vCPU loop: a host-decided termination.
pub fn terminate_general() -> Outcome {
    host_terminate(term::GENERAL)
}
