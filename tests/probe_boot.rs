//! Boots the probe guest under `podvisor run` and checks what it reports from inside the VM:
//! the vCPUs and RAM the VMM described (MADT, PVH memory map), that every vCPU actually starts,
//! and the exit status of each way a guest can end its run (ACPI power-off, reset, triple
//! fault).

use podvisor_tests::probe::{
    self, ProbeRun, ProbeVm, EXIT_POWER_OFF, EXIT_REBOOT, EXIT_TRIPLE_FAULT, MARKER_ENDING,
    MARKER_ENTERED_RUST, MARKER_SCENARIO_START,
};

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");

/// Runs the VM; a VM that cannot be run or times out fails the test with its console shown.
#[allow(clippy::panic)] // reason: test helper; the panic is the test failure.
fn run(vm: ProbeVm) -> ProbeRun {
    vm.run(PODVISOR).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_clean(run: &ProbeRun, expected_exit: i32) {
    assert_eq!(run.exit_code(), Some(expected_exit), "{}", run.describe());
    assert!(
        run.errors().is_empty(),
        "probe errors: {:?}\n{}",
        run.errors(),
        run.describe()
    );
}

/// The markers, when the VMM reports them, show the probe reached Rust, ran the scenario and
/// asked for the end, in that order.
fn assert_markers(run: &ProbeRun) {
    let markers = run.markers();
    let wanted = [MARKER_ENTERED_RUST, MARKER_SCENARIO_START, MARKER_ENDING];
    let mut seen = markers.iter().filter(|m| wanted.contains(m));
    assert!(
        wanted.iter().all(|w| seen.next() == Some(w)),
        "markers {markers:02x?}, wanted {wanted:02x?} in order\n{}",
        run.describe()
    );
}

fn boot_reports(cpus: u32, memory_mib: u64) {
    if !probe::require_kvm() {
        return;
    }
    let run = run(ProbeVm::new("boot").cpus(cpus).memory_mib(memory_mib));
    assert_clean(&run, EXIT_POWER_OFF);
    assert_eq!(
        run.result_u64("cpus"),
        Some(u64::from(cpus)),
        "{}",
        run.describe()
    );
    assert_eq!(
        run.result_u64("ram-mib"),
        Some(memory_mib),
        "{}",
        run.describe()
    );
    let bytes = run.result_u64("ram-bytes").unwrap_or(0);
    assert!(
        bytes > (memory_mib - 1) << 20 && bytes <= memory_mib << 20,
        "ram-bytes {bytes} for {memory_mib} MiB\n{}",
        run.describe()
    );
    assert_markers(&run);
}

#[test]
fn boot_1_cpu_128_mib() {
    boot_reports(1, 128);
}

#[test]
fn boot_2_cpus_512_mib() {
    boot_reports(2, 512);
}

#[test]
fn boot_4_cpus_2_gib() {
    boot_reports(4, 2048);
}

/// Above 3 GiB the RAM continues past the 32-bit MMIO hole; the memory map must still add up.
#[test]
fn boot_3_cpus_4_gib() {
    boot_reports(3, 4096);
}

/// Every vCPU the MADT lists must really run: the probe starts the APs (INIT, STARTUP IPIs)
/// and counts those that reach its code.
#[test]
fn smp_starts_every_vcpu() {
    if !probe::require_kvm() {
        return;
    }
    for cpus in [2, 4] {
        let run = run(ProbeVm::new("smp").cpus(cpus));
        assert_clean(&run, EXIT_POWER_OFF);
        assert_eq!(
            run.result_u64("cpus"),
            Some(u64::from(cpus)),
            "{}",
            run.describe()
        );
        assert_eq!(
            run.result_u64("cpus-online"),
            Some(u64::from(cpus)),
            "{}",
            run.describe()
        );
    }
}

/// Guest RAM below and above the MMIO hole is backed, writable and not aliased: the probe writes
/// a per-address pattern across it and reads it all back.
#[test]
fn memory_above_and_below_the_hole_is_distinct_ram() {
    if !probe::require_kvm() {
        return;
    }
    let run = run(ProbeVm::new("memory").memory_mib(4096));
    assert_clean(&run, EXIT_POWER_OFF);
    assert_eq!(run.result_u64("mem-errors"), Some(0), "{}", run.describe());
    assert!(
        run.result_u64("mem-samples").unwrap_or(0) >= 1000,
        "{}",
        run.describe()
    );
    let top = run.result_hex("mem-top").unwrap_or(0);
    // 4 GiB of RAM with a hole below 4 GiB: the last part sits above 4 GiB, at most 5 GiB.
    assert!(
        top > 4 << 30 && top <= 5 << 30,
        "mem-top {top:#x}\n{}",
        run.describe()
    );
}

#[test]
fn power_off_exits_0() {
    if !probe::require_kvm() {
        return;
    }
    let run = run(ProbeVm::new("poweroff"));
    assert_clean(&run, EXIT_POWER_OFF);
    assert_markers(&run);
}

#[test]
fn reboot_exits_3() {
    if !probe::require_kvm() {
        return;
    }
    let run = run(ProbeVm::new("reboot").cpus(2));
    assert_clean(&run, EXIT_REBOOT);
    assert!(
        run.console.contains("probe: ACPI reset"),
        "{}",
        run.describe()
    );
    assert_markers(&run);
}

/// The i8042 reset line is the other reset device a guest may use.
#[test]
fn keyboard_controller_reset_exits_3() {
    if !probe::require_kvm() {
        return;
    }
    let run = run(ProbeVm::new("reboot").param("probe.reset", "i8042"));
    assert_clean(&run, EXIT_REBOOT);
    assert!(
        run.console.contains("probe: i8042 reset"),
        "{}",
        run.describe()
    );
    assert!(
        !run.console.contains("probe: ACPI reset"),
        "{}",
        run.describe()
    );
}

#[test]
fn triple_fault_exits_4() {
    if !probe::require_kvm() {
        return;
    }
    let run = run(ProbeVm::new("triple-fault"));
    assert_clean(&run, EXIT_TRIPLE_FAULT);
    assert!(
        run.console.contains("probe: triple fault"),
        "{}",
        run.describe()
    );
}

#[test]
fn idle_waits_then_powers_off() {
    if !probe::require_kvm() {
        return;
    }
    let secs = 2;
    let run = run(ProbeVm::new("idle").param("probe.secs", secs));
    assert_clean(&run, EXIT_POWER_OFF);
    let idled = run.result_u64("idle-ms").unwrap_or(0);
    assert!(idled >= secs * 1000, "idle-ms={idled}\n{}", run.describe());
    assert!(run.elapsed.as_secs() >= secs, "{}", run.describe());
}

/// A fault inside the guest is delivered to the guest's own handler (not turned into a triple
/// fault or a VMM error); the probe reports it and powers off.
#[test]
fn page_fault_reaches_the_guest_handler() {
    if !probe::require_kvm() {
        return;
    }
    let run = run(ProbeVm::new("page-fault"));
    assert_eq!(run.exit_code(), Some(EXIT_POWER_OFF), "{}", run.describe());
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "{}", run.describe());
    assert!(
        errors[0].starts_with("exception vector=14 ") && errors[0].ends_with(" cr2=0x1000000000"),
        "{}",
        run.describe()
    );
}

#[test]
fn unknown_scenario_is_reported_and_powers_off() {
    if !probe::require_kvm() {
        return;
    }
    let run = run(ProbeVm::new("no-such-scenario"));
    assert_eq!(run.exit_code(), Some(EXIT_POWER_OFF), "{}", run.describe());
    assert_eq!(
        run.errors(),
        vec!["unknown scenario no-such-scenario".to_owned()],
        "{}",
        run.describe()
    );
}
