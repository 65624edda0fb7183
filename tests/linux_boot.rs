//! Linux under podvisor: Debian's cloud kernel (the guest kit from `scripts/guest-kit`) reads
//! what the VMM built, and its own log is checked against the configuration:
//! - the e820 map (usable RAM exactly as configured, EBDA and ACPI area reserved),
//! - every ACPI table (RSDP, XSDT, FACP, DSDT, APIC) inside the reserved ACPI area,
//! - "Allowing N CPUs" for the configured vCPU count,
//! - the initrd (`RAMDISK: [mem ...]`) where RAM is, with the initramfs's size.
//!
//! Booted as vmlinux (PVH entry) and as bzImage (Linux boot protocol), stopped once seen. On
//! PVM hosts Linux dies later in its int3 self-test, so that is all it can show; on full-KVM
//! hosts the kit also boots to its /init with every CPU online and powers off.

use std::error::Error;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use podvisor_tests::linux::image::{self, CpioEntry};
use podvisor_tests::linux::{self, ConsoleVm, HostMode, Kit, Wait};
use vmm::layout;

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");
const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;
/// Kernel parameters for an early-boot run: everything on the serial console.
const EARLY_CMDLINE: &str = "console=ttyS0 earlyprintk=serial loglevel=8";

type TestResult = Result<(), Box<dyn Error>>;

struct EarlyBoot<'a> {
    name: &'a str,
    kernel: &'a Path,
    initramfs: &'a Path,
    cpus: u32,
    memory: u64,
    /// Generous bound: the kernel is slow on PVM and the machine is shared.
    timeout: Duration,
}

/// All the early-boot facts are in the log ("Allowing N CPUs" comes last of them).
fn early_boot_seen(log: &str) -> bool {
    let tables = linux::acpi_tables(log);
    let has = |sig: &str| tables.iter().any(|t| t.signature == sig);
    log.contains("BIOS-e820: ")
        && ["RSDP", "XSDT", "FACP", "DSDT", "APIC"]
            .iter()
            .all(|s| has(s))
        && log.contains("RAMDISK: [mem ")
        && linux::allowed_cpus(log).is_some()
}

fn run_args(kernel: &Path, initramfs: &Path, cmdline: &str, cpus: u32, memory: u64) -> Vec<String> {
    vec![
        "run".into(),
        "--kernel".into(),
        kernel.display().to_string(),
        "--initramfs".into(),
        initramfs.display().to_string(),
        "--cmdline".into(),
        cmdline.into(),
        "--cpus".into(),
        cpus.to_string(),
        "--memory".into(),
        format!("{}M", memory / MIB),
        "--serial".into(),
        "stdout".into(),
    ]
}

