//! Boot-time CPU state of the boot vCPU: descriptor tables, identity page tables and the
//! register values each entry protocol requires.
//!
//! Two entry protocols are supported:
//! * Linux 64-bit boot protocol (Documentation/arch/x86/boot.rst, "64-bit Boot Protocol"):
//!   long mode with paging, a GDT whose selectors 0x10/0x18 are flat 4 GiB code/data, the
//!   identity mapping covering kernel, zero page and command line, RSI = zero page;
//! * PVH (xen docs/misc/pvh.pandoc): 32-bit protected mode, paging off, flat segments, TR a
//!   32-bit TSS with limit 0x67, EBX = `hvm_start_info`.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout;

/// Errors writing boot-time CPU structures into guest memory.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot write the {what} at {addr:#x}: {source}")]
    WriteGuest {
        what: &'static str,
        addr: u64,
        source: vm_memory::GuestMemoryError,
    },
}

/// How the boot vCPU enters the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// Linux 64-bit entry: long mode, RSI = zero page.
    Linux64 { entry: u64, boot_params: u64 },
    /// PVH entry: flat 32-bit protected mode, EBX = start info.
    Pvh32 { entry: u64, start_info: u64 },
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Page-table entry bits: present, writable; `PS` makes a PD entry a 2 MiB page.
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_PS: u64 = 0x80;

/// GDT access/flags words in the `0xFA_AA` form (flags nibble, access byte).
const GDT_CODE64: u16 = 0xa09b;
const GDT_CODE32: u16 = 0xc09b;
const GDT_DATA: u16 = 0xc093;
const GDT_TSS32: u16 = 0x008b;

/// Selector indices (Linux's `__BOOT_CS` = 0x10 and `__BOOT_DS` = 0x18).
const CODE_INDEX: u16 = 2;
const DATA_INDEX: u16 = 3;
const TSS_INDEX: u16 = 4;

/// Encodes a segment descriptor.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    let flags = u64::from(flags);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// Decodes a descriptor into the form KVM takes, with the selector of GDT slot `index`.
pub fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let granular = (entry >> 55) & 1 == 1;
    let limit = if granular {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granular as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// The boot GDT for an entry mode: only the code segment differs (64-bit or 32-bit).
pub fn boot_gdt(mode: &EntryMode) -> [u64; layout::GDT_ENTRIES as usize] {
    let code = match mode {
        EntryMode::Linux64 { .. } => GDT_CODE64,
        EntryMode::Pvh32 { .. } => GDT_CODE32,
    };
    [
        0,
        0,
        gdt_entry(code, 0, 0xfffff),
        gdt_entry(GDT_DATA, 0, 0xfffff),
        gdt_entry(GDT_TSS32, 0, 0x67),
    ]
}

fn write<T: vm_memory::ByteValued>(
    mem: &GuestMemoryMmap,
    what: &'static str,
    addr: u64,
    val: T,
) -> Result<(), RegsError> {
    mem.write_obj(val, GuestAddress(addr))
        .map_err(|source| RegsError::WriteGuest { what, addr, source })
}

/// Writes identity page tables for the first 4 GiB (2 MiB pages) and returns CR3.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<u64, RegsError> {
    write(
        mem,
        "PML4",
        layout::PML4_START,
        layout::PDPTE_START | PTE_PRESENT_RW,
    )?;
    for gib in 0..layout::PDE_COUNT {
        let pd = layout::PDE_START + gib * 0x1000;
        write(
            mem,
            "PDPT",
            layout::PDPTE_START + gib * 8,
            pd | PTE_PRESENT_RW,
        )?;
        for i in 0..512u64 {
            let page = ((gib << 9) + i) << 21;
            write(
                mem,
                "page directory",
                pd + i * 8,
                page | PTE_PRESENT_RW | PDE_PS,
            )?;
        }
    }
    Ok(layout::PML4_START)
}

/// Writes the GDT and the empty IDT and fills the segment and control registers in `sregs`
/// for `mode` (page tables are written too for long mode).
pub fn setup_sregs(
    mem: &GuestMemoryMmap,
    mode: &EntryMode,
    sregs: &mut kvm_sregs,
) -> Result<(), RegsError> {
    let gdt = boot_gdt(mode);
    for (i, entry) in gdt.iter().enumerate() {
        write(mem, "GDT", layout::GDT_START + i as u64 * 8, *entry)?;
    }
    write(mem, "IDT", layout::IDT_START, 0u64)?;
    sregs.gdt.base = layout::GDT_START;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = layout::IDT_START;
    sregs.idt.limit = 0;

    let code = segment_from_gdt(gdt[CODE_INDEX as usize], CODE_INDEX);
    let data = segment_from_gdt(gdt[DATA_INDEX as usize], DATA_INDEX);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(gdt[TSS_INDEX as usize], TSS_INDEX);

    match mode {
        EntryMode::Linux64 { .. } => {
            sregs.cr3 = write_page_tables(mem)?;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh32 { .. } => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    Ok(())
}

/// General-purpose registers at entry.
pub fn boot_regs(mode: &EntryMode) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rsp: layout::BOOT_STACK_POINTER,
        rbp: layout::BOOT_STACK_POINTER,
        ..Default::default()
    };
    match *mode {
        EntryMode::Linux64 { entry, boot_params } => {
            regs.rip = entry;
            regs.rsi = boot_params;
        }
        EntryMode::Pvh32 { entry, start_info } => {
            regs.rip = entry;
            regs.rbx = start_info;
        }
    }
    regs
}

