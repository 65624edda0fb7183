//! A simulated SNP guest and the run-time services of the software platform, so the whole GHCB
//! protocol can run end to end in-process: the guest side does what a Linux SNP guest does
//! (GHCB registration through the MSR protocol, PVALIDATE before sharing and after
//! privatising, string port IO for the console, MMIO through the shared buffer, AP creation
//! from a VMSA page, an attestation report over the guest-message protocol), the host side is
//! the real [`GhcbHandler`] with whatever [`IoBus`] the caller plugs in.

use super::msr::{self, info};
use super::nae::code;
use super::page::{Field, GhcbPage, SHARED_BUFFER};
use super::psc::{PscDesc, PscEntry};
use super::{ApCreate, Env, GhcbHandler, GuestPlatform, IoBus, Outcome};
use crate::page_info::PAGE_SIZE;
use crate::page_state::memory::{MemoryError, ModelRam};
use crate::page_state::{PageSize, PageStateError, Pvalidated};
use crate::plan::PAGE_SIZE_U64;
use crate::report::firmware::{report_from_response, request_page, ModelFirmware, SECRETS_VMPCK0};
use crate::report::message::MessageError;
use std::collections::BTreeMap;

/// Run-time services of the software platform behind the GHCB.
#[derive(Debug)]
pub struct ModelServices {
    /// The firmware answering guest requests.
    pub firmware: ModelFirmware,
    /// Number of vCPUs (APIC IDs 0..vcpus).
    pub vcpus: u32,
    /// CPUID table by (leaf, subleaf); other leaves read as zero, as KVM answers leaves
    /// beyond the maximum.
    pub cpuid: BTreeMap<(u32, u32), [u32; 4]>,
    /// MSR values the guest may read and write.
    pub msrs: BTreeMap<u32, u64>,
    /// Certificate table for extended requests.
    pub certs: Vec<u8>,
    /// AP requests accepted, in order.
    pub aps: Vec<ApCreate>,
}

impl ModelServices {
    /// Services for `vcpus` vCPUs with `firmware`.
    pub fn new(firmware: ModelFirmware, vcpus: u32) -> Self {
        Self {
            firmware,
            vcpus,
            cpuid: BTreeMap::new(),
            msrs: BTreeMap::new(),
            certs: Vec::new(),
            aps: Vec::new(),
        }
    }

    /// The certificate table extended guest requests return: the one the host was configured
    /// with, byte for byte (what KVM's certificate-request exit writes on the real platform).
    pub fn with_certificates(self, table: &crate::certs::CertTable) -> Self {
        Self {
            certs: table.bytes().to_vec(),
            ..self
        }
    }
}

impl GuestPlatform for ModelServices {
    fn cpuid(&mut self, leaf: u32, subleaf: u32, _xcr0: u64, _xss: u64) -> [u32; 4] {
        self.cpuid
            .get(&(leaf, subleaf))
            .copied()
            .unwrap_or_default()
    }
    fn rdmsr(&mut self, index: u32) -> Option<u64> {
        self.msrs.get(&index).copied()
    }
    fn wrmsr(&mut self, index: u32, value: u64) -> bool {
        match self.msrs.get_mut(&index) {
            Some(v) => {
                *v = value;
                true
            }
            None => false,
        }
    }
    fn c_bit(&self) -> u8 {
        51
    }
    fn ap_create(&mut self, req: ApCreate) -> Result<(), &'static str> {
        if req.apic_id == 0 || req.apic_id >= self.vcpus {
            return Err("APIC ID names no AP of this VM");
        }
        self.aps.push(req);
        Ok(())
    }
    fn guest_request(&mut self, request: &[u8; PAGE_SIZE], response: &mut [u8; PAGE_SIZE]) -> u32 {
        self.firmware.guest_request(request, response)
    }
    fn certificates(&self) -> &[u8] {
        &self.certs
    }
}

/// Why a model-guest step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// The host answered a NAE event with an error.
    #[error("{event} refused by the host: EXITINFO1 {info1:#x} EXITINFO2 {info2:#x}")]
    Refused {
        event: &'static str,
        info1: u64,
        info2: u64,
    },
    /// The host answered an MSR request unexpectedly.
    #[error("MSR request {request:#x} answered {response:?}")]
    Msr { request: u64, response: Outcome },
    /// A guest memory access or instruction faulted.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// PVALIDATE failed or reported no change (a replay the guest must not accept).
    #[error("PVALIDATE: {0}")]
    Pvalidate(String),
    /// The report response did not decrypt.
    #[error(transparent)]
    Message(#[from] MessageError),
}

