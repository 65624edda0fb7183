//! Guest RAM of the software SNP platform with the RMP in front of it.
//!
//! Host-side reads and writes (the GHCB handler, devices) reach only shared pages; guest-side
//! accesses go through the same checks the hardware makes ([`PageStates::access`]). A page
//! whose owner changes is scrubbed: after a private→shared conversion the host sees no guest
//! plaintext (on hardware it would see ciphertext under a key it lacks), and after
//! shared→private the guest must not find host-chosen bytes it could mistake for its own
//! (APM vol. 2 §15.36.10; the GHCB spec 56421 §4.1.6 states contents are not preserved).
//!
//! The bytes live in plain vectors, or ([`ModelRam::with_memory`]) in a `vm-memory` mapping
//! that device models share, so a model guest can drive real virtio devices; a
//! [`ConversionObserver`] then keeps the devices' view of shared pages current.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

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

/// Told about every page-state conversion [`ModelRam::convert`] applies (the range is
/// whole pages), so a view of the guest's shared pages outside this crate stays current.
pub trait ConversionObserver: Send + Sync {
    fn converted(&self, gpa: u64, len: u64, private: bool);
}

/// Where the bytes are.
#[derive(Clone)]
enum Backing {
    /// One vector per RAM region.
    Owned(Vec<Vec<u8>>),
    /// A mapping shared with device models (covering every RAM region).
    Mapped(GuestMemoryMmap<()>),
}

/// Guest RAM bytes plus the RMP. Clones of a RAM made [`ModelRam::with_memory`] share the
/// bytes.
#[derive(Clone)]
pub struct ModelRam {
    states: PageStates,
    bytes: Backing,
    observer: Option<Arc<dyn ConversionObserver>>,
}

impl std::fmt::Debug for ModelRam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRam")
            .field("states", &self.states)
            .field("mapped", &matches!(self.bytes, Backing::Mapped(_)))
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

impl ModelRam {
    /// Zeroed RAM over `states.ram()`.
    pub fn new(states: PageStates) -> Self {
        let bytes = states
            .ram()
            .iter()
            .map(|r| vec![0u8; usize::try_from(r.size).unwrap_or(0)])
            .collect();
        Self {
            states,
            bytes: Backing::Owned(bytes),
            observer: None,
        }
    }

    /// RAM over `states.ram()` whose bytes are `mem` (which must cover every region), the
    /// memory the caller's devices work on.
    pub fn with_memory(states: PageStates, mem: GuestMemoryMmap<()>) -> Result<Self, MemoryError> {
        use vm_memory::GuestMemory;
        for r in states.ram() {
            let len = usize::try_from(r.size).unwrap_or(usize::MAX);
            if !mem.check_range(GuestAddress(r.gpa), len, vm_memory::Permissions::ReadWrite) {
                return Err(MemoryError::NotShared {
                    gpa: r.gpa,
                    len: r.size,
                });
            }
        }
        Ok(Self {
            states,
            bytes: Backing::Mapped(mem),
            observer: None,
        })
    }

    /// Reports every conversion from now on to `observer`, after telling it which pages are
    /// private already (everything else is shared).
    pub fn observe(&mut self, observer: Arc<dyn ConversionObserver>) {
        for gfn in self.states.private_gfns() {
            observer.converted(gfn * PAGE_SIZE_U64, PAGE_SIZE_U64, true);
        }
        self.observer = Some(observer);
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
        let stored = match &self.bytes {
            Backing::Owned(v) => v.get(i)?.len(),
            // with_memory checked that the mapping covers every region.
            Backing::Mapped(_) => usize::try_from(r.size).ok()?,
        };
        (off.checked_add(len)? <= stored).then_some((i, off))
    }

    /// Copies `[gpa, gpa + buf.len())` (inside one region) out.
    fn read_bytes(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
        let (i, off) = self.locate(gpa, buf.len())?;
        match &self.bytes {
            Backing::Owned(v) => buf.copy_from_slice(v.get(i)?.get(off..off + buf.len())?),
            Backing::Mapped(m) => m.read_slice(buf, GuestAddress(gpa)).ok()?,
        }
        Some(())
    }

    /// Copies `data` to `gpa` (inside one region).
    fn write_bytes(&mut self, gpa: u64, data: &[u8]) -> Option<()> {
        let (i, off) = self.locate(gpa, data.len())?;
        match &mut self.bytes {
            Backing::Owned(v) => v
                .get_mut(i)?
                .get_mut(off..off + data.len())?
                .copy_from_slice(data),
            Backing::Mapped(m) => m.write_slice(data, GuestAddress(gpa)).ok()?,
        }
        Some(())
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
        self.read_bytes(gpa, buf).ok_or(not_shared)
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
        self.write_bytes(gpa, data).ok_or(not_shared)
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
        self.read_bytes(gpa, buf).ok_or(MemoryError::Guest {
            gpa,
            access: Access::NestedFault { private },
        })
    }

    /// Guest write with the C-bit `private`.
    pub fn guest_write(&mut self, gpa: u64, data: &[u8], private: bool) -> Result<(), MemoryError> {
        self.guest_check(gpa, data.len(), private)?;
        self.write_bytes(gpa, data).ok_or(MemoryError::Guest {
            gpa,
            access: Access::NestedFault { private },
        })
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
        let scrub = [SCRUB_BYTE; PAGE_SIZE_U64 as usize];
        for (i, moved) in before.into_iter().enumerate() {
            if moved {
                let page = gpa + i as u64 * PAGE_SIZE_U64;
                // Every page of a converted range is RAM (the RMP checked it).
                let _ = self.write_bytes(page, &scrub);
            }
        }
        if let Some(observer) = &self.observer {
            observer.converted(gpa, size.bytes(), private);
        }
        Ok(done)
    }
}
