//! Control-loop tests that need no KVM: the state machine up to `Vm::build`, which refuses a
//! missing kernel before opening `/dev/kvm`.

use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::api::{config, ApiHandle, Backend};

struct Loop {
    api: ApiHandle,
    thread: JoinHandle<u8>,
}

fn start() -> Loop {
    let shared = SharedState::new();
    let (tx, rx) = mpsc::channel();
    let controller = Controller::new(
        shared.clone(),
        tx.clone(),
        rx,
        EventMonitor::new(None),
        Policy::default(),
    );
    let thread = std::thread::spawn(move || controller.run());
    Loop {
        api: ApiHandle::new(tx, shared),
        thread,
    }
}

fn call(api: &ApiHandle, request: Request) -> Result<Response, ApiError> {
    let (tx, rx) = mpsc::channel();
    api.submit(
        request,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv_timeout(Duration::from_secs(30)).unwrap()
}

fn config(kernel: &str) -> Box<ApiVmConfig> {
    let body = format!(r#"{{"payload":{{"kernel":"{kernel}"}},"memory":{{"size":134217728}}}}"#);
    Box::new(config::from_json(body.as_bytes()).unwrap())
}

#[test]
fn create_boot_error_delete_and_shutdown() {
    let l = start();
    assert_eq!(l.api.snapshot().state, None);
    let err = call(&l.api, Request::VmBoot).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidState);

    call(&l.api, Request::VmCreate(config("/nonexistent/kernel"))).unwrap();
    let snap = l.api.snapshot();
    assert_eq!(snap.state, Some(VmState::Created));
    assert_eq!(
        snap.config.as_ref().unwrap().payload.kernel,
        Some("/nonexistent/kernel".into())
    );
    let again = call(&l.api, Request::VmCreate(config("/k"))).unwrap_err();
    assert_eq!(again.code, ErrorCode::InvalidState);

    let err = call(&l.api, Request::VmBoot).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err:?}");
    assert!(err.chain().iter().any(|c| c.contains("kernel")), "{err:?}");
    let snap = l.api.snapshot();
    assert_eq!(snap.state, Some(VmState::Created));
    assert_eq!(snap.exit.as_ref().unwrap().reason, "boot_error");

    assert_eq!(
        call(&l.api, Request::VmShutdown).unwrap_err().code,
        ErrorCode::InvalidState
    );
    call(&l.api, Request::VmDelete).unwrap();
    assert_eq!(l.api.snapshot().state, None);
    assert_eq!(l.api.snapshot().counters["vmm"]["api_errors"], 4);

    call(&l.api, Request::VmmShutdown).unwrap();
    assert_eq!(l.thread.join().unwrap(), EXIT_POWER_OFF);
}

#[test]
fn unsupported_requests_say_so_and_the_loop_keeps_going() {
    let l = start();
    // Without a running VM, these are state errors, not missing features.
    for request in [Request::VmPause, Request::VmResume, Request::VmPowerButton] {
        let name = request.name();
        let err = call(&l.api, request).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidState, "{name}");
        assert!(err.message.contains(name), "{err:?}");
    }
    let request =
        Request::VmAddFs(config::from_json(br#"{"tag":"t","socket":"/run/vfs.sock"}"#).unwrap());
    let err = call(&l.api, request).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidState, "no VM to add a share to");
    assert!(err.message.contains("vm.add-fs"), "{err:?}");
    let err = call(&l.api, Request::VmRemoveDevice("disk0".into())).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidState, "no VM to remove from");
    call(&l.api, Request::VmmShutdown).unwrap();
    l.thread.join().unwrap();
}

