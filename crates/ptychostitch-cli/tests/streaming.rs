//! Larger than memory: `make-scan` writes a scan in chunks, and `reassemble` streams a
//! memory-mapped `.npy` through the accumulator with peak memory of about canvas + one chunk,
//! measured from the child's own resource usage, and the same bits as the in-memory path.

mod common;

use common::*;
use ptychostitch::npy::{NpyArray, Npz};
use ptychostitch::synthetic::{BENCH_CROP, BENCH_PATCH, bench_grid};
use ptychostitch::{Complex32, Plan};
use std::process::Command as Process;

/// Runs the binary with `args` and returns its peak resident memory in bytes (`wait4`'s
/// `ru_maxrss` for exactly that child, not a timer and not other tests' children).
#[cfg(target_os = "linux")]
fn peak_rss(args: &[&std::ffi::OsStr]) -> u64 {
    // Reaped by `wait4` below, which also reports the child's resource usage.
    #[allow(clippy::zombie_processes)]
    let child = Process::new(env!("CARGO_BIN_EXE_ptychostitch"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: all-zero bytes are a valid `rusage` (plain integers and timevals).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; `status` and `usage` are valid, exclusive pointers.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{args:?} failed"
    );
    usage.ru_maxrss as u64 * 1024
}

#[cfg(target_os = "linux")]
#[test]
fn a_mapped_scan_streams_in_bounded_memory_with_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    let (p, o, out) = (
        dir.path().join("p.npy"),
        dir.path().join("o.npy"),
        dir.path().join("r.npz"),
    );
    let n = 6000;
    cli()
        .args(["make-scan", "-n", &n.to_string()])
        .arg(&p)
        .arg(&o)
        .assert()
        .success();
    let file_bytes = std::fs::metadata(&p).unwrap().len();
    assert_eq!(file_bytes, 128 + (n * BENCH_PATCH * BENCH_PATCH * 8) as u64);
    let chunk = 256;
    let peak = peak_rss(&[
        "reassemble".as_ref(),
        p.as_os_str(),
        o.as_os_str(),
        "-M".as_ref(),
        "20".as_ref(),
        "--chunk".as_ref(),
        chunk.to_string().as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    let (patches, offsets) = bench_grid(n, 1).unwrap();
    let plan = Plan::new(offsets.view(), BENCH_PATCH, BENCH_CROP).unwrap();
    let side = plan.canvas_shape().0 as u64;
    // Canvas (image + weights), the chunk being read and the one the allocator may still hold,
    // and a stated margin for the program itself (binary, allocator, thread stacks, output
    // buffers): 40 MiB. Measured with the memory map: 14 MiB typically, 38 MiB once on a loaded
    // machine; with positional reads into a chunk buffer, 51 MiB in all here.
    let chunk_bytes = (chunk * BENCH_PATCH * BENCH_PATCH * 8) as u64;
    let bound = 12 * side * side + 2 * chunk_bytes + (40 << 20);
    assert!(
        peak < bound,
        "peak RSS {} MiB ≥ canvas + chunk + 40 MiB = {} MiB (file: {} MiB)",
        peak >> 20,
        bound >> 20,
        file_bytes >> 20
    );
    assert!(peak * 4 < file_bytes, "the stack was streamed, not loaded");
    // The same bits as the in-memory one-shot path, and as the default chunking.
    let expected = plan.reassemble_position(patches.view()).unwrap();
    assert_eq!(bits(&read_c2(&out, "image")), bits(&expected));
    drop(patches);
    let whole = dir.path().join("whole.npz");
    cli()
        .arg("reassemble")
        .arg(&p)
        .arg(&o)
        .args(["-M", "20", "--chunk", "100000", "-o"])
        .arg(&whole)
        .assert()
        .success();
    assert_eq!(bits(&read_c2(&whole, "image")), bits(&expected));
}

#[test]
fn npz_members_are_mapped_when_stored_and_read_when_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let (patches, x, y) = scan(9, 16);
    let stored = dir.path().join("stored.npz");
    write_scan(&stored, &patches, &x, &y);
    let mapped = Npz::open(&stored)
        .unwrap()
        .open_in_place("Y")
        .unwrap()
        .expect("stored members map");
    assert!(mapped.is_in_file());
    let view = mapped.to_complex32().unwrap();
    assert_eq!(view.shape(), &[9, 16, 16]);
    assert_eq!(
        mapped.to_complex32_rows(2, 3).unwrap(),
        view.slice(ndarray::s![2..5, .., ..]).into_dyn()
    );
    // A compressed member (np.savez_compressed) cannot be mapped: it is read instead, and
    // reassembles to the same bits.
    let compressed = dir.path().join("compressed.npz");
    {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&compressed).unwrap());
        let deflated = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (key, view) in [
            (
                "Y",
                ptychostitch::npy::NpyView::Complex64(patches.view().into_dyn()),
            ),
            (
                "xcoords",
                ptychostitch::npy::NpyView::Float64(x.view().into_dyn()),
            ),
            (
                "ycoords",
                ptychostitch::npy::NpyView::Float64(y.view().into_dyn()),
            ),
        ] {
            zip.start_file(format!("{key}.npy"), deflated).unwrap();
            zip.write_all(&view.to_npy_bytes()).unwrap();
        }
        zip.finish().unwrap();
    }
    assert!(
        Npz::open(&compressed)
            .unwrap()
            .open_in_place("Y")
            .unwrap()
            .is_none()
    );
    let (a, b) = (dir.path().join("a.npz"), dir.path().join("b.npz"));
    for (input, out) in [(&stored, &a), (&compressed, &b)] {
        cli()
            .arg("reassemble")
            .arg(input)
            .args(["-M", "8", "--chunk", "2", "-o"])
            .arg(out)
            .assert()
            .success();
    }
    assert_eq!(bits(&read_c2(&a, "image")), bits(&read_c2(&b, "image")));
    let npy = dir.path().join("Y.npy");
    ptychostitch::npy::write_npy(
        &npy,
        &ptychostitch::npy::NpyView::Complex64(patches.view().into_dyn()),
    )
    .unwrap();
    let m = NpyArray::open_in_place(&npy).unwrap();
    assert!(m.is_in_file());
    assert!(
        m.complex32_view().is_none(),
        "arrays left in the file are read a chunk at a time"
    );
    let rows = m.to_complex32_rows(3, 2).unwrap();
    assert_eq!(rows.shape(), &[2, 16, 16]);
    assert_eq!(rows[[0, 4, 5]], patches[[3, 4, 5]]);
    let _: Complex32 = rows[[1, 0, 0]];
}

