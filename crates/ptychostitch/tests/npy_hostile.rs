//! The `.npy` / `.npz` reader on hostile bytes: it never panics and never reads (or allocates)
//! past what a header declares. A bounded property test that mutates valid files — bit flips,
//! truncations, header edits — runs in the normal suite on stable Rust.

use ndarray::{Array1, Array3, arr0};
use ptychostitch::Complex32;
use ptychostitch::npy::{NpyArray, NpyView, Npz, write_npz};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::{Read, Write};

/// Parses and converts every way the tools do; any outcome but a panic is fine.
fn exercise(what: &str, bytes: &[u8]) {
    let outcome = std::panic::catch_unwind(|| {
        if let Ok(a) = NpyArray::from_bytes("fuzz", bytes.to_vec()) {
            let _ = a.to_complex32();
            let _ = a.to_f64();
            let _ = a.to_f32();
            let _ = a.to_scalar_i64();
            let _ = (a.len(), a.shape().len(), a.dtype().to_string());
        }
    });
    assert!(outcome.is_ok(), "the reader panicked on {what}");
}

fn samples() -> Vec<Vec<u8>> {
    let c = Array3::from_shape_fn((2, 3, 3), |(k, r, c)| {
        Complex32::new(k as f32 + r as f32, c as f32 - 1.5)
    });
    let f = Array1::from(vec![1.5_f64, -2.0, 3.25]);
    let f32s = Array1::from(vec![0.5_f32, 7.0]);
    let i = arr0(20_i64);
    vec![
        NpyView::Complex64(c.view().into_dyn()).to_npy_bytes(),
        NpyView::Float64(f.view().into_dyn()).to_npy_bytes(),
        NpyView::Float32(f32s.view().into_dyn()).to_npy_bytes(),
        NpyView::Int64(i.view().into_dyn()).to_npy_bytes(),
    ]
}

#[test]
fn header_edits_never_panic() {
    let descrs = [
        "''",
        "'<'",
        "'>'",
        "'|'",
        "'é'",
        "'<é4'",
        "'<f'",
        "'<i'",
        "'<i99'",
        "'<u0'",
        "'>c8'",
        "'<f2'",
        "'|b1'",
        "'?'",
        "'<U6'",
        "'O'",
        "'<c16'",
        "'<i8'",
        "''''",
        "'<f4', 'x': (",
    ];
    let shapes = [
        "()",
        "(",
        ")",
        "(3,)",
        "(2, 3, 3)",
        "(0,)",
        "(-1,)",
        "(99999999999999999999,)",
        "(4294967296, 4294967296, 4294967296)",
        "(1, 2, 3, 4, 5, 6, 7, 8)",
        "(é,)",
        "((),)",
    ];
    for descr in descrs {
        for shape in shapes {
            for order in ["False", "True", "maybe"] {
                let header =
                    format!("{{'descr': {descr}, 'fortran_order': {order}, 'shape': {shape}, }}");
                let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
                bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
                bytes.extend_from_slice(header.as_bytes());
                bytes.extend_from_slice(&[0x3f; 96]);
                exercise(&header, &bytes);
            }
        }
    }
    // Headers whose length fields lie, in both format versions.
    for version in [1_u8, 2, 3, 9] {
        for len in [0_u32, 1, 5, 60000, u32::MAX] {
            let mut bytes = b"\x93NUMPY".to_vec();
            bytes.extend_from_slice(&[version, 0]);
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(b"{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }");
            exercise(&format!("version {version}, header length {len}"), &bytes);
        }
    }
}

#[test]
fn truncations_and_bit_flips_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6e70_7921);
    for (s, valid) in samples().iter().enumerate() {
        for end in 0..valid.len() {
            exercise(&format!("sample {s} cut at {end}"), &valid[..end]);
        }
        for case in 0..1500 {
            let mut bytes = valid.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
            exercise(&format!("sample {s} flip case {case}"), &bytes);
        }
        for case in 0..300 {
            // Random bytes spliced into the header.
            let mut bytes = valid.clone();
            let at = rng.random_range(8..bytes.len().min(80));
            for b in bytes.iter_mut().skip(at).take(rng.random_range(1..12)) {
                *b = rng.random();
            }
            exercise(&format!("sample {s} splice case {case}"), &bytes);
        }
    }
}

#[test]
fn npz_archives_mutated_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.npz");
    let c = Array3::from_elem((3, 4, 4), Complex32::new(1.0, 2.0));
    let x = Array1::from(vec![1.0_f64, 2.0, 3.0]);
    write_npz(
        &path,
        &[
            ("Y", NpyView::Complex64(c.view().into_dyn())),
            ("xcoords", NpyView::Float64(x.view().into_dyn())),
        ],
    )
    .unwrap();
    let valid = std::fs::read(&path).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let bad = dir.path().join("bad.npz");
    for case in 0..600 {
        let mut bytes = valid.clone();
        if case % 3 == 0 {
            bytes.truncate(rng.random_range(0..valid.len()));
        } else {
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
        }
        std::fs::write(&bad, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            if let Ok(mut npz) = Npz::open(&bad) {
                for key in npz.keys() {
                    if let Ok(a) = npz.read(&key) {
                        let _ = a.to_complex32();
                        let _ = a.to_f64();
                    }
                }
            }
        });
        assert!(outcome.is_ok(), "the .npz reader panicked on case {case}");
    }
}