impl From<PageStateError> for GuestError {
    fn from(e: PageStateError) -> Self {
        GuestError::Pvalidate(e.to_string())
    }
}

/// The guest side, one vCPU.
pub struct ModelGuest<'a> {
    /// Guest RAM.
    pub mem: &'a mut ModelRam,
    /// The device bus the host dispatches to.
    pub bus: &'a mut dyn IoBus,
    /// Platform services.
    pub services: &'a mut ModelServices,
    /// The host's handler for this vCPU.
    pub handler: GhcbHandler,
    ghcb: u64,
    seqno: u64,
}

impl<'a> ModelGuest<'a> {
    /// A guest whose GHCB will live at `ghcb`.
    pub fn new(
        mem: &'a mut ModelRam,
        bus: &'a mut dyn IoBus,
        services: &'a mut ModelServices,
        ghcb: u64,
    ) -> Self {
        Self {
            mem,
            bus,
            services,
            handler: GhcbHandler::new(),
            ghcb,
            seqno: 1,
        }
    }

    fn exit(&mut self, msr_value: u64) -> Outcome {
        let mut env = Env {
            mem: &mut *self.mem,
            bus: &mut *self.bus,
            platform: &mut *self.services,
        };
        self.handler.vmgexit(msr_value, &mut env)
    }

    fn msr_expect(&mut self, request: u64, response_code: u64) -> Result<u64, GuestError> {
        match self.exit(request) {
            Outcome::MsrResponse(v) if v & 0xFFF == response_code => Ok(v),
            other => Err(GuestError::Msr {
                request,
                response: other,
            }),
        }
    }

    fn pvalidate(&mut self, gpa: u64, validate: bool) -> Result<(), GuestError> {
        match self
            .mem
            .states_mut()
            .pvalidate(gpa, PageSize::Size4K, validate)?
        {
            Pvalidated::Changed => Ok(()),
            Pvalidated::Unchanged => Err(GuestError::Pvalidate(format!(
                "{gpa:#x} already {}validated",
                if validate { "" } else { "in" }
            ))),
        }
    }

    /// Make the GHCB page shared (rescinding validation first if it was private), then
    /// register it, as Linux does before its first NAE event (GHCB spec §2.3.2).
    pub fn register_ghcb(&mut self) -> Result<(), GuestError> {
        let gfn = self.ghcb / PAGE_SIZE_U64;
        if self
            .mem
            .states()
            .state(self.ghcb)
            .is_some_and(|s| s.is_private())
        {
            self.pvalidate(self.ghcb, false)?;
            let req = info::PSC_REQ | (gfn << 12) | (2 << 52);
            let v = self.msr_expect(req, info::PSC_RESP)?;
            if v >> 32 != 0 {
                return Err(GuestError::Msr {
                    request: req,
                    response: Outcome::MsrResponse(v),
                });
            }
        }
        let req = msr::with_data(info::REGISTER_GHCB_REQ, gfn);
        let v = self.msr_expect(req, info::REGISTER_GHCB_RESP)?;
        if v >> 12 != gfn {
            return Err(GuestError::Msr {
                request: req,
                response: Outcome::MsrResponse(v),
            });
        }
        Ok(())
    }

    /// One NAE event: write the page (C-bit clear), VMGEXIT, read the answer back.
    pub fn nae(&mut self, event: &'static str, mut page: GhcbPage) -> Result<GhcbPage, GuestError> {
        page.set_version(super::GHCB_VERSION_MAX);
        self.mem.guest_write(self.ghcb, page.bytes(), false)?;
        let out = self.exit(self.ghcb);
        if out != Outcome::Resume {
            return Err(GuestError::Msr {
                request: self.ghcb,
                response: out,
            });
        }
        let mut back = [0u8; PAGE_SIZE];
        self.mem.guest_read(self.ghcb, &mut back, false)?;
        let back = GhcbPage::from_bytes(&back);
        let (info1, info2) = (back.raw(Field::ExitInfo1), back.raw(Field::ExitInfo2));
        if info1 != 0 {
            return Err(GuestError::Refused {
                event,
                info1,
                info2,
            });
        }
        Ok(back)
    }

