//! The reverse-map (RMP) state of every guest page after launch, and what the hardware does
//! with it: PVALIDATE, guest accesses with and without the C-bit, host page-state updates
//! (RMPUPDATE on private/shared conversion), PSMASH/UNSMASH and the VMSA marking used for AP
//! creation (data flow 5, "SNP run").
//!
//! Sources: AMD64 APM vol. 3 "PVALIDATE" (result codes, rFLAGS.CF on no change) and vol. 2
//! §15.36.10 "Reverse Map Table" (assigned/validated bits, page size, #VC 0x404 on an
//! unvalidated private access, nested page fault on a C-bit mismatch); GHCB spec 56421 §4.1.6
//! (page state change operations, PSMASH/UNSMASH). The model is per 4 KiB page; a 2 MiB RMP
//! entry is 512 consecutive 4 KiB entries flagged `large` and moved together.
//!
//! Contents are not kept here: [`memory::ModelRam`] owns the bytes and scrubs a page whenever
//! a conversion changes its owner, so "conversions lose contents" holds for every caller.

pub mod memory;

use crate::plan::{LaunchPlan, RamRegion, PAGE_SIZE_U64};
use std::collections::BTreeMap;

/// 4 KiB pages in one 2 MiB page.
pub const PAGES_PER_2M: u64 = 512;
/// Bytes in a 2 MiB page.
pub const SIZE_2M: u64 = PAGE_SIZE_U64 * PAGES_PER_2M;

/// PVALIDATE result in RAX: bad operand or page not assigned to this guest (APM "PVALIDATE").
pub const PVALIDATE_FAIL_INPUT: u64 = 1;
/// PVALIDATE result in RAX: the request size differs from the RMP entry's page size.
pub const PVALIDATE_FAIL_SIZEMISMATCH: u64 = 6;
/// #VC error code for a private access to an assigned page that is not validated.
pub const VC_PAGE_NOT_VALIDATED: u64 = 0x404;

/// Page size of an RMP entry or of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageSize {
    /// 4 KiB.
    Size4K,
    /// 2 MiB (512 entries moved together).
    Size2M,
}

impl PageSize {
    /// Number of 4 KiB pages.
    pub fn pages(self) -> u64 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => PAGES_PER_2M,
        }
    }

    /// Size in bytes.
    pub fn bytes(self) -> u64 {
        self.pages() * PAGE_SIZE_U64
    }
}

/// Who owns a page and whether the guest validated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RmpState {
    /// Hypervisor-owned: the guest reaches it only with the C-bit clear.
    Shared,
    /// Assigned to the guest, not validated: a private access raises #VC 0x404.
    PrivateInvalid,
    /// Assigned and validated (by PVALIDATE or by SNP_LAUNCH_UPDATE).
    PrivateValid,
    /// Validated and marked as a vCPU save area (RMPADJUST VMSA bit); the guest cannot touch it.
    Vmsa,
}

impl RmpState {
    /// Assigned to the guest (any private state).
    pub fn is_private(self) -> bool {
        !matches!(self, RmpState::Shared)
    }
}

/// One RMP entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RmpEntry {
    /// Ownership and validation.
    pub state: RmpState,
    /// Part of a 2 MiB entry.
    pub large: bool,
    /// Validated by SNP_LAUNCH_UPDATE rather than by the guest.
    pub launched: bool,
}

const SHARED: RmpEntry = RmpEntry {
    state: RmpState::Shared,
    large: false,
    launched: false,
};

/// The outcome of a PVALIDATE that the hardware carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pvalidated {
    /// The validated bit changed; rFLAGS.CF = 0.
    Changed,
    /// The validated bit already had the requested value; rFLAGS.CF = 1. Guests treat this as
    /// a replay attempt by the host.
    Unchanged,
}

/// A guest memory access as the hardware judges it against the RMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The access proceeds.
    Allowed,
    /// #VC with error code [`VC_PAGE_NOT_VALIDATED`] inside the guest.
    NotValidated,
    /// Nested page fault to the host; `private` is the C-bit of the access (KVM reports it as
    /// `KVM_EXIT_MEMORY_FAULT` with `KVM_MEMORY_EXIT_FLAG_PRIVATE`).
    NestedFault {
        /// The access had the C-bit set.
        private: bool,
    },
}

/// What a host conversion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Converted {
    /// Pages whose owner changed (their contents are gone).
    pub changed: u64,
    /// Pages that already had the requested owner.
    pub unchanged: u64,
}

/// Refusals of the page-state model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageStateError {
    /// Guest fault: PVALIDATE failed; `code` is the value the instruction leaves in RAX.
    #[error("PVALIDATE of {gpa:#x} failed with {code}: {reason}")]
    Pvalidate {
        gpa: u64,
        code: u64,
        reason: &'static str,
    },
    /// Guest fault: the range is not (wholly) guest RAM.
    #[error("{gpa:#x}+{len:#x} is not guest RAM")]
    OutsideRam { gpa: u64, len: u64 },
    /// Guest fault: an address is not aligned to the page size it names.
    #[error("{gpa:#x} is not aligned to {size:?}")]
    Misaligned { gpa: u64, size: PageSize },
    /// Guest fault: the page is in a state the operation does not accept.
    #[error("{op} refused at {gpa:#x}: page is {state:?}")]
    BadState {
        op: &'static str,
        gpa: u64,
        state: RmpState,
    },
    /// Host fault: a launch plan names pages outside its own RAM.
    #[error("launch page {gpa:#x} is outside RAM")]
    LaunchOutsideRam { gpa: u64 },
}

