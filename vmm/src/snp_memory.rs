//! Private/shared conversions of an SEV-SNP guest's memory, as KVM reports them to the VMM.
//!
//! The guest asks through `KVM_HC_MAP_GPA_RANGE` (its page-state changes, forwarded by KVM as a
//! hypercall exit); an access whose C-bit disagrees with the page's attribute arrives as
//! `KVM_EXIT_MEMORY_FAULT` and is an implicit conversion under [`ImplicitConversion`]. Either
//! way the VMM flips the attribute with `KVM_SET_MEMORY_ATTRIBUTES` and, on a conversion to
//! shared, frees the private backing with `fallocate(PUNCH_HOLE | KEEP_SIZE)` on the slot's
//! guest_memfd: the private contents are dead once the page is shared, and keeping them would
//! only cost host memory. The decoding and checks are `snp::exits` (pure); the two host
//! operations sit behind [`MemoryAttributes`] so the logic is tested with a recording fake.
//!
//! Every applied conversion also updates the [`SharedPages`] view the VM's devices consult
//! ([`Conversions::dma_guard`]): a device may only follow guest addresses into shared pages.
//! A page leaves the view before it becomes private and joins it once it is shared, so a
//! device never sees a page as shared while KVM already treats it as private.

use std::fs::File;
use std::sync::Arc;

use devices::dma::{DmaGuard, SharedPages};
use kvm_ioctls::VmFd;
use snp::exits::{
    decode_hypercall, decode_memory_fault, ExitError, ImplicitConversion, MemoryConversion,
    PunchHole, KVM_EINVAL,
};
use snp::launch::RamSlot;
use snp::page_state::memory::ConversionObserver;
use snp::plan::RamLayout;
use vmm_sys_util::fallocate::{fallocate, FallocateMode};

/// The software platform's conversions ([`ModelRam::convert`]) reaching the same device
/// view the KVM path keeps, for model guests that drive real devices.
///
/// [`ModelRam::convert`]: snp::page_state::memory::ModelRam::convert
pub struct ModelDeviceView(pub Arc<SharedPages>);

impl ConversionObserver for ModelDeviceView {
    fn converted(&self, gpa: u64, len: u64, private: bool) {
        if let Err(e) = self.0.set(gpa, len, !private) {
            log::warn!("device view of model guest memory not updated: {e}");
        }
    }
}

/// Errors applying a conversion on the host.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    #[error(transparent)]
    Guest(#[from] ExitError),
    #[error("KVM_SET_MEMORY_ATTRIBUTES {gpa:#x}+{size:#x}: {source}")]
    Attributes {
        gpa: u64,
        size: u64,
        source: kvm_ioctls::Error,
    },
    #[error("no guest_memfd for memory slot {0}")]
    NoGuestMemfd(u32),
    #[error("punching {len:#x} bytes at {offset:#x} of slot {slot}'s guest_memfd: {source}")]
    PunchHole {
        slot: u32,
        offset: u64,
        len: u64,
        source: vmm_sys_util::errno::Error,
    },
}

/// The two host operations a conversion needs.
pub trait MemoryAttributes: Send + Sync {
    fn set_attributes(&self, conversion: &MemoryConversion) -> Result<(), ConversionError>;
    fn punch_hole(&self, hole: &PunchHole) -> Result<(), ConversionError>;
}

/// The real thing: the VM's fd and each RAM slot's guest_memfd (index = slot number order of
/// `memfds`).
pub struct KvmMemoryAttributes {
    pub vm: Arc<VmFd>,
    /// `(slot, guest_memfd)` pairs.
    pub memfds: Vec<(u32, File)>,
}

impl MemoryAttributes for KvmMemoryAttributes {
    fn set_attributes(&self, conversion: &MemoryConversion) -> Result<(), ConversionError> {
        self.vm
            .set_memory_attributes(conversion.kvm_attributes())
            .map_err(|source| ConversionError::Attributes {
                gpa: conversion.gpa,
                size: conversion.size,
                source,
            })
    }