    fn event(exit: u64, info1: u64, info2: u64) -> GhcbPage {
        let mut p = GhcbPage::default();
        p.set(Field::ExitCode, exit);
        p.set(Field::ExitInfo1, info1);
        p.set(Field::ExitInfo2, info2);
        p
    }

    /// `REP OUTSB` of `text` to `port` through the shared buffer.
    pub fn print(&mut self, port: u16, text: &[u8]) -> Result<(), GuestError> {
        for chunk in text.chunks(super::page::SHARED_BUFFER_SIZE) {
            let info1 = (u64::from(port) << 16) | 0x10 | 0x4 | 0x8;
            let mut p = Self::event(code::IOIO, info1, chunk.len() as u64);
            p.set(Field::Scratch, self.ghcb + SHARED_BUFFER as u64);
            p.buffer_mut()[..chunk.len()].copy_from_slice(chunk);
            self.nae("IOIO", p)?;
        }
        Ok(())
    }

    /// A 1-byte `IN` from `port`.
    pub fn inb(&mut self, port: u16) -> Result<u8, GuestError> {
        Ok(self.pio_in(port, 1)? as u8)
    }

    fn size_bits(size: u8) -> u64 {
        match size {
            1 => 0x10,
            2 => 0x20,
            _ => 0x40,
        }
    }

    /// An `IN` of `size` (1, 2 or 4) bytes from `port`.
    pub fn pio_in(&mut self, port: u16, size: u8) -> Result<u32, GuestError> {
        let info1 = (u64::from(port) << 16) | Self::size_bits(size) | 1;
        let p = Self::event(code::IOIO, info1, 0);
        Ok(self.nae("IOIO", p)?.raw(Field::Rax) as u32)
    }

    /// An `OUT` of `size` (1, 2 or 4) bytes of `value` to `port`.
    pub fn pio_out(&mut self, port: u16, size: u8, value: u32) -> Result<(), GuestError> {
        let info1 = (u64::from(port) << 16) | Self::size_bits(size);
        let mut p = Self::event(code::IOIO, info1, 0);
        p.set(Field::Rax, value.into());
        self.nae("IOIO", p).map(|_| ())
    }