/// x87 and SSE control words at their reset values (FNINIT / MXCSR default).
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    #[test]
    fn gdt_entries_encode_and_decode() {
        assert_eq!(gdt_entry(GDT_CODE64, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(GDT_DATA, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        assert_eq!(gdt_entry(GDT_TSS32, 0, 0x67), 0x0000_8b00_0000_0067);
        let cs = segment_from_gdt(gdt_entry(GDT_CODE64, 0, 0xfffff), CODE_INDEX);
        assert_eq!(
            (cs.selector, cs.l, cs.db, cs.g, cs.type_),
            (0x10, 1, 0, 1, 0xb)
        );
        assert_eq!(
            (cs.limit, cs.present, cs.s, cs.unusable),
            (0xffff_ffff, 1, 1, 0)
        );
        let cs32 = segment_from_gdt(gdt_entry(GDT_CODE32, 0, 0xfffff), CODE_INDEX);
        assert_eq!((cs32.l, cs32.db), (0, 1));
        let tr = segment_from_gdt(gdt_entry(GDT_TSS32, 0, 0x67), TSS_INDEX);
        assert_eq!(
            (tr.selector, tr.limit, tr.type_, tr.s, tr.g),
            (0x20, 0x67, 0xb, 0, 0)
        );
        let base = segment_from_gdt(gdt_entry(GDT_DATA, 0x1234_5678, 0xfffff), 1);
        assert_eq!(base.base, 0x1234_5678);
    }

    #[test]
    fn page_tables_identity_map_four_gib() {
        let m = mem();
        assert_eq!(write_page_tables(&m).unwrap(), layout::PML4_START);
        let pml4: u64 = m.read_obj(GuestAddress(layout::PML4_START)).unwrap();
        assert_eq!(pml4, layout::PDPTE_START | 3);
        for gib in 0..4u64 {
            let pdpte: u64 = m
                .read_obj(GuestAddress(layout::PDPTE_START + gib * 8))
                .unwrap();
            let pd = layout::PDE_START + gib * 0x1000;
            assert_eq!(pdpte, pd | 3);
            let last: u64 = m.read_obj(GuestAddress(pd + 511 * 8)).unwrap();
            assert_eq!(last, ((gib << 30) + (511 << 21)) | 0x83);
        }
        let first: u64 = m.read_obj(GuestAddress(layout::PDE_START)).unwrap();
        assert_eq!(first, 0x83);
    }

    #[test]
    fn long_mode_and_pvh_register_state() {
        let m = mem();
        let linux = EntryMode::Linux64 {
            entry: 0x100200,
            boot_params: layout::ZERO_PAGE_START,
        };
        let mut sregs = kvm_sregs::default();
        setup_sregs(&m, &linux, &mut sregs).unwrap();
        assert_eq!(sregs.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(sregs.cr3, layout::PML4_START);
        assert_eq!(
            (sregs.cs.selector, sregs.ds.selector, sregs.cs.l),
            (0x10, 0x18, 1)
        );
        let gdt2: u64 = m.read_obj(GuestAddress(layout::GDT_START + 16)).unwrap();
        assert_eq!(gdt2, gdt_entry(GDT_CODE64, 0, 0xfffff));
        let regs = boot_regs(&linux);
        assert_eq!((regs.rip, regs.rsi, regs.rflags), (0x100200, 0x7000, 2));

        let pvh = EntryMode::Pvh32 {
            entry: 0x100000,
            start_info: layout::PVH_INFO_START,
        };
        let mut sregs = kvm_sregs::default();
        setup_sregs(&m, &pvh, &mut sregs).unwrap();
        assert_eq!(sregs.cr0, CR0_PE | CR0_ET);
        assert_eq!((sregs.efer, sregs.cs.l, sregs.cs.db), (0, 0, 1));
        assert_eq!((sregs.tr.limit, sregs.tr.type_), (0x67, 0xb));
        let regs = boot_regs(&pvh);
        assert_eq!((regs.rip, regs.rbx), (0x100000, layout::PVH_INFO_START));
    }
}
