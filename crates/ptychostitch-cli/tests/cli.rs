//! Integration tests that run the built `ptychostitch` binary.

mod common;

use common::*;
use ndarray::{Array2, Axis};
use ptychostitch::npy::{NpyView, Npz, write_npy, write_npz};
use ptychostitch::{Complex32, Plan};
use std::path::Path;

#[test]
fn golden_cases_through_the_cli_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    for name in GOLDEN_CASES {
        let m = Npz::open(&golden(name))
            .unwrap()
            .read("M")
            .unwrap()
            .to_scalar_i64()
            .unwrap();
        for (mode, key) in [
            ("reassemble", "reassemble_position_old"),
            ("shift-and-sum", "shift_and_sum_old"),
        ] {
            let out = dir.path().join(format!("{name}-{mode}.npz"));
            cli()
                .args([
                    "reassemble",
                    "--patches",
                    "obj",
                    "--offsets",
                    "offsets",
                    "--mode",
                    mode,
                ])
                .arg(golden(name))
                .args(["-M", &m.to_string(), "-o"])
                .arg(&out)
                .assert()
                .success();
            let got = read_c2(&out, "image");
            let expected = read_c2(&golden(name), key);
            // Every bit, NaN payloads of the nonfinite case included (TF's are x86-64's).
            if cfg!(target_arch = "x86_64") {
                assert_eq!(bits(&got), bits(&expected), "{name} {mode}");
            } else {
                let nan = |a: &Array2<Complex32>| -> Vec<bool> {
                    a.iter()
                        .flat_map(|c| [c.re.is_nan(), c.im.is_nan()])
                        .collect()
                };
                assert_eq!(nan(&got), nan(&expected), "{name} {mode}: NaN positions");
            }
        }
    }
}

#[test]
fn ptychopinn_layout_file_with_png() {
    let dir = tempfile::tempdir().unwrap();
    let (patches, x, y) = scan(12, 32);
    let input = dir.path().join("recon.npz");
    write_scan(&input, &patches, &x, &y);
    let (out, png) = (dir.path().join("out.npz"), dir.path().join("out.png"));
    let assert = cli()
        .arg("reassemble")
        .arg(&input)
        .args(["-M", "16", "-o"])
        .arg(&out)
        .arg("--png")
        .arg(&png)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(stdout.contains("reassembled 12 patches"), "{stdout}");
    assert!(
        stdout.contains("M=16)"),
        "an explicit -M is reported as given: {stdout}"
    );
    // Without -M: the default (PtychoPINN's call sites' 20, not its signature's 10) is said.
    let default = cli()
        .arg("reassemble")
        .arg(&input)
        .arg("-o")
        .arg(dir.path().join("default.npz"))
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&default.get_output().stdout).to_string();
    assert!(
        stdout.contains("M=20, the default: -M sets it)"),
        "{stdout}"
    );

    let plan = Plan::new(xy(&x, &y).view(), 32, 16).unwrap();
    let expected = plan.reassemble_position(patches.view()).unwrap();
    assert_eq!(bits(&read_c2(&out, "image")), bits(&expected));
    let mut npz = Npz::open(&out).unwrap();
    assert_eq!(
        npz.read("pad").unwrap().to_scalar_i64().unwrap(),
        plan.pad() as i64
    );
    assert_eq!(
        npz.read("canvas_size").unwrap().to_scalar_i64().unwrap(),
        plan.canvas_shape().0 as i64
    );
    let w = npz.read("weights").unwrap().to_f32().unwrap();
    assert_eq!(w, plan.weights().unwrap().clone().into_dyn());

    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    let side = plan.canvas_shape().0 as u32;
    assert!(
        info.width > 2 * side && info.height > side,
        "{}×{}",
        info.width,
        info.height
    );
}

