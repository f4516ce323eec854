//! The CLI against what a new user (or a hostile file) throws at it: every case gives one
//! `error:` line and a non-zero exit, or a warning, and never a panic, an abort, a lost input or
//! a half-written file.

mod common;

use common::*;
use ndarray::{Array1, Array2, Array3};
use ptychostitch::Complex32;
use ptychostitch::npy::{NpyView, write_npy, write_npz};
use std::path::Path;
use std::process::Command as Process;
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ptychostitch")
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

fn npy_with_descr(path: &Path, descr: &str) {
    let header = format!("{{'descr': {descr}, 'fortran_order': False, 'shape': (2, 4, 4), }}");
    let mut bytes = npy_prefix(&header);
    bytes.extend_from_slice(&[0; 256]);
    std::fs::write(path, bytes).unwrap();
}

/// Item 1: malformed dtype codes are errors, not panics.
#[test]
fn malformed_dtypes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let offsets = dir.path().join("o.npy");
    let o = Array2::<f64>::zeros((2, 2));
    write_npy(&offsets, &NpyView::Float64(o.view().into_dyn())).unwrap();
    for descr in ["''", "'<'", "'<é8'", "'>'", "'<i'"] {
        let patches = dir.path().join("p.npy");
        npy_with_descr(&patches, descr);
        let e = fails(
            cli()
                .arg("reassemble")
                .arg(&patches)
                .arg(&offsets)
                .args(["-M", "2", "-o"])
                .arg(dir.path().join("r.npz")),
        );
        assert!(
            e.contains("p.npy") && e.contains("cannot be read as complex"),
            "{descr}: {e}"
        );
        assert!(
            !e.contains("note:"),
            "no conversion note before a failed conversion: {e}"
        );
    }
}

/// Item 2: an output that is an input, or two outputs that are one file, are refused before
/// anything is read, whatever the spelling.
#[test]
fn outputs_never_replace_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (patches, x, y) = scan(6, 16);
    let input = dir.path().join("same.npz");
    write_scan(&input, &patches, &x, &y);
    let original = std::fs::read(&input).unwrap();
    let spelled = dir.path().join(".").join("same.npz");
    let linked = dir.path().join("link.npz");
    std::fs::hard_link(&input, &linked).unwrap();
    let cases: Vec<Vec<std::ffi::OsString>> = vec![
        vec!["-o".into(), input.clone().into()],
        vec!["-o".into(), spelled.into()],
        vec!["-o".into(), linked.into()],
        vec![
            "-o".into(),
            dir.path().join("o.npz").into(),
            "--png".into(),
            input.clone().into(),
        ],
        vec![
            "-o".into(),
            dir.path().join("o.png.npz").into(),
            "--png".into(),
            dir.path().join("o.png.npz").into(),
        ],
    ];
    for args in cases {
        let e = fails(
            cli()
                .arg("reassemble")
                .arg(&input)
                .args(["-M", "8"])
                .args(&args),
        );
        assert!(
            e.contains("refusing to overwrite an input") || e.contains("must end in .png"),
            "{args:?}: {e}"
        );
        assert_eq!(std::fs::read(&input).unwrap(), original, "{args:?}");
    }
    // Two outputs that are one file (same name through different spellings).
    let e = fails(
        cli()
            .arg("reassemble")
            .arg(&input)
            .args(["-M", "8", "-o"])
            .arg(dir.path().join("x.npz"))
            .arg("--png")
            .arg(dir.path().join("x.npz")),
    );
    assert!(e.contains("--png") && e.contains(".png"), "{e}");
    // The .npy-pair form: -o naming the offsets file.
    let (p, o) = (dir.path().join("p.npy"), dir.path().join("o.npz"));
    write_npy(&p, &NpyView::Complex64(patches.view().into_dyn())).unwrap();
    std::fs::write(&o, b"offsets, precious").unwrap();
    let e = fails(cli().arg("reassemble").arg(&p).arg(&o).arg("-o").arg(&o));
    assert!(e.contains("refusing to overwrite an input"), "{e}");
    assert_eq!(std::fs::read(&o).unwrap(), b"offsets, precious");
}

