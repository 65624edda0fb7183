//! Builds and runs real VMs on KVM with tiny hand-assembled PVH guests, and checks how each
//! ending is reported: power-off, reset, triple fault, serial output, boot markers, and that
//! APs parked in wait-for-SIPI are stopped with the VM.
// Test helpers outside #[test] functions: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vmm::config::{SerialOutput, VmConfig};
use vmm::exit::ExitReason;
use vmm::vm::Vm;

mod common;
use common::kvm_available;

/// A file of one test, named after the test process, removed when the test ends (also when it
/// fails), so runs leave nothing behind.
struct ScratchFile(PathBuf);

impl ScratchFile {
    fn path(&self) -> PathBuf {
        self.0.clone()
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn scratch(name: &str) -> ScratchFile {
    ScratchFile(std::env::temp_dir().join(format!("podvisor-exits-{}-{name}", std::process::id())))
}

fn put<const N: usize>(buf: &mut [u8], offset: usize, bytes: [u8; N]) {
    buf[offset..offset + N].copy_from_slice(&bytes);
}

/// An ELF64 image whose only segment holds `code` at 1 MiB, with a PVH entry note for it.
fn pvh_kernel(name: &str, code: &[u8]) -> ScratchFile {
    const CODE_OFF: usize = 0x1000;
    const NOTE_OFF: usize = 0x800;
    let mut img = vec![0u8; CODE_OFF + code.len()];
    img[..4].copy_from_slice(&[0x7f, b'E', b'L', b'F']);
    img[4] = 2;
    img[5] = 1;
    img[6] = 1;
    put(&mut img, 16, 2u16.to_le_bytes());
    put(&mut img, 18, 0x3eu16.to_le_bytes());
    put(&mut img, 20, 1u32.to_le_bytes());
    put(&mut img, 24, 0x10_0000u64.to_le_bytes());
    put(&mut img, 32, 64u64.to_le_bytes());
    put(&mut img, 52, 64u16.to_le_bytes());
    put(&mut img, 54, 56u16.to_le_bytes());
    put(&mut img, 56, 2u16.to_le_bytes());
    let ph = 64;
    put(&mut img, ph, 1u32.to_le_bytes());
    put(&mut img, ph + 8, (CODE_OFF as u64).to_le_bytes());
    put(&mut img, ph + 16, 0x10_0000u64.to_le_bytes());
    put(&mut img, ph + 24, 0x10_0000u64.to_le_bytes());
    put(&mut img, ph + 32, (code.len() as u64).to_le_bytes());
    put(&mut img, ph + 40, (code.len() as u64).to_le_bytes());
    let ph = 64 + 56;
    put(&mut img, ph, 4u32.to_le_bytes());
    put(&mut img, ph + 8, (NOTE_OFF as u64).to_le_bytes());
    put(&mut img, ph + 32, 20u64.to_le_bytes());
    put(&mut img, NOTE_OFF, 4u32.to_le_bytes());
    put(&mut img, NOTE_OFF + 4, 4u32.to_le_bytes());
    put(&mut img, NOTE_OFF + 8, 18u32.to_le_bytes());
    put(&mut img, NOTE_OFF + 12, *b"Xen\0");
    put(&mut img, NOTE_OFF + 16, 0x10_0000u32.to_le_bytes());
    img[CODE_OFF..].copy_from_slice(code);
    let file = scratch(name);
    std::fs::write(file.path(), img).unwrap();
    file
}

/// 32-bit code: `mov dx, port; mov al, value; out dx, al`.
fn out8(port: u16, value: u8) -> Vec<u8> {
    let p = port.to_le_bytes();
    vec![0x66, 0xba, p[0], p[1], 0xb0, value, 0xee]
}

/// Spins forever (`jmp $`), so the test fails by timeout rather than by luck.
const SPIN: [u8; 2] = [0xeb, 0xfe];
/// ACPI S5 through the hardware-reduced sleep control register.
const POWER_OFF: (u16, u8) = (0x600, (5 << 2) | (1 << 5));
/// The hardware-reduced reset register.
const RESET: (u16, u8) = (0x602, 0x06);

fn run_guest(name: &str, code: &[u8], vcpus: u32, serial: SerialOutput) -> (ExitReason, Duration) {
    let kernel = pvh_kernel(name, code);
    let mut config = VmConfig::new(kernel.path());
    config.memory = 64 << 20;
    config.vcpus = vcpus;
    config.serial = serial;
    let vm = Vm::build(&config).unwrap();
    let started = Instant::now();
    let reason = vm.run().unwrap();
    (reason, started.elapsed())
}

#[test]
fn power_off_with_parked_aps() {
    if !kvm_available() {
        return;
    }
    let mut code = out8(POWER_OFF.0, POWER_OFF.1);
    code.extend(SPIN);
    let (reason, took) = run_guest("poweroff", &code, 4, SerialOutput::Off);
    assert_eq!(reason, ExitReason::PowerOff);
    assert_eq!(reason.exit_code(), 0);
    assert!(took < Duration::from_secs(30), "stopping took {took:?}");
}

#[test]
fn reset_request() {
    if !kvm_available() {
        return;
    }
    let mut code = out8(RESET.0, RESET.1);
    code.extend(SPIN);
    let (reason, _) = run_guest("reset", &code, 2, SerialOutput::Off);
    assert_eq!(reason, ExitReason::Reboot);
    assert_eq!(reason.exit_code(), 3);
}

#[test]
fn triple_fault_on_an_empty_idt() {
    if !kvm_available() {
        return;
    }
    // ud2 with a zero-limit IDT: #UD, then #DF, then shutdown.
    let (reason, _) = run_guest("triple", &[0x0f, 0x0b], 1, SerialOutput::Off);
    assert_eq!(reason, ExitReason::TripleFault { vcpu: 0 });
    assert_eq!(reason.exit_code(), 4);
}

#[test]
fn serial_output_and_boot_markers() {
    if !kvm_available() {
        return;
    }
    let log = scratch("console.log");
    let mut code = out8(0x440, 0x01);
    for b in b"hello\n" {
        code.extend(out8(0x3f8, *b));
    }
    code.extend(out8(0x440, 0x02));
    code.extend(out8(POWER_OFF.0, POWER_OFF.1));
    code.extend(SPIN);
    let kernel = pvh_kernel("serial", &code);
    let mut config = VmConfig::new(kernel.path());
    config.memory = 64 << 20;
    config.serial = SerialOutput::File(log.path());
    let vm = Vm::build(&config).unwrap();
    let clock = vm.clock();
    assert_eq!(vm.run().unwrap(), ExitReason::PowerOff);
    assert_eq!(std::fs::read_to_string(log.path()).unwrap(), "hello\n");
    let timeline = clock.snapshot();
    let first = timeline.first_instruction.unwrap();
    let markers: Vec<u8> = timeline.markers.iter().map(|m| m.0).collect();
    assert_eq!(markers, [1, 2]);
    assert!(first <= timeline.markers[0].1);
    assert!(timeline.markers[1].1 <= timeline.exit.unwrap());
    let line = timeline.to_string();
    assert!(
        line.starts_with("boot-timing first-instruction-us="),
        "{line}"
    );
    assert!(
        line.contains(" marker-01-us=") && line.contains(" exit-us="),
        "{line}"
    );
}

#[test]
fn unclaimed_ports_read_all_ones() {
    if !kvm_available() {
        return;
    }
    // mov dx, 0x2f0; in al, dx (nothing there); if al == 0xff power off, else reset.
    let mut code = vec![0x66, 0xba, 0xf0, 0x02, 0xec, 0x3c, 0xff, 0x75, 0x07];
    code.extend(out8(POWER_OFF.0, POWER_OFF.1));
    code.extend(out8(RESET.0, RESET.1));
    code.extend(SPIN);
    let (reason, _) = run_guest("ports", &code, 1, SerialOutput::Off);
    assert_eq!(reason, ExitReason::PowerOff);
}

#[test]
fn host_stop_ends_a_spinning_guest() {
    if !kvm_available() {
        return;
    }
    let kernel = pvh_kernel("spin", &SPIN);
    let mut config = VmConfig::new(kernel.path());
    config.memory = 32 << 20;
    config.vcpus = 2;
    config.serial = SerialOutput::Off;
    let vm = Vm::build(&config).unwrap();
    let handle = vm.handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        handle.stop()
    });
    let started = Instant::now();
    assert_eq!(vm.run().unwrap(), ExitReason::HostStop);
    assert!(stopper.join().unwrap(), "the VM was running when stopped");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn pause_holds_every_vcpu_until_resume() {
    if !kvm_available() {
        return;
    }
    // Writes 'x' to COM1 forever; the console file grows exactly while the vCPU runs.
    let mut code = out8(0x3f8, b'x');
    code.extend([0xeb, 0xf7]); // jmp to the start: -(7 + 2) bytes
    let log = scratch("pause.log");
    let kernel = pvh_kernel("pause", &code);
    let mut config = VmConfig::new(kernel.path());
    config.memory = 32 << 20;
    config.vcpus = 3;
    config.serial = SerialOutput::File(log.path());
    let vm = Vm::build(&config).unwrap();
    let handle = vm.handle();
    let runner = std::thread::spawn(move || vm.run());
    let size = || std::fs::metadata(log.path()).map(|m| m.len()).unwrap_or(0);

    let deadline = Instant::now() + Duration::from_secs(60);
    while size() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(size() > 0, "the guest never wrote");
    handle.pause().unwrap();
    let paused_at = size();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(size(), paused_at, "console grew while paused");

    handle.resume().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while size() == paused_at && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(size() > paused_at, "the guest did not run after resume");

    handle.pause().unwrap();
    assert!(handle.stop(), "stopping a paused VM");
    assert_eq!(runner.join().unwrap().unwrap(), ExitReason::HostStop);
    assert!(handle.pause().is_err(), "pausing a VM that has ended");
}

#[test]
fn kernel_beyond_guest_ram_is_a_configuration_error() {
    if !kvm_available() {
        return;
    }
    // A 24 MiB segment at 1 MiB does not fit in 16 MiB of RAM.
    let kernel = pvh_kernel("too-big", &vec![0xf4; 24 << 20]);
    let mut config = VmConfig::new(kernel.path());
    config.memory = 16 << 20;
    config.serial = SerialOutput::Off;
    let err = match Vm::build(&config) {
        Ok(_) => panic!("a kernel larger than RAM was accepted"),
        Err(e) => e,
    };
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(err.to_string().contains("too-big"), "{err}");
}

#[test]
fn amd_guests_see_tsc_freq_sel() {
    if !kvm_available() {
        return;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if !cpuinfo.contains("AuthenticAMD") {
        println!("SKIPPED: not an AMD host");
        return;
    }
    // rdmsr HWCR; marker 0x10 + bit 24.
    let mut code = vec![0xb9, 0x15, 0x00, 0x01, 0xc0, 0x0f, 0x32];
    code.extend([0xc1, 0xe8, 0x18, 0x24, 0x01, 0x04, 0x10]);
    code.extend([0x66, 0xba, 0x40, 0x04, 0xee]);
    code.extend(out8(POWER_OFF.0, POWER_OFF.1));
    code.extend(SPIN);
    let kernel = pvh_kernel("hwcr", &code);
    let mut config = VmConfig::new(kernel.path());
    config.memory = 32 << 20;
    config.serial = SerialOutput::Off;
    let vm = Vm::build(&config).unwrap();
    let clock = vm.clock();
    assert_eq!(vm.run().unwrap(), ExitReason::PowerOff);
    let markers: Vec<u8> = clock.snapshot().markers.iter().map(|m| m.0).collect();
    assert_eq!(markers, [0x11], "HWCR.TscFreqSel as the guest reads it");
}