/// A reader that counts what is taken from it.
struct Counting<R> {
    inner: R,
    taken: usize,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.taken += k;
        Ok(k)
    }
}

#[test]
fn reads_stop_at_the_declared_size() {
    // A header that declares 10×32×32 complex64 (80 KiB) in front of 64 MiB of data.
    let header = "{'descr': '<c8', 'fortran_order': False, 'shape': (10, 32, 32), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    let declared = bytes.len() + 10 * 32 * 32 * 8;
    let mut stream = Counting {
        inner: std::io::Cursor::new(bytes).chain(std::io::repeat(0).take(64 << 20)),
        taken: 0,
    };
    let a = NpyArray::read_from("bomb", &mut stream).unwrap();
    assert_eq!(a.shape(), &[10, 32, 32]);
    assert_eq!(stream.taken, declared, "read past the declared size");

    // The same as a deflated .npz member (what a decompression bomb looks like on disk): the
    // archive is small, the member inflates to 64 MiB, and reading it takes only the 80 KiB.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.npz");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(false);
    zip.start_file("Y.npy", options).unwrap();
    let mut member = b"\x93NUMPY\x01\x00".to_vec();
    member.extend_from_slice(&(header.len() as u16).to_le_bytes());
    member.extend_from_slice(header.as_bytes());
    zip.write_all(&member).unwrap();
    let zeros = vec![0_u8; 1 << 20];
    for _ in 0..64 {
        zip.write_all(&zeros).unwrap();
    }
    zip.finish().unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
    let (a, inflated) = Npz::open(&path).unwrap().read_counted("Y").unwrap();
    assert_eq!(a.to_complex32().unwrap().shape(), &[10, 32, 32]);
    // Only the header and the declared 80 KiB are inflated, never the 64 MiB after them
    // (counted, not timed: inflating zeros is fast enough to pass a timer on a quick machine).
    let declared = (member.len() + 10 * 32 * 32 * 8) as u64;
    assert!(
        (declared..declared + (64 << 10)).contains(&inflated),
        "{inflated} bytes inflated for a {declared}-byte header and array"
    );
}

#[test]
fn float16_and_integer_patches_convert() {
    let header = "{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in [0x3c00_u16, 0xc000, 0x7c00] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let a = NpyArray::from_bytes("half", bytes).unwrap();
    assert_eq!(a.dtype().to_string(), "float16");
    let c = a.to_complex32().unwrap();
    assert_eq!(
        c.iter().map(|v| v.re).collect::<Vec<_>>(),
        vec![1.0, -2.0, f32::INFINITY]
    );
}

/// A data byte of a member changed after its CRC-32 was written: NumPy refuses the member, and
/// so does every way we read it (in memory, in place, stored or deflated).
#[test]
fn corrupted_npz_members_fail_their_crc() {
    let dir = tempfile::tempdir().unwrap();
    let c = Array3::from_shape_fn((3, 8, 8), |(i, j, k)| {
        Complex32::new((i * 64 + j * 8 + k) as f32, 1.0)
    });
    // Stored (as ptychostitch and np.savez write).
    let stored = dir.path().join("stored.npz");
    write_npz(&stored, &[("Y", NpyView::Complex64(c.view().into_dyn()))]).unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    let needle = bytemuck::cast_slice::<Complex32, u8>(&[Complex32::new(100.0, 1.0)]).to_vec();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the value is stored");
    bytes[at] ^= 0x40; // 100.0 → another finite value: a silent change without the check
    let bad = dir.path().join("bad_stored.npz");
    std::fs::write(&bad, &bytes).unwrap();
    let err = Npz::open(&bad).unwrap().read("Y").unwrap_err().to_string();
    assert!(err.contains("member 'Y' is corrupt"), "{err}");
    let err = Npz::open(&bad)
        .unwrap()
        .open_in_place("Y")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("member 'Y' is corrupt") && err.contains("CRC-32"),
        "{err}"
    );
    // The intact file reads both ways.
    assert!(Npz::open(&stored).unwrap().read("Y").is_ok());
    assert!(
        Npz::open(&stored)
            .unwrap()
            .open_in_place("Y")
            .unwrap()
            .is_some()
    );

    // Deflated (np.savez_compressed): a changed byte breaks the stream or the CRC, never silently.
    let deflated = dir.path().join("deflated.npz");
    {
        let mut npy = Vec::new();
        NpyView::Complex64(c.view().into_dyn())
            .write_npy_to(&mut npy)
            .unwrap();
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&deflated).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("Y.npy", options).unwrap();
        zip.write_all(&npy).unwrap();
        zip.finish().unwrap();
    }
    let valid = std::fs::read(&deflated).unwrap();
    let mut rejected = 0;
    for offset in 60..valid.len().min(400) {
        let mut bytes = valid.clone();
        bytes[offset] ^= 0x01;
        std::fs::write(&bad, &bytes).unwrap();
        let Ok(mut npz) = Npz::open(&bad) else {
            rejected += 1;
            continue;
        };
        match npz.read("Y") {
            Err(_) => rejected += 1,
            Ok(a) => assert_eq!(
                a.to_complex32().unwrap(),
                c.clone().into_dyn(),
                "byte {offset}: a silent change"
            ),
        }
    }
    assert!(rejected > 0);
}
