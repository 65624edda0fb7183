//! `podvisor measure --igvm`: bit-exact against the `igvm` crate's own SEV-SNP measurement on
//! images written with the `igvm` crate's builder, and clear errors on hostile files.

// A test crate: helpers outside `#[test]` functions fail the test by unwrapping.
#![allow(clippy::unwrap_used)]

use podvisor_tests::scratch::ScratchFile;
use snp::igvm_fixtures::{self as fx, Sample};
use std::process::{Command, Output};

fn podvisor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podvisor"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn write_image(name: &str, bytes: &[u8]) -> ScratchFile {
    ScratchFile::with("snp-igvm", name, bytes).unwrap()
}

/// The `igvm` crate's measurement of `sample` for `vcpus` vCPUs (KVM measures one VMSA per
/// vCPU, all with the BSP's state, so the VP context is repeated).
fn reference_hex(sample: &Sample, vcpus: u32) -> String {
    let file = sample.reparsed().unwrap();
    let mut directives = file.directives().to_vec();
    let vp = directives
        .iter()
        .find(|d| matches!(d, igvm::IgvmDirectiveHeader::SnpVpContext { .. }))
        .cloned()
        .unwrap();
    for _ in 1..vcpus {
        directives.push(vp.clone());
    }
    let digest = igvm::measurement::generate_snp_measurement(
        file.initializations(),
        &directives,
        fx::SNP_MASK,
    )
    .unwrap();
    snp::hex::encode(&digest)
}

