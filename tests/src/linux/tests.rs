use super::*;

const LOG: &str = "\
[    0.000000] Linux version 6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org)\r
[    0.000000] BIOS-provided physical RAM map:\r
[    0.000000] BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable\r
[    0.000000] BIOS-e820: [mem 0x000000000009fc00-0x000000000009ffff] reserved
[    0.000000] BIOS-e820: [mem 0x00000000000e0000-0x00000000000fffff] ACPI data
[    0.000000] BIOS-e820: [mem 0x0000000000100000-0x000000001fffffff] usable
[    0.012000] RAMDISK: [mem 0x1fcee000-0x1ffd7fff]
[    0.013000] ACPI: Early table checksum verification disabled
[    0.013100] ACPI: RSDP 0x00000000000E0000 000024 (v02 PODVSR)
[    0.013200] ACPI: XSDT 0x00000000000E0030 00003C (v01 PODVSR PODVSRXS 00000001      01000013)
[    0.013300] ACPI: FACP 0x00000000000E0100 000114 (v06 PODVSR PODVSRFA 00000001 PDVS 00000001)
[    0.013400] ACPI: DSDT 0x00000000000E0300 0000A8 (v06 PODVSR PODVSRDS 00000001 PDVS 00000001)
[    0.013500] ACPI: APIC 0x00000000000E0400 000050 (v05 PODVSR PODVSRAP 00000001 PDVS 00000001)
[    0.013600] ACPI: Reserving FACP table memory at [mem 0xe0100-0xe0213]
[    0.020000] smpboot: Allowing 2 CPUs, 0 hotplug CPUs
";

#[test]
fn parses_the_e820_map() {
    let entries = e820_entries(LOG).unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(
        entries[0],
        E820Entry {
            range: 0..0x9fc00,
            kind: "usable".into()
        }
    );
    assert_eq!(entries[1].range, 0x9fc00..0xa0000);
    assert_eq!(entries[1].kind, "reserved");
    assert_eq!(entries[2].kind, "ACPI data");
    assert_eq!(entries[3].range, 0x100000..0x2000_0000);
}

#[test]
fn rejects_a_malformed_e820_line() {
    for bad in [
        "BIOS-e820: [mem 0x1000-0x0fff] usable",
        "BIOS-e820: [mem 0x1000-] usable",
        "BIOS-e820: [mem 0x0-0xfff]",
        "BIOS-e820: mem 0x0-0xfff usable",
        "BIOS-e820: [mem 0xzz-0xfff] usable",
    ] {
        assert!(e820_entries(bad).is_err(), "accepted {bad}");
    }
    assert_eq!(e820_entries("no map here").unwrap(), vec![]);
}

#[test]
fn lists_acpi_tables_and_ignores_other_acpi_lines() {
    let tables = acpi_tables(LOG);
    let sigs: Vec<&str> = tables.iter().map(|t| t.signature.as_str()).collect();
    assert_eq!(sigs, ["RSDP", "XSDT", "FACP", "DSDT", "APIC"]);
    assert_eq!(tables[0].address, 0xe0000);
    assert_eq!(tables[0].length, 0x24);
    assert_eq!(tables[2].length, 0x114);
    assert!(tables.iter().all(|t| t.oem_id == "PODVSR"), "{tables:?}");
}

#[test]
fn finds_cpus_and_ramdisk() {
    assert_eq!(allowed_cpus(LOG), Some(2));
    assert_eq!(
        allowed_cpus("smpboot: Allowing 1 CPUs, 0 hotplug CPUs"),
        Some(1)
    );
    assert_eq!(allowed_cpus("Allowing memory"), None);
    assert_eq!(ramdisk(LOG).unwrap(), Some(0x1fce_e000..0x1ffd_8000));
    assert_eq!(ramdisk("nothing").unwrap(), None);
    assert!(ramdisk("RAMDISK: [mem 0x2000-0x1000]").is_err());
}

#[test]
fn reads_init_values() {
    let log = "PODVISOR-INIT: started pid=1\n\
               PODVISOR-INIT: kernel=6.1.0 cpus-online=0-1 nproc=2\n\
               PODVISOR-INIT: modules loaded=12 failed=0\n";
    assert_eq!(init_value(log, "cpus-online").as_deref(), Some("0-1"));
    assert_eq!(init_value(log, "failed").as_deref(), Some("0"));
    assert_eq!(init_value(log, "absent"), None);
}

#[test]
fn tail_keeps_the_last_lines() {
    assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
    assert_eq!(tail("a", 5), "a");
}

#[test]
fn console_vm_collects_output_and_sees_the_process_exit() {
    // /bin/sh stands in for the VMM: it prints, then exits with a status of its own.
    let args = [
        "-c".to_string(),
        "echo first; echo err >&2; echo second; exit 3".to_string(),
    ];
    let mut vm = ConsoleVm::spawn(Path::new("/bin/sh"), &args).unwrap();
    assert_eq!(
        vm.wait_for(Duration::from_secs(30), |c| c.contains("second")),
        Wait::Seen
    );
    let status = vm.wait_exit(Duration::from_secs(30)).unwrap().unwrap();
    assert_eq!(status.code(), Some(3));
    assert_eq!(vm.console(), "first\nsecond\n");
    assert_eq!(vm.stderr(), "err\n");
    assert_eq!(
        vm.wait_for(Duration::from_secs(30), |c| c.contains("never")),
        Wait::Closed
    );
}

#[test]
fn console_vm_times_out_and_kills() {
    let args = ["-c".to_string(), "echo up; exec sleep 600".to_string()];
    let mut vm = ConsoleVm::spawn(Path::new("/bin/sh"), &args).unwrap();
    assert_eq!(
        vm.wait_for(Duration::from_secs(30), |c| c.contains("up")),
        Wait::Seen
    );
    assert_eq!(
        vm.wait_for(Duration::from_millis(300), |c| c.contains("never")),
        Wait::TimedOut
    );
    assert!(vm.wait_exit(Duration::from_millis(100)).unwrap().is_none());
    let status = vm.kill().unwrap();
    assert!(!status.success());
    assert_eq!(vm.console(), "up\n");
}