#[test]
fn npy_directory_and_pair_and_dtype_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let (patches, x, y) = scan(6, 16);
    let real = patches.mapv(|c| c.re as f64);
    let folder = dir.path().join("scan");
    std::fs::create_dir(&folder).unwrap();
    write_npy(
        &folder.join("Y.npy"),
        &NpyView::Float64(real.view().into_dyn()),
    )
    .unwrap();
    write_npy(
        &folder.join("xcoords.npy"),
        &NpyView::Float64(x.view().into_dyn()),
    )
    .unwrap();
    write_npy(
        &folder.join("ycoords.npy"),
        &NpyView::Float64(y.view().into_dyn()),
    )
    .unwrap();
    let out = dir.path().join("a.npz");
    let assert = cli()
        .arg("reassemble")
        .arg(&folder)
        .args(["-M", "8", "-o"])
        .arg(&out)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(
        stderr.contains("float64; converted to complex64"),
        "{stderr}"
    );
    let as_complex = real.mapv(|v| Complex32::new(v as f32, 0.0));
    let expected =
        ptychostitch::reassemble_position(as_complex.view(), xy(&x, &y).view(), 8).unwrap();
    assert_eq!(bits(&read_c2(&out, "image")), bits(&expected));

    // A pair of .npy files: patches (n, N, N, 1) and offsets (n, 1, 1, 2).
    let p4 = patches.clone().insert_axis(Axis(3));
    let o4 = xy(&x, &y).into_shape_with_order((6, 1, 1, 2)).unwrap();
    let (pp, op) = (dir.path().join("p.npy"), dir.path().join("o.npy"));
    write_npy(&pp, &NpyView::Complex64(p4.view().into_dyn())).unwrap();
    write_npy(&op, &NpyView::Float64(o4.view().into_dyn())).unwrap();
    let out2 = dir.path().join("b.npz");
    cli()
        .arg("reassemble")
        .arg(&pp)
        .arg(&op)
        .args(["-M", "8", "-o"])
        .arg(&out2)
        .assert()
        .success();
    let expected = ptychostitch::reassemble_position(patches.view(), xy(&x, &y).view(), 8).unwrap();
    assert_eq!(bits(&read_c2(&out2, "image")), bits(&expected));

    // The offsets file forgotten: one line naming what is missing, not a zip error.
    let out3 = dir.path().join("c.npz");
    let failed = cli()
        .arg("reassemble")
        .arg(&pp)
        .args(["-M", "8", "-o"])
        .arg(&out3)
        .assert()
        .failure()
        .code(1);
    let stderr = String::from_utf8_lossy(&failed.get_output().stderr).to_string();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr
            .contains("p.npy: a .npy file holds the patches only; give the offsets file after it"),
        "{stderr}"
    );
    assert!(!stderr.contains("EOCD") && !out3.exists(), "{stderr}");
}

#[test]
fn coordinate_options_transform_positions() {
    let dir = tempfile::tempdir().unwrap();
    let (patches, x, y) = scan(8, 16);
    let input = dir.path().join("s.npz");
    write_scan(&input, &patches, &x, &y);
    let run = |extra: &[&str], name: &str| {
        let out = dir.path().join(name);
        cli()
            .arg("reassemble")
            .arg(&input)
            .args(["-M", "8"])
            .args(extra)
            .arg("-o")
            .arg(&out)
            .assert()
            .success();
        read_c2(&out, "image")
    };
    let cases: [(&[&str], Array2<f64>); 4] = [
        (&["--transpose"], xy(&y, &x)),
        (&["--flip-x"], xy(&x.mapv(|v| -v), &y)),
        (
            &["--flip-y", "--coord-scale", "2.5"],
            xy(&(&x * 2.5), &y.mapv(|v| -2.5 * v)),
        ),
        (&["--x", "ycoords", "--y", "xcoords"], xy(&y, &x)),
    ];
    for (i, (extra, offsets)) in cases.into_iter().enumerate() {
        let expected =
            ptychostitch::reassemble_position(patches.view(), offsets.view(), 8).unwrap();
        assert_eq!(
            bits(&run(extra, &format!("{i}.npz"))),
            bits(&expected),
            "{extra:?}"
        );
    }
}

