//! `podvisor measure --igvm`: bit-exact against the `igvm` crate's own SEV-SNP measurement on
//! images written with the `igvm` crate's builder, and clear errors on hostile files.

use snp::igvm_fixtures::{self as fx, Sample};
use std::path::PathBuf;
use std::process::{Command, Output};

fn podvisor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podvisor"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn write_image(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("podvisor-snp-igvm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
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
