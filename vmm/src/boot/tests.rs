use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::memory::create_guest_memory;
use crate::test_scratch::ScratchDir;

const MEM: u64 = 64 << 20;

fn put<const N: usize>(buf: &mut [u8], offset: usize, bytes: [u8; N]) {
    buf[offset..offset + N].copy_from_slice(&bytes);
}

/// A minimal bzImage: 4 setup sectors plus a boot sector, then a payload of `payload` bytes.
fn fake_bzimage(version: u16, xloadflags: u16, init_size: u32, payload: usize) -> Vec<u8> {
    let mut img = vec![0u8; 5 * 512 + payload];
    img[0x1f1] = 4;
    put(&mut img, 0x1fe, 0xaa55u16.to_le_bytes());
    put(&mut img, 0x202, *b"HdrS");
    put(&mut img, 0x206, version.to_le_bytes());
    img[0x211] = 0x01; // LOADED_HIGH
    put(&mut img, 0x214, 0x10_0000u32.to_le_bytes());
    put(&mut img, 0x22c, 0x7fff_ffffu32.to_le_bytes());
    put(&mut img, 0x236, xloadflags.to_le_bytes());
    put(&mut img, 0x238, 2048u32.to_le_bytes());
    put(&mut img, 0x260, init_size.to_le_bytes());
    img[5 * 512..].fill(0xcc);
    img
}

/// A minimal ELF64 with one PT_LOAD at 1 MiB and, if `pvh_entry` is set, a Xen PVH note.
fn fake_elf(pvh_entry: Option<u32>) -> Vec<u8> {
    let phnum: u16 = if pvh_entry.is_some() { 2 } else { 1 };
    let code_off = 0x1000usize;
    let note_off = 0x800usize;
    let mut img = vec![0u8; code_off + 0x100];
    img[..4].copy_from_slice(&[0x7f, b'E', b'L', b'F']);
    img[4] = 2; // 64-bit
    img[5] = 1; // little-endian
    img[6] = 1;
    put(&mut img, 16, 2u16.to_le_bytes());
    put(&mut img, 18, 0x3eu16.to_le_bytes());
    put(&mut img, 20, 1u32.to_le_bytes());
    put(&mut img, 24, 0x10_0000u64.to_le_bytes());
    put(&mut img, 32, 64u64.to_le_bytes());
    put(&mut img, 52, 64u16.to_le_bytes());
    put(&mut img, 54, 56u16.to_le_bytes());
    put(&mut img, 56, phnum.to_le_bytes());
    // PT_LOAD
    let ph = 64;
    put(&mut img, ph, 1u32.to_le_bytes());
    put(&mut img, ph + 8, (code_off as u64).to_le_bytes());
    put(&mut img, ph + 16, 0x10_0000u64.to_le_bytes());
    put(&mut img, ph + 24, 0x10_0000u64.to_le_bytes());
    put(&mut img, ph + 32, 0x100u64.to_le_bytes());
    put(&mut img, ph + 40, 0x2000u64.to_le_bytes());
    if let Some(entry) = pvh_entry {
        let ph = 64 + 56;
        put(&mut img, ph, 4u32.to_le_bytes()); // PT_NOTE
        put(&mut img, ph + 8, (note_off as u64).to_le_bytes());
        put(&mut img, ph + 32, 20u64.to_le_bytes());
        put(&mut img, note_off, 4u32.to_le_bytes());
        put(&mut img, note_off + 4, 4u32.to_le_bytes());
        put(&mut img, note_off + 8, 18u32.to_le_bytes());
        put(&mut img, note_off + 12, *b"Xen\0");
        put(&mut img, note_off + 16, entry.to_le_bytes());
    }
    img[code_off..].fill(0xf4);
    img
}

fn boot(
    kernel: &[u8],
    name: &str,
    initramfs: Option<&[u8]>,
) -> (GuestMemoryMmap, Result<EntryMode, BootError>) {
    let dir = ScratchDir::new("boot");
    let kpath = dir.join(name);
    std::fs::write(&kpath, kernel).unwrap();
    let ipath = initramfs.map(|data| {
        let p = dir.join(format!("{name}.initramfs"));
        std::fs::write(&p, data).unwrap();
        p
    });
    let mem = create_guest_memory(MEM, false).unwrap();
    let src = BootSource {
        kernel: &kpath,
        initramfs: ipath.as_deref(),
        cmdline: "console=ttyS0 probe.run=boot",
        mem_size: MEM,
        rsdp: Some(layout::RSDP_ADDR),
    };
    let result = load(&mem, &src);
    (mem, result)
}

fn read_cstr(mem: &GuestMemoryMmap, addr: u64) -> String {
    let mut buf = vec![0u8; 256];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    let end = buf.iter().position(|&b| b == 0).unwrap();
    String::from_utf8(buf[..end].to_vec()).unwrap()
}

