//! A VM whose vCPUs and memory were set up before the VMM takes over, as a confidential launch
//! leaves them (`confidential_vm::from_launched`), run on plain KVM: the hand-over path of
//! SEV-SNP guests, exercised on hosts without SNP. The "launch" here is a real-mode vCPU whose
//! registers and code the test wrote itself; the VMM adds the buses and devices and runs it.
//! With hardware virtualization, the guest's `KVM_HC_MAP_GPA_RANGE` hypercalls also reach the
//! conversions the hand-over wired (the host side recorded by a fake).
// Test helpers outside #[test] functions: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_enable_cap, KVM_CAP_EXIT_HYPERCALL, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;
use snp::exits::{MemoryConversion, PunchHole};
use snp::launch::kvm_sys::LaunchedVm;
use snp::launch::RamSlot;
use snp::plan::{RamLayout, RamRegion};
use vm_memory::{Bytes, GuestAddress};
use vmm::confidential_vm::{from_launched, ConfidentialVmError, PrivateMemory};
use vmm::config::{SerialOutput, VmConfig};
use vmm::exit::ExitReason;
use vmm::snp_memory::{ConversionError, MemoryAttributes};

const MEMORY: u64 = 64 << 20;
const CODE: u64 = 0x1000;

mod common;
use common::kvm_available;

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

/// What the vCPUs asked the host to do.
#[derive(Default)]
struct Recorded {
    conversions: Vec<MemoryConversion>,
    holes: Vec<PunchHole>,
}

struct RecordingHost(Arc<Mutex<Recorded>>);

impl MemoryAttributes for RecordingHost {
    fn set_attributes(&self, conversion: &MemoryConversion) -> Result<(), ConversionError> {
        self.0.lock().unwrap().conversions.push(*conversion);
        Ok(())
    }

    fn punch_hole(&self, hole: &PunchHole) -> Result<(), ConversionError> {
        self.0.lock().unwrap().holes.push(*hole);
        Ok(())
    }
}

/// Real mode, 32-bit operands: `KVM_HC_MAP_GPA_RANGE(gpa, 1 page, attrs)` by VMMCALL (AMD) or
/// VMCALL (Intel), then `'0'` on COM1 if it returned 0, `'E'` if not.
fn map_gpa_range(gpa: u32, attrs: u32, amd: bool) -> Vec<u8> {
    let mut code = Vec::new();
    for (op, value) in [(0xb8u8, 12u32), (0xbb, gpa), (0xb9, 1), (0xba, attrs)] {
        code.extend([0x66, op]);
        code.extend(value.to_le_bytes());
    }
    code.extend(if amd {
        [0x0f, 0x01, 0xd9]
    } else {
        [0x0f, 0x01, 0xc1]
    });
    // test eax, eax; mov al, '0'; jz +2; mov al, 'E'; mov dx, 0x3f8; out dx, al
    code.extend([0x66, 0x85, 0xc0, 0xb0, b'0', 0x74, 0x02, 0xb0, b'E']);
    code.extend([0xba, 0xf8, 0x03, 0xee]);
    code
}

/// Under PVM (KVM without hardware virtualization) a guest's VMMCALL/VMCALL is not a
/// hypercall: it faults (measured: an emulation failure, or a guest stuck in its fault
/// handlers). The hypercall test runs on hosts with hardware virtualization only.
fn hypercalls_available() -> bool {
    if Path::new("/sys/module/kvm_pvm").exists() {
        println!("SKIPPED: PVM does not forward guest hypercalls");
        return false;
    }
    true
}

#[test]
fn page_conversion_hypercalls_reach_the_launched_vms_conversions() {
    if !kvm_available() || !hypercalls_available() {
        return;
    }
    let amd = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .contains("AuthenticAMD");
    let mut code = map_gpa_range(0x20_0000, 1 << 4, amd); // to private
    code.extend(map_gpa_range(0x20_0000, 0, amd)); // back to shared: the backing is freed
    code.extend(map_gpa_range(0x20_0000, 1 << 9, amd)); // an attribute bit nobody defined
    code.extend(out8(0x3f8, b'\n'));
    code.extend(out8(0x600, (5 << 2) | (1 << 5)));
    code.extend([0xeb, 0xfe]);
    let parts = launched(1, &code);
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_EXIT_HYPERCALL,
        ..Default::default()
    };
    cap.args[0] = 1 << 12;
    parts.vm.enable_cap(&cap).unwrap();
    let log = scratch("hypercall.log");
    let mut config = VmConfig::new(PathBuf::new());
    config.memory = MEMORY;
    config.serial = SerialOutput::File(log.clone());
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let private = PrivateMemory {
        ram: RamLayout::pc(MEMORY).unwrap(),
        slots: vec![RamSlot {
            slot: 0,
            region: RamRegion {
                gpa: 0,
                size: MEMORY,
            },
        }],
        launched: Vec::new(),
        host: Some(Box::new(RecordingHost(recorded.clone()))),
        certs: None,
    };
    let vm = from_launched(&config, parts, Some(private)).unwrap();
    let reason = vm.run().unwrap();
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert_eq!(reason, ExitReason::PowerOff, "console: {console:?}");
    assert_eq!(console, "00E\n", "hypercall results as the guest saw them");
    let recorded = recorded.lock().unwrap();
    let page = |private| MemoryConversion {
        gpa: 0x20_0000,
        size: 4096,
        private,
    };
    assert_eq!(recorded.conversions, vec![page(true), page(false)]);
    assert_eq!(
        recorded.holes,
        vec![PunchHole {
            slot: 0,
            offset: 0x20_0000,
            len: 4096
        }]
    );
}
