//! Decoding of the KVM exits an SNP guest causes at run time (data flow 5): pure functions
//! from the `kvm_run` fields to typed requests, so the VMM applies only what was checked and
//! the decoding can be fuzzed.
//!
//! Source: Linux `Documentation/virt/kvm/api.rst` (KVM_EXIT_HYPERCALL with
//! `KVM_HC_MAP_GPA_RANGE`, KVM_EXIT_MEMORY_FAULT, KVM_SYSTEM_EVENT_SEV_TERM,
//! KVM_EXIT_SNP_REQ_CERTS) and `arch/x86/kvm/svm/sev.c` (how PSC requests become
//! MAP_GPA_RANGE exits; npages counts 4 KiB pages, one exit per contiguous run).

use crate::plan::{RamLayout, PAGE_SIZE_U64};

/// `KVM_HC_MAP_GPA_RANGE` (include/uapi/linux/kvm_para.h).
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;
/// Attribute bits 3:0: page size (0 4K, 1 2M, 2 1G).
pub const MAP_GPA_RANGE_PAGE_SZ_MASK: u64 = 0xF;
/// Attribute bit 4: make private ("encrypted"); clear = shared.
pub const MAP_GPA_RANGE_ENCRYPTED: u64 = 1 << 4;
/// `KVM_EINVAL`, the hypercall return for a refused request.
pub const KVM_EINVAL: u64 = 22;
/// `KVM_MEMORY_EXIT_FLAG_PRIVATE`.
pub const MEMORY_EXIT_FLAG_PRIVATE: u64 = 1 << 3;
/// `KVM_SYSTEM_EVENT_SEV_TERM`.
pub const SYSTEM_EVENT_SEV_TERM: u32 = 6;
/// `KVM_EXIT_SNP_REQ_CERTS` (not yet in kvm-bindings).
pub const KVM_EXIT_SNP_REQ_CERTS: u32 = 42;
/// `ret` values of the certificate-request exit.
pub mod certs_ret {
    /// The table was written.
    pub const OK: u64 = 0;
    /// The guest buffer is too small; `npages` says how many pages are needed.
    pub const ENOSPC: u64 = 28;
    /// Generic failure.
    pub const EIO: u64 = 5;
}

/// Refusals of an exit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExitError {
    /// Guest fault: a hypercall other than MAP_GPA_RANGE reached the VMM.
    #[error("unexpected hypercall {nr}")]
    UnknownHypercall { nr: u64 },
    /// Guest fault: a conversion range is malformed.
    #[error("conversion {gpa:#x} x {npages} pages (attributes {attrs:#x}): {reason}")]
    BadRange {
        gpa: u64,
        npages: u64,
        attrs: u64,
        reason: &'static str,
    },
    /// Guest fault: the range is not guest RAM.
    #[error("conversion {gpa:#x}+{size:#x} is outside guest RAM")]
    OutsideRam { gpa: u64, size: u64 },
    /// Guest fault: an implicit conversion the policy forbids.
    #[error("implicit {} conversion at {gpa:#x}+{size:#x} refused by policy", if *private { "private" } else { "shared" })]
    ImplicitRefused { gpa: u64, size: u64, private: bool },
    /// Guest fault: a certificate request with a malformed buffer.
    #[error("certificate buffer {gpa:#x} x {npages} pages is malformed")]
    BadCertBuffer { gpa: u64, npages: u64 },
}

/// A page-attribute change the memory layer applies with KVM_SET_MEMORY_ATTRIBUTES; on a
/// shared conversion it also frees the private backing (guest_memfd punch-hole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConversion {
    /// First byte (page aligned).
    pub gpa: u64,
    /// Length in bytes (page multiple, non-zero).
    pub size: u64,
    /// Target: private (true) or shared.
    pub private: bool,
}

