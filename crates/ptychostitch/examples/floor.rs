//! The kernel beside the crop-read floor (`scripts/bench_floor.sh` runs both): medians of
//! `shift_and_sum` with a reused plan and of the one-shot `reassemble_position` (plan, weights
//! and image, what the drop-in call does) on the bench-grid scan, 1 and 2 threads.
//!
//! `cargo run --release --example floor -- 10000 100000`: one JSON line per size and threads.
mod common;
use common::median_ms;
use ptychostitch::Plan;
use ptychostitch::synthetic::{BENCH_CROP, BENCH_PATCH, bench_grid};

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are whole numbers"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    for n in sizes {
        let (patches, offsets) = bench_grid(n, 1).expect("bench-grid scan fits in memory");
        let runs = if n > 50_000 { 9 } else { 21 };
        for threads in [1, 2] {
            let plan = || {
                Plan::new(offsets.view(), BENCH_PATCH, BENCH_CROP)
                    .unwrap()
                    .with_threads(threads)
            };
            let reused = plan();
            let shift_and_sum = median_ms(runs, || reused.shift_and_sum(patches.view()).unwrap());
            let one_shot = median_ms(runs, || plan().reassemble_position(patches.view()).unwrap());
            let plan_weights = median_ms(runs, || plan().weights().map(|w| w.len()).unwrap());
            println!(
                "{{\"n\": {n}, \"threads\": {threads}, \"shift_and_sum_ms\": {shift_and_sum:.3}, \"reassemble_one_shot_ms\": {one_shot:.3}, \"plan_and_weights_ms\": {plan_weights:.3}}}"
            );
        }
    }
}