#[test]
fn devices_are_cold_plugged_before_boot() {
    let l = start();
    let disk = |json: &str| Request::VmAddDisk(config::from_json(json.as_bytes()).unwrap());
    let err = call(&l.api, disk(r#"{"path":"/d"}"#)).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidState, "no VM yet");
    call(&l.api, Request::VmCreate(config("/k"))).unwrap();
    let dir = crate::test_scratch::ScratchDir::new("coldplug");
    let (a, b) = (dir.join("a.img"), dir.join("b.img"));
    for path in [&a, &b] {
        std::fs::write(path, vec![0u8; 4096]).unwrap();
    }
    let body = |path: &std::path::Path| format!(r#"{{"path":"{}","id":"a"}}"#, path.display());
    call(&l.api, disk(&body(&a))).unwrap();
    let dup = call(&l.api, disk(&body(&b))).unwrap_err();
    assert_eq!(dup.code, ErrorCode::InvalidArgument, "{dup:?}");
    let bad = call(&l.api, disk(r#"{"readonly":true}"#)).unwrap_err();
    assert_eq!(bad.code, ErrorCode::InvalidArgument);
    let vsock = || Request::VmAddVsock(config::from_json(br#"{"cid":3,"socket":"/v"}"#).unwrap());
    call(&l.api, vsock()).unwrap();
    assert_eq!(
        call(&l.api, vsock()).unwrap_err().code,
        ErrorCode::InvalidState
    );
    let echo = l.api.snapshot().config.clone().unwrap();
    assert_eq!(echo.vsock.as_ref().map(|v| v.cid), Some(3));
    assert_eq!(echo.disks.as_ref().map(Vec::len), Some(1));
    // Cold unplug: a second disk without an id keeps its default name when the first goes.
    call(&l.api, disk(&format!(r#"{{"path":"{}"}}"#, b.display()))).unwrap();
    call(&l.api, Request::VmRemoveDevice("a".into())).unwrap();
    let again = call(&l.api, Request::VmRemoveDevice("a".into())).unwrap_err();
    assert_eq!(again.code, ErrorCode::NotFound, "already removed");
    call(&l.api, Request::VmRemoveDevice("vsock".into())).unwrap();
    let echo = l.api.snapshot().config.clone().unwrap();
    assert!(echo.vsock.is_none());
    let ids: Vec<_> = echo.disks.iter().flatten().map(|d| d.id.clone()).collect();
    assert_eq!(ids, [Some("disk1".to_owned())]);
    call(&l.api, Request::VmmShutdown).unwrap();
    l.thread.join().unwrap();
}

#[test]
fn sandbox_lifecycle_without_a_vm_run() {
    let l = start();
    let mut spec = SandboxSpec {
        sandbox_id: "pod-1".into(),
        ..Default::default()
    };
    spec.vm = *config("/nonexistent/kernel");
    let err = call(&l.api, Request::SandboxStart(StartOptions::default())).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    call(&l.api, Request::SandboxCreate(Box::new(spec.clone()))).unwrap();
    assert_eq!(l.api.snapshot().sandbox.as_ref().unwrap().id, "pod-1");
    let dup = call(&l.api, Request::SandboxCreate(Box::new(spec))).unwrap_err();
    assert_eq!(dup.code, ErrorCode::InvalidState);
    let wait = StartOptions {
        wait_for_agent: true,
        ..Default::default()
    };
    let err = call(&l.api, Request::SandboxStart(wait)).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "no vsock: {err:?}");
    assert!(l.api.snapshot().exit.is_none(), "refused before booting");
    let err = call(&l.api, Request::SandboxStart(StartOptions::default())).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    // Stop and shutdown are idempotent.
    call(&l.api, Request::SandboxStop).unwrap();
    call(&l.api, Request::SandboxStop).unwrap();
    call(&l.api, Request::SandboxShutdown).unwrap();
    call(&l.api, Request::SandboxShutdown).unwrap();
    assert!(l.api.snapshot().sandbox.is_none());
    let page = l.api.shared().events_since(0, 100);
    let names: Vec<_> = page.events.iter().map(|e| e.event).collect();
    assert!(
        names.starts_with(&["started", "created", "sandbox_created", "booting"]),
        "{names:?}"
    );
    assert!(names.contains(&"sandbox_shutdown"), "{names:?}");
    call(&l.api, Request::VmmShutdown).unwrap();
    l.thread.join().unwrap();
}

#[test]
fn a_request_after_the_loop_ended_is_answered_with_an_error() {
    let l = start();
    call(&l.api, Request::VmmShutdown).unwrap();
    l.thread.join().unwrap();
    let err = call(&l.api, Request::VmBoot).unwrap_err();
    assert_eq!(err.code, ErrorCode::Internal);
}