/// Item 3: out-of-memory is an error with the size it needed, never an abort.
#[test]
fn memory_exhaustion_is_an_error_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["demo", "--positions", "10000000", "--out"],
        vec!["bench", "--sizes", "100000000", "--runs", "1"],
    ] {
        let mut c = cli();
        if args[0] == "demo" {
            c.args(&args).arg(dir.path().join("demo"));
        } else {
            c.args(&args);
        }
        let e = fails(&mut c);
        // The demo refuses up front with what its patches would need; bench fails its
        // allocation with the size it asked for.
        assert!(
            (e.contains("out of memory: could not allocate") && e.contains("iB for"))
                || (e.contains("the demo's patches would need") && e.contains("iB")),
            "{args:?}: {e}"
        );
    }
    // `reassemble` under `ulimit -v`: a canvas of about 17 GiB is refused up front, naming the
    // limit; nothing is written and no temporary file is left.
    let (patches, x, mut y) = scan(10, 16);
    y[9] = 2e4;
    let input = dir.path().join("far.npz");
    write_scan(&input, &patches, &x, &y);
    let out = dir.path().join("out.npz");
    std::fs::write(&out, b"precious").unwrap();
    let status = Process::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 2500000; exec '{}' reassemble '{}' -M 8 -o '{}'",
            bin(),
            input.display(),
            out.display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert_eq!(status.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ulimit -v") && stderr.contains("GiB"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    assert!(
        temporaries(dir.path()).is_empty(),
        "{:?}",
        temporaries(dir.path())
    );
}

/// Item 4 and 7: an outlier that inflates the canvas and positions in metres are warned about.
#[test]
fn suspicious_scans_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let (patches, mut x, y) = scan(10, 16);
    x[9] = 600.0;
    let input = dir.path().join("outlier.npz");
    write_scan(&input, &patches, &x, &y);
    let out = cli()
        .arg("reassemble")
        .arg(&input)
        .args(["-M", "8", "-o"])
        .arg(dir.path().join("r.npz"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("warning: patch 9 at [x, y] = [600"),
        "{stderr}"
    );
    let (patches, x, y) = scan(10, 16);
    let metres = dir.path().join("metres.npz");
    write_scan(&metres, &patches, &(&x * 1e-7), &(&y * 1e-7));
    let out = cli()
        .arg("reassemble")
        .arg(&metres)
        .args(["-M", "8", "-o"])
        .arg(dir.path().join("m.npz"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: all 10 positions lie within") && stderr.contains("--coord-scale"),
        "{stderr}"
    );
    // The same positions with the scale factor: no warning.
    let out = cli()
        .arg("reassemble")
        .arg(&metres)
        .args(["-M", "8", "--coord-scale", "1e7", "-o"])
        .arg(dir.path().join("s.npz"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Item 5: a small archive whose member inflates far beyond what its header declares is read
/// only as far as declared: fast, and with the declared result.
#[test]
fn a_decompression_bomb_is_read_only_as_far_as_declared() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.npz");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let patches = Array3::from_elem((10, 32, 32), Complex32::new(1.0, 0.5));
    let mut member = NpyView::Complex64(patches.view().into_dyn()).to_npy_bytes();
    member.extend(std::iter::repeat_n(0_u8, 512 << 20));
    zip.start_file("Y.npy", deflated).unwrap();
    zip.write_all(&member).unwrap();
    drop(member);
    for (key, v) in [("xcoords", 1.0), ("ycoords", 2.0)] {
        let a = Array1::from_shape_fn(10, |k| k as f64 * v);
        zip.start_file(format!("{key}.npy"), deflated).unwrap();
        zip.write_all(&NpyView::Float64(a.view().into_dyn()).to_npy_bytes())
            .unwrap();
    }
    zip.finish().unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 2 << 20);
    // The declared 80 KiB are read and stitched; the 512 MiB after them are never inflated
    // (counted in the library's test, `npy_hostile::reads_stop_at_the_declared_size`,
    // through the same `Npz::read`; a timer here passed or failed with the machine's speed).
    cli()
        .arg("reassemble")
        .arg(&path)
        .args(["-M", "16", "-o"])
        .arg(dir.path().join("r.npz"))
        .assert()
        .success();
}

/// Item 6: SIGTERM and SIGINT at any moment leave no temporary file, and the image and its
/// picture are either both the old files or both the new ones.
#[test]
fn signals_leave_no_temporaries_and_keep_outputs_paired() {
    let dir = tempfile::tempdir().unwrap();
    // A scan whose outputs take a while to write (a 2,000² canvas: ~48 MB of .npz plus a PNG).
    let n = 40;
    let patches = Array3::from_elem((n, 16, 16), Complex32::new(1.0, 0.25));
    let x = Array1::from_shape_fn(n, |k| (k % 8) as f64 * 250.0);
    let y = Array1::from_shape_fn(n, |k| (k / 8) as f64 * 400.0);
    let input = dir.path().join("wide.npz");
    write_scan(&input, &patches, &x, &y);
    let (npz, png) = (dir.path().join("out.npz"), dir.path().join("out.png"));
    let mut outcomes = [0_usize; 2];
    for (i, delay_ms) in [5_u64, 40, 80, 120, 160, 200, 260, 320, 400, 500]
        .iter()
        .enumerate()
    {
        std::fs::write(&npz, b"old").unwrap();
        std::fs::write(&png, b"old").unwrap();
        let mut child = Process::new(bin())
            .arg("reassemble")
            .arg(&input)
            .args(["-M", "8", "-o"])
            .arg(&npz)
            .arg("--png")
            .arg(&png)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*delay_ms));
        let signal = if i % 2 == 0 { "-TERM" } else { "-INT" };
        let _ = Process::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status();
        let status = child.wait().unwrap();
        assert!(
            temporaries(dir.path()).is_empty(),
            "after {signal} at {delay_ms} ms: {:?}",
            temporaries(dir.path())
        );
        let new_npz = std::fs::read(&npz).unwrap() != b"old";
        let new_png = std::fs::read(&png).unwrap() != b"old";
        assert_eq!(
            new_npz, new_png,
            "after {signal} at {delay_ms} ms: image and picture split ({status})"
        );
        outcomes[new_npz as usize] += 1;
        if new_npz {
            assert!(std::fs::read(&npz).unwrap().starts_with(b"PK"));
            assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
        } else {
            assert!(!status.success(), "exit 0 without writing");
        }
    }
    // The delays are meant to hit both sides of the commit; a machine fast enough to finish in
    // 5 ms or slow enough not to finish in 500 ms still checks the invariant above.
    eprintln!(
        "signal outcomes: {} interrupted, {} completed",
        outcomes[0], outcomes[1]
    );
}