#[test]
fn validate_prints_the_table_and_json() {
    let out = cli()
        .args(["validate", "--sizes", "20,60"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for col in ["Size", "Old (s)", "New (s)", "Speedup", "Max |diff|"] {
        assert!(stdout.contains(col), "{stdout}");
    }
    assert!(
        stdout.contains("0.00e0"),
        "max diff must be exactly zero: {stdout}"
    );
    assert!(
        out.stderr.is_empty(),
        "no progress bar when piped: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli()
        .args(["validate", "--sizes", "30", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["size"], 30);
    assert_eq!(v[0]["bit_identical"], true);
    assert_eq!(v[0]["max_abs_diff"], 0.0);
}

#[test]
fn bench_reports_throughput() {
    let out = cli()
        .args([
            "bench",
            "--sizes",
            "50,200",
            "--threads",
            "1,2",
            "--runs",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        assert!(row["median_s"].as_f64().unwrap() > 0.0);
        assert!(row["patches_per_s"].as_f64().unwrap() > 0.0);
        assert!(
            row["pixel_updates_per_s"].as_f64().unwrap() > row["patches_per_s"].as_f64().unwrap()
        );
    }
    let table = cli()
        .args(["bench", "--sizes", "50", "--runs", "1"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains("Pixel updates/s"));
}

#[test]
fn demo_error_is_below_its_bound_and_pictures_decode() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli()
        .args(["demo", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let error: f64 = stdout
        .split("scanned interior")
        .nth(1)
        .and_then(|s| s.split(": ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no error figure in {stdout}"));
    assert!(error < 2e-2, "demo error {error} above its stated bound");
    for name in ["object.png", "reassembly.png", "difference.png"] {
        let file = std::fs::File::open(dir.path().join(name)).unwrap();
        let reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .unwrap();
        assert!(reader.info().width >= 256, "{name}");
    }
    // The demo's scan file feeds `reassemble` directly.
    cli()
        .arg("reassemble")
        .arg(dir.path().join("scan.npz"))
        .arg("-o")
        .arg(dir.path().join("r.npz"))
        .assert()
        .success();
}

#[test]
fn bad_inputs_give_one_clear_line_and_leave_outputs_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (patches, x, y) = scan(5, 16);
    let good = dir.path().join("good.npz");
    write_scan(&good, &patches, &x, &y);
    let out = dir.path().join("out.npz");
    std::fs::write(&out, b"precious").unwrap();
    let untouched = || assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let run = |args: &[&str], input: &Path| {
        let mut c = cli();
        c.arg("reassemble")
            .arg(input)
            .args(args)
            .arg("-o")
            .arg(&out);
        fails(&mut c)
    };

    let e = run(&[], &dir.path().join("missing.npz"));
    assert!(
        e.contains("missing.npz") && e.to_lowercase().contains("no such file"),
        "{e}"
    );
    let e = run(&["--patches", "obj"], &good);
    assert!(
        e.contains("no array named 'obj'") && e.contains("Y, xcoords, ycoords"),
        "{e}"
    );
    let e = run(&["-M", "40"], &good);
    assert!(e.contains("`M` = 40") && e.contains("N = 16"), "{e}");
    let e = run(&["-M", "1"], &good);
    assert!(e.contains("`M` = 1"), "{e}");
    untouched();

    // Wrong shapes and dtypes.
    let bad_shape = dir.path().join("shape.npz");
    let flat = Array2::<f64>::zeros((5, 3));
    write_npz(
        &bad_shape,
        &[
            ("Y", NpyView::Complex64(patches.view().into_dyn())),
            ("off", NpyView::Float64(flat.view().into_dyn())),
        ],
    )
    .unwrap();
    let e = run(&["--offsets", "off"], &bad_shape);
    assert!(e.contains("[5, 3]") && e.contains("[x, y]"), "{e}");
    let complex_x = dir.path().join("cx.npz");
    write_npz(
        &complex_x,
        &[
            ("Y", NpyView::Complex64(patches.view().into_dyn())),
            (
                "xcoords",
                NpyView::Complex64(patches.slice(ndarray::s![.., 0, 0]).into_dyn()),
            ),
            ("ycoords", NpyView::Float64(y.view().into_dyn())),
        ],
    )
    .unwrap();
    let e = run(&[], &complex_x);
    assert!(
        e.contains("xcoords") && e.contains("complex64 cannot be read as real"),
        "{e}"
    );
    let few = dir.path().join("few.npz");
    write_scan(
        &few,
        &patches,
        &x.slice(ndarray::s![..4]).to_owned(),
        &y.slice(ndarray::s![..4]).to_owned(),
    );
    let e = run(&["-M", "8"], &few);
    assert!(
        e.contains("must both have shape") || e.contains("5 patches"),
        "{e}"
    );
    let nan = dir.path().join("nan.npz");
    let mut xn = x.clone();
    xn[2] = f64::NAN;
    write_scan(&nan, &patches, &xn, &y);
    let e = run(&["-M", "8"], &nan);
    assert!(e.contains("offsets[2]") && e.contains("NaN"), "{e}");
    untouched();

    // Corrupt and truncated files.
    let garbage = dir.path().join("garbage.npz");
    std::fs::write(&garbage, b"this is not a zip archive at all").unwrap();
    let e = run(&[], &garbage);
    assert!(e.contains("not a readable .npz"), "{e}");
    let truncated = dir.path().join("trunc.npz");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = run(&[], &truncated);
    assert!(e.contains("trunc.npz"), "{e}");
    let folder = dir.path().join("d");
    std::fs::create_dir(&folder).unwrap();
    let npy = NpyView::Complex64(patches.view().into_dyn()).to_npy_bytes();
    std::fs::write(folder.join("Y.npy"), &npy[..npy.len() - 10]).unwrap();
    let e = run(&[], &folder);
    assert!(e.contains("truncated"), "{e}");
    untouched();

    // Unwritable output path.
    let mut c = cli();
    c.arg("reassemble")
        .arg(&good)
        .args(["-M", "8", "-o"])
        .arg(dir.path().join("no/such/dir/out.npz"));
    let e = fails(&mut c);
    assert!(e.contains("no/such/dir/out.npz"), "{e}");
    untouched();
}
