//! `podvisor measure --ovmf` against PyPI's `sev-snp-measure` (an independent implementation of
//! the same launch model): synthetic OVMF-format images covering every section kind, vCPU
//! counts, CPU models, both VMM conventions and measured direct boot, plus Debian's OVMF builds
//! when installed. Both tools must print the same digest for every case.
//!
//! Needs `pip install sev-snp-measure==0.0.13` and `apt-get install ovmf`; without them the tests
//! print "SKIPPED: <tool> not installed" and pass, unless `PODVISOR_REQUIRE_TOOLS=1`.

// Test crate: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");
const REFERENCE: &str = "sev-snp-measure";
const DEBIAN_OVMF_DIR: &str = "/usr/share/OVMF";

/// Whether an external tool may be used; panics when it is missing but required.
fn tool_available(name: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var("PODVISOR_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{name} is required (PODVISOR_REQUIRE_TOOLS=1) but not installed");
    }
    println!("SKIPPED: {name} not installed");
    false
}

fn reference_available() -> bool {
    let present = Command::new(REFERENCE)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    tool_available(REFERENCE, present)
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("podvisor-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// GUIDs of the OVMF footer table, in on-disk byte order.
fn guid(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap();
    }
    // First three fields are stored little-endian.
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

const FOOTER: &str = "96b582de-1fb2-45f7-baea-a366c55a082d";
const RESET_BLOCK: &str = "00f771de-1a7e-4fcb-890e-68c77e2fb44e";
const METADATA: &str = "dc886566-984a-4798-a75e-5585a7bf67cc";
const HASH_TABLE: &str = "7255371f-3a3b-4b04-927b-1da6efa8d454";
const UNRELATED: &str = "4c2eb361-7d9b-4cc3-8081-127c90d3d294";

/// Description of a synthetic OVMF image in the edk2 layout: metadata header placed
/// `meta_from_end` bytes before the end, GUIDed table ending 32 bytes before the end.
struct Image {
    size: usize,
    seed: u32,
    ap_eip: u32,
    meta_from_end: u32,
    sections: Vec<(u32, u32, u32)>,
    hash_table_gpa: Option<u32>,
}

impl Image {
    fn build(&self) -> Vec<u8> {
        // A cheap deterministic byte stream so every page hashes differently.
        let mut x = self.seed.wrapping_mul(2_654_435_761).max(1);
        let mut img: Vec<u8> = (0..self.size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let meta = self.size - self.meta_from_end as usize;
        let msize = 16 + 12 * self.sections.len();
        img[meta..meta + 4].copy_from_slice(b"ASEV");
        img[meta + 4..meta + 8].copy_from_slice(&(msize as u32).to_le_bytes());
        img[meta + 8..meta + 12].copy_from_slice(&1u32.to_le_bytes());
        img[meta + 12..meta + 16].copy_from_slice(&(self.sections.len() as u32).to_le_bytes());
        for (i, (gpa, size, kind)) in self.sections.iter().enumerate() {
            let o = meta + 16 + 12 * i;
            img[o..o + 4].copy_from_slice(&gpa.to_le_bytes());
            img[o + 4..o + 8].copy_from_slice(&size.to_le_bytes());
            img[o + 8..o + 12].copy_from_slice(&kind.to_le_bytes());
        }
        let mut entries: Vec<([u8; 16], Vec<u8>)> = vec![
            (guid(UNRELATED), vec![0; 8]),
            (guid(RESET_BLOCK), self.ap_eip.to_le_bytes().to_vec()),
            (guid(METADATA), self.meta_from_end.to_le_bytes().to_vec()),
        ];
        if let Some(gpa) = self.hash_table_gpa {
            let mut data = gpa.to_le_bytes().to_vec();
            data.extend_from_slice(&0x400u32.to_le_bytes());
            entries.push((guid(HASH_TABLE), data));
        }
        let mut table = Vec::new();
        for (g, data) in &entries {
            table.extend_from_slice(data);
            table.extend_from_slice(&((data.len() + 18) as u16).to_le_bytes());
            table.extend_from_slice(g);
        }
        table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
        table.extend_from_slice(&guid(FOOTER));
        let end = self.size - 32;
        img[end - table.len()..end].copy_from_slice(&table);
        img
    }
}

/// Images shaped like the OVMF builds in use: the 2 MiB-style layout without kernel hashes,
/// the AmdSev layout with a hashes page (table in the middle of its page), and one with an
/// SVSM calling-area page and the table at the start of its page.
fn images() -> Vec<(&'static str, Image, bool)> {
    vec![
        (
            "plain",
            Image {
                size: 0x40000,
                seed: 1,
                ap_eip: 0x80_b004,
                meta_from_end: 0x52c,
                sections: vec![
                    (0x80_0000, 0x9000, 1),
                    (0x80_a000, 0x3000, 1),
                    (0x80_d000, 0x1000, 2),
                    (0x80_e000, 0x1000, 3),
                    (0x80_f000, 0x11000, 1),
                ],
                hash_table_gpa: None,
            },
            false,
        ),
        (
            "amdsev",
            Image {
                size: 0x30000,
                seed: 2,
                ap_eip: 0xffff_b004,
                meta_from_end: 0x1000,
                sections: vec![
                    (0x80_0000, 0x9000, 1),
                    (0x80_a000, 0x3000, 1),
                    (0x80_d000, 0x1000, 2),
                    (0x80_e000, 0x1000, 3),
                    (0x80_f000, 0x1000, 0x10),
                    (0x81_0000, 0xf000, 1),
                ],
                hash_table_gpa: Some(0x80_fc00),
            },
            true,
        ),
        (
            "svsm-caa",
            Image {
                size: 0x21000,
                seed: 3,
                ap_eip: 0x80_c004,
                meta_from_end: 0x900,
                sections: vec![
                    (0x80_0000, 0x4000, 1),
                    (0x80_6000, 0x1000, 3),
                    (0x80_4000, 0x1000, 4),
                    (0x80_5000, 0x1000, 2),
                    (0x80_7000, 0x1000, 0x10),
                ],
                hash_table_gpa: Some(0x80_7000),
            },
            true,
        ),
    ]
}

/// Run a measuring command and return its single line of output.
fn digest_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Case<'a> {
    ovmf: &'a Path,
    vcpus: u32,
    vmm: &'a str,
    cpu: &'a str,
    features: &'a str,
    kernel: Option<(&'a Path, Option<&'a Path>, Option<&'a str>)>,
}

/// Measure one case with both tools and require equal digests.
fn compare(c: &Case) -> String {
    let common = |cmd: &mut Command| {
        cmd.arg("--ovmf")
            .arg(c.ovmf)
            .args(["--vcpus", &c.vcpus.to_string()])
            .args(["--vcpu-type", c.cpu])
            .args(["--guest-features", c.features]);
        if let Some((kernel, initrd, append)) = c.kernel {
            cmd.arg("--kernel").arg(kernel);
            if let Some(i) = initrd {
                cmd.arg("--initrd").arg(i);
            }
            if let Some(a) = append {
                cmd.args(["--append", a]);
            }
        }
    };
    let mut ours = Command::new(PODVISOR);
    ours.args(["measure", "--vmm-type", c.vmm]);
    common(&mut ours);
    let mut theirs = Command::new(REFERENCE);
    let vmm = if c.vmm == "qemu" { "QEMU" } else { c.vmm };
    theirs.args(["--mode", "snp", "--vmm-type", vmm]);
    common(&mut theirs);
    let a = digest_of(&mut ours);
    let b = digest_of(&mut theirs);
    assert_eq!(a, b, "digests differ for {ours:?}");
    assert_eq!(a.len(), 96);
    a
}

#[test]
fn synthetic_images_match_reference() {
    if !reference_available() {
        return;
    }
    let dir = Scratch::new("measure-synth");
    let mut seen = std::collections::HashSet::new();
    let mut cases = 0;
    for (name, image, _) in images() {
        let path = dir.write(&format!("{name}.fd"), &image.build());
        for vcpus in [1, 2, 5] {
            for (vmm, cpu) in [
                ("qemu", "EPYC-v4"),
                ("qemu", "EPYC-Milan"),
                ("qemu", "EPYC-Genoa"),
                ("ec2", "EPYC-v4"),
                ("gce", "EPYC-v4"),
            ] {
                for features in ["0x1", "0x21"] {
                    let d = compare(&Case {
                        ovmf: &path,
                        vcpus,
                        vmm,
                        cpu,
                        features,
                        kernel: None,
                    });
                    seen.insert(d);
                    cases += 1;
                }
            }
        }
    }
    // Every input above changes the measured state, so no two digests may coincide.
    assert_eq!(seen.len(), cases, "distinct inputs gave equal digests");
    println!("{cases} synthetic cases equal to {REFERENCE}");
}

#[test]
fn measured_direct_boot_matches_reference() {
    if !reference_available() {
        return;
    }
    let dir = Scratch::new("measure-kernel");
    let kernel = dir.write("vmlinuz", &vec![0x4d; 300_001]);
    let initrd = dir.write("initrd.img", b"070701 cpio-ish initrd bytes");
    let empty = dir.write("empty", b"");
    for (name, image, has_hashes) in images().into_iter().filter(|i| i.2) {
        assert!(has_hashes);
        let path = dir.write(&format!("{name}.fd"), &image.build());
        let variants: [(Option<&Path>, Option<&str>); 5] = [
            (None, None),
            (Some(&initrd), None),
            (Some(&initrd), Some("console=ttyS0 root=/dev/vda1 quiet")),
            (None, Some("µ-unicode \"quoted\" args")),
            (Some(&empty), Some("")),
        ];
        for (initrd, append) in variants {
            for (vmm, vcpus) in [("qemu", 1), ("qemu", 3), ("ec2", 2)] {
                compare(&Case {
                    ovmf: &path,
                    vcpus,
                    vmm,
                    cpu: "EPYC-Milan",
                    features: "0x1",
                    kernel: Some((&kernel, initrd, append)),
                });
            }
        }
    }
}

#[test]
fn json_report_matches_reference_firmware_digest() {
    if !reference_available() {
        return;
    }
    let dir = Scratch::new("measure-json");
    let (_, image, _) = images().remove(1);
    let path = dir.write("amdsev.fd", &image.build());
    let kernel = dir.write("k", b"kernel");
    let json = digest_of(
        Command::new(PODVISOR)
            .args([
                "measure",
                "--json",
                "--vcpus",
                "2",
                "--vcpu-type",
                "EPYC-v4",
            ])
            .arg("--ovmf")
            .arg(&path)
            .arg("--kernel")
            .arg(&kernel),
    );
    let fw = digest_of(
        Command::new(REFERENCE)
            .args(["--mode", "snp:ovmf-hash", "--ovmf"])
            .arg(&path),
    );
    assert!(
        json.contains(&format!("\"ovmf_launch_digest\":\"{fw}\"")),
        "{json}"
    );
    let full = compare(&Case {
        ovmf: &path,
        vcpus: 2,
        vmm: "qemu",
        cpu: "EPYC-v4",
        features: "0x1",
        kernel: Some((&kernel, None, None)),
    });
    assert!(json.contains(&format!("\"digest\":\"{full}\"")), "{json}");
    // SHA-256("kernel"), independently known.
    assert!(json.contains(
        "\"kernel_sha256\":\"6923dd1bc0460082c5d55a831908c24a282860b7f1cd6c2b79cf1bc8857c639c\""
    ));
}

#[test]
fn debian_ovmf_matches_reference() {
    if !reference_available() {
        return;
    }
    let dir = Path::new(DEBIAN_OVMF_DIR);
    let snp_build = dir.join("OVMF_CODE.fd");
    if !tool_available("ovmf (Debian package)", snp_build.exists()) {
        return;
    }
    for vcpus in [1, 4] {
        for (vmm, cpu) in [("qemu", "EPYC-v4"), ("qemu", "EPYC-Genoa"), ("ec2", "EPYC")] {
            compare(&Case {
                ovmf: &snp_build,
                vcpus,
                vmm,
                cpu,
                features: "0x1",
                kernel: None,
            });
        }
    }
    // Debian's builds have no kernel-hashes page: measured direct boot must be refused.
    let out = Command::new(PODVISOR)
        .args(["measure", "--vcpus", "1", "--vcpu-type", "EPYC-v4"])
        .arg("--ovmf")
        .arg(&snp_build)
        .args(["--kernel", "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SNP_KERNEL_HASHES"));
    // The 4 MiB build carries no SEV metadata at all, so it cannot launch as SNP.
    let no_snp = dir.join("OVMF_CODE_4M.fd");
    if no_snp.exists() {
        let out = Command::new(PODVISOR)
            .args(["measure", "--vcpus", "1", "--vcpu-type", "EPYC-v4"])
            .arg("--ovmf")
            .arg(&no_snp)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("SEV metadata"));
    }
    // The AmdSev build (Debian's ovmf-amdsev package) supports measured direct boot.
    let amdsev = dir.join("OVMF.amdsev.fd");
    if amdsev.exists() {
        let scratch = Scratch::new("measure-amdsev");
        let kernel = scratch.write("k", &[0x90; 4096]);
        compare(&Case {
            ovmf: &amdsev,
            vcpus: 2,
            vmm: "qemu",
            cpu: "EPYC-Milan",
            features: "0x1",
            kernel: Some((&kernel, None, Some("console=ttyS0"))),
        });
    }
}

/// Malformed images fail with exit status 1 and a message, never a crash.
#[test]
fn hostile_images_fail_cleanly() {
    let dir = Scratch::new("measure-hostile");
    let (_, image, _) = images().remove(0);
    let good = image.build();
    let footer = good.len() - 50;
    let meta = good.len() - image.meta_from_end as usize;
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "multiple of 4 KiB"),
        ("odd-size", vec![0; 5000], "multiple of 4 KiB"),
        ("no-footer", vec![0; 8192], "no OVMF footer table"),
    ];
    let mut bad_total = good.clone();
    bad_total[footer..footer + 2].copy_from_slice(&5u16.to_le_bytes());
    cases.push(("footer-size", bad_total, "footer table size"));
    let mut bad_entry = good.clone();
    bad_entry[footer - 18..footer - 16].copy_from_slice(&0x7fffu16.to_le_bytes());
    cases.push(("entry-size", bad_entry, "invalid size"));
    let mut bad_sig = good.clone();
    bad_sig[meta] = b'X';
    cases.push(("signature", bad_sig, "signature"));
    let mut bad_count = good.clone();
    bad_count[meta + 12..meta + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("count", bad_count, "cannot hold"));
    let mut outside = Image { ..image };
    outside.sections[4] = (0xfffb_8000, 0x11000, 1);
    cases.push(("section-in-flash", outside.build(), "overlaps"));
    // Oversized files are refused before they are read (sparse, so cheap to create).
    let huge = dir.0.join("huge");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    let mut paths: Vec<(String, PathBuf, &str)> = vec![
        ("huge".into(), huge, "larger than"),
        ("directory".into(), dir.0.clone(), "directory"),
        ("missing".into(), dir.0.join("missing"), "No such file"),
    ];
    for (name, bytes, message) in cases {
        paths.push((name.into(), dir.write(name, &bytes), message));
    }
    for (name, path, message) in paths {
        let out = Command::new(PODVISOR)
            .args([
                "measure",
                "--vcpus",
                "2",
                "--vcpu-type",
                "EPYC-v4",
                "--ovmf",
            ])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
    }
}