/// Item 10: the dtypes Python accepts, the CLI accepts (float16 included).
#[test]
fn float16_integer_and_bool_patches_are_converted() {
    let dir = tempfile::tempdir().unwrap();
    let (patches, x, y) = scan(5, 16);
    let o = xy(&x, &y);
    let offsets = dir.path().join("o.npy");
    write_npy(&offsets, &NpyView::Float64(o.view().into_dyn())).unwrap();
    let real = patches.mapv(|c| c.re);
    for (descr, size, encode) in [
        (
            "'<f2'",
            2,
            &(|v: f32| half_bits(v).to_le_bytes().to_vec()) as &dyn Fn(f32) -> Vec<u8>,
        ),
        ("'<i4'", 4, &|v: f32| (v as i32).to_le_bytes().to_vec()),
        ("'|b1'", 1, &|v: f32| vec![(v != 0.0) as u8]),
    ] {
        let header =
            format!("{{'descr': {descr}, 'fortran_order': False, 'shape': (5, 16, 16), }}");
        let mut bytes = npy_prefix(&header);
        for &v in real.iter() {
            bytes.extend(encode(v));
        }
        assert_eq!(
            bytes.len(),
            10 + header.len() + 5 * 16 * 16 * size,
            "{descr}"
        );
        let p = dir.path().join("p.npy");
        std::fs::write(&p, bytes).unwrap();
        let out = cli()
            .arg("reassemble")
            .arg(&p)
            .arg(&offsets)
            .args(["-M", "8", "-o"])
            .arg(dir.path().join("r.npz"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{descr}: {stderr}");
        assert!(
            stderr.contains("converted to complex64"),
            "{descr}: {stderr}"
        );
    }
}

/// IEEE half-precision bits of a small integer-valued `v` (enough for this test's values).
fn half_bits(v: f32) -> u16 {
    if v == 0.0 {
        return 0;
    }
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mantissa = ((bits >> 13) & 0x3ff) as u16;
    sign | ((exp as u16) << 10) | mantissa
}

/// Item 11: messages that were wrong or confusing.
#[test]
fn messages_say_what_is_wrong_once() {
    let dir = tempfile::tempdir().unwrap();
    let (patches, x, y) = scan(5, 16);
    let run = |input: &Path, args: &[&str]| {
        fails(
            cli()
                .arg("reassemble")
                .arg(input)
                .args(args)
                .arg("-o")
                .arg(dir.path().join("r.npz")),
        )
    };
    // Offsets of 1e30: the canvas side is not a saturated integer.
    let huge = dir.path().join("huge.npz");
    let mut xh = x.clone();
    xh[1] = 1e30;
    write_scan(&huge, &patches, &xh, &y);
    let e = run(&huge, &["-M", "8"]);
    assert!(
        e.contains("e30×") && !e.contains("18446744073709551615"),
        "{e}"
    );
    // Offsets of 3e38: their float32 mean overflows; said so, not "inf EiB".
    let over = dir.path().join("over.npz");
    write_scan(&over, &patches, &x.mapv(|_| 3e38), &y);
    let e = run(&over, &["-M", "8"]);
    assert!(
        e.contains("too large for float32") && !e.contains("inf"),
        "{e}"
    );
    // A 0-d Y: a shape error, not "M out of range for 0×0 patches".
    let zero_d = dir.path().join("zero_d.npz");
    let scalar = ndarray::arr0(Complex32::new(1.0, 0.0)).into_dyn();
    write_npz(
        &zero_d,
        &[
            ("Y", NpyView::Complex64(scalar.view())),
            ("xcoords", NpyView::Float64(x.view().into_dyn())),
            ("ycoords", NpyView::Float64(y.view().into_dyn())),
        ],
    )
    .unwrap();
    let e = run(&zero_d, &[]);
    assert!(
        e.contains("`patches` has shape []") && !e.contains("`M`"),
        "{e}"
    );
    // OS errors once, not twice.
    let folder = dir.path().join("folder.npy");
    std::fs::create_dir(&folder).unwrap();
    let offsets = dir.path().join("o.npy");
    let o = xy(&x, &y);
    write_npy(&offsets, &NpyView::Float64(o.view().into_dyn())).unwrap();
    let e = fails(
        cli()
            .arg("reassemble")
            .arg(&folder)
            .arg(&offsets)
            .arg("-o")
            .arg(dir.path().join("r.npz")),
    );
    assert_eq!(
        e.matches("not a regular file (a directory)").count(),
        1,
        "{e}"
    );
    // Keys do not apply to the two-file form: said, not ignored.
    let p = dir.path().join("p.npy");
    write_npy(&p, &NpyView::Complex64(patches.view().into_dyn())).unwrap();
    let e = fails(
        cli()
            .arg("reassemble")
            .arg(&p)
            .arg(&offsets)
            .args(["--offsets", "whatever", "-o"])
            .arg(dir.path().join("r.npz")),
    );
    assert!(
        e.contains("--offsets") && e.contains("two .npy files"),
        "{e}"
    );
    // A picture is a PNG: `--png x.tif` is refused, not written as PNG bytes.
    let good = dir.path().join("good.npz");
    write_scan(&good, &patches, &x, &y);
    let tif = dir.path().join("x.tif");
    let e = fails(
        cli()
            .arg("reassemble")
            .arg(&good)
            .args(["-M", "8", "-o"])
            .arg(dir.path().join("r.npz"))
            .arg("--png")
            .arg(&tif),
    );
    assert!(e.contains("must end in .png"), "{e}");
    assert!(!tif.exists());
}

/// Item 1 (offsets): PtychoPINN's `(n, 1, 2, 1)` layout through the CLI, same bits as `(n, 2)`.
#[test]
fn every_offset_layout_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (patches, x, y) = scan(7, 16);
    let o = xy(&x, &y);
    let p = dir.path().join("p.npy");
    write_npy(&p, &NpyView::Complex64(patches.view().into_dyn())).unwrap();
    let mut images = Vec::new();
    for shape in [vec![7, 2], vec![7, 1, 1, 2], vec![7, 1, 2, 1]] {
        let a =
            ndarray::ArrayD::from_shape_vec(shape.clone(), o.iter().copied().collect()).unwrap();
        let offsets = dir.path().join("o.npy");
        write_npy(&offsets, &NpyView::Float64(a.view())).unwrap();
        let out = dir.path().join(format!("r{}.npz", shape.len()));
        cli()
            .arg("reassemble")
            .arg(&p)
            .arg(&offsets)
            .args(["-M", "8", "-o"])
            .arg(&out)
            .assert()
            .success();
        images.push(bits(&read_c2(&out, "image")));
    }
    assert!(images.windows(2).all(|w| w[0] == w[1]));
}

/// `--device cuda`: the same bits as the CPU where a GPU is found; one clear `GpuUnavailable`
/// line and exit 1 where none is (CI).
#[test]
fn device_cuda_is_exact_or_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (patches, x, y) = scan(12, 16);
    let input = dir.path().join("s.npz");
    write_scan(&input, &patches, &x, &y);
    let (cpu, gpu) = (dir.path().join("cpu.npz"), dir.path().join("gpu.npz"));
    cli()
        .arg("reassemble")
        .arg(&input)
        .args(["-M", "8", "-o"])
        .arg(&cpu)
        .assert()
        .success();
    let out = cli()
        .arg("reassemble")
        .arg(&input)
        .args(["-M", "8", "--device", "cuda", "-o"])
        .arg(&gpu)
        .output()
        .unwrap();
    if out.status.success() {
        assert_eq!(bits(&read_c2(&gpu, "image")), bits(&read_c2(&cpu, "image")));
    } else {
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            e.starts_with("error: GpuUnavailable: ") && e.trim_end().lines().count() == 1,
            "{e}"
        );
        assert!(!gpu.exists());
        for sub in [
            &["validate", "--sizes", "50"][..],
            &["bench", "--sizes", "50", "--runs", "1"],
        ] {
            let e = fails(cli().args(sub).args(["--device", "cuda"]));
            assert!(e.starts_with("error: GpuUnavailable: "), "{e}");
        }
    }
}