/// Where a shared conversion's private backing lies: the guest_memfd of RAM slot `slot`,
/// `[offset, offset + len)` — the range to `fallocate(PUNCH_HOLE | KEEP_SIZE)` so the host
/// frees the private pages (their contents are dead once shared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PunchHole {
    /// KVM memory slot.
    pub slot: u32,
    /// Byte offset in the slot's guest_memfd (the slots map guest_memfd offset 0 at the
    /// region start).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl MemoryConversion {
    /// The `KVM_SET_MEMORY_ATTRIBUTES` argument for this conversion.
    pub fn kvm_attributes(&self) -> kvm_bindings::kvm_memory_attributes {
        kvm_bindings::kvm_memory_attributes {
            address: self.gpa,
            size: self.size,
            attributes: if self.private {
                u64::from(kvm_bindings::KVM_MEMORY_ATTRIBUTE_PRIVATE)
            } else {
                0
            },
            flags: 0,
        }
    }

    /// For a shared conversion, the guest_memfd range to punch in `slots`; `None` for a
    /// private conversion or a range outside every slot (checked by [`Self::check_ram`]).
    pub fn punch_hole(&self, slots: &[crate::launch::RamSlot]) -> Option<PunchHole> {
        if self.private {
            return None;
        }
        let end = self.gpa.checked_add(self.size)?;
        slots
            .iter()
            .find(|s| self.gpa >= s.region.gpa && end <= s.region.end())
            .map(|s| PunchHole {
                slot: s.slot,
                offset: self.gpa - s.region.gpa,
                len: self.size,
            })
    }

    /// Error unless the whole range is in one RAM region.
    pub fn check_ram(&self, ram: &RamLayout) -> Result<(), ExitError> {
        if ram.contains(self.gpa, self.size) {
            Ok(())
        } else {
            Err(ExitError::OutsideRam {
                gpa: self.gpa,
                size: self.size,
            })
        }
    }
}

/// Decode a `KVM_EXIT_HYPERCALL`. Only MAP_GPA_RANGE is expected (the VMM enables no other
/// exit). On error the vCPU loop writes [`KVM_EINVAL`] into `hypercall.ret`; on success 0
/// once the conversion is applied.
pub fn decode_hypercall(nr: u64, args: &[u64; 6]) -> Result<MemoryConversion, ExitError> {
    if nr != KVM_HC_MAP_GPA_RANGE {
        return Err(ExitError::UnknownHypercall { nr });
    }
    let (gpa, npages, attrs) = (args[0], args[1], args[2]);
    let bad = |reason| ExitError::BadRange {
        gpa,
        npages,
        attrs,
        reason,
    };
    let align_pages: u64 = match attrs & MAP_GPA_RANGE_PAGE_SZ_MASK {
        0 => 1,
        1 => 512,
        2 => 512 * 512,
        _ => return Err(bad("unknown page size")),
    };
    if attrs & !(MAP_GPA_RANGE_PAGE_SZ_MASK | MAP_GPA_RANGE_ENCRYPTED) != 0 {
        return Err(bad("unknown attribute bits"));
    }
    if npages == 0 {
        return Err(bad("no pages"));
    }
    let align = align_pages * PAGE_SIZE_U64;
    if gpa % align != 0 || npages % align_pages != 0 {
        return Err(bad("not aligned to its page size"));
    }
    let size = npages
        .checked_mul(PAGE_SIZE_U64)
        .filter(|s| gpa.checked_add(*s).is_some())
        .ok_or(bad("range wraps"))?;
    Ok(MemoryConversion {
        gpa,
        size,
        private: attrs & MAP_GPA_RANGE_ENCRYPTED != 0,
    })
}

/// What the VMM does with `KVM_EXIT_MEMORY_FAULT` (an access whose C-bit disagrees with the
/// page's attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImplicitConversion {
    /// Convert the faulting range to what the access asked for, as Cloud Hypervisor and QEMU
    /// do; needed by guests that rely on implicit conversion. The contents of the page are
    /// lost either way, so this gives the host no access to private data.
    #[default]
    Allow,
    /// Only private conversions are implicit; a private page is never shared without an
    /// explicit request (a stricter setting for guests that always use PSC).
    PrivateOnly,
    /// Every implicit conversion ends the VM.
    Deny,
}

