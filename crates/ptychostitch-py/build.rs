//! Compiles `src/xla/frame.c`, the XLA FFI handler's call-frame decoder, against the vendored
//! XLA FFI C API header (`vendor/`, see its README for provenance).

fn main() {
    println!("cargo:rerun-if-changed=src/xla/frame.c");
    println!("cargo:rerun-if-changed=vendor/xla/ffi/api/c_api.h");
    cc::Build::new()
        .file("src/xla/frame.c")
        .include("vendor")
        .warnings(true)
        .extra_warnings(true)
        .compile("ptychostitch_xla_frame");
}