/// `make-scan` with a count no machine can hold: one `error:` line naming the size, exit 1, and
/// no file left behind (it used to abort with "memory allocation failed", or panic).
#[test]
fn make_scan_refuses_impossible_sizes_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let (p, o) = (dir.path().join("p.npy"), dir.path().join("o.npy"));
    for n in ["1000000000000", "18446744073709551615"] {
        let e = fails(cli().args(["make-scan", "-n", n]).arg(&p).arg(&o));
        assert!(
            e.starts_with("error: out of memory")
                && e.contains(n)
                && e.trim_end().lines().count() == 1,
            "{n}: {e}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{n}: files left behind"
        );
    }
}

/// Checks that need no input come before reading it: an output directory that cannot take a
/// file, and (without a GPU) `--device cuda`. The input here is garbage, so an error about it
/// would mean it was read first.
#[test]
fn checks_that_need_no_input_come_first() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.npy");
    std::fs::write(&garbage, b"not an array").unwrap();
    let offsets = dir.path().join("o.npy");
    std::fs::write(&offsets, b"nor this").unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let e = fails(
        cli()
            .arg("reassemble")
            .arg(&garbage)
            .arg(&offsets)
            .args(["-M", "8", "-o"])
            .arg(not_a_dir.join("out.npz")),
    );
    assert!(
        e.contains("cannot write in") && !e.contains("garbage"),
        "{e}"
    );
    let gpu_here = cli()
        .args(["validate", "--sizes", "2", "--device", "cuda"])
        .output()
        .unwrap()
        .status
        .success();
    if gpu_here {
        eprintln!("SKIPPED the --device cuda half: a GPU is here");
        return;
    }
    let e = fails(
        cli()
            .arg("reassemble")
            .arg(&garbage)
            .arg(&offsets)
            .args(["-M", "8", "--device", "cuda", "-o"])
            .arg(dir.path().join("out.npz")),
    );
    assert!(
        e.starts_with("error: GpuUnavailable: ") && !e.contains("garbage"),
        "{e}"
    );
    assert_eq!(e.matches("GpuUnavailable").count(), 1, "the name once: {e}");
}

