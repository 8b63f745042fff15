// Compiles the .proto files with protox (pure Rust), so building needs no
// system protoc.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for name in ["wire", "api"] {
        let file = format!("proto/{name}.proto");
        println!("cargo:rerun-if-changed={file}");
        let fds = protox::compile([file.as_str()], ["proto"])?;
        // Kept for gRPC server reflection.
        std::fs::write(out.join(format!("{name}_descriptor.bin")), fds.encode_to_vec())?;
        tonic_prost_build::configure().build_server(name == "api").build_client(name == "api").compile_fds(fds)?;
    }
    Ok(())
}
