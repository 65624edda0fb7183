use super::*;
use crate::test_scratch::ScratchDir;

fn host() -> HostLimits {
    HostLimits {
        max_vcpus: 8,
        memory: 4 << 30,
    }
}

fn temp_file(dir: &ScratchDir, name: &str, len: usize) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, vec![0x90u8; len]).unwrap();
    path
}

#[test]
fn memory_sizes_in_both_spellings() {
    assert_eq!(parse_memory("512M"), Ok(512 << 20));
    assert_eq!(parse_memory("size=512M"), Ok(512 << 20));
    assert_eq!(parse_memory("1G"), Ok(1 << 30));
    assert_eq!(parse_memory("2GiB"), Ok(2 << 30));
    assert_eq!(parse_memory("65536k"), Ok(64 << 20));
    assert_eq!(parse_memory("4096"), Ok(4096));
    for bad in [
        "",
        "M",
        "12Q",
        "-1G",
        "size=",
        "shared=on",
        "99999999999999999999T",
        "16777216T",
    ] {
        assert!(
            matches!(parse_memory(bad), Err(ConfigError::InvalidSize { .. })),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn memory_can_be_shared_with_backends() {
    let spec = |t| parse_memory_spec(t);
    assert_eq!(
        spec("size=1G,shared=on"),
        Ok(MemorySpec {
            size: 1 << 30,
            shared: true
        })
    );
    assert_eq!(spec("256M,shared=off").map(|s| s.shared), Ok(false));
    assert_eq!(spec("256M").map(|s| s.shared), Ok(false));
    assert!(spec("256M,shared=maybe").is_err());
    assert!(spec("256M,hugepages=on").is_err());
    assert!(spec("shared=on").is_err(), "a size is required");
    assert!(parse_memory("256M,shared=on").is_err());
}

#[test]
fn cpus_in_both_spellings() {
    assert_eq!(parse_cpus("4"), Ok(4));
    assert_eq!(parse_cpus("boot=2"), Ok(2));
    assert_eq!(
        parse_cpus("0"),
        Ok(0),
        "zero is refused by validate, not the parser"
    );
    for bad in ["", "two", "max=4", "-1", "boot="] {
        assert!(parse_cpus(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn serial_settings() {
    assert_eq!(parse_serial("stdout"), Ok(SerialOutput::Stdout));
    assert_eq!(parse_serial("tty"), Ok(SerialOutput::Stdout));
    assert_eq!(parse_serial("off"), Ok(SerialOutput::Off));
    assert_eq!(
        parse_serial("file=/tmp/x.log"),
        Ok(SerialOutput::File("/tmp/x.log".into()))
    );
    for bad in ["", "file=", "pty", "socket=/x"] {
        assert!(parse_serial(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn meminfo_total() {
    let text = "MemTotal:       24576000 kB\nMemFree:  100 kB\n";
    assert_eq!(parse_meminfo_total(text), Some(24_576_000 * 1024));
    assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
}

#[test]
fn validate_refuses_each_bad_setting() {
    let dir = ScratchDir::new("config");
    let kernel = temp_file(&dir, "kernel", 4096);
    let good = VmConfig::new(kernel.clone());
    assert_eq!(good.validate(&host()), Ok(()));

    let with = |f: &dyn Fn(&mut VmConfig)| {
        let mut c = good.clone();
        f(&mut c);
        c.validate(&host())
    };
    assert_eq!(with(&|c| c.vcpus = 0), Err(ConfigError::NoVcpus));
    assert_eq!(
        with(&|c| c.vcpus = 9),
        Err(ConfigError::TooManyVcpus { count: 9, max: 8 })
    );
    assert!(matches!(
        with(&|c| c.memory = 1 << 20),
        Err(ConfigError::MemoryTooSmall { .. })
    ));
    assert!(matches!(
        with(&|c| c.memory = 8 << 30),
        Err(ConfigError::MemoryTooLarge { .. })
    ));
    assert!(matches!(
        with(&|c| c.memory = (64 << 20) + 1),
        Err(ConfigError::MemoryUnaligned { .. })
    ));
    assert!(matches!(
        with(&|c| c.kernel = "/nonexistent/kernel".into()),
        Err(ConfigError::Kernel { .. })
    ));
    assert!(matches!(
        with(&|c| c.kernel = std::env::temp_dir()),
        Err(ConfigError::Kernel { .. })
    ));
    assert_eq!(
        with(&|c| c.cmdline = "a\0b".into()),
        Err(ConfigError::CmdlineNul)
    );
    assert!(matches!(
        with(&|c| c.cmdline = "x".repeat(layout::CMDLINE_MAX_SIZE)),
        Err(ConfigError::CmdlineTooLong { .. })
    ));

    let big = temp_file(&dir, "initramfs-big", (16 << 20) + 1);
    let small = temp_file(&dir, "initramfs-small", 100);
    let mut c = good.clone();
    c.memory = 16 << 20;
    c.initramfs = Some(big);
    assert!(matches!(
        c.validate(&host()),
        Err(ConfigError::InitramfsLargerThanRam { .. })
    ));
    c.initramfs = Some(small);
    assert_eq!(c.validate(&host()), Ok(()));
}

#[test]
fn vcpus_capped_by_the_xapic_limit() {
    let dir = ScratchDir::new("config");
    let kernel = temp_file(&dir, "kernel-cap", 16);
    let mut c = VmConfig::new(kernel);
    c.vcpus = 256;
    let host = HostLimits {
        max_vcpus: 1024,
        memory: 4 << 30,
    };
    assert_eq!(
        c.validate(&host),
        Err(ConfigError::TooManyVcpus {
            count: 256,
            max: MAX_VCPUS
        })
    );
}