/// The RMP of one guest: sparse, every RAM page not listed is [`RmpState::Shared`].
#[derive(Debug, Clone)]
pub struct PageStates {
    ram: Vec<RamRegion>,
    entries: BTreeMap<u64, RmpEntry>,
}

impl PageStates {
    /// All of `ram` shared.
    pub fn new(ram: &[RamRegion]) -> Self {
        Self {
            ram: ram.to_vec(),
            entries: BTreeMap::new(),
        }
    }

    /// The state right after SNP_LAUNCH_FINISH of `plan`: every launched page private and
    /// validated (ABI 56860 §8.17: LAUNCH_UPDATE leaves pages guest-valid), the rest shared.
    /// The VMSA page KVM launches lies outside RAM and is not tracked here.
    pub fn after_launch(plan: &LaunchPlan) -> Result<Self, PageStateError> {
        let mut states = Self::new(plan.ram.regions());
        for page in &plan.pages {
            if !states.in_ram(page.gpa, PAGE_SIZE_U64) {
                return Err(PageStateError::LaunchOutsideRam { gpa: page.gpa });
            }
            states.entries.insert(
                page.gpa / PAGE_SIZE_U64,
                RmpEntry {
                    state: RmpState::PrivateValid,
                    large: false,
                    launched: true,
                },
            );
        }
        Ok(states)
    }

    /// Frame numbers of the pages that are not shared, in ascending order.
    pub fn private_gfns(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries
            .iter()
            .filter(|(_, e)| e.state.is_private())
            .map(|(gfn, _)| *gfn)
    }

    /// The RAM regions.
    pub fn ram(&self) -> &[RamRegion] {
        &self.ram
    }

    /// Whether `[gpa, gpa + len)` lies in one RAM region.
    pub fn in_ram(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        self.ram.iter().any(|r| gpa >= r.gpa && end <= r.end())
    }

    /// The entry of the page holding `gpa`, `None` outside RAM.
    pub fn entry(&self, gpa: u64) -> Option<RmpEntry> {
        self.in_ram(gpa & !(PAGE_SIZE_U64 - 1), PAGE_SIZE_U64)
            .then(|| self.get(gpa / PAGE_SIZE_U64))
    }

    /// The state of the page holding `gpa`, `None` outside RAM.
    pub fn state(&self, gpa: u64) -> Option<RmpState> {
        self.entry(gpa).map(|e| e.state)
    }

    /// Whether every page touched by `[gpa, gpa + len)` is RAM and shared: the only memory a
    /// host component may read or write (design data flow 6).
    pub fn is_shared(&self, gpa: u64, len: u64) -> bool {
        if len == 0 || !self.in_ram(gpa, len) {
            return false;
        }
        let first = gpa / PAGE_SIZE_U64;
        let last = (gpa + len - 1) / PAGE_SIZE_U64;
        self.entries.range(first..=last).next().is_none()
    }

    /// Number of private pages (any private state).
    pub fn private_pages(&self) -> usize {
        self.entries.len()
    }

    fn get(&self, gfn: u64) -> RmpEntry {
        self.entries.get(&gfn).copied().unwrap_or(SHARED)
    }

    fn set(&mut self, gfn: u64, entry: RmpEntry) {
        if entry.state == RmpState::Shared {
            self.entries.remove(&gfn);
        } else {
            self.entries.insert(gfn, entry);
        }
    }

    fn check_range(&self, gpa: u64, size: PageSize) -> Result<u64, PageStateError> {
        if gpa % size.bytes() != 0 {
            return Err(PageStateError::Misaligned { gpa, size });
        }
        if !self.in_ram(gpa, size.bytes()) {
            return Err(PageStateError::OutsideRam {
                gpa,
                len: size.bytes(),
            });
        }
        Ok(gpa / PAGE_SIZE_U64)
    }

    /// Host RMPUPDATE for one page of `size`: assign it to the guest (`private`, leaving it
    /// invalid) or give it back to the host. Pages already in the requested ownership keep
    /// their entry, as KVM's attribute update is idempotent. A VMSA page cannot be made
    /// shared while it is a save area.
    pub fn convert(
        &mut self,
        gpa: u64,
        size: PageSize,
        private: bool,
    ) -> Result<Converted, PageStateError> {
        let first = self.check_range(gpa, size)?;
        let gfns = first..first + size.pages();
        if !private {
            if let Some(gfn) = gfns.clone().find(|&g| self.get(g).state == RmpState::Vmsa) {
                return Err(PageStateError::BadState {
                    op: "shared conversion",
                    gpa: gfn * PAGE_SIZE_U64,
                    state: RmpState::Vmsa,
                });
            }
        }
        let mut done = Converted::default();
        for gfn in gfns {
            let old = self.get(gfn);
            if old.state.is_private() == private {
                done.unchanged += 1;
                continue;
            }
            let state = if private {
                RmpState::PrivateInvalid
            } else {
                RmpState::Shared
            };
            self.set(
                gfn,
                RmpEntry {
                    state,
                    large: private && size == PageSize::Size2M,
                    launched: false,
                },
            );
            done.changed += 1;
        }
        Ok(done)
    }

