//! Compiles `crates/ptychostitch/src/gpu/kernel.cu` — the very source the CUDA driver hands to
//! NVRTC — as C++ with `emulation.h`, without contracting any multiply-add (`--fmad=false` on the
//! GPU, `-ffp-contract=off` here), and generates the emulator's launch table from it: every
//! `extern "C" __global__` function, by name, so a kernel added to `kernel.cu` is launchable
//! here with nothing written by hand.

use std::fmt::Write as _;

fn main() {
    let gpu = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ptychostitch/src/gpu");
    for file in ["kernel.cu", "emulation.h"] {
        println!("cargo:rerun-if-changed={}", gpu.join(file).display());
    }
    println!("cargo:rerun-if-changed=src/emulate.cpp");
    let source = std::fs::read_to_string(gpu.join("kernel.cu")).expect("kernel.cu is readable");
    let mut table = String::new();
    for line in source.lines() {
        let Some(rest) = line
            .trim_start()
            .strip_prefix("extern \"C\" __global__ void ")
        else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(!name.is_empty(), "an entry point without a name: {line}");
        writeln!(
            table,
            "    {{\"{name}\", [](const void* a, const unsigned* g, const unsigned* b) {{ return run_grid({name}, a, g, b); }}}},"
        )
        .expect("writing to a String");
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("entry_points.inc"), table).expect("OUT_DIR is writable");
    cc::Build::new()
        .cpp(true)
        .file("src/emulate.cpp")
        .include(&gpu)
        .include(&out)
        .flag("-std=c++17")
        .flag("-ffp-contract=off")
        .flag_if_supported("-fno-fast-math")
        .opt_level(2)
        .compile("ptychostitch_kernel_emu");
}
