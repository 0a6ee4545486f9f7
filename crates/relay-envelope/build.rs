//! Compiles `proto/` with protox (pure Rust), so no system `protoc` is needed.
#![forbid(unsafe_code)]
fn main() {
    let proto_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let file = "relay/envelope/v1/envelope.proto";
    println!("cargo:rerun-if-changed={proto_root}/{file}");
    let descriptors = protox::compile([file], [proto_root]).expect("envelope.proto must compile");
    prost_build::Config::new().compile_fds(descriptors).expect("prost code generation must succeed");
}
