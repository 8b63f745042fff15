// Compiles the .proto files with protox (pure Rust), so building needs no
// system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for name in ["wire", "api"] {
        let file = format!("proto/{name}.proto");
        println!("cargo:rerun-if-changed={file}");
        let fds = protox::compile([file.as_str()], ["proto"])?;
        tonic_prost_build::configure()
            .build_server(name == "api")
            .build_client(name == "api")
            .file_descriptor_set_path(out.join(format!("{name}_descriptor.bin")))
            .compile_fds(fds)?;
    }
    Ok(())
}
