//! Link settings for the probe: its own linker script and no C runtime. The code-generation
//! flags (no SSE, static relocation model) come from the invoking build (`tests/build/probe.rs`).

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
    for arg in [
        format!("-T{dir}/link.ld"),
        "-nostartfiles".to_owned(),
        "-nostdlib".to_owned(),
        "-static".to_owned(),
        "-Wl,--build-id=none".to_owned(),
        "-Wl,-z,noexecstack".to_owned(),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
