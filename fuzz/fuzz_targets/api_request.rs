//! Arbitrary bytes as API request bodies → the decoders the server uses (`vm.create`'s
//! VmConfig, `sandbox.create`'s spec, `sandbox.start`'s options) → the mapping onto the VMM's
//! configuration. Every input must be refused with an error or accepted, never panic; and a
//! configuration that was accepted must survive its own `vm.info` echo: serialized and decoded
//! again, it is the same configuration and maps to the same VMM configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmm::api::config::{from_json, ApiVmConfig};
use vmm::api::sandbox::{SandboxSpec, StartOptions};

fn echo_is_stable(mut config: ApiVmConfig) {
    let Ok(mapped) = config.normalize() else {
        return;
    };
    let Ok(echo) = serde_json::to_vec(&config) else {
        panic!("an accepted configuration cannot be echoed");
    };
    let Ok(mut again) = from_json::<ApiVmConfig>(&echo) else {
        panic!("the echo of an accepted configuration does not decode");
    };
    assert_eq!(again, config, "echo changed the configuration");
    assert_eq!(again.normalize().ok(), Some(mapped), "echo maps differently");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = from_json::<ApiVmConfig>(data) {
        echo_is_stable(config);
    }
    if let Ok(spec) = from_json::<SandboxSpec>(data) {
        if spec.check().is_ok() {
            echo_is_stable(spec.vm);
        }
    }
    let _ = from_json::<StartOptions>(data);
});
