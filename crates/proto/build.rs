//! Compiles `proto/eldercare/v1/*.proto` with protox (pure Rust), so a
//! build needs no `protoc` on the machine.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it was compiled: a build
    // script compiled for one checkout is reused by another sharing the
    // target directory (a git worktree).
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "eldercare/v1/device.proto",
        "eldercare/v1/alerts.proto",
        "eldercare/v1/admin.proto",
        "eldercare/v1/registry.proto",
        "eldercare/v1/telemetry.proto",
        "eldercare/v1/visits.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("eldercare_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // The well-known types (Timestamp) from pbjson-types, which has the
    // same fields plus the protobuf JSON mapping.
    let encoded = prost::Message::encode_to_vec(&fds);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;
    // serde for every message in the protobuf JSON mapping (lowerCamelCase
    // names, enums by name, int64 as strings, RFC 3339 timestamps): the
    // console's JSON API speaks the same messages as gRPC.
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .emit_fields()
        .build(&[".eldercare.v1"])?;
    Ok(())
}
