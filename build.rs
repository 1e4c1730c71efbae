//! Generates the ONNX protobuf types from the vendored proto2 schema, without a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schema = "src/onnx/onnx.proto";
    println!("cargo:rerun-if-changed={schema}");
    let descriptors = protox::compile([schema], ["src/onnx"])?;
    prost_build::Config::new()
        // Byte fields as `bytes::Bytes`, so tensor data decoded from an mmap stays a slice of it.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