    fn punch_hole(&self, hole: &PunchHole) -> Result<(), ConversionError> {
        let (_, file) = self
            .memfds
            .iter()
            .find(|(slot, _)| *slot == hole.slot)
            .ok_or(ConversionError::NoGuestMemfd(hole.slot))?;
        fallocate(file, FallocateMode::PunchHole, true, hole.offset, hole.len).map_err(|source| {
            ConversionError::PunchHole {
                slot: hole.slot,
                offset: hole.offset,
                len: hole.len,
                source,
            }
        })
    }
}

/// Applies a confidential guest's conversions; shared by its vCPU threads.
pub struct Conversions {
    ram: RamLayout,
    slots: Vec<RamSlot>,
    policy: ImplicitConversion,
    host: Box<dyn MemoryAttributes>,
    /// What devices may touch; starts as KVM's default (every page shared).
    shared: Arc<SharedPages>,
}

impl Conversions {
    pub fn new(
        ram: RamLayout,
        slots: Vec<RamSlot>,
        policy: ImplicitConversion,
        host: Box<dyn MemoryAttributes>,
    ) -> Self {
        let regions: Vec<(u64, u64)> = ram.regions().iter().map(|r| (r.gpa, r.size)).collect();
        Self {
            ram,
            slots,
            policy,
            host,
            shared: Arc::new(SharedPages::new(&regions, true)),
        }
    }

    /// Records the ranges `(gpa, size)` the launch made private (its measured pages), so
    /// devices treat them as private from the start.
    pub fn with_private(self, ranges: &[(u64, u64)]) -> Self {
        for &(gpa, size) in ranges {
            if let Err(e) = self.shared.set(gpa, size, false) {
                log::warn!("launch range not tracked for devices: {e}");
            }
        }
        self
    }

    /// The guard this VM's devices consult before touching guest memory.
    pub fn dma_guard(&self) -> DmaGuard {
        DmaGuard::shared_only(self.shared.clone())
    }

    fn track(&self, conversion: &MemoryConversion, shared: bool) {
        // Cannot fail: check_ram put the range inside one RAM region of the view.
        if let Err(e) = self.shared.set(conversion.gpa, conversion.size, shared) {
            log::error!("device view of guest memory not updated: {e}");
        }
    }

    fn apply(&self, conversion: &MemoryConversion) -> Result<(), ConversionError> {
        conversion.check_ram(&self.ram)?;
        if conversion.private {
            self.track(conversion, false);
        }
        self.host.set_attributes(conversion)?;
        if let Some(hole) = conversion.punch_hole(&self.slots) {
            self.host.punch_hole(&hole)?;
        }
        if !conversion.private {
            self.track(conversion, true);
        }
        Ok(())
    }

    /// A `KVM_EXIT_HYPERCALL`: returns the value for `hypercall.ret` — 0 once applied,
    /// `KVM_EINVAL` for a request the guest got wrong (it keeps running and sees the error),
    /// or an error the VM cannot survive (the host refused a valid conversion).
    pub fn on_hypercall(&self, nr: u64, args: &[u64; 6]) -> Result<u64, ConversionError> {
        let conversion = match decode_hypercall(nr, args) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("refused guest hypercall: {e}");
                return Ok(KVM_EINVAL);
            }
        };
        match self.apply(&conversion) {
            Ok(()) => Ok(0),
            Err(ConversionError::Guest(e)) => {
                log::warn!("refused guest conversion: {e}");
                Ok(KVM_EINVAL)
            }
            Err(e) => Err(e),
        }
    }

    /// A `KVM_EXIT_MEMORY_FAULT`: converts under the policy, or ends the VM (the vCPU cannot
    /// make progress on a fault nobody resolves).
    pub fn on_memory_fault(&self, flags: u64, gpa: u64, size: u64) -> Result<(), ConversionError> {
        let conversion = decode_memory_fault(flags, gpa, size, self.policy)?;
        self.apply(&conversion)
    }
}

#[cfg(test)]
mod tests;