/// Merges sorted, possibly adjacent ranges.
fn merged(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

fn check_e820(log: &str, memory: u64) -> TestResult {
    let entries = linux::e820_entries(log)?;
    let usable = merged(
        entries
            .iter()
            .filter(|e| e.kind == "usable")
            .map(|e| e.range.clone())
            .collect(),
    );
    // RAM below 640 KiB up to the EBDA, and from 1 MiB to the end of configured memory.
    let mut expected = Vec::new();
    expected.push(layout::LOW_RAM_START..layout::EBDA_START);
    for ram in layout::ram_ranges(memory).ok_or("memory size overflows")? {
        let start = ram.start.max(layout::HIMEM_START);
        if start < ram.end {
            expected.push(start..ram.end);
        }
    }
    assert_eq!(
        usable,
        merged(expected),
        "usable RAM in the kernel's e820 map differs from {} MiB; map: {entries:#x?}",
        memory / MIB
    );
    let reserved: Vec<Range<u64>> = merged(
        entries
            .iter()
            .filter(|e| e.kind != "usable")
            .map(|e| e.range.clone())
            .collect(),
    );
    for (what, area) in [
        ("EBDA", layout::EBDA_START..layout::EBDA_END),
        ("ACPI area", layout::ACPI_START..layout::ACPI_END),
    ] {
        assert!(
            reserved
                .iter()
                .any(|r| r.start <= area.start && area.end <= r.end),
            "{what} {area:#x?} is not reserved in the e820 map: {entries:#x?}"
        );
    }
    println!("e820 ok: {} entries, usable {usable:#x?}", entries.len());
    Ok(())
}

fn check_acpi(log: &str) -> TestResult {
    let tables = linux::acpi_tables(log);
    for sig in ["RSDP", "XSDT", "FACP", "DSDT", "APIC"] {
        let found: Vec<_> = tables.iter().filter(|t| t.signature == sig).collect();
        assert_eq!(
            found.len(),
            1,
            "{sig} listed {} times: {tables:#x?}",
            found.len()
        );
    }
    for t in &tables {
        assert_eq!(
            t.oem_id, "PODVSR",
            "{} was not built by podvisor: {t:?}",
            t.signature
        );
        let end = t.address + t.length;
        assert!(
            layout::ACPI_START <= t.address && end <= layout::ACPI_END && t.length > 0,
            "{} at {:#x}+{:#x} lies outside the ACPI area",
            t.signature,
            t.address,
            t.length
        );
        if t.signature == "RSDP" {
            assert_eq!(
                t.address,
                layout::RSDP_ADDR,
                "RSDP not where the layout puts it"
            );
        }
    }
    let sigs: Vec<&str> = tables.iter().map(|t| t.signature.as_str()).collect();
    println!("acpi ok: {sigs:?}");
    Ok(())
}

fn check_ramdisk(log: &str, initramfs: &Path, memory: u64) -> TestResult {
    let size = std::fs::metadata(initramfs)?.len();
    let ramdisk = linux::ramdisk(log)?.ok_or("no RAMDISK line")?;
    assert_eq!(
        ramdisk.start % PAGE,
        0,
        "initrd not page aligned: {ramdisk:#x?}"
    );
    assert_eq!(
        ramdisk.end,
        (ramdisk.start + size).div_ceil(PAGE) * PAGE,
        "initrd {ramdisk:#x?} does not span the {size}-byte initramfs"
    );
    assert!(
        layout::HIMEM_START <= ramdisk.start && ramdisk.end <= layout::low_ram_end(memory),
        "initrd {ramdisk:#x?} outside low RAM above 1 MiB ({} MiB configured)",
        memory / MIB
    );
    println!("initrd ok: {ramdisk:#x?} ({size} bytes)");
    Ok(())
}

fn early_boot(run: EarlyBoot<'_>) -> TestResult {
    let args = run_args(
        run.kernel,
        run.initramfs,
        EARLY_CMDLINE,
        run.cpus,
        run.memory,
    );
    let mut vm = ConsoleVm::spawn(Path::new(PODVISOR), &args)?;
    let outcome = vm.wait_for(run.timeout, early_boot_seen);
    let elapsed = vm.elapsed();
    let status = vm.kill()?;
    let log = vm.console();
    let context = || {
        format!(
            "{}: console (last lines):\n{}\npodvisor stderr:\n{}",
            run.name,
            linux::tail(&log, 40),
            linux::tail(&vm.stderr(), 20)
        )
    };
    match outcome {
        Wait::Seen => {}
        Wait::Closed => {
            return Err(format!("podvisor exited ({status}) too early\n{}", context()).into())
        }
        Wait::TimedOut => {
            return Err(format!(
                "early boot not seen within {:?}\n{}",
                run.timeout,
                context()
            )
            .into())
        }
    }
    println!(
        "{}: early boot seen after {:.1} s ({} vCPUs, {} MiB); VM stopped",
        run.name,
        elapsed.as_secs_f64(),
        run.cpus,
        run.memory / MIB
    );
    assert!(log.contains("Linux version"), "{}", context());
    check_e820(&log, run.memory)?;
    check_acpi(&log)?;
    assert_eq!(linux::allowed_cpus(&log), Some(run.cpus), "{}", context());
    check_ramdisk(&log, run.initramfs, run.memory)?;
    Ok(())
}

/// Modules the kit promises (scripts/guest-kit), by module name.
const KIT_MODULES: [&str; 7] = [
    "virtio_pci",
    "virtio_blk",
    "virtiofs",
    "fuse",
    "vsock",
    "vmw_vsock_virtio_transport",
    "virtio_console",
];

fn entry<'a>(entries: &'a [CpioEntry], name: &str) -> Result<&'a CpioEntry, String> {
    entries
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| format!("initramfs has no {name}"))
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.trim_end_matches(".ko").replace('-', "_")
}