/// A scan of `n` constant patches of `value` on a grid `step` px apart (its canvas is large
/// enough for the output to take some milliseconds to write).
fn constant_scan(path: &Path, value: Complex32, step: f64) {
    let n = 36;
    let patches = Array3::from_elem((n, 16, 16), value);
    let x = Array1::from_shape_fn(n, |k| (k % 6) as f64 * step);
    let y = Array1::from_shape_fn(n, |k| (k / 6) as f64 * step);
    write_scan(path, &patches, &x, &y);
}

/// `reassemble INPUT -M 8 -o NPZ --png PNG`, its output silenced.
fn writer(input: &Path, npz: &Path, png: &Path) -> Process {
    let mut command = Process::new(bin());
    command
        .arg("reassemble")
        .arg(input)
        .args(["-M", "8", "-o"])
        .arg(npz)
        .arg("--png")
        .arg(png)
        .stdout(std::process::Stdio::null());
    command
}

/// Two processes writing the same `-o`/`--png` pair: whichever finishes last, the image and the
/// picture come from one run (they could interleave their renames and mix: 6 runs of 60).
#[test]
fn two_writers_leave_a_matching_pair() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = [dir.path().join("a.npz"), dir.path().join("b.npz")];
    constant_scan(&inputs[0], Complex32::new(1.0, 0.25), 100.0);
    constant_scan(&inputs[1], Complex32::new(-2.0, 0.5), 100.0);
    // Each input's picture, written alone.
    let pictures: Vec<Vec<u8>> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let png = dir.path().join(format!("alone{i}.png"));
            let npz = dir.path().join(format!("alone{i}.npz"));
            assert!(writer(input, &npz, &png).status().unwrap().success());
            std::fs::read(&png).unwrap()
        })
        .collect();
    assert_ne!(pictures[0], pictures[1]);
    let (npz, png) = (dir.path().join("out.npz"), dir.path().join("out.png"));
    for round in 0..30 {
        let children: Vec<_> = inputs
            .iter()
            .map(|input| writer(input, &npz, &png).spawn().unwrap())
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        let image = read_c2(&npz, "image");
        let from = usize::from(image.iter().any(|v| v.re < 0.0));
        assert!(
            std::fs::read(&png).unwrap() == pictures[from],
            "round {round}: the picture is not the image's"
        );
    }
}