    /// Guest PVALIDATE of the page at `gpa` (`validate` = RDX bit 0).
    pub fn pvalidate(
        &mut self,
        gpa: u64,
        size: PageSize,
        validate: bool,
    ) -> Result<Pvalidated, PageStateError> {
        let fail = |code, reason| PageStateError::Pvalidate { gpa, code, reason };
        let first = match self.check_range(gpa, size) {
            Ok(f) => f,
            Err(_) => return Err(fail(PVALIDATE_FAIL_INPUT, "misaligned or not guest RAM")),
        };
        let head = self.get(first);
        for gfn in first..first + size.pages() {
            let e = self.get(gfn);
            match e.state {
                RmpState::Shared => return Err(fail(PVALIDATE_FAIL_INPUT, "page not assigned")),
                RmpState::Vmsa => return Err(fail(PVALIDATE_FAIL_INPUT, "page is a VMSA")),
                RmpState::PrivateInvalid | RmpState::PrivateValid => {}
            }
            if e.large != (size == PageSize::Size2M) {
                return Err(fail(
                    PVALIDATE_FAIL_SIZEMISMATCH,
                    "request size differs from the RMP entry",
                ));
            }
        }
        let valid = head.state == RmpState::PrivateValid;
        if valid == validate {
            return Ok(Pvalidated::Unchanged);
        }
        let state = if validate {
            RmpState::PrivateValid
        } else {
            RmpState::PrivateInvalid
        };
        for gfn in first..first + size.pages() {
            let e = self.get(gfn);
            self.set(
                gfn,
                RmpEntry {
                    state,
                    launched: false,
                    ..e
                },
            );
        }
        Ok(Pvalidated::Changed)
    }

    /// A guest access to the page holding `gpa` with the C-bit `private`.
    pub fn access(&self, gpa: u64, private: bool) -> Access {
        let Some(e) = self.entry(gpa) else {
            // Outside RAM is MMIO: the host emulates it through the GHCB or an NPF.
            return Access::NestedFault { private };
        };
        match (e.state, private) {
            (RmpState::Shared, false) | (RmpState::PrivateValid, true) => Access::Allowed,
            (RmpState::PrivateInvalid, true) => Access::NotValidated,
            (RmpState::Vmsa, true) => Access::NestedFault { private },
            (RmpState::Shared, true) | (_, false) => Access::NestedFault { private },
        }
    }

    /// RMPADJUST with the VMSA bit, as a guest does before AP creation: the page must be a
    /// validated 4 KiB private page (`make` = true) or a VMSA page (`make` = false).
    pub fn set_vmsa(&mut self, gpa: u64, make: bool) -> Result<(), PageStateError> {
        let gfn = self.check_range(gpa, PageSize::Size4K)?;
        let e = self.get(gfn);
        let (from, to) = if make {
            (RmpState::PrivateValid, RmpState::Vmsa)
        } else {
            (RmpState::Vmsa, RmpState::PrivateValid)
        };
        if e.state != from || e.large {
            return Err(PageStateError::BadState {
                op: "RMPADJUST(VMSA)",
                gpa,
                state: e.state,
            });
        }
        self.set(gfn, RmpEntry { state: to, ..e });
        Ok(())
    }

    /// PSMASH: split the 2 MiB entry at `gpa` into 512 4 KiB entries keeping their state.
    pub fn psmash(&mut self, gpa: u64) -> Result<(), PageStateError> {
        let first = self.check_range(gpa, PageSize::Size2M)?;
        let head = self.get(first);
        if !head.large {
            return Err(PageStateError::BadState {
                op: "PSMASH",
                gpa,
                state: head.state,
            });
        }
        for gfn in first..first + PAGES_PER_2M {
            let e = self.get(gfn);
            self.set(gfn, RmpEntry { large: false, ..e });
        }
        Ok(())
    }

    /// UNSMASH: join 512 private 4 KiB entries of equal state into one 2 MiB entry.
    pub fn unsmash(&mut self, gpa: u64) -> Result<(), PageStateError> {
        let first = self.check_range(gpa, PageSize::Size2M)?;
        let head = self.get(first);
        for gfn in first..first + PAGES_PER_2M {
            let e = self.get(gfn);
            let same = e.state == head.state && !e.large;
            if !same || !matches!(e.state, RmpState::PrivateInvalid | RmpState::PrivateValid) {
                return Err(PageStateError::BadState {
                    op: "UNSMASH",
                    gpa: gfn * PAGE_SIZE_U64,
                    state: e.state,
                });
            }
        }
        for gfn in first..first + PAGES_PER_2M {
            let e = self.get(gfn);
            self.set(gfn, RmpEntry { large: true, ..e });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
