//! `podvisor attest verify` on reports signed by the software SNP platform's model VCEK:
//! a good report verifies, a flipped bit in measurement, host_data or signature is rejected,
//! an expectation that differs is named, unusable input exits 2.

// Test crate: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use snp::report::firmware::{LaunchFacts, ModelFirmware};
use snp::report::vcek_to_pem;
use std::path::{Path, PathBuf};
use std::process::Command;

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(name: &str) -> (Dir, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("podvisor-attest-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fw = ModelFirmware::new(LaunchFacts::without_id_block(
        [0x5e; 48], [0xab; 32], 0x30000,
    ));
    std::fs::write(dir.join("vcek.pem"), vcek_to_pem(&fw.vcek()).unwrap()).unwrap();
    (Dir(dir), fw.report([7; 64], 0).to_vec())
}

fn run(dir: &Path, report: &[u8], extra: &[&str]) -> (i32, String) {
    let file = dir.join("report.bin");
    std::fs::write(&file, report).unwrap();
    let out = Command::new(PODVISOR)
        .args(["attest", "verify", "--report"])
        .arg(&file)
        .arg("--vcek")
        .arg(dir.join("vcek.pem"))
        .args(extra)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn good_report_verifies_with_expectations() {
    let (dir, report) = setup("good");
    let m = "5e".repeat(48);
    let h = "ab".repeat(32);
    let (code, out) = run(
        &dir.0,
        &report,
        &[
            "--measurement",
            &m,
            "--host-data",
            &h,
            "--policy",
            "0x30000",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("report verified"), "{out}");
    assert!(out.contains(&m), "{out}");
}

#[test]
fn flipped_bits_are_rejected() {
    let (dir, report) = setup("flipped");
    for (at, what) in [
        (0x90, "measurement"),
        (0xC0, "host_data"),
        (0x2A0, "signature"),
    ] {
        let mut bad = report.clone();
        bad[at] ^= 1;
        let (code, out) = run(&dir.0, &bad, &[]);
        assert_eq!(code, 1, "{what}: {out}");
        assert!(out.contains("signature does not verify"), "{what}: {out}");
    }
}

#[test]
fn first_mismatch_is_named_and_bad_input_exits_2() {
    let (dir, report) = setup("mismatch");
    let (code, out) = run(&dir.0, &report, &["--host-data", &"00".repeat(32)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("host_data mismatch"), "{out}");
    let (code, out) = run(&dir.0, &report, &["--measurement", "abc"]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = run(&dir.0, &report[..100], &[]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn a_vcek_certificate_works_like_the_key_and_a_tampered_one_fails() {
    use snp::report::vcek_cert::{certificate_pem, model_vcek_certificate};
    let (dir, report) = setup("cert");
    let vcek = dir.0.join("vcek.pem");
    let key = snp::report::vcek_from_pem(&std::fs::read_to_string(&vcek).unwrap()).unwrap();
    let der = model_vcek_certificate(&key).unwrap();
    std::fs::write(&vcek, certificate_pem(&der).unwrap()).unwrap();
    let (code, out) = run(&dir.0, &report, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("report verified"), "{out}");
    // The last byte of the certificate's key (it ends right before the outer
    // signatureAlgorithm, ecdsa-with-SHA384) flipped: no point on the curve (unusable input,
    // 2) or another key (the signature fails, 1).
    let alg = [
        0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
    ];
    let at = der.windows(alg.len()).rposition(|w| w == alg).unwrap();
    let mut tampered = der.clone();
    tampered[at - 1] ^= 1;
    std::fs::write(&vcek, certificate_pem(&tampered).unwrap()).unwrap();
    let (code, out) = run(&dir.0, &report, &[]);
    assert!(code == 1 || code == 2, "{code}: {out}");
    assert!(!out.contains("report verified"), "{out}");
    // Another chip's certificate: a well-formed key that did not sign the report.
    let (other, _) = setup("cert-other");
    let other_key =
        snp::report::vcek_from_pem(&std::fs::read_to_string(other.0.join("vcek.pem")).unwrap())
            .unwrap();
    let der = model_vcek_certificate(&other_key).unwrap();
    std::fs::write(&vcek, certificate_pem(&der).unwrap()).unwrap();
    let (code, out) = run(&dir.0, &report, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rejected"), "{out}");
    // A truncated certificate is unusable input.
    std::fs::write(&vcek, certificate_pem(&der[..der.len() - 10]).unwrap()).unwrap();
    let (code, out) = run(&dir.0, &report, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("VCEK certificate"), "{out}");
}
