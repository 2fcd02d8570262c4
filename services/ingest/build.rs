//! Compiles the gRPC contracts of `proto/` with protox (pure Rust, no protoc to install) and
//! keeps the file descriptor set for server reflection.

use std::path::PathBuf;

/// The messages whose fields are personal (see `redacted_debug!` in src/lib.rs).
const PERSONAL: [&str; 13] = [
    "Person",
    "Household",
    "Address",
    "Mutation",
    "FtReferentAssigned",
    "Agent",
    "OrientationDenied",
    "Situation",
    "DiagnosticRecorded",
    "Objective",
    "PlanActionItem",
    "EngagementPlanSet",
    "SanctionDecided",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let ingest = proto_root.join("passerelle/ingest/v1/ingest.proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    let descriptors = protox::compile([&ingest], [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("passerelle_ingest_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&descriptors))?;
    // The messages that carry personal data get a hand-written Debug (src/lib.rs) that names the
    // fields present, never their values: a `{:?}` in a log line or a panic must not print them.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .skip_debug(PERSONAL.iter().map(|name| format!(".passerelle.ingest.v1.{name}")))
        .compile_fds(descriptors)?;
    Ok(())
}