#[test]
fn initramfs_goes_to_the_top_below_the_limit() {
    assert_eq!(
        place_initramfs(0x1800, 0x20_0000, 0x400_0000),
        Some(0x3ff_e000)
    );
    assert_eq!(
        place_initramfs(0x1000, 0x20_0001, 0x20_2000),
        Some(0x20_1000)
    );
    assert_eq!(place_initramfs(0x1000, 0x20_1001, 0x20_2000), None);
    assert_eq!(place_initramfs(0x5000, 0, 0x4000), None);
}

#[test]
fn bzimage_gets_a_zero_page() {
    let img = fake_bzimage(0x20f, 1, 0x40_0000, 0x3000);
    let initrd = vec![0x5au8; 0x2345];
    let (mem, entry) = boot(&img, "bz", Some(&initrd));
    assert_eq!(
        entry.unwrap(),
        EntryMode::Linux64 {
            entry: 0x10_0200,
            boot_params: layout::ZERO_PAGE_START
        }
    );
    let params: boot_params = mem.read_obj(GuestAddress(layout::ZERO_PAGE_START)).unwrap();
    let hdr = params.hdr;
    assert_eq!({ hdr.type_of_loader }, 0xff);
    assert_eq!({ hdr.cmd_line_ptr } as u64, layout::CMDLINE_START);
    assert_eq!({ params.acpi_rsdp_addr }, layout::RSDP_ADDR);
    assert_eq!(params.e820_entries, 5);
    let e0 = params.e820_table[0];
    assert_eq!(({ e0.addr }, { e0.size }, { e0.r#type }), (0, 0x9fc00, 1));
    let e3 = params.e820_table[3];
    assert_eq!(({ e3.addr }, { e3.size }), (0x10_0000, MEM - 0x10_0000));
    let (image, size) = ({ hdr.ramdisk_image } as u64, { hdr.ramdisk_size } as u64);
    assert_eq!(size, 0x2345);
    assert_eq!(image % 0x1000, 0);
    assert!(image + size <= MEM && image + size > MEM - 0x2000);
    let mut back = vec![0u8; initrd.len()];
    mem.read_slice(&mut back, GuestAddress(image)).unwrap();
    assert_eq!(back, initrd);
    assert_eq!(
        read_cstr(&mem, layout::CMDLINE_START),
        "console=ttyS0 probe.run=boot"
    );
    let mut code = [0u8; 4];
    mem.read_slice(&mut code, GuestAddress(0x10_0000)).unwrap();
    assert_eq!(code, [0xcc; 4]);
}

#[test]
fn bzimage_refusals_are_config_errors() {
    let old = fake_bzimage(0x20a, 1, 0x40_0000, 0x100);
    let (_, r) = boot(&old, "bz-old", None);
    let e = r.unwrap_err();
    assert!(matches!(e, BootError::UnsupportedKernel { .. }) && e.is_config_error());

    let no64 = fake_bzimage(0x20f, 0, 0x40_0000, 0x100);
    assert!(matches!(
        boot(&no64, "bz-32", None).1,
        Err(BootError::UnsupportedKernel { .. })
    ));

    let huge_init = fake_bzimage(0x20f, 1, 0x1000_0000, 0x100);
    assert!(matches!(
        boot(&huge_init, "bz-big", None).1,
        Err(BootError::KernelTooLarge { .. })
    ));

    let img = fake_bzimage(0x20f, 1, 0x40_0000, 0x100);
    let initrd = vec![0u8; (MEM - 0x40_0000) as usize];
    let (_, r) = boot(&img, "bz-initrd", Some(&initrd));
    assert!(matches!(r, Err(BootError::InitramfsDoesNotFit { .. })));

    let mut truncated = fake_bzimage(0x20f, 1, 0x40_0000, 0x100);
    truncated.truncate(0x300);
    let (_, r) = boot(&truncated, "bz-trunc", None);
    assert!(r.unwrap_err().is_config_error());

    let (_, r) = boot(b"not a kernel at all", "garbage", None);
    assert!(matches!(r, Err(BootError::UnknownKernelFormat { .. })));
    let (_, r) = boot(&[0u8; 4096], "zeros", None);
    assert!(matches!(r, Err(BootError::UnknownKernelFormat { .. })));
}

#[test]
fn cmdline_longer_than_the_kernel_takes_is_refused() {
    let mem = create_guest_memory(MEM, false).unwrap();
    assert!(matches!(
        write_cmdline(&mem, "0123456789", 9),
        Err(BootError::CmdlineTooLong { len: 10, max: 9 })
    ));
    write_cmdline(&mem, "0123456789", 10).unwrap();
    assert_eq!(read_cstr(&mem, layout::CMDLINE_START), "0123456789");
}

#[test]
fn pvh_elf_gets_start_info_memmap_and_module() {
    let img = fake_elf(Some(0x10_0010));
    let initrd = vec![0xa5u8; 0x1234];
    let (mem, entry) = boot(&img, "pvh", Some(&initrd));
    assert_eq!(
        entry.unwrap(),
        EntryMode::Pvh32 {
            entry: 0x10_0010,
            start_info: layout::PVH_INFO_START
        }
    );
    let info: hvm_start_info = mem.read_obj(GuestAddress(layout::PVH_INFO_START)).unwrap();
    assert_eq!(
        (info.magic, info.version, info.nr_modules),
        (0x336e_c578, 1, 1)
    );
    assert_eq!(info.cmdline_paddr, layout::CMDLINE_START);
    assert_eq!(info.rsdp_paddr, layout::RSDP_ADDR);
    assert_eq!(info.memmap_paddr, layout::PVH_MEMMAP_START);
    assert_eq!(info.memmap_entries, 5);
    let acpi: hvm_memmap_table_entry = mem
        .read_obj(GuestAddress(layout::PVH_MEMMAP_START + 2 * 24))
        .unwrap();
    assert_eq!((acpi.addr, acpi.size, acpi.type_), (0xe0000, 0x20000, 2));
    let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
    assert_eq!(module.size, 0x1234);
    assert!(module.paddr >= 0x10_2000 && module.paddr + module.size <= MEM);
    let mut back = vec![0u8; initrd.len()];
    mem.read_slice(&mut back, GuestAddress(module.paddr))
        .unwrap();
    assert_eq!(back, initrd);
    let mut code = [0u8; 2];
    mem.read_slice(&mut code, GuestAddress(0x10_0000)).unwrap();
    assert_eq!(code, [0xf4; 2]);
}

#[test]
fn pvh_without_initramfs_has_no_module() {
    let (mem, entry) = boot(&fake_elf(Some(0x10_0000)), "pvh-bare", None);
    assert!(matches!(entry, Ok(EntryMode::Pvh32 { .. })));
    let info: hvm_start_info = mem.read_obj(GuestAddress(layout::PVH_INFO_START)).unwrap();
    assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
}

#[test]
fn elf_without_pvh_note_boots_in_long_mode() {
    let (mem, entry) = boot(&fake_elf(None), "elf64", None);
    assert_eq!(
        entry.unwrap(),
        EntryMode::Linux64 {
            entry: 0x10_0000,
            boot_params: layout::ZERO_PAGE_START
        }
    );
    let params: boot_params = mem.read_obj(GuestAddress(layout::ZERO_PAGE_START)).unwrap();
    assert_eq!({ params.hdr.boot_flag }, 0xaa55);
    assert_eq!({ params.hdr.header }, 0x5372_6448);
}

#[test]
fn corrupt_elf_is_a_config_error() {
    let mut img = fake_elf(Some(0x10_0000));
    put(&mut img, 54, 12u16.to_le_bytes()); // wrong program header size
    let (_, r) = boot(&img, "elf-bad", None);
    let e = r.unwrap_err();
    assert!(
        matches!(e, BootError::LoadKernel { .. }) && e.is_config_error(),
        "{e}"
    );
    let mut img = fake_elf(Some(0x10_0000));
    img.truncate(0x900);
    assert!(boot(&img, "elf-trunc", None)
        .1
        .unwrap_err()
        .is_config_error());
}

/// Deterministic xorshift, so a failure is reproducible from the iteration number.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn mutated_kernels_are_refused_or_loaded_never_panic() {
    let mem = create_guest_memory(MEM, false).unwrap();
    let dir = ScratchDir::new("boot");
    let kpath = dir.join("mutated");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let seeds = [
        fake_bzimage(0x20f, 1, 0x40_0000, 0x800),
        fake_elf(Some(0x10_0000)),
        fake_elf(None),
    ];
    for round in 0..300 {
        let mut img = seeds[round % seeds.len()].clone();
        // Flip bytes in the headers, where the parsers look.
        for _ in 0..1 + next(&mut state) % 8 {
            let window = img.len().min(0x1000);
            let at = (next(&mut state) as usize) % window;
            img[at] = next(&mut state) as u8;
        }
        if next(&mut state) % 4 == 0 {
            let keep = (next(&mut state) as usize) % img.len();
            img.truncate(keep.max(1));
        }
        std::fs::write(&kpath, &img).unwrap();
        let src = BootSource {
            kernel: &kpath,
            initramfs: None,
            cmdline: "console=ttyS0",
            mem_size: MEM,
            rsdp: None,
        };
        if let Err(e) = load(&mem, &src) {
            assert!(
                e.is_config_error(),
                "round {round}: host error for bad input: {e}"
            );
        }
    }
}