/// The kit, read back with parsers independent of the scripts that wrote it: the vmlinux
/// has a PVH entry, the bzImage a setup header, and the initramfs an executable /init, a
/// static busybox, /dev/console and every promised module listed after its dependencies.
#[test]
fn guest_kit_is_complete() -> TestResult {
    let kit = match Kit::locate() {
        Ok(kit) => kit,
        Err(why) if linux::kvm_required() => {
            return Err(format!("no Linux guest kit ({why}) and PODVISOR_REQUIRE_KVM=1").into())
        }
        Err(why) => {
            println!("SKIPPED: no Linux guest kit ({why}); run scripts/guest-kit");
            return Ok(());
        }
    };
    let entry_point =
        image::pvh_entry(&std::fs::read(&kit.vmlinux)?)?.ok_or("vmlinux has no PVH entry note")?;
    assert!(
        (layout::HIMEM_START..1 << 32).contains(&entry_point),
        "PVH entry {entry_point:#x} is not a 32-bit address above 1 MiB"
    );
    let bzimage = std::fs::read(&kit.bzimage)?;
    assert_eq!(
        bzimage.get(0x202..0x206),
        Some(&b"HdrS"[..]),
        "bzImage lacks its setup header"
    );

    let archive = std::fs::read(&kit.initramfs)?;
    let entries = image::cpio_entries(&archive)?;
    let init = entry(&entries, "init")?;
    assert!(init.is_file() && init.is_executable(), "/init: {init:?}");
    assert!(
        archive[init.data.clone()].starts_with(b"#!/bin/sh"),
        "/init is not a shell script"
    );
    let busybox = entry(&entries, "bin/busybox")?;
    assert!(
        busybox.is_file() && busybox.is_executable(),
        "/bin/busybox: {busybox:?}"
    );
    assert!(
        archive[busybox.data.clone()].starts_with(b"\x7fELF"),
        "/bin/busybox is not ELF"
    );
    let console = entry(&entries, "dev/console")?;
    assert!(
        console.is_char_device() && console.rdev == (5, 1),
        "/dev/console: {console:?}"
    );

    let order_entry = entries
        .iter()
        .find(|e| e.name.starts_with("lib/modules/") && e.name.ends_with("/load-order"))
        .ok_or("initramfs has no lib/modules/*/load-order")?;
    let moddir = order_entry.name.trim_end_matches("load-order");
    let order = std::str::from_utf8(&archive[order_entry.data.clone()])?;
    let mut loaded: Vec<String> = Vec::new();
    let mut edges = 0;
    for rel in order.lines() {
        let module = entry(&entries, &format!("{moddir}{rel}"))?;
        let name = module_name(rel);
        for dep in image::module_depends(&archive[module.data.clone()])? {
            assert!(
                loaded.contains(&dep.replace('-', "_")),
                "{name} is loaded before its dependency {dep}"
            );
            edges += 1;
        }
        loaded.push(name);
    }
    assert!(
        edges > 0,
        "no module declares a dependency: .modinfo not read?"
    );
    // socat (AF_VSOCK for tests/linux_devices.rs) with the loader its libraries need.
    for program in ["usr/bin/socat", "lib64/ld-linux-x86-64.so.2"] {
        let file = entry(&entries, program)?;
        assert!(
            file.is_file() && archive[file.data.clone()].starts_with(b"\x7fELF"),
            "/{program}: {file:?}"
        );
    }
    for wanted in KIT_MODULES {
        assert!(
            loaded.iter().any(|m| m == wanted),
            "module {wanted} missing: {loaded:?}"
        );
    }
    println!(
        "kit ok: PVH entry {entry_point:#x}, {} modules: {loaded:?}",
        loaded.len()
    );
    Ok(())
}

fn announce(test: &str, mode: HostMode, kit: &Kit) {
    println!("{test}: mode: {mode}; kit {}", kit.dir.display());
}

#[test]
fn vmlinux_early_boot_shows_our_platform() -> TestResult {
    let Some((kit, mode)) = linux::prepare()? else {
        return Ok(());
    };
    announce("vmlinux", mode, &kit);
    early_boot(EarlyBoot {
        name: "vmlinux (PVH)",
        kernel: &kit.vmlinux,
        initramfs: &kit.initramfs,
        cpus: 2,
        memory: 512 * MIB,
        timeout: Duration::from_secs(360),
    })
}

#[test]
fn bzimage_early_boot_shows_our_platform() -> TestResult {
    let Some((kit, mode)) = linux::prepare()? else {
        return Ok(());
    };
    announce("bzImage", mode, &kit);
    // The decompressor runs first, which is slow on PVM: one vCPU and little memory.
    early_boot(EarlyBoot {
        name: "bzImage",
        kernel: &kit.bzimage,
        initramfs: &kit.initramfs,
        cpus: 1,
        memory: 128 * MIB,
        timeout: Duration::from_secs(900),
    })
}

#[test]
fn linux_boots_to_init_with_all_cpus() -> TestResult {
    let Some((kit, mode)) = linux::prepare()? else {
        return Ok(());
    };
    announce("to-init", mode, &kit);
    if mode == HostMode::EarlyBootOnly {
        println!("to-init: not run: Linux cannot reach init on PVM (early-boot tests cover it)");
        return Ok(());
    }
    let cpus = 2;
    let cmdline = "console=ttyS0 loglevel=4 podvisor.init=poweroff";
    let args = run_args(&kit.vmlinux, &kit.initramfs, cmdline, cpus, 512 * MIB);
    let mut vm = ConsoleVm::spawn(Path::new(PODVISOR), &args)?;
    let outcome = vm.wait_for(Duration::from_secs(300), |log| {
        log.contains("PODVISOR-INIT: ready")
    });
    let exit = vm.wait_exit(Duration::from_secs(120))?;
    let log = vm.console();
    let context = format!(
        "console (last lines):\n{}\npodvisor stderr:\n{}",
        linux::tail(&log, 40),
        linux::tail(&vm.stderr(), 20)
    );
    assert_eq!(outcome, Wait::Seen, "init did not report ready\n{context}");
    let online = linux::init_value(&log, "cpus-online");
    assert_eq!(online.as_deref(), Some("0-1"), "CPUs online\n{context}");
    assert_eq!(
        linux::init_value(&log, "nproc").as_deref(),
        Some("2"),
        "{context}"
    );
    assert_eq!(
        linux::init_value(&log, "failed").as_deref(),
        Some("0"),
        "module loading\n{context}"
    );
    let status =
        exit.ok_or_else(|| format!("podvisor still running after power-off\n{context}"))?;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after guest power-off\n{context}"
    );
    println!("to-init: Linux reached init with CPUs {online:?} and powered off");
    Ok(())
}