/// A FIFO or a device as an input: one clear line at once (a FIFO used to block `open` until a
/// writer came; `/dev/null` said "No such device").
#[test]
fn non_files_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("scan.npy");
    let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `name` is a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    for (input, kind) in [
        (fifo.as_path(), "a FIFO"),
        (Path::new("/dev/null"), "a character device"),
    ] {
        let mut child = Process::new(bin())
            .arg("reassemble")
            .arg(input)
            .args(["-o"])
            .arg(dir.path().join("out.npz"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                child.kill().unwrap();
                panic!("{}: still waiting after 20 s", input.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(
            e.trim_end(),
            format!(
                "error: {}: not a regular file ({kind}); arrays are read from files on a disk",
                input.display()
            )
        );
    }
}

/// A file-size limit (`ulimit -f`) smaller than the output: one `error:` line and no temporary
/// file, not a death by SIGXFSZ ("File size limit exceeded", exit 153) that left one.
#[test]
fn a_file_size_limit_is_an_error_not_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("scan.npz");
    constant_scan(&input, Complex32::new(1.0, 0.25), 100.0);
    let npz = dir.path().join("out.npz");
    for extra in [&[][..], &["--png", "out.png"][..]] {
        let out = Process::new("sh")
            .current_dir(dir.path())
            .arg("-c")
            .arg("ulimit -f 64 && exec \"$0\" \"$@\"")
            .arg(bin())
            .arg("reassemble")
            .arg(&input)
            .args(["-M", "8", "-o"])
            .arg(&npz)
            .args(extra)
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{e}");
        assert_eq!(
            e.trim_end(),
            format!("error: {}: File too large (os error 27)", npz.display())
        );
        assert!(temporaries(dir.path()).is_empty());
        assert!(!npz.exists() && !dir.path().join("out.png").exists());
    }
}

/// Whole-number options: a negative or zero value says what the option wants (clap suggested
/// `-- -1`, which does not work for an option), and `demo` makes no folder it cannot fill.
#[test]
fn numeric_options_say_what_they_want() {
    for (args, want) in [
        (
            &["reassemble", "--chunk", "-1", "x.npz"][..],
            "invalid value '-1' for '--chunk <PATCHES>': must be at least 1, not -1",
        ),
        (
            &["reassemble", "--threads", "-2", "x.npz"][..],
            "invalid value '-2' for '--threads <THREADS>': must be 0 (all cores) or a positive number, not -2",
        ),
        (
            &["bench", "--sizes", "10,0"][..],
            "invalid value '0' for '--sizes <SIZES>': must be at least 1, not 0",
        ),
        (
            &["make-scan", "-n", "-5", "p.npy", "o.npy"][..],
            "invalid value '-5' for '--n <N>': must be at least 1, not -5",
        ),
    ] {
        let out = cli().args(args).output().unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{e}");
        assert!(e.starts_with(&format!("error: {want}\n")), "{e}");
        assert!(!e.contains("-- -"), "{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("demo");
    let out = cli()
        .args(["demo", "--positions", "0", "--out"])
        .arg(&folder)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!folder.exists(), "demo left an empty folder");
}

/// Round 4, item 6: standard output that cannot be written is never a panic. A reader that went
/// away ends the command quietly (status 141, as SIGPIPE would); a full device is one error line.
#[test]
fn standard_output_that_fails_is_not_a_panic() {
    use std::process::Stdio;
    // A pipe whose reading end is closed before the command writes.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Process::new(bin())
        .args(["validate", "--sizes", "20"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "a closed pipe ends quietly: {stderr}");
    // A full device.
    if Path::new("/dev/full").exists() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = Process::new(bin())
            .args(["validate", "--sizes", "20"])
            .stdout(Stdio::from(full))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: writing to standard output:"),
            "{stderr}"
        );
    }
}

/// Round 4, item 8: a path with a newline or an escape character stays one error line, with the
/// control characters escaped.
#[test]
fn control_characters_in_paths_are_escaped_in_the_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad\nname\u{1b}[31m.npz");
    let out = Process::new(bin())
        .args(["reassemble"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bad\\nname\\u{1b}[31m.npz"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'));
}

/// Round 4, item 10: `demo` replaces its five files together or not at all. A run that fails
/// on its last and largest file (`scan.npz`, past a file-size limit) leaves every earlier
/// file as the previous run wrote it, and no temporary file.
#[test]
fn demo_replaces_its_files_together_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let first = Process::new(bin())
        .args(["demo", "--positions", "200", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let names = [
        "object.png",
        "difference.png",
        "reassembly.png",
        "reassembly.npz",
        "scan.npz",
    ];
    let before: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(out.join(n)).unwrap())
        .collect();
    // Another scan (more positions): every file would change; scan.npz (about 6.6 MB) cannot
    // be written under a 1 MiB limit, the others could.
    let second = Process::new("sh")
        .arg("-c")
        .arg("ulimit -f 1024 && exec \"$0\" \"$@\"")
        .arg(bin())
        .args(["demo", "--positions", "400", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("scan.npz") && stderr.contains("File too large"),
        "{stderr}"
    );
    for (name, old) in names.iter().zip(&before) {
        assert_eq!(
            &std::fs::read(out.join(name)).unwrap(),
            old,
            "{name} was replaced alone"
        );
    }
    assert!(temporaries(&out).is_empty());
}

/// Round 4, item 5: counts that scale an allocation beyond memory are one error line, not an
/// allocation abort.
#[test]
fn huge_counts_are_errors_not_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("huge");
    for (args, says) in [
        (
            vec!["bench", "--runs", "100000000000"],
            "could not allocate",
        ),
        (
            vec![
                "demo",
                "--positions",
                "10000000000",
                "--out",
                out_dir.to_str().unwrap(),
            ],
            "--positions 10000000000",
        ),
    ] {
        let out = Process::new(bin()).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(says),
            "{stderr}"
        );
    }
    assert!(!out_dir.exists());
}

/// Round 4, item 11: a --coord-scale that puts every position on one point says so.
#[test]
fn a_coord_scale_that_collapses_the_scan_warns() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("scan.npz");
    constant_scan(&input, Complex32::new(1.0, 0.5), 3.0);
    for (scale, shown, warns) in [
        ("0", "0.0", true),
        ("1e-300", "1e-300", true),
        ("1", "1.0", false),
        ("0.5", "0.5", false),
    ] {
        let out = Process::new(bin())
            .current_dir(dir.path())
            .arg("reassemble")
            .arg(&input)
            .args(["-M", "8", "--coord-scale", scale, "-o", "out.npz"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{scale}: {stderr}");
        assert_eq!(
            stderr.contains(&format!(
                "warning: --coord-scale {shown} puts all 36 positions on one point"
            )),
            warns,
            "{scale}: {stderr}"
        );
    }
}