/// A file truncated or rewritten after it was opened: one error naming the file, for the rows
/// read afterwards, never a signal or stale bytes.
#[test]
fn files_that_change_while_read_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (patches, _, _) = scan(40, 16);
    let npy = dir.path().join("Y.npy");
    let write = || {
        ptychostitch::npy::write_npy(
            &npy,
            &ptychostitch::npy::NpyView::Complex64(patches.view().into_dyn()),
        )
        .unwrap()
    };
    write();
    let m = NpyArray::open_in_place(&npy).unwrap();
    assert!(m.to_complex32_rows(0, 10).is_ok());
    let file = std::fs::OpenOptions::new().write(true).open(&npy).unwrap();
    file.set_len(4000).unwrap();
    let e = m.to_complex32_rows(10, 10).unwrap_err().to_string();
    assert!(
        e.contains("Y.npy") && e.contains("truncated") && e.contains("while it was being read"),
        "{e}"
    );
    // Rewritten in place at the same size (np.save over the input): a new modification time.
    write();
    let m = NpyArray::open_in_place(&npy).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    let file = std::fs::OpenOptions::new().write(true).open(&npy).unwrap();
    file.set_modified(later).unwrap();
    let e = m.to_complex32_rows(0, 5).unwrap_err().to_string();
    assert!(e.contains("rewritten"), "{e}");
}

