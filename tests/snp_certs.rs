//! `podvisor run --snp-certs FILE`: the certificate table for a confidential guest's extended
//! guest requests is checked at start-up; a malformed or unreadable one is a configuration
//! error (exit 2) that names the file and what is wrong, before anything is launched.

// A test crate: helpers outside `#[test]` functions fail the test by unwrapping.
#![allow(clippy::unwrap_used)]

use podvisor_tests::scratch::ScratchFile;
use snp::certs::CertTable;
use snp::igvm_fixtures as fx;
use std::process::{Command, Output};

fn run_model(igvm: &ScratchFile, certs: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podvisor"))
        .args(["run", "--platform", "sev_snp=model", "--igvm"])
        .arg(igvm.as_os_str())
        .args(["--snp-certs", certs])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// A launchable image: the sample without its ID block (whose digest is a placeholder).
fn image() -> ScratchFile {
    let mut sample = fx::every_directive();
    sample
        .directives
        .retain(|d| !matches!(d, igvm::IgvmDirectiveHeader::SnpIdBlock { .. }));
    ScratchFile::with("snp-certs", "image.igvm", &sample.bytes().unwrap()).unwrap()
}

#[test]
fn a_well_formed_table_is_accepted() {
    let igvm = image();
    let table = CertTable::build(&[([7; 16], b"vcek certificate"), ([8; 16], b"ask")]).unwrap();
    let certs = ScratchFile::with("snp-certs", "good.bin", table.bytes()).unwrap();
    let out = run_model(&igvm, certs.to_str().unwrap());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn malformed_or_missing_tables_are_configuration_errors() {
    let igvm = image();
    let good = CertTable::build(&[([7; 16], b"vcek")])
        .unwrap()
        .bytes()
        .to_vec();
    let mut past_end = good.clone();
    past_end[20] = 0xff; // the entry's length
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.bin", Vec::new(), "no terminating entry"),
        (
            "no-terminator.bin",
            good[..24].to_vec(),
            "no terminating entry",
        ),
        ("past-end.bin", past_end, "not inside the certificate area"),
    ];
    for (name, bytes, why) in cases {
        let file = ScratchFile::with("snp-certs", name, &bytes).unwrap();
        let out = run_model(&igvm, file.to_str().unwrap());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains("certificate table"), "{name}: {stderr}");
        assert!(stderr.contains(why), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = run_model(&igvm, "/nonexistent/certs.bin");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot read /nonexistent/certs.bin"),
        "{stderr}"
    );
}
