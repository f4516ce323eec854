//! The kernels interleaved on the bench-grid scan: every round runs `shift_and_sum` (plan
//! reused) and the one-shot `reassemble_position` once with each instruction set, so that a
//! shared machine's slow spells hit all of them alike. Minimum and median of 41 rounds.
//!
//! `cargo run --release --example kernels -- [N] [THREADS]` (defaults: 10000, 1).
use ptychostitch::synthetic::{BENCH_CROP, BENCH_PATCH, bench_grid};
use ptychostitch::{Plan, Simd};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(10_000, |a| a.parse().expect("a whole number"));
    let threads: usize = args
        .next()
        .map_or(1, |a| a.parse().expect("a whole number"));
    let (patches, offsets) = bench_grid(n, 1).expect("bench-grid scan fits in memory");
    let kernels = [Simd::Auto, Simd::Avx2];
    let plan = |simd| {
        Plan::new(offsets.view(), BENCH_PATCH, BENCH_CROP)
            .expect("bench-grid plan")
            .with_threads(threads)
            .with_simd(simd)
    };
    let reused: Vec<Plan> = kernels.iter().map(|&s| plan(s)).collect();
    let mut times = vec![[Vec::new(), Vec::new()]; kernels.len()];
    for _ in 0..41 {
        for (i, &simd) in kernels.iter().enumerate() {
            let t = Instant::now();
            std::hint::black_box(reused[i].shift_and_sum(patches.view()).expect("fits"));
            times[i][0].push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            std::hint::black_box(
                plan(simd)
                    .reassemble_position(patches.view())
                    .expect("fits"),
            );
            times[i][1].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    for (i, simd) in kernels.iter().enumerate() {
        let [ss, rp] = &mut times[i];
        ss.sort_by(f64::total_cmp);
        rp.sort_by(f64::total_cmp);
        println!(
            "n={n} threads={threads} kernel={:9} shift_and_sum min {:.3} median {:.3} ms | one-shot reassemble_position min {:.3} median {:.3} ms",
            simd.resolved(),
            ss[0],
            ss[ss.len() / 2],
            rp[0],
            rp[rp.len() / 2]
        );
    }
}
