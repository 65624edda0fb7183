//! Confidential VMs through the API: `vm.create` with `payload.igvm`, `payload.host_data` and
//! `platform.sev_snp` plans the launch, `sandbox.attestation` reports the measurement
//! `podvisor measure --igvm` computes for the same image, vCPUs and RAM, with the HOST_DATA and
//! the policy; the confidential-mode rules refuse shares and shared memory; `vm.boot` reports
//! why the launch cannot happen (no SEV-SNP on the host, or running SNP guests not implemented),
//! and the VMM keeps serving.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

mod api_client;

use std::process::Command;

use api_client::Podvisor;
use snp::igvm_fixtures as fx;

const PODVISOR: &str = env!("CARGO_BIN_EXE_podvisor");
const HOST_DATA: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn config(igvm: &std::path::Path, console: &std::path::Path) -> serde_json::Value {
    serde_json::json!({
        "payload": {"igvm": igvm, "host_data": HOST_DATA},
        "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
        "memory": {"size": 512u64 << 20},
        "serial": {"mode": "File", "file": console},
        "console": {"mode": "Off"},
        "platform": {"sev_snp": true},
    })
}

#[test]
fn a_confidential_vm_is_planned_at_create_and_its_rules_hold() {
    let vmm = Podvisor::spawn("confidential", &[]);
    let igvm = vmm.file("guest.igvm");
    std::fs::write(&igvm, fx::every_directive().bytes().unwrap()).unwrap();
    let console = vmm.file("console");

    // The rules: no share, no shared memory, an image needs the platform and vice versa.
    let mut bad = config(&igvm, &console);
    bad["fs"] = serde_json::json!([{"tag": "t", "socket": "/s"}]);
    let r = vmm.call("PUT", "/api/v1/vm.create", &bad.to_string());
    assert_eq!(r.status, 400, "{r:?}");
    let mut bad = config(&igvm, &console);
    bad["memory"]["shared"] = serde_json::json!(true);
    assert_eq!(
        vmm.call("PUT", "/api/v1/vm.create", &bad.to_string())
            .status,
        400
    );
    let mut bad = config(&igvm, &console);
    bad["platform"]["sev_snp"] = serde_json::json!(false);
    assert_eq!(
        vmm.call("PUT", "/api/v1/vm.create", &bad.to_string())
            .status,
        400
    );
    let mut bad = config(&igvm, &console);
    bad["payload"]["host_data"] = serde_json::json!("abc");
    assert_eq!(
        vmm.call("PUT", "/api/v1/vm.create", &bad.to_string())
            .status,
        400
    );
    let junk = vmm.file("junk.igvm");
    std::fs::write(&junk, b"not an image").unwrap();
    let r = vmm.call(
        "PUT",
        "/api/v1/vm.create",
        &config(&junk, &console).to_string(),
    );
    assert_eq!(r.status, 400, "{r:?}");
    // A certificate table that does not parse is refused at create, naming the field.
    let mut bad = config(&igvm, &console);
    bad["payload"]["snp_certs"] = serde_json::json!(junk);
    let r = vmm.call("PUT", "/api/v1/vm.create", &bad.to_string());
    assert_eq!(r.status, 400, "{r:?}");
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("payload.snp_certs"), "{body}");
    assert!(body.contains("no terminating entry"), "{body}");
    let none = vmm.call("GET", "/api/v1/sandbox.attestation", "");
    assert_eq!(none.status, 409, "{none:?}");

    let certs = vmm.file("certs.bin");
    let table = snp::certs::CertTable::build(&[([7; 16], b"vcek")]).unwrap();
    std::fs::write(&certs, table.bytes()).unwrap();
    let mut good = config(&igvm, &console);
    good["payload"]["snp_certs"] = serde_json::json!(certs);
    let created = vmm.call("PUT", "/api/v1/vm.create", &good.to_string());
    assert_eq!(created.status, 204, "{created:?}");
    let expected = vmm.call("GET", "/api/v1/sandbox.attestation", "");
    assert_eq!(expected.status, 200, "{expected:?}");
    let expected = expected.json();
    let measured = Command::new(PODVISOR)
        .args(["measure", "--igvm"])
        .arg(&igvm)
        .args(["--vcpus", "2", "--memory", "512"])
        .output()
        .unwrap();
    assert!(measured.status.success(), "{measured:?}");
    let digest = String::from_utf8(measured.stdout).unwrap();
    assert_eq!(expected["measurement"], digest.trim(), "{expected}");
    assert_eq!(expected["host_data"], HOST_DATA);
    assert!(expected["policy"].as_str().unwrap().starts_with("0x"));
    assert_eq!(expected["vcpus"], 2);

    // Shares would expose guest memory: refused on a confidential VM.
    let share = vmm.call(
        "PUT",
        "/api/v1/vm.add-fs",
        r#"{"tag":"t","socket":"/run/vfs.sock"}"#,
    );
    assert_eq!(share.status, 501, "{share:?}");

    // This VMM cannot run SNP guests yet, and most hosts have no SEV-SNP: either way the
    // boot fails with the reason, and the VMM keeps serving.
    let boot = vmm.call("PUT", "/api/v1/vm.boot", "");
    assert_eq!(boot.status, 500, "{boot:?}");
    let chain: Vec<String> = serde_json::from_slice(&boot.body).unwrap();
    let text = chain.join(" ");
    assert!(text.contains("SEV-SNP"), "{text}");
    assert_eq!(vmm.call("GET", "/api/v1/vmm.ping", "").status, 200);
    assert_eq!(vmm.call("PUT", "/api/v1/vm.delete", "").status, 204);
    let gone = vmm.call("GET", "/api/v1/sandbox.attestation", "");
    assert_eq!(gone.status, 409, "{gone:?}");
    assert_eq!(vmm.call("PUT", "/api/v1/vmm.shutdown", "").status, 204);
}
