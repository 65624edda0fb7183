//! A VM whose vCPUs and memory were set up before the VMM takes over, as a confidential launch
//! leaves them (`confidential_vm::from_launched`), run on plain KVM: the hand-over path of
//! SEV-SNP guests, exercised on hosts without SNP. The "launch" here is a real-mode vCPU whose
//! registers and code the test wrote itself; the VMM adds the buses and devices and runs it.
// Test helpers outside #[test] functions: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Kvm;
use snp::launch::kvm_sys::LaunchedVm;
use vm_memory::{Bytes, GuestAddress};
use vmm::confidential_vm::{from_launched, ConfidentialVmError};
use vmm::config::{SerialOutput, VmConfig};
use vmm::exit::ExitReason;

const MEMORY: u64 = 64 << 20;
const CODE: u64 = 0x1000;

fn kvm_available() -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    assert!(
        std::env::var("PODVISOR_REQUIRE_KVM").as_deref() != Ok("1"),
        "PODVISOR_REQUIRE_KVM=1 but /dev/kvm is missing"
    );
    println!("SKIPPED: no /dev/kvm");
    false
}

/// Real mode: `mov dx, port; mov al, value; out dx, al`.
fn out8(port: u16, value: u8) -> Vec<u8> {
    let p = port.to_le_bytes();
    vec![0xba, p[0], p[1], 0xb0, value, 0xee]
}

/// A VM with `vcpus` vCPUs, irqchip and RAM, vCPU 0 in real mode at `CODE` running `code`.
fn launched(vcpus: u32, code: &[u8]) -> LaunchedVm {
    let kvm = Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    let memory = vmm::memory::create_guest_memory(MEMORY, false).unwrap();
    vmm::memory::register_with_kvm(&vm, &memory).unwrap();
    vmm::vm::create_platform(&vm).unwrap();
    memory.write_slice(code, GuestAddress(CODE)).unwrap();
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let fds = (0..vcpus)
        .map(|index| {
            let fd = vm.create_vcpu(u64::from(index)).unwrap();
            fd.set_cpuid2(&cpuid).unwrap();
            if index == 0 {
                let mut sregs = fd.get_sregs().unwrap();
                sregs.cs.base = 0;
                sregs.cs.selector = 0;
                fd.set_sregs(&sregs).unwrap();
                let mut regs = fd.get_regs().unwrap();
                regs.rip = CODE;
                regs.rflags = 2;
                fd.set_regs(&regs).unwrap();
            }
            fd
        })
        .collect();
    LaunchedVm {
        vcpus: fds,
        vm,
        kvm,
        guest_memfds: Vec::new(),
        memory,
    }
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("podvisor-launched-{}-{name}", std::process::id()))
}

#[test]
fn a_launched_vm_runs_with_the_vmms_devices_and_powers_off() {
    if !kvm_available() {
        return;
    }
    let log = scratch("console.log");
    let disk = scratch("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let mut code = Vec::new();
    for b in b"launched\n" {
        code.extend(out8(0x3f8, *b));
    }
    code.extend(out8(0x600, (5 << 2) | (1 << 5)));
    code.extend([0xeb, 0xfe]);
    let mut config = VmConfig::new(PathBuf::new());
    config.memory = MEMORY;
    config.vcpus = 2;
    config.serial = SerialOutput::File(log.clone());
    config.disks = vec![vmm::config::disk::DiskConfig::new(disk.clone())];
    let vm = from_launched(&config, launched(2, &code), None).unwrap();
    assert_eq!(vm.devices().snapshot().len(), 1, "the disk is on the bus");
    let reason = vm.run().unwrap();
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&disk);
    assert_eq!(reason, ExitReason::PowerOff);
    assert_eq!(console, "launched\n");
}

#[test]
fn a_launch_with_another_vcpu_count_is_refused() {
    if !kvm_available() {
        return;
    }
    let mut config = VmConfig::new(PathBuf::new());
    config.memory = MEMORY;
    config.vcpus = 2;
    config.serial = SerialOutput::Off;
    let err = match from_launched(&config, launched(1, &[0xf4]), None) {
        Ok(_) => panic!("a VM with fewer vCPUs than configured was accepted"),
        Err(e) => e,
    };
    assert!(
        matches!(
            err,
            ConfidentialVmError::VcpuCount {
                launched: 1,
                configured: 2
            }
        ),
        "{err}"
    );
    assert_eq!(err.exit_code(), 2);
}
