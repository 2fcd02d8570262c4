//! Compiles the gRPC contracts of `proto/` with protox (pure Rust, no protoc to install) and
//! keeps the file descriptor set for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let ingest = proto_root.join("passerelle/ingest/v1/ingest.proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    let descriptors = protox::compile([&ingest], [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("passerelle_ingest_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