fn measure(path: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec!["measure", "--igvm", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    podvisor(&args)
}

#[test]
fn measure_igvm_matches_the_igvm_crate() {
    let sample = fx::every_directive();
    let path = write_image("every-directive.igvm", &sample.bytes().unwrap());
    for vcpus in [1u32, 4] {
        let out = measure(&path, &["--vcpus", &vcpus.to_string()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            stdout.trim(),
            reference_hex(&sample, vcpus),
            "vcpus={vcpus}"
        );
        assert_eq!(stdout.trim().len(), 96);
    }
}

#[test]
fn measure_igvm_is_sensitive_to_page_contents() {
    let mut sample = fx::every_directive();
    sample.directives[2] = fx::normal(0x3000, vec![1]);
    let path = write_image("changed.igvm", &sample.bytes().unwrap());
    let out = measure(&path, &[]);
    assert!(out.status.success());
    let got = String::from_utf8(out.stdout).unwrap();
    assert_eq!(got.trim(), reference_hex(&sample, 1));
    assert_ne!(got.trim(), reference_hex(&fx::every_directive(), 1));
}

fn expect_failure(path: &std::path::Path, extra: &[&str], needle: &str) {
    let out = measure(path, extra);
    assert!(!out.status.success(), "{needle}: unexpectedly succeeded");
    assert!(out.stdout.is_empty(), "no digest on failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn hostile_images_give_clear_errors() {
    let good = fx::every_directive().bytes().unwrap();

    let mut bad_sum = good.clone();
    bad_sum[0x30] ^= 1;
    expect_failure(&write_image("checksum.igvm", &bad_sum), &[], "checksum");

    expect_failure(
        &write_image("truncated.igvm", &good[..good.len() / 2]),
        &[],
        "invalid IGVM file",
    );
    expect_failure(&write_image("empty.igvm", b""), &[], "invalid IGVM file");

    let mut overlap = fx::every_directive();
    overlap.directives.insert(0, fx::normal(0x3000, vec![9]));
    expect_failure(
        &write_image("overlap.igvm", &overlap.bytes().unwrap()),
        &[],
        "loaded twice",
    );

    let mut outside = fx::every_directive();
    outside
        .directives
        .insert(0, fx::normal(0x4000_0000, vec![9]));
    let path = write_image("outside.igvm", &outside.bytes().unwrap());
    expect_failure(&path, &[], "outside the VM's RAM");
    // With enough RAM the same image measures.
    assert!(measure(&path, &["--memory", "2048"]).status.success());

    let mut huge = fx::every_directive();
    huge.directives.insert(
        0,
        igvm::IgvmDirectiveHeader::ParameterArea {
            number_of_bytes: 1 << 36,
            parameter_area_index: 5,
            initial_data: Vec::new(),
        },
    );
    expect_failure(
        &write_image("huge.igvm", &huge.bytes().unwrap()),
        &[],
        "parameter area 5",
    );

    let mut native = fx::every_directive();
    native.platforms.remove(0);
    native.inits.clear();
    native
        .directives
        .retain(|d| d.compatibility_mask() == Some(fx::NATIVE_MASK));
    expect_failure(
        &write_image("native.igvm", &native.bytes().unwrap()),
        &[],
        "does not support SEV-SNP",
    );

    expect_failure(
        &write_image("ok.igvm", &good),
        &["--vcpus", "0"],
        "vCPU count",
    );
    expect_failure(
        std::path::Path::new("/nonexistent/image.igvm"),
        &[],
        "cannot read",
    );
}

/// The sample with its ID block signed for `vcpus` vCPUs (the ID block is not measured, so the
/// digest of the edited image is the one the block now carries).
fn signed_sample(vcpus: u32) -> Sample {
    sample_signed_for(&reference_hex(&fx::every_directive(), vcpus))
}

/// The sample with its ID block carrying the digest `ld_hex`.
fn sample_signed_for(ld_hex: &str) -> Sample {
    let mut sample = fx::every_directive();
    let ld: Vec<u8> = snp::hex::decode(ld_hex).unwrap();
    for d in &mut sample.directives {
        if let igvm::IgvmDirectiveHeader::SnpIdBlock { ld: block_ld, .. } = d {
            block_ld.copy_from_slice(&ld);
        }
    }
    sample
}

#[test]
fn run_on_the_model_platform_reports_the_measured_digest() {
    let path = write_image("signed-3.igvm", &signed_sample(3).bytes().unwrap());
    let host_data = "ab".repeat(32);
    let out = podvisor(&[
        "run",
        "--platform",
        "sev_snp=model",
        "--igvm",
        path.to_str().unwrap(),
        "--cpus",
        "3",
        "--host-data",
        &host_data,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The launch cost by phase, for scripts/bench/all --snp.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("snp-launch-timing digest-us=")
                && l.contains(" launch-update-us=")
                && l.contains(" finish-us=")),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let measured = measure(&path, &["--vcpus", "3"]);
    let measured = String::from_utf8(measured.stdout).unwrap();
    assert_eq!(
        stdout.trim(),
        format!("sev-snp launch digest: {}", measured.trim())
    );

    // The same image on 2 vCPUs: the ID block no longer matches, firmware refuses.
    let out = podvisor(&[
        "run",
        "--platform",
        "sev_snp=model",
        "--igvm",
        path.to_str().unwrap(),
        "--cpus",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BAD_MEASUREMENT"));
}

#[test]
fn run_sev_snp_on_fails_before_anything_starts_without_snp() {
    let path = write_image("signed-1.igvm", &signed_sample(1).bytes().unwrap());
    let out = podvisor(&[
        "run",
        "--platform",
        "sev_snp=on",
        "--igvm",
        path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    match snp::launch::kvm_sys::snp_unavailable_reason() {
        Some(_) => {
            assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
            assert!(stderr.contains("SEV-SNP is not available"), "{stderr}");
            let names_what = stderr.contains("/dev/sev") || stderr.contains("KVM_X86_SNP_VM");
            assert!(names_what, "{stderr}");
        }
        None => println!("host offers SEV-SNP: {stderr}"),
    }
}

#[test]
fn run_refuses_kernel_cmdline_or_devices_beside_an_igvm() {
    let path = write_image("plain.igvm", &fx::every_directive().bytes().unwrap());
    let igvm = path.to_str().unwrap();
    for extra in [
        &["--kernel", "/boot/vmlinuz"][..],
        &["--cmdline", "console=ttyS0"],
        &["--initramfs", "/boot/initrd.img"],
    ] {
        let mut args = vec!["run", "--platform", "sev_snp=model", "--igvm", igvm];
        args.extend_from_slice(extra);
        let out = podvisor(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    }
    // The model only launches: devices would never be served, so they are refused.
    for extra in [
        &["--disk", "path=/dev/null"][..],
        &["--vsock", "cid=3,socket=/tmp/podvisor-never.sock"],
        &["--rng", "src=/dev/urandom"],
        &["--fs", "tag=t,socket=/tmp/podvisor-never.sock"],
    ] {
        let mut args = vec!["run", "--platform", "sev_snp=model", "--igvm", igvm];
        args.extend_from_slice(extra);
        let out = podvisor(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("sev_snp=on"), "{extra:?}: {stderr}");
    }
    let out = podvisor(&["run", "--igvm", igvm]);
    assert_eq!(out.status.code(), Some(2));
    let out = podvisor(&["run", "--platform", "sev_snp=off", "--igvm", igvm]);
    assert_eq!(out.status.code(), Some(2));
    let out = podvisor(&[
        "run",
        "--platform",
        "sev_snp=model",
        "--igvm",
        igvm,
        "--host-data",
        "00",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex digits"));
}

#[test]
fn empty_pages_as_zero_are_measured_as_run_issues_them() {
    let unsigned = write_image(
        "every-unsigned.igvm",
        &fx::every_directive().bytes().unwrap(),
    );
    let out = measure(&unsigned, &["--vcpus", "2", "--empty-pages", "zero"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zero_hex = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let normal_hex = String::from_utf8(measure(&unsigned, &["--vcpus", "2"]).stdout).unwrap();
    assert_eq!(normal_hex.trim(), reference_hex(&fx::every_directive(), 2));
    assert_ne!(zero_hex, normal_hex.trim(), "the sample has an empty page");

    // An image whose ID block expects the ZERO-page digest launches with --empty-pages zero...
    let path = write_image(
        "every-zero.igvm",
        &sample_signed_for(&zero_hex).bytes().unwrap(),
    );
    let path = path.to_str().unwrap();
    let launch = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--platform",
            "sev_snp=model",
            "--igvm",
            path,
            "--cpus",
            "2",
        ];
        args.extend_from_slice(extra);
        podvisor(&args)
    };
    let out = launch(&["--empty-pages", "zero"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("sev-snp launch digest: {zero_hex}")
    );
    // ...and is refused by the platform when its empty pages go in as NORMAL pages.
    let out = launch(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BAD_MEASUREMENT"));
    let out = measure(&unsigned, &["--empty-pages", "sometimes"]);
    assert_eq!(out.status.code(), Some(2));
}
