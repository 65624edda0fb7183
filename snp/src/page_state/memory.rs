//! Guest RAM of the software SNP platform with the RMP in front of it.
//!
//! Host-side reads and writes (the GHCB handler, devices) reach only shared pages; guest-side
//! accesses go through the same checks the hardware makes ([`PageStates::access`]). A page
//! whose owner changes is scrubbed: after a private→shared conversion the host sees no guest
//! plaintext (on hardware it would see ciphertext under a key it lacks), and after
//! shared→private the guest must not find host-chosen bytes it could mistake for its own
//! (APM vol. 2 §15.36.10; the GHCB spec 56421 §4.1.6 states contents are not preserved).

use super::{Access, Converted, PageSize, PageStateError, PageStates};
use crate::plan::{RamRegion, PAGE_SIZE_U64};

/// Byte a scrubbed page is filled with (not zero, so a test can tell "scrubbed" from "never
/// written").
pub const SCRUB_BYTE: u8 = 0xA5;

/// Refusals of a memory access.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// Host fault avoided: a host component tried to touch memory that is not shared RAM.
    #[error("host access to {gpa:#x}+{len:#x} refused: not shared guest RAM")]
    NotShared { gpa: u64, len: u64 },
    /// Guest fault: the hardware would stop this guest access.
    #[error("guest access to {gpa:#x} stopped: {access:?}")]
    Guest { gpa: u64, access: Access },
    /// Guest fault: the page-state model refused an operation.
    #[error(transparent)]
    PageState(#[from] PageStateError),
}

/// Guest RAM bytes plus the RMP.
#[derive(Debug, Clone)]
pub struct ModelRam {
    states: PageStates,
    bytes: Vec<Vec<u8>>,
}

impl ModelRam {
    /// Zeroed RAM over `states.ram()`.
    pub fn new(states: PageStates) -> Self {
        let bytes = states
            .ram()
            .iter()
            .map(|r| vec![0u8; usize::try_from(r.size).unwrap_or(0)])
            .collect();
        Self { states, bytes }
    }

    /// The RMP.
    pub fn states(&self) -> &PageStates {
        &self.states
    }

    /// The RMP, for guest instructions (PVALIDATE, RMPADJUST) that do not touch contents.
    pub fn states_mut(&mut self) -> &mut PageStates {
        &mut self.states
    }

    /// Region index and offset of `[gpa, gpa + len)` if it lies in one region.
    fn locate(&self, gpa: u64, len: usize) -> Option<(usize, usize)> {
        let end = gpa.checked_add(len as u64)?;
        let (i, r): (usize, &RamRegion) = self
            .states
            .ram()
            .iter()
            .enumerate()
            .find(|(_, r)| gpa >= r.gpa && end <= r.end())?;
        let off = usize::try_from(gpa - r.gpa).ok()?;
        (off.checked_add(len)? <= self.bytes.get(i)?.len()).then_some((i, off))
    }

    fn slice(&self, gpa: u64, len: usize) -> Option<&[u8]> {
        let (i, off) = self.locate(gpa, len)?;
        self.bytes.get(i)?.get(off..off + len)
    }

    fn slice_mut(&mut self, gpa: u64, len: usize) -> Option<&mut [u8]> {
        let (i, off) = self.locate(gpa, len)?;
        self.bytes.get_mut(i)?.get_mut(off..off + len)
    }

    /// Host read of shared memory.
    pub fn host_read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let not_shared = MemoryError::NotShared {
            gpa,
            len: buf.len() as u64,
        };
        if !self.states.is_shared(gpa, buf.len() as u64) {
            return Err(not_shared);
        }
        let src = self.slice(gpa, buf.len()).ok_or(not_shared)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    /// Host write of shared memory.
    pub fn host_write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        let not_shared = MemoryError::NotShared {
            gpa,
            len: data.len() as u64,
        };
        if !self.states.is_shared(gpa, data.len() as u64) {
            return Err(not_shared);
        }
        let dst = self.slice_mut(gpa, data.len()).ok_or(not_shared)?;
        dst.copy_from_slice(data);
        Ok(())
    }

    fn guest_check(&self, gpa: u64, len: usize, private: bool) -> Result<(), MemoryError> {
        if len == 0 {
            return Ok(());
        }
        let last = gpa.checked_add(len as u64 - 1).ok_or(MemoryError::Guest {
            gpa,
            access: Access::NestedFault { private },
        })?;
        let mut page = gpa & !(PAGE_SIZE_U64 - 1);
        while page <= last {
            match self.states.access(page, private) {
                Access::Allowed => {}
                access => {
                    return Err(MemoryError::Guest {
                        gpa: page.max(gpa),
                        access,
                    })
                }
            }
            page += PAGE_SIZE_U64;
        }
        Ok(())
    }

    /// Guest read with the C-bit `private`.
    pub fn guest_read(&self, gpa: u64, buf: &mut [u8], private: bool) -> Result<(), MemoryError> {
        self.guest_check(gpa, buf.len(), private)?;
        let src = self.slice(gpa, buf.len()).ok_or(MemoryError::Guest {
            gpa,
            access: Access::NestedFault { private },
        })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    /// Guest write with the C-bit `private`.
    pub fn guest_write(&mut self, gpa: u64, data: &[u8], private: bool) -> Result<(), MemoryError> {
        self.guest_check(gpa, data.len(), private)?;
        let dst = self.slice_mut(gpa, data.len()).ok_or(MemoryError::Guest {
            gpa,
            access: Access::NestedFault { private },
        })?;
        dst.copy_from_slice(data);
        Ok(())
    }

    /// Host page-state update of one page of `size`; pages whose owner changes are scrubbed.
    pub fn convert(
        &mut self,
        gpa: u64,
        size: PageSize,
        private: bool,
    ) -> Result<Converted, MemoryError> {
        let before: Vec<bool> = (0..size.pages())
            .map(|i| {
                self.states
                    .state(gpa.wrapping_add(i * PAGE_SIZE_U64))
                    .is_some_and(|s| s.is_private() != private)
            })
            .collect();
        let done = self.states.convert(gpa, size, private)?;
        for (i, moved) in before.into_iter().enumerate() {
            if moved {
                let page = gpa + i as u64 * PAGE_SIZE_U64;
                if let Some(bytes) = self.slice_mut(page, PAGE_SIZE_U64 as usize) {
                    bytes.fill(SCRUB_BYTE);
                }
            }
        }
        Ok(done)
    }
}
