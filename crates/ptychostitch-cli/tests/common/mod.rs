//! Helpers shared by the CLI integration tests.
#![allow(dead_code)]

use assert_cmd::Command;
use ndarray::{Array1, Array2, Array3, Axis, Ix2};
use ptychostitch::Complex32;
use ptychostitch::npy::{NpyView, Npz, write_npz};
use std::path::{Path, PathBuf};

pub fn cli() -> Command {
    Command::cargo_bin("ptychostitch").expect("binary built")
}

// The library's list of golden cases and their folder.
#[path = "../../../ptychostitch/tests/common/cases.rs"]
mod cases;
#[allow(unused_imports)] // not every test binary that shares these helpers uses it
pub use cases::GOLDEN_CASES;

pub fn golden(name: &str) -> PathBuf {
    cases::golden_dir().join(format!("{name}.npz"))
}

pub fn read_c2(path: &Path, key: &str) -> Array2<Complex32> {
    let a = Npz::open(path)
        .unwrap()
        .read(key)
        .unwrap()
        .to_complex32()
        .unwrap();
    match a.ndim() {
        3 => a
            .index_axis_move(Axis(2), 0)
            .into_dimensionality::<Ix2>()
            .unwrap(),
        _ => a.into_dimensionality::<Ix2>().unwrap(),
    }
}

pub fn bits(a: &Array2<Complex32>) -> Vec<(u32, u32)> {
    a.iter().map(|c| (c.re.to_bits(), c.im.to_bits())).collect()
}

/// Runs a command that must fail; returns its stderr after checking it is one clean line.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "command should have failed");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected: {stderr}"
    );
    stderr
}

/// A small PtychoPINN-layout scan: patches `Y` (n, N, N), `xcoords`, `ycoords`.
pub fn scan(n: usize, size: usize) -> (Array3<Complex32>, Array1<f64>, Array1<f64>) {
    let patches = Array3::from_shape_fn((n, size, size), |(k, r, c)| {
        Complex32::new((k + r) as f32 * 0.25, (c as f32 - k as f32) * 0.5)
    });
    let x = Array1::from_shape_fn(n, |k| (k % 4) as f64 * 3.3 + 0.2 * k as f64);
    let y = Array1::from_shape_fn(n, |k| (k / 4) as f64 * 2.7 - 0.1 * k as f64);
    (patches, x, y)
}

pub fn write_scan(path: &Path, patches: &Array3<Complex32>, x: &Array1<f64>, y: &Array1<f64>) {
    write_npz(
        path,
        &[
            ("Y", NpyView::Complex64(patches.view().into_dyn())),
            ("xcoords", NpyView::Float64(x.view().into_dyn())),
            ("ycoords", NpyView::Float64(y.view().into_dyn())),
        ],
    )
    .unwrap();
}

pub fn xy(x: &Array1<f64>, y: &Array1<f64>) -> Array2<f64> {
    ndarray::stack(Axis(1), &[x.view(), y.view()])
        .unwrap()
        .as_standard_layout()
        .into_owned()
}

/// The first bytes of a version-1.0 `.npy` file: the magic, the header's length and `header`
/// (a Python dict literal, taken as given: no padding added).
pub fn npy_prefix(header: &str) -> Vec<u8> {
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes
}
