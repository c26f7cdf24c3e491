//! Compiles `proto/` with a vendored `protoc`, so a build needs no system protobuf
//! compiler (a newcomer's machine and CI have none).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is compiled: a build script binary
    // may be reused for another checkout sharing the target directory.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let protos = [
        "fleet/telemetry/v1/telemetry.proto",
        "fleet/alarm/v1/alarm.proto",
        "fleet/clinic/v1/clinic.proto",
        "fleet/api/v1/api.proto",
    ]
    .map(|p| root.join(p));

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Evidence maps keep a stable order, so encoded alarms are byte-for-byte deterministic.
    config.btree_map(["."]);

    tonic_prost_build::configure().compile_with_config(
        config,
        &protos,
        &[root.clone(), protoc_bin_vendored::include_path()?],
    )?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
