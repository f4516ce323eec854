//! Compiles `crates/ptychostitch/src/gpu/kernel.cu` — the very source the CUDA driver hands to
//! NVRTC — as C++ with `emulation.h`, without contracting any multiply-add (`--fmad=false` on the
//! GPU, `-ffp-contract=off` here).

fn main() {
    let gpu = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ptychostitch/src/gpu");
    for file in ["kernel.cu", "emulation.h"] {
        println!("cargo:rerun-if-changed={}", gpu.join(file).display());
    }
    println!("cargo:rerun-if-changed=src/emulate.cpp");
    cc::Build::new()
        .cpp(true)
        .file("src/emulate.cpp")
        .include(&gpu)
        .flag("-std=c++17")
        .flag("-ffp-contract=off")
        .flag_if_supported("-fno-fast-math")
        .opt_level(2)
        .compile("ptychostitch_kernel_emu");
}
