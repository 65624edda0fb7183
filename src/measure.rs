//! `podvisor measure`: the expected SEV-SNP launch digest, computed ahead of time so an
//! attestation verifier can be given the reference value before the guest ever runs.
//!
//! Two launch flavours:
//! - `--igvm FILE`: the launch `podvisor run` performs from an IGVM image
//!   ([`snp::igvm_plan`]);
//! - `--ovmf FILE`: an OVMF-based launch as QEMU (or the ec2/gce VMMs) performs it, optionally
//!   with a measured direct-boot kernel ([`snp::ovmf`]); bit-compatible with `sev-snp-measure`.
//!
//! The digest is printed as lower-case hex; `--json` adds the inputs' hashes.

use snp::ovmf::hashes::SevHashes;
use snp::ovmf::launch::{OvmfLaunch, OvmfLaunchConfig};
use snp::ovmf::vcpu::{vcpu_type_signature, VmmType};
use snp::ovmf::OvmfImage;
use snp::page_info::{LaunchDigest, PageType};
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("image").required(true).args(["ovmf", "igvm"])))]
pub struct MeasureArgs {
    /// IGVM image to measure for an SEV-SNP launch on KVM.
    #[arg(long, value_name = "FILE")]
    pub igvm: Option<PathBuf>,
    /// OVMF firmware image (OVMF_CODE / OVMF.amdsev.fd) to measure for an OVMF-based launch.
    #[arg(long, value_name = "FILE")]
    pub ovmf: Option<PathBuf>,
    /// How IGVM pages without data are measured, as `podvisor run --empty-pages` issues them:
    /// normal (a NORMAL page of zeros, as the IGVM format defines it) or zero (the firmware
    /// ZERO type).
    #[arg(
        long,
        value_name = "TYPE",
        default_value = "normal",
        conflicts_with = "ovmf"
    )]
    pub empty_pages: snp::plan::EmptyPages,
    /// Number of vCPUs; KVM measures one VMSA per vCPU.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u32,
    /// Guest RAM in MiB; every page of an IGVM image must lie in it.
    #[arg(
        long,
        value_name = "MIB",
        default_value_t = 512,
        conflicts_with = "ovmf"
    )]
    pub memory: u64,
    /// Kernel for measured direct boot (its SHA-256 goes into the SEV hashes table).
    #[arg(long, value_name = "FILE", conflicts_with = "igvm")]
    pub kernel: Option<PathBuf>,
    /// Initrd for measured direct boot.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line for measured direct boot.
    #[arg(long, value_name = "CMDLINE", requires = "kernel")]
    pub append: Option<String>,
    /// QEMU CPU model of the vCPUs (EPYC-v4, EPYC-Milan, EPYC-Genoa, ...); its CPUID signature
    /// is in RDX of every QEMU VMSA.
    #[arg(
        long,
        value_name = "TYPE",
        conflicts_with = "igvm",
        conflicts_with = "vcpu_sig"
    )]
    pub vcpu_type: Option<String>,
    /// Raw CPUID(1).EAX signature instead of a model name.
    #[arg(long, value_name = "VALUE", conflicts_with = "igvm", value_parser = parse_u32)]
    pub vcpu_sig: Option<u32>,
    /// VMM reset-state convention: qemu, ec2 or gce.
    #[arg(long, value_name = "VMM", default_value = "qemu", conflicts_with = "igvm", value_parser = parse_vmm)]
    pub vmm_type: VmmType,
    /// SEV_FEATURES of every VMSA (bit 0 SNPActive; e.g. 0x21 adds DebugSwap).
    #[arg(long, value_name = "VALUE", default_value = "0x1", conflicts_with = "igvm", value_parser = parse_u64)]
    pub guest_features: u64,
    /// Print a JSON object with the digest and the hashes of every input.
    #[arg(long)]
    pub json: bool,
}

