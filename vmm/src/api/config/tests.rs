use super::*;
use crate::config::DEFAULT_CMDLINE;

fn parse(json: &str) -> Result<ApiVmConfig, ApiConfigError> {
    from_json(json.as_bytes())
}

#[test]
fn a_kata_style_body_maps_onto_the_vmm_config() {
    let mut config = parse(
        r#"{"payload":{"kernel":"/k","cmdline":"console=ttyS0 quiet","initramfs":null},
            "cpus":{"boot_vcpus":2,"max_vcpus":2,"topology":{"threads_per_core":1,
              "cores_per_die":2,"dies_per_package":1,"packages":1}},
            "memory":{"size":268435456,"shared":true,"hugepages":false},
            "serial":{"mode":"File","file":"/tmp/s"},"console":{"mode":"Off"},
            "rng":{"src":"/dev/urandom"},"iommu":false,"watchdog":false,"pvpanic":null}"#,
    )
    .unwrap();
    let vm = config.normalize().unwrap();
    assert_eq!(vm.kernel, PathBuf::from("/k"));
    assert_eq!(vm.vcpus, 2);
    assert_eq!(vm.memory, 256 << 20);
    assert_eq!(vm.cmdline, "console=ttyS0 quiet");
    assert_eq!(vm.serial, SerialOutput::File("/tmp/s".into()));
    assert_eq!(vm.initramfs, None);
}

#[test]
fn defaults_fill_missing_sections() {
    let mut config = parse(r#"{"payload":{"kernel":"/k"}}"#).unwrap();
    let vm = config.normalize().unwrap();
    assert_eq!(vm.vcpus, 1);
    assert_eq!(vm.memory, DEFAULT_MEMORY);
    assert_eq!(vm.cmdline, DEFAULT_CMDLINE);
    assert_eq!(vm.serial, SerialOutput::Off);
    assert_eq!(config.cpus.max_vcpus, 1);
}

#[test]
fn wrong_types_and_bad_json_are_errors() {
    assert!(matches!(
        parse(r#"{"cpus":{"boot_vcpus":"two"}}"#),
        Err(ApiConfigError::Json(_))
    ));
    assert!(matches!(parse("{"), Err(ApiConfigError::Json(_))));
    assert!(matches!(parse("[]"), Err(ApiConfigError::Json(_))));
    assert!(matches!(
        parse(r#"{"memory":{"size":-1}}"#),
        Err(ApiConfigError::Json(_))
    ));
}

#[test]
fn what_cannot_be_built_is_refused_by_name() {
    for (body, word) in [
        (r#"{"payload":{"kernel":"/k"},"fs":[{"tag":"t"}]}"#, "fs"),
        (r#"{"payload":{"kernel":"/k"},"vsock":{"cid":3}}"#, "vsock"),
        (
            r#"{"payload":{"kernel":"/k"},"disks":[{"readonly":true}]}"#,
            "path",
        ),
        (r#"{"payload":{"firmware":"/f"}}"#, "firmware"),
        (
            r#"{"payload":{"kernel":"/k"},"console":{"mode":"Tty"}}"#,
            "console",
        ),
        (
            r#"{"payload":{"kernel":"/k"},"serial":{"mode":"Pty"}}"#,
            "Pty",
        ),
    ] {
        let err = parse(body).unwrap().normalize().unwrap_err();
        assert!(err.to_string().contains(word), "{body}: {err}");
    }
    // Confidential VMs are checked when planned: an image is required, a kernel is not taken.
    for (body, word) in [
        (
            r#"{"payload":{"kernel":"/k"},"platform":{"sev_snp":true}}"#,
            "IGVM",
        ),
        (
            r#"{"payload":{"igvm":"/i","kernel":"/k"},"platform":{"sev_snp":true}}"#,
            "kernel",
        ),
        (r#"{"payload":{"igvm":"/i"}}"#, "sev_snp"),
    ] {
        let err = crate::api::confidential::plan(&parse(body).unwrap()).unwrap_err();
        assert!(err.to_string().contains(word), "{body}: {err}");
    }
    assert_eq!(
        parse("{}").unwrap().normalize(),
        Err(ApiConfigError::NoKernel)
    );
}

#[test]
fn cpu_counts_must_agree() {
    let mut config =
        parse(r#"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":4,"max_vcpus":2}}"#).unwrap();
    assert!(config.normalize().is_err());
    let mut config = parse(
        r#"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":2,
            "topology":{"threads_per_core":2,"cores_per_die":2,"dies_per_package":1,"packages":1}}}"#,
    )
    .unwrap();
    assert!(config.normalize().is_err());
}

#[test]
fn the_echo_round_trips() {
    let mut config = parse(r#"{"payload":{"kernel":"/k"},"memory":{"size":1073741824}}"#).unwrap();
    config.normalize().unwrap();
    let echoed = serde_json::to_vec(&config).unwrap();
    let again: ApiVmConfig = from_json(&echoed).unwrap();
    assert_eq!(again, config);
}

#[test]
fn disks_and_vsock_map_onto_the_vmm_devices() {
    let mut config = parse(
        r#"{"payload":{"kernel":"/k"},"disks":[{"path":"/a"},{"path":"/b","readonly":true,
            "id":"data","num_queues":2,"queue_size":64}],"vsock":{"cid":3,"socket":"/v"}}"#,
    )
    .unwrap();
    let vm = config.normalize().unwrap();
    assert_eq!(vm.disks.len(), 2);
    assert!(vm.disks[1].readonly);
    assert_eq!(vm.disks[1].id.as_deref(), Some("data"));
    assert_eq!((vm.disks[1].num_queues, vm.disks[1].queue_size), (2, 64));
    let vsock = vm.vsock.unwrap();
    assert_eq!((vsock.cid, vsock.socket), (3, PathBuf::from("/v")));
}