    /// MMIO write of `data` (1..=8 bytes).
    pub fn mmio_write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestError> {
        let mut p = Self::event(code::MMIO_WRITE, gpa, data.len() as u64);
        p.set(Field::Scratch, self.ghcb + SHARED_BUFFER as u64);
        p.buffer_mut()[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
        self.nae("MMIO write", p).map(|_| ())
    }

    /// MMIO read of `len` (1..=8) bytes.
    pub fn mmio_read(&mut self, gpa: u64, len: usize) -> Result<Vec<u8>, GuestError> {
        let mut p = Self::event(code::MMIO_READ, gpa, len as u64);
        p.set(Field::Scratch, self.ghcb + SHARED_BUFFER as u64);
        let back = self.nae("MMIO read", p)?;
        Ok(back.buffer()[..len.min(8)].to_vec())
    }

    /// Page state change of `pages` 4 KiB pages from `gpa` through the NAE descriptor,
    /// re-issued until the host has applied every entry.
    pub fn psc(&mut self, gpa: u64, pages: u64, private: bool) -> Result<(), GuestError> {
        let gfns: Vec<u64> = (0..pages).map(|i| gpa / PAGE_SIZE_U64 + i).collect();
        for batch in gfns.chunks(super::psc::MAX_ENTRIES) {
            let desc = PscDesc {
                cur_entry: 0,
                end_entry: (batch.len() - 1) as u16,
                entries: batch
                    .iter()
                    .map(|&gfn| PscEntry {
                        cur_page: 0,
                        gfn,
                        op: if private { 1 } else { 2 },
                        large: false,
                        reserved: 0,
                    })
                    .collect(),
            };
            let mut bytes = desc.to_bytes();
            loop {
                let mut p = Self::event(code::PSC, 0, 0);
                p.set(Field::Scratch, self.ghcb + SHARED_BUFFER as u64);
                p.buffer_mut()[..bytes.len()].copy_from_slice(&bytes);
                let back = self.nae("PSC", p)?;
                let status = back.raw(Field::ExitInfo2);
                let n = bytes.len();
                bytes.copy_from_slice(&back.buffer()[..n]);
                let now = PscDesc::parse(&bytes).ok_or(GuestError::Refused {
                    event: "PSC",
                    info1: 0,
                    info2: status,
                })?;
                if status != 0 {
                    return Err(GuestError::Refused {
                        event: "PSC",
                        info1: 0,
                        info2: status,
                    });
                }
                if now.cur_entry > now.end_entry {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Privatise and validate `pages` pages (Linux `set_memory_encrypted` order: PSC, then
    /// PVALIDATE).
    pub fn accept(&mut self, gpa: u64, pages: u64) -> Result<(), GuestError> {
        self.psc(gpa, pages, true)?;
        for i in 0..pages {
            self.pvalidate(gpa + i * PAGE_SIZE_U64, true)?;
        }
        Ok(())
    }

    /// Rescind validation and share `pages` pages (`set_memory_decrypted` order).
    pub fn share(&mut self, gpa: u64, pages: u64) -> Result<(), GuestError> {
        for i in 0..pages {
            self.pvalidate(gpa + i * PAGE_SIZE_U64, false)?;
        }
        self.psc(gpa, pages, false)
    }

    /// Start AP `apic_id` from a fresh VMSA page at `vmsa`.
    pub fn start_ap(
        &mut self,
        apic_id: u32,
        vmsa: u64,
        sev_features: u64,
    ) -> Result<(), GuestError> {
        self.accept(vmsa, 1)?;
        self.mem.states_mut().set_vmsa(vmsa, true)?;
        let mut p = Self::event(code::AP_CREATION, 1 | (u64::from(apic_id) << 32), vmsa);
        p.set(Field::Rax, sev_features);
        self.nae("AP creation", p).map(|_| ())
    }

    /// Ask for an attestation report carrying `report_data`: VMPCK0 is read from the private
    /// secrets page, the request/response pages are shared pages at `req`/`resp`.
    pub fn request_report(
        &mut self,
        secrets: u64,
        req: u64,
        resp: u64,
        report_data: &[u8; 64],
    ) -> Result<Vec<u8>, GuestError> {
        self.report_request(secrets, req, resp, report_data, None)
    }

    /// An extended request: the report plus the host's certificate table, written into the
    /// `pages` shared pages at `certs` (GHCB spec §4.1.8.2). Returns the report and those
    /// pages' bytes.
    pub fn request_extended_report(
        &mut self,
        secrets: u64,
        (req, resp): (u64, u64),
        (certs, pages): (u64, u64),
        report_data: &[u8; 64],
    ) -> Result<(Vec<u8>, Vec<u8>), GuestError> {
        let report = self.report_request(secrets, req, resp, report_data, Some((certs, pages)))?;
        let mut table = vec![0u8; usize::try_from(pages).unwrap_or(0) * PAGE_SIZE];
        self.mem.guest_read(certs, &mut table, false)?;
        Ok((report, table))
    }

    fn report_request(
        &mut self,
        secrets: u64,
        req: u64,
        resp: u64,
        report_data: &[u8; 64],
        certs: Option<(u64, u64)>,
    ) -> Result<Vec<u8>, GuestError> {
        let mut vmpck0 = [0u8; 32];
        self.mem
            .guest_read(secrets + SECRETS_VMPCK0 as u64, &mut vmpck0, true)?;
        let page = request_page(&vmpck0, self.seqno, 0, report_data);
        let mut full = [0u8; PAGE_SIZE];
        full[..page.len()].copy_from_slice(&page);
        self.mem.guest_write(req, &full, false)?;
        let event = match certs {
            None => Self::event(code::GUEST_REQUEST, req, resp),
            Some((gpa, pages)) => {
                let mut p = Self::event(code::EXT_GUEST_REQUEST, req, resp);
                p.set(Field::Rax, gpa);
                p.set(Field::Rbx, pages);
                p
            }
        };
        let back = self.nae("guest request", event)?;
        let status = back.raw(Field::ExitInfo2);
        if status != 0 {
            return Err(GuestError::Refused {
                event: "guest request",
                info1: 0,
                info2: status,
            });
        }
        let mut rsp = [0u8; PAGE_SIZE];
        self.mem.guest_read(resp, &mut rsp, false)?;
        let report = report_from_response(&vmpck0, self.seqno + 1, &rsp)?;
        self.seqno += 2;
        Ok(report)
    }
}
