//! The probe as a guest that writes garbage into PCI configuration space (`pci-fuzz`): random
//! widths, offsets and values for every slot and function of the bus, through ECAM and the
//! 0xCF8/0xCFC ports, BARs thrown onto RAM, onto each other and onto the ECAM window. The VMM
//! stays up and logs no error of its own, the functions are all still there, and once the guest
//! has put the configuration back the disk answers with the host file's data.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

use podvisor_tests::probe::{self, ProbeVm, EXIT_POWER_OFF};
use podvisor_tests::scratch::{pattern, Scratch};

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");

#[test]
fn garbage_in_pci_configuration_space_leaves_the_vmm_and_its_devices_working() {
    if !probe::require_kvm() {
        return;
    }
    let scratch = Scratch::new("pci-fuzz", "seeds").unwrap();
    let data = pattern(1 << 20, 11);
    let disk = scratch.file("disk.img", &data).unwrap();
    let other = scratch.file("other.img", &pattern(1 << 20, 12)).unwrap();
    let want = scratch.sha256("sector0", &data[..512]).unwrap();
    let want = want.as_str();
    for seed in [1, 2, 3] {
        let r = ProbeVm::new("pci-fuzz")
            .param("probe.pci-fuzz-seed", seed)
            .arg("--disk")
            .arg(&format!("path={}", disk.display()))
            .arg("--disk")
            .arg(&format!("path={},readonly=on", other.display()))
            .arg("--rng")
            .arg("src=/dev/urandom")
            .run(PODVISOR)
            .unwrap_or_else(|e| panic!("{e}"));
        let context = format!("seed {seed}\n{}", r.describe());
        assert_eq!(r.exit_code(), Some(EXIT_POWER_OFF), "{context}");
        assert!(r.errors().is_empty(), "{context}");
        // Host bridge, two disks, rng.
        assert_eq!(r.result_u64("pci-fuzz-functions"), Some(4), "{context}");
        assert_eq!(
            r.result_u64("pci-fuzz-functions-after"),
            Some(4),
            "{context}"
        );
        assert!(
            r.result_u64("pci-fuzz-ops").is_some_and(|n| n >= 1000),
            "{context}"
        );
        assert!(
            r.result_u64("pci-fuzz-bars-moved").is_some_and(|n| n >= 1),
            "the fuzz never moved a BAR: {context}"
        );
        assert_eq!(
            r.result("pci-fuzz-disk-sha256").as_deref(),
            Some(want),
            "{context}"
        );
        assert!(!r.stderr.contains("panicked"), "{context}");
        assert!(
            !r.stderr.contains(" ERROR "),
            "the VMM logged an error: {context}"
        );
    }
    let file = std::fs::read(&disk).unwrap();
    assert!(file == data, "the fuzz changed the disk's file");
}
