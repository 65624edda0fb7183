use super::firmware::{report_from_response, request_page, LaunchFacts, ModelFirmware};
use super::message::{self, Header, MessageError};
use super::*;
use crate::page_state::memory::ModelRam;
use crate::page_state::PageStates;

fn facts() -> LaunchFacts {
    LaunchFacts {
        measurement: [0x11; 48],
        host_data: [0x22; 32],
        policy: 0x30000,
        family_id: [1; 16],
        image_id: [2; 16],
        guest_svn: 7,
        id_key_digest: [3; 48],
        author_key_digest: [0; 48],
        author_key_en: false,
    }
}

fn expected() -> Expected {
    Expected {
        measurement: Some([0x11; 48]),
        host_data: Some([0x22; 32]),
        report_data: Some([0x33; 64]),
        policy: Some(0x30000),
    }
}

#[test]
fn signed_report_verifies_and_round_trips() {
    let fw = ModelFirmware::new(facts());
    let bytes = fw.report([0x33; 64], 0);
    let r = verify(&bytes, &fw.vcek(), &expected()).unwrap();
    assert_eq!(r.measurement, [0x11; 48]);
    assert_eq!(r.guest_svn, 7);
    assert_eq!(r.to_bytes()[..SIGNED_SIZE], bytes[..SIGNED_SIZE]);
    let pem = vcek_to_pem(&fw.vcek()).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(vcek_from_pem(&pem).unwrap(), fw.vcek());
    assert!(vcek_from_pem("not a key").is_err());
}

#[test]
fn one_flipped_bit_is_rejected() {
    let fw = ModelFirmware::new(facts());
    let good = fw.report([0x33; 64], 0);
    let none = Expected::default();
    for (at, what) in [
        (0x90 + 5, "measurement"),
        (0xC0 + 31, "host_data"),
        (0x50, "report_data"),
        (0x08, "policy"),
        (0x2A0 + 3, "signature R"),
        (0x2A0 + 72 + 40, "signature S"),
        (0x2A0 + 60, "signature padding"),
    ] {
        let mut bad = good;
        bad[at] ^= 0x04;
        assert_eq!(
            verify(&bad, &fw.vcek(), &none),
            Err(ReportError::Signature),
            "{what}"
        );
    }
    let other = ModelFirmware::new(facts());
    assert_eq!(
        verify(&good, &other.vcek(), &none),
        Err(ReportError::Signature),
        "another VCEK"
    );
    assert!(matches!(
        verify(&good[..100], &fw.vcek(), &none),
        Err(ReportError::Size { len: 100 })
    ));
}

#[test]
fn expectations_name_the_first_mismatch() {
    let fw = ModelFirmware::new(facts());
    let bytes = fw.report([0x33; 64], 0);
    let mut e = expected();
    e.host_data = Some([0x23; 32]);
    e.policy = Some(0);
    match verify(&bytes, &fw.vcek(), &e) {
        Err(ReportError::Mismatch { field, .. }) => assert_eq!(field, "host_data"),
        other => panic!("{other:?}"),
    }
    let mut e = expected();
    e.measurement = Some([0; 48]);
    let err = verify(&bytes, &fw.vcek(), &e).unwrap_err();
    assert!(err.to_string().starts_with("measurement mismatch"), "{err}");
    let mut e = expected();
    e.policy = Some(0x30001);
    assert!(matches!(
        verify(&bytes, &fw.vcek(), &e),
        Err(ReportError::Mismatch {
            field: "policy",
            ..
        })
    ));
}

#[test]
fn messages_authenticate_header_and_payload() {
    let key = [9u8; 32];
    let h = Header {
        seqno: 5,
        msg_type: 5,
        msg_version: 1,
        msg_size: 0,
        vmpck: 0,
    };
    let page = message::seal(&key, &h, b"payload").unwrap();
    let (got, body) = message::open(&key, &page).unwrap();
    assert_eq!(
        (got.seqno, got.msg_size, body.as_slice()),
        (5, 7, &b"payload"[..])
    );
    for at in [0usize, 0x20, 0x34, 0x3C, 0x60] {
        let mut bad = page.clone();
        bad[at] ^= 1;
        assert!(message::open(&key, &bad).is_err(), "byte {at:#x}");
    }
    assert_eq!(message::open(&[8u8; 32], &page), Err(MessageError::Auth));
    assert!(message::open(&key, &page[..0x50]).is_err());
    let mut huge = page.clone();
    huge[0x36..0x38].copy_from_slice(&0xFFFFu16.to_le_bytes());
    assert!(message::open(&key, &huge).is_err());
    assert!(message::seal(&key, &h, &[0; 4096]).is_err());
}

#[test]
fn firmware_answers_report_requests_in_sequence_only() {
    let mut fw = ModelFirmware::new(facts());
    let secrets = fw.secrets_page();
    let mut vmpck0 = [0u8; 32];
    vmpck0.copy_from_slice(&secrets[0x20..0x40]);
    let req = request_page(&vmpck0, 1, 0, &[0x33; 64]);
    let mut rsp = [0u8; 4096];
    assert_eq!(fw.guest_request(&req, &mut rsp), 0);
    let report = report_from_response(&vmpck0, 2, &rsp).unwrap();
    verify(&report, &fw.vcek(), &expected()).unwrap();
    // Replay of the same request, and a wrong key, are refused.
    let mut rsp2 = [0u8; 4096];
    assert_ne!(fw.guest_request(&req, &mut rsp2), 0);
    assert_eq!(rsp2, [0u8; 4096]);
    let wrong = request_page(&[0u8; 32], 3, 0, &[0; 64]);
    assert_ne!(fw.guest_request(&wrong, &mut rsp2), 0);
    let next = request_page(&vmpck0, 3, 0, &[0x44; 64]);
    assert_eq!(fw.guest_request(&next, &mut rsp2), 0);
    assert!(report_from_response(&vmpck0, 4, &rsp2).is_ok());
    assert_eq!(fw.reports, 2);
    assert!(fw.guest_request(&[0u8; 10], &mut rsp2) != 0);
}

#[test]
fn secrets_page_is_installed_in_private_memory() {
    let fw = ModelFirmware::new(facts());
    let mut ram = ModelRam::new(PageStates::new(&[crate::plan::RamRegion {
        gpa: 0,
        size: 0x10_000,
    }]));
    assert!(fw.install_secrets(&mut ram, 0x5000).is_err(), "shared page");
    ram.convert(0x5000, crate::page_state::PageSize::Size4K, true)
        .unwrap();
    ram.states_mut()
        .pvalidate(0x5000, crate::page_state::PageSize::Size4K, true)
        .unwrap();
    fw.install_secrets(&mut ram, 0x5000).unwrap();
    let mut key = [0u8; 32];
    ram.guest_read(0x5020, &mut key, true).unwrap();
    assert_eq!(key, fw.secrets_page()[0x20..0x40]);
    assert!(ram.host_read(0x5020, &mut key).is_err());
}

#[test]
fn facts_from_a_plan_carry_digest_host_data_and_id_key() {
    let plan = crate::launch::recording::tests::sample_plan(1);
    let f = LaunchFacts::from_plan(&plan).unwrap();
    assert_eq!(f.measurement, *plan.expected_digest().unwrap().as_bytes());
    assert_eq!(f.host_data, [0xab; 32]);
    assert_ne!(f.id_key_digest, [0; 48]);
}
