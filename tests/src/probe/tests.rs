use super::*;

const CONSOLE: &str = "probe: started\n\
PROBE-RESULT cpus=2\n\
PROBE-RESULT ram-bytes=134217728\n\
garbage PROBE-RESULT ram-mib=128\n\
PROBE-RESULT novalue\n\
PROBE-RESULT bad key=1\n\
PROBE-ERROR acpi: no APIC table\n\
PROBE-RESULT cpus=3\n";

#[test]
fn results_are_parsed_and_last_value_wins() {
    let results = parse_results(CONSOLE);
    assert_eq!(results.get("cpus").map(String::as_str), Some("3"));
    assert_eq!(
        results.get("ram-bytes").map(String::as_str),
        Some("134217728")
    );
    assert_eq!(results.get("ram-mib").map(String::as_str), Some("128"));
    assert_eq!(results.len(), 3, "{results:?}");
}

#[test]
fn errors_are_collected() {
    assert_eq!(
        parse_errors(CONSOLE),
        vec!["acpi: no APIC table".to_owned()]
    );
    assert!(parse_errors("probe: started\nPROBE-RESULT a=1\n").is_empty());
}

#[test]
fn markers_come_from_the_boot_timing_line() {
    let stderr = "[INFO] something\n\
boot-timing first-instruction-us=1200 marker-01-us=1500 marker-02-us=1600 marker-03-us=9000 exit-us=9100\n";
    assert_eq!(parse_markers(stderr), vec![1, 2, 3]);
    assert!(parse_markers("no timing here").is_empty());
}

#[test]
fn command_line_and_arguments() {
    let vm = ProbeVm::new("idle")
        .cpus(4)
        .memory_mib(2048)
        .param("probe.secs", 2);
    assert_eq!(vm.cmdline(), "probe.run=idle probe.secs=2");
    let args = vm.args();
    let pos = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
    };
    assert_eq!(pos("--cpus").as_deref(), Some("4"));
    assert_eq!(pos("--memory").as_deref(), Some("2048M"));
    assert_eq!(pos("--serial").as_deref(), Some("stdout"));
    assert_eq!(pos("--kernel"), Some(probe_path().display().to_string()));
}

#[test]
fn probe_image_was_built() {
    let path = probe_path();
    let bytes = std::fs::read(&path).unwrap_or_default();
    assert!(
        bytes.starts_with(b"\x7fELF"),
        "{} is not an ELF file",
        path.display()
    );
}

fn le(bytes: &[u8], at: usize, n: usize) -> u64 {
    bytes[at..at + n]
        .iter()
        .rev()
        .fold(0, |v, &b| (v << 8) | u64::from(b))
}

/// The image must carry a PVH entry note (Xen, type 18) whose address lies in an executable
/// loaded segment: that is the only entry point the VMM's loader uses.
#[test]
fn probe_image_has_a_pvh_entry_in_its_code() {
    let bytes = std::fs::read(probe_path()).unwrap_or_default();
    assert!(bytes.len() > 64 && bytes.starts_with(b"\x7fELF\x02\x01"));
    let (phoff, phentsize, phnum) = (
        le(&bytes, 0x20, 8) as usize,
        le(&bytes, 0x36, 2) as usize,
        le(&bytes, 0x38, 2) as usize,
    );
    let headers: Vec<&[u8]> = (0..phnum)
        .map(|i| &bytes[phoff + i * phentsize..phoff + (i + 1) * phentsize])
        .collect();
    let mut entry = None;
    for ph in headers.iter().filter(|ph| le(ph, 0, 4) == 4) {
        let (offset, size) = (le(ph, 8, 8) as usize, le(ph, 32, 8) as usize);
        let mut at = offset;
        while at + 12 <= offset + size {
            let (namesz, descsz, kind) = (
                le(&bytes, at, 4) as usize,
                le(&bytes, at + 4, 4) as usize,
                le(&bytes, at + 8, 4),
            );
            let name = &bytes[at + 12..at + 12 + namesz];
            let desc = at + 12 + namesz.next_multiple_of(4);
            if name == b"Xen\0" && kind == 18 {
                entry = Some(le(&bytes, desc, descsz.min(8)));
            }
            at = desc + descsz.next_multiple_of(4);
        }
    }
    let entry = entry.unwrap_or_else(|| panic!("no XEN_ELFNOTE_PHYS32_ENTRY note"));
    let in_code = headers.iter().any(|ph| {
        let (kind, flags, vaddr, filesz) =
            (le(ph, 0, 4), le(ph, 4, 4), le(ph, 16, 8), le(ph, 32, 8));
        kind == 1 && flags & 1 != 0 && (vaddr..vaddr + filesz).contains(&entry)
    });
    assert!(
        in_code,
        "PVH entry {entry:#x} is not in an executable PT_LOAD segment"
    );
}
