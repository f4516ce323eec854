//! Quick timing breakdown (medians) of the fast path on the bench-grid scan:
//! `cargo run --release --example timing`.
mod common;
use common::median_ms;
use ptychostitch::Plan;
use ptychostitch::synthetic::{BENCH_CROP, BENCH_PATCH, bench_grid};

fn main() {
    for n in [1000, 10000] {
        let (patches, offsets) = bench_grid(n, 1).expect("bench-grid scan fits in memory");
        for threads in [1, 2] {
            let plan = || {
                Plan::new(offsets.view(), BENCH_PATCH, BENCH_CROP)
                    .unwrap()
                    .with_threads(threads)
            };
            let build = median_ms(30, plan);
            let weights = median_ms(30, || plan().weights().map(|w| w.len()).unwrap());
            let cached = plan();
            cached.weights().unwrap();
            let ss = median_ms(30, || cached.shift_and_sum(patches.view()).unwrap());
            let rp_cached = median_ms(30, || cached.reassemble_position(patches.view()).unwrap());
            let rp_fresh = median_ms(30, || plan().reassemble_position(patches.view()).unwrap());
            println!(
                "n={n} threads={threads}: plan {build:.3} ms, plan+weights {weights:.3}, shift_and_sum {ss:.3}, reassemble(cached w) {rp_cached:.3}, plan+reassemble {rp_fresh:.3}"
            );
        }
    }
}
