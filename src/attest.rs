//! `podvisor attest verify`: check an SEV-SNP attestation report offline — its ECDSA P-384
//! signature under the given VCEK public key, then the expected measurement, HOST_DATA,
//! REPORT_DATA and policy — and name the first thing that does not match
//! ([`snp::report::verify`]; report layout per the SEV-SNP Firmware ABI §7.3).
//!
//! Exit status 0 when the report verifies, 1 when it does not (the reason on stderr), 2 for
//! unusable input.

use snp::report::vcek_cert::vcek_from_any_pem;
use snp::report::{verify, Expected, ReportError};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct AttestArgs {
    #[command(subcommand)]
    pub command: AttestCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum AttestCommand {
    /// Verify a report's signature and expected fields.
    Verify(VerifyArgs),
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The raw ATTESTATION_REPORT (1184 bytes).
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,
    /// The VCEK: its X.509 certificate (PEM, as AMD's key distribution service issues it; only
    /// its P-384 key is used, the chain is not checked here) or its public key (PEM
    /// SubjectPublicKeyInfo).
    #[arg(long, value_name = "PEM")]
    pub vcek: PathBuf,
    /// Expected launch measurement (96 hex digits), e.g. from `podvisor measure`.
    #[arg(long, value_name = "HEX")]
    pub measurement: Option<String>,
    /// Expected HOST_DATA (64 hex digits).
    #[arg(long, value_name = "HEX")]
    pub host_data: Option<String>,
    /// Expected REPORT_DATA (128 hex digits), e.g. the verifier's nonce.
    #[arg(long, value_name = "HEX")]
    pub report_data: Option<String>,
    /// Expected guest policy (e.g. 0x30000).
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<String>,
}

fn hex_opt<const N: usize>(what: &str, v: &Option<String>) -> Result<Option<[u8; N]>, String> {
    v.as_deref()
        .map(|s| {
            snp::hex::decode_array::<N>(s.trim())
                .map_err(|e| format!("--{what}: {e} (want {} hex digits)", 2 * N))
        })
        .transpose()
}

fn expected(args: &VerifyArgs) -> Result<Expected, String> {
    let policy = match args.policy.as_deref() {
        None => None,
        Some(p) => {
            let p = p.trim();
            let parsed = match p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16),
                None => p.parse(),
            };
            Some(parsed.map_err(|e| format!("--policy {p}: {e}"))?)
        }
    };
    Ok(Expected {
        measurement: hex_opt("measurement", &args.measurement)?,
        host_data: hex_opt("host-data", &args.host_data)?,
        report_data: hex_opt("report-data", &args.report_data)?,
        policy,
    })
}

pub fn main(args: AttestArgs) -> ExitCode {
    let AttestCommand::Verify(args) = args.command;
    let inputs = (|| {
        let report =
            std::fs::read(&args.report).map_err(|e| format!("{}: {e}", args.report.display()))?;
        let pem = std::fs::read_to_string(&args.vcek)
            .map_err(|e| format!("{}: {e}", args.vcek.display()))?;
        let key = vcek_from_any_pem(&pem).map_err(|e| format!("{}: {e}", args.vcek.display()))?;
        Ok::<_, String>((report, key, expected(&args)?))
    })();
    let (report, key, expected) = match inputs {
        Ok(i) => i,
        Err(e) => {
            eprintln!("podvisor attest verify: {e}");
            return ExitCode::from(2);
        }
    };
    match verify(&report, &key, &expected) {
        Ok(r) => {
            println!("report verified");
            println!("measurement {}", snp::hex::encode(&r.measurement));
            println!("host_data {}", snp::hex::encode(&r.host_data));
            println!("policy {:#x}", r.policy);
            ExitCode::SUCCESS
        }
        Err(e @ ReportError::Size { .. }) => {
            eprintln!("podvisor attest verify: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("podvisor attest verify: report rejected: {e}");
            ExitCode::FAILURE
        }
    }
}