/// The CLI streaming a file that another process truncates at several moments: it finishes
/// with the whole input, or says `error:` naming the file and writes nothing; never a signal.
#[test]
fn truncation_during_streaming_is_an_error_not_a_signal() {
    // The scan is made by the CLI, so that this test process stays small: a parallel test's
    // child forked from a large test process would count its pages in its peak RSS.
    let dir = tempfile::tempdir().unwrap();
    let (made, offsets) = (dir.path().join("made.npy"), dir.path().join("o.npy"));
    cli()
        .args(["make-scan", "-n", "6000"])
        .arg(&made)
        .arg(&offsets)
        .assert()
        .success();
    let (input, out) = (dir.path().join("p.npy"), dir.path().join("out.npz"));
    let mut outcomes = Vec::new();
    for delay_ms in [0_u64, 3, 15, 60] {
        std::fs::copy(&made, &input).unwrap();
        let _ = std::fs::remove_file(&out);
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_ptychostitch"))
            .arg("reassemble")
            .arg(&input)
            .arg(&offsets)
            .args(["-M", "20", "--chunk", "8", "-o"])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&input)
            .unwrap()
            .set_len(1_000_000)
            .unwrap();
        let done = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&done.stderr).to_string();
        match done.status.code() {
            Some(0) => assert!(out.exists(), "{delay_ms} ms: success without an output"),
            Some(1) => {
                assert!(
                    stderr.starts_with("error:") && stderr.contains("p.npy"),
                    "{delay_ms} ms: {stderr}"
                );
                assert!(!out.exists(), "{delay_ms} ms: an output beside an error");
            }
            other => panic!("{delay_ms} ms: exit {other:?} (a signal?): {stderr}"),
        }
        outcomes.push(done.status.code());
    }
    assert!(
        outcomes.contains(&Some(1)),
        "no run saw the truncation: {outcomes:?}"
    );
}

/// A Fortran-order patch stack (its rows are not contiguous) streams chunk by chunk (one run
/// per patch pixel) and gives the C-order stack's bits for every chunk size, in complex64 and
/// big-endian complex128, as (n, N, N) and (n, N, N, 1). It used to be read whole (8× the
/// time, unbounded memory), before that re-read for every chunk.
#[test]
fn fortran_order_patches_give_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    let (patches, x, y) = scan(30, 16);
    let c_order = dir.path().join("c.npz");
    write_scan(&c_order, &patches, &x, &y);
    let (n, size, _) = patches.dim();
    let offsets = dir.path().join("o.npy");
    let xy = ndarray::Array2::from_shape_fn((n, 2), |(k, a)| if a == 0 { x[k] } else { y[k] });
    ptychostitch::npy::write_npy(
        &offsets,
        &ptychostitch::npy::NpyView::Float64(xy.view().into_dyn()),
    )
    .unwrap();
    let a = dir.path().join("a.npz");
    cli()
        .arg("reassemble")
        .arg(&c_order)
        .args(["-M", "8", "-o"])
        .arg(&a)
        .assert()
        .success();
    let want = bits(&read_c2(&a, "image"));
    for (descr, shape) in [
        ("<c8", format!("({n}, {size}, {size})")),
        (">c16", format!("({n}, {size}, {size})")),
        ("<c8", format!("({n}, {size}, {size}, 1)")),
    ] {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': True, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = npy_prefix(&header);
        for v in patches.t().iter() {
            if descr == "<c8" {
                bytes.extend_from_slice(&v.re.to_le_bytes());
                bytes.extend_from_slice(&v.im.to_le_bytes());
            } else {
                bytes.extend_from_slice(&(v.re as f64).to_be_bytes());
                bytes.extend_from_slice(&(v.im as f64).to_be_bytes());
            }
        }
        let fortran = dir.path().join("f.npy");
        std::fs::write(&fortran, bytes).unwrap();
        for chunk in ["1", "4", "7", "4096"] {
            let b = dir.path().join("b.npz");
            cli()
                .arg("reassemble")
                .arg(&fortran)
                .arg(&offsets)
                .args(["-M", "8", "--chunk", chunk, "-o"])
                .arg(&b)
                .assert()
                .success();
            assert_eq!(
                want,
                bits(&read_c2(&b, "image")),
                "{descr} {shape} chunk {chunk}"
            );
        }
    }
}
