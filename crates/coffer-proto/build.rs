//! Compiles `proto/` with protox (a pure-Rust protobuf compiler, so a fresh
//! machine needs no `protoc`) and emits both the generated code and the
//! descriptor set that server reflection and the CLI's JSON output use.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let files = [
        "coffer/v1/resources.proto",
        "coffer/v1/secrets.proto",
        "coffer/v1/vaults.proto",
        // Not used by the API messages, but in the descriptor set so that
        // reflection clients (grpcurl) can decode ErrorInfo/BadRequest details.
        "google/rpc/error_details.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        proto_root.join("google/rpc/status.proto").display()
    );

    let descriptors = protox::compile(files, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("coffer_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
