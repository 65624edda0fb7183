//! Builds the probe guest (`guest/`) and hands its path to the fixture.
//!
//! The probe needs code-generation flags the workspace must not get (no SSE, static relocation
//! model), so it is built by a nested `cargo build` of its own package with its own target
//! directory (`<target>/probe-build`; sharing the outer one would deadlock on its lock). The
//! outer build's settings are removed from the environment so they cannot leak in. The result is
//! disassembled and refused if any SSE instruction survived, then copied to
//! `<target>/release/probe`, and `PODVISOR_PROBE` is set to that path for the fixture.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The target the probe is compiled for; giving it explicitly keeps the flags below away from
/// host artifacts (build scripts) of the nested build.
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Code-generation flags of the probe. SSE off: on hosts whose KVM emulates privileged
/// instructions (PVM), any SSE instruction in the guest ends in an emulation failure.
const PROBE_RUSTFLAGS: &[&str] = &[
    "-Ctarget-feature=-sse,-sse2",
    "-Crelocation-model=static",
    "-Cno-redzone=yes",
];

/// Outer-build variables that would change the nested build, beyond the `CARGO_*` families
/// cleared by prefix in [`clean_env`].
const CLEARED_VARS: &[&str] = &[
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "TARGET",
    "HOST",
    "OUT_DIR",
    "OPT_LEVEL",
    "PROFILE",
    "DEBUG",
    "NUM_JOBS",
    "RUSTC_LINKER",
    "CARGO_INCREMENTAL",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_CRATE_NAME",
];

const CLEARED_PREFIXES: &[&str] = &[
    "CARGO_ENCODED_",
    "CARGO_BUILD_",
    "CARGO_TARGET_",
    "CARGO_PROFILE_",
    "CARGO_CFG_",
    "CARGO_FEATURE_",
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_BIN_",
];

/// Mnemonics of SSE-family instructions that name no XMM/MMX register (fences, MXCSR access,
/// non-temporal and prefetch hints, FXSAVE/FXRSTOR). Everything else in the family shows up
/// through its register operands.
const SSE_MNEMONICS: &[&str] = &[
    "lfence",
    "mfence",
    "sfence",
    "ldmxcsr",
    "stmxcsr",
    "movnti",
    "prefetchnta",
    "prefetcht0",
    "prefetcht1",
    "prefetcht2",
    "fxsave",
    "fxsave64",
    "fxrstor",
    "fxrstor64",
    "xsave",
    "xrstor",
];
const SSE_REGISTERS: &[&str] = &["%xmm", "%ymm", "%zmm", "%mm"];

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: building the probe guest failed: {message}");
            ExitCode::FAILURE
        }
    }
}

fn var(name: &str) -> Result<PathBuf, String> {
    env::var_os(name)
        .map(PathBuf::from)
        .ok_or_else(|| format!("cargo did not set {name}"))
}

fn build() -> Result<(), String> {
    let manifest_dir = var("CARGO_MANIFEST_DIR")?;
    let workspace = manifest_dir
        .parent()
        .ok_or("the tests crate has no parent directory")?
        .to_path_buf();
    let guest = workspace.join("guest");
    let target_dir = outer_target_dir(&var("OUT_DIR")?)?;

    for path in [
        "src",
        "parse",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "link.ld",
    ] {
        println!("cargo:rerun-if-changed={}", guest.join(path).display());
    }

    let nested_target = target_dir.join("probe-build");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command
        .current_dir(&guest)
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(TARGET)
        .arg("--manifest-path")
        .arg(guest.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&nested_target);
    clean_env(&mut command);
    command.env("CARGO_ENCODED_RUSTFLAGS", PROBE_RUSTFLAGS.join("\u{1f}"));
    let output = command
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "nested cargo build failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }

    let built = nested_target.join(TARGET).join("release").join("probe");
    check_no_sse(&built)?;

    let release = target_dir.join("release");
    fs::create_dir_all(&release)
        .map_err(|e| format!("cannot create {}: {e}", release.display()))?;
    let installed = release.join("probe");
    // Copy through a temporary name so a concurrent reader never sees a half-written file.
    let partial = release.join(".probe.partial");
    fs::copy(&built, &partial).map_err(|e| format!("cannot copy {}: {e}", built.display()))?;
    fs::rename(&partial, &installed)
        .map_err(|e| format!("cannot install {}: {e}", installed.display()))?;
    println!("cargo:rustc-env=PODVISOR_PROBE={}", installed.display());
    Ok(())
}

/// The outer target directory, from OUT_DIR (`<target>[/<triple>]/<profile>/build/<pkg>/out`),
/// which is right even when the directory comes from a config file or a relative
/// CARGO_TARGET_DIR.
fn outer_target_dir(out_dir: &Path) -> Result<PathBuf, String> {
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .ok_or_else(|| format!("unexpected OUT_DIR layout: {}", out_dir.display()))?;
    let mut target = profile_dir
        .parent()
        .ok_or_else(|| format!("unexpected OUT_DIR layout: {}", out_dir.display()))?;
    // With `--target <triple>` artifacts sit one level deeper; the probe still goes to
    // `<target>/release/probe`.
    if let (Some(name), Ok(triple)) = (target.file_name(), env::var("TARGET")) {
        if name == triple.as_str() && target.join("..").join("CACHEDIR.TAG").exists() {
            target = target.parent().unwrap_or(target);
        }
    }
    Ok(target.to_path_buf())
}

fn clean_env(command: &mut Command) {
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if CLEARED_VARS.contains(&key) || CLEARED_PREFIXES.iter().any(|p| key.starts_with(p)) {
            command.env_remove(key);
        }
    }
}

/// Disassembles the executable sections with binutils' `objdump` (binutils is already needed to
/// link the probe) and fails on any SSE-family instruction.
fn check_no_sse(elf: &Path) -> Result<(), String> {
    let output = Command::new("objdump")
        .arg("--disassemble")
        .arg("--no-show-raw-insn")
        .arg(elf)
        .output()
        .map_err(|e| format!("cannot run objdump (install binutils): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "objdump failed on {}: {}",
            elf.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let offending: Vec<&str> = text.lines().filter(|line| is_sse(line)).collect();
    if offending.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = offending.iter().take(20).copied().collect();
    Err(format!(
        "{} contains {} SSE instruction(s), which fail under PVM:\n{}",
        elf.display(),
        offending.len(),
        shown.join("\n")
    ))
}

/// Whether one line of `objdump -d` output is an SSE-family instruction.
fn is_sse(line: &str) -> bool {
    // Instruction lines look like "  101250:\tmnemonic operands".
    let Some((address, instruction)) = line.split_once(":\t") else {
        return false;
    };
    if address.trim().is_empty() || !address.trim().chars().all(|c| c.is_ascii_hexdigit()) {
        return false;
    }
    // Prefixes (`lock`, `rep`, `data16`) come before the mnemonic, so look at every word.
    instruction
        .split_whitespace()
        .any(|word| SSE_MNEMONICS.contains(&word))
        || SSE_REGISTERS.iter().any(|r| instruction.contains(r))
}