/// Decode a `KVM_EXIT_MEMORY_FAULT` under `policy`.
pub fn decode_memory_fault(
    flags: u64,
    gpa: u64,
    size: u64,
    policy: ImplicitConversion,
) -> Result<MemoryConversion, ExitError> {
    let private = flags & MEMORY_EXIT_FLAG_PRIVATE != 0;
    let bad = |reason| ExitError::BadRange {
        gpa,
        npages: size / PAGE_SIZE_U64,
        attrs: flags,
        reason,
    };
    if size == 0 || gpa % PAGE_SIZE_U64 != 0 || size % PAGE_SIZE_U64 != 0 {
        return Err(bad("fault range not page aligned"));
    }
    if gpa.checked_add(size).is_none() {
        return Err(bad("range wraps"));
    }
    let allowed = match policy {
        ImplicitConversion::Allow => true,
        ImplicitConversion::PrivateOnly => private,
        ImplicitConversion::Deny => false,
    };
    if !allowed {
        return Err(ExitError::ImplicitRefused { gpa, size, private });
    }
    Ok(MemoryConversion { gpa, size, private })
}

/// A guest's termination request as KVM reports it (`KVM_SYSTEM_EVENT_SEV_TERM`,
/// `data[0]` = the GHCB MSR value of the request, GHCB spec §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevTermination {
    /// Reason code set (0 = GHCB standard, 1 = Linux).
    pub set: u8,
    /// Reason code.
    pub code: u8,
    /// The raw GHCB MSR value.
    pub raw: u64,
}

impl std::fmt::Display for SevTermination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SEV termination request: reason set {} code {:#x}",
            self.set, self.code
        )
    }
}

/// Decode a `KVM_EXIT_SYSTEM_EVENT`; `None` if it is not an SEV termination.
pub fn decode_system_event(kind: u32, data: &[u64]) -> Option<SevTermination> {
    if kind != SYSTEM_EVENT_SEV_TERM {
        return None;
    }
    let raw = data.first().copied().unwrap_or(0);
    Some(SevTermination {
        set: ((raw >> 12) & 0xF) as u8,
        code: ((raw >> 16) & 0xFF) as u8,
        raw,
    })
}

/// The answer to a `KVM_EXIT_SNP_REQ_CERTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertAnswer {
    /// Write `table` at the guest buffer, then `ret` = 0.
    Write { gpa: u64, table: Vec<u8> },
    /// `ret` = ENOSPC and `npages` = `needed`.
    TooSmall { needed: u64 },
}

impl CertAnswer {
    /// The `ret` value.
    pub fn ret(&self) -> u64 {
        match self {
            CertAnswer::Write { .. } => certs_ret::OK,
            CertAnswer::TooSmall { .. } => certs_ret::ENOSPC,
        }
    }
}

/// Answer a certificate request for the guest buffer `gpa` of `npages` pages from the
/// configured certificate table `blob` (GUID table terminated by 24 zero bytes, then the
/// certificates; GHCB spec §4.1.8.2). An empty blob answers with an empty table (the
/// terminator only). The caller checks that the buffer is shared guest RAM before writing.
pub fn answer_cert_request(gpa: u64, npages: u64, blob: &[u8]) -> Result<CertAnswer, ExitError> {
    if gpa % PAGE_SIZE_U64 != 0
        || npages
            .checked_mul(PAGE_SIZE_U64)
            .and_then(|l| gpa.checked_add(l))
            .is_none()
    {
        return Err(ExitError::BadCertBuffer { gpa, npages });
    }
    let table = if blob.is_empty() {
        vec![0u8; 24]
    } else {
        blob.to_vec()
    };
    let needed = (table.len() as u64).div_ceil(PAGE_SIZE_U64);
    if needed > npages {
        return Ok(CertAnswer::TooSmall { needed });
    }
    Ok(CertAnswer::Write { gpa, table })
}

#[cfg(test)]
mod tests;