/// Errors of `podvisor measure`.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// Opening or reading an input file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The firmware image is larger than any OVMF build; refused before reading it.
    #[error("{path}: {size} bytes is larger than the {max}-byte limit for firmware images")]
    TooLarge {
        path: PathBuf,
        size: u64,
        max: usize,
    },
    /// Nothing to measure (clap's argument group normally catches this first).
    #[error("give an image to measure: --ovmf FILE or --igvm FILE")]
    NoImage,
    /// The QEMU convention puts the CPU signature into the VMSA, so it must be known.
    #[error("--vmm-type qemu needs --vcpu-type or --vcpu-sig")]
    NoVcpuType,
    /// The OVMF image is malformed or not SNP capable.
    #[error("{path}: {source}")]
    Ovmf {
        path: PathBuf,
        #[source]
        source: snp::ovmf::OvmfError,
    },
    /// Kernel/initrd/command-line hashing failed.
    #[error(transparent)]
    Hashes(#[from] snp::ovmf::hashes::HashesError),
    /// The launch cannot be planned or measured.
    #[error(transparent)]
    Launch(#[from] snp::ovmf::launch::OvmfLaunchError),
    /// A vCPU model name or signature is unusable.
    #[error(transparent)]
    Vcpu(#[from] snp::ovmf::vcpu::VcpuError),
    /// The IGVM image cannot be launched as requested.
    #[error("{path}: {message}")]
    Igvm { path: PathBuf, message: String },
}

pub fn main(args: MeasureArgs) -> ExitCode {
    let result = match (&args.ovmf, &args.igvm) {
        (Some(path), _) => measure_ovmf(path, &args),
        (None, Some(path)) => measure_igvm(path, &args),
        (None, None) => Err(MeasureError::NoImage),
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("podvisor measure: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_int(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse::<u64>(),
    };
    parsed.map_err(|e| format!("{s:?} is not a number: {e}"))
}

fn parse_u64(s: &str) -> Result<u64, String> {
    parse_int(s)
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let v = parse_int(s)?;
    u32::try_from(v).map_err(|_| format!("{s:?} does not fit in 32 bits"))
}

fn parse_vmm(s: &str) -> Result<VmmType, String> {
    s.parse::<VmmType>().map_err(|e| e.to_string())
}

fn open(path: &Path) -> Result<File, MeasureError> {
    File::open(path).map_err(|source| MeasureError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Read a firmware image, refusing oversized files before allocating for them.
fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>, MeasureError> {
    let io = |source| MeasureError::Io {
        path: path.to_owned(),
        source,
    };
    let file = open(path)?;
    let size = file.metadata().map_err(io)?.len();
    if size > max as u64 {
        return Err(MeasureError::TooLarge {
            path: path.to_owned(),
            size,
            max,
        });
    }
    let mut data = Vec::with_capacity(size as usize);
    // Bounded again while reading, in case the file grows underneath.
    file.take(max as u64 + 1)
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() > max {
        return Err(MeasureError::TooLarge {
            path: path.to_owned(),
            size: data.len() as u64,
            max,
        });
    }
    Ok(data)
}

/// The digest of an OVMF-based launch (QEMU/ec2/gce conventions).
fn measure_ovmf(path: &Path, args: &MeasureArgs) -> Result<String, MeasureError> {
    let data = read_bounded(path, snp::ovmf::MAX_IMAGE_SIZE)?;
    let image = OvmfImage::parse(data).map_err(|source| MeasureError::Ovmf {
        path: path.to_owned(),
        source,
    })?;
    let vcpu_signature = match (&args.vcpu_type, args.vcpu_sig) {
        (Some(name), _) => vcpu_type_signature(name)?,
        (None, Some(sig)) => sig,
        (None, None) if args.vmm_type == VmmType::Qemu => return Err(MeasureError::NoVcpuType),
        (None, None) => 0,
    };
    let kernel_hashes = match &args.kernel {
        None => None,
        Some(kernel) => {
            let mut k = open(kernel)?;
            let mut initrd = args.initrd.as_deref().map(open).transpose()?;
            Some(SevHashes::from_readers(
                &mut k,
                initrd.as_mut().map(|f| f as &mut dyn Read),
                args.append.as_deref(),
            )?)
        }
    };
    if args.guest_features & snp::vmsa::SEV_FEATURES_SNP_ACTIVE == 0 {
        log::warn!(
            "--guest-features {:#x} lacks SNPActive (bit 0), which KVM always sets for SNP guests",
            args.guest_features
        );
    }
    let cfg = OvmfLaunchConfig {
        vcpus: args.vcpus,
        vmm: args.vmm_type,
        vcpu_signature,
        guest_features: args.guest_features,
        kernel_hashes,
    };
    let launch = OvmfLaunch::plan(&image, &cfg)?;
    let digest = launch.measure()?;
    if !args.json {
        return Ok(digest.to_hex());
    }
    ovmf_json(path, &image, &cfg, &launch, &digest, args)
}

/// JSON report of an OVMF measurement: digest, inputs and their hashes, and the launch ranges.
fn ovmf_json(
    path: &Path,
    image: &OvmfImage,
    cfg: &OvmfLaunchConfig,
    launch: &OvmfLaunch,
    digest: &LaunchDigest,
    args: &MeasureArgs,
) -> Result<String, MeasureError> {
    // The digest over the firmware pages alone, as `sev-snp-measure --mode snp:ovmf-hash`
    // reports it, lets verifiers pin the firmware separately from the vCPU configuration.
    let mut fw = LaunchDigest::new();
    fw.extend_pages(image.gpa(), PageType::Normal, image.data())
        .map_err(snp::ovmf::launch::OvmfLaunchError::from)?;
    let mut o = String::from("{");
    field(&mut o, "digest", &json_str(&digest.to_hex()));
    field(&mut o, "mode", &json_str("ovmf"));
    field(&mut o, "ovmf", &json_str(&path.display().to_string()));
    field(&mut o, "ovmf_sha256", &json_str(&sha256_hex(image.data())));
    field(&mut o, "ovmf_launch_digest", &json_str(&fw.to_hex()));
    field(&mut o, "vcpus", &cfg.vcpus.to_string());
    field(&mut o, "vmm_type", &json_str(&cfg.vmm.to_string()));
    let vcpu_type = args.vcpu_type.as_deref().map_or("null".into(), json_str);
    field(&mut o, "vcpu_type", &vcpu_type);
    field(
        &mut o,
        "vcpu_signature",
        &json_str(&format!("{:#x}", cfg.vcpu_signature)),
    );
    field(
        &mut o,
        "guest_features",
        &json_str(&format!("{:#x}", cfg.guest_features)),
    );
    field(
        &mut o,
        "ap_reset_eip",
        &json_str(&format!("{:#x}", image.ap_reset_eip())),
    );
    match &cfg.kernel_hashes {
        None => field(&mut o, "kernel_hashes", "null"),
        Some(h) => {
            let kernel = args.kernel.as_deref().map(|p| p.display().to_string());
            let initrd = args.initrd.as_deref().map(|p| p.display().to_string());
            let obj = format!(
                "{{\"kernel\":{},\"kernel_sha256\":{},\"initrd\":{},\"initrd_sha256\":{},\"cmdline\":{},\"cmdline_sha256\":{}}}",
                kernel.as_deref().map_or("null".into(), json_str),
                json_str(&snp::hex::encode(&h.kernel)),
                initrd.as_deref().map_or("null".into(), json_str),
                json_str(&snp::hex::encode(&h.initrd)),
                args.append.as_deref().map_or("null".into(), json_str),
                json_str(&snp::hex::encode(&h.cmdline)),
            );
            field(&mut o, "kernel_hashes", &obj);
        }
    }
    let mut ranges = String::from("[");
    for (i, s) in launch.steps.iter().enumerate() {
        if i > 0 {
            ranges.push(',');
        }
        let _ = write!(
            ranges,
            "{{\"source\":{},\"gpa\":\"{:#x}\",\"type\":\"{:?}\",\"pages\":{}}}",
            json_str(&s.source.to_string()),
            s.gpa,
            s.page_type,
            s.pages
        );
    }
    let _ = write!(
        ranges,
        ",{{\"source\":\"vmsa\",\"gpa\":\"{:#x}\",\"type\":\"Vmsa\",\"pages\":{}}}]",
        snp::page_info::VMSA_GPA,
        launch.vmsas.len()
    );
    field(&mut o, "launch", &ranges);
    o.pop(); // trailing comma
    o.push('}');
    Ok(o)
}

fn field(out: &mut String, key: &str, value: &str) {
    let _ = write!(out, "{}:{},", json_str(key), value);
}

/// A JSON string literal (RFC 8259 §7): quotes, backslashes and control characters escaped.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn sha256_hex(data: &[u8]) -> String {
    snp::hex::encode(&snp::ovmf::hashes::sha256(data))
}

/// The digest of `path` as `podvisor run --platform sev_snp=on --igvm` would launch it.
fn measure_igvm(path: &Path, args: &MeasureArgs) -> Result<String, MeasureError> {
    let err = |message: String| MeasureError::Igvm {
        path: path.to_owned(),
        message,
    };
    let bytes = snp::igvm_plan::read_igvm_file(path).map_err(|e| err(e.to_string()))?;
    let ram_bytes = args
        .memory
        .checked_mul(1 << 20)
        .ok_or_else(|| err(format!("--memory {} MiB is too large", args.memory)))?;
    let cfg = snp::plan::VmConfig {
        empty_pages: args.empty_pages,
        ram: snp::plan::RamLayout::pc(ram_bytes).map_err(|e| err(e.to_string()))?,
        vcpus: args.vcpus,
        cmdline: None,
        host_data: snp::id_block::HostData::default(),
    };
    let plan = snp::igvm_plan::plan_from_igvm(&bytes, &cfg).map_err(|e| err(e.to_string()))?;
    let digest = plan.expected_digest().map_err(|e| err(e.to_string()))?;
    if let Some((block, _)) = &plan.id {
        if block.ld != *digest.as_bytes() {
            log::warn!(
                "the image's ID block expects digest {}; SNP_LAUNCH_FINISH would fail",
                snp::hex::encode(&block.ld)
            );
        }
    }
    if !args.json {
        return Ok(digest.to_hex());
    }
    let mut o = String::from("{");
    field(&mut o, "digest", &json_str(&digest.to_hex()));
    field(&mut o, "mode", &json_str("igvm"));
    field(&mut o, "igvm", &json_str(&path.display().to_string()));
    field(&mut o, "igvm_sha256", &json_str(&sha256_hex(&bytes)));
    field(&mut o, "vcpus", &args.vcpus.to_string());
    field(&mut o, "memory_mib", &args.memory.to_string());
    o.pop();
    o.push('}');
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        assert_eq!(json_str("é"), "\"é\"");
    }

    #[test]
    fn integers_parse_in_hex_and_decimal() {
        assert_eq!(parse_u64("0x21"), Ok(0x21));
        assert_eq!(parse_u64("33"), Ok(33));
        assert!(parse_u64("0xg").is_err());
        assert!(parse_u32("0x1_0000_0000").is_err());
        assert!(parse_u32("4294967296").is_err());
        assert_eq!(parse_u32("0x800f12"), Ok(0x80_0f12));
    }
}
