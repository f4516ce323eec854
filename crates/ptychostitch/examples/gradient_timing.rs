//! Timing breakdown (medians) of the gradients of `reassemble_position` on the bench-grid scan:
//! `cargo run --release --example gradient_timing [threads]`.
mod common;
use common::median_ms;
use ndarray::Array2;
use ptychostitch::synthetic::{BENCH_CROP, BENCH_PATCH, bench_grid};
use ptychostitch::{Complex32, Plan, Wrt};

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    for n in [10_000, 100_000] {
        let runs = if n > 10_000 { 5 } else { 11 };
        let (patches, offsets) = bench_grid(n, 1).expect("bench-grid scan fits in memory");
        let plan = Plan::new(offsets.view(), BENCH_PATCH, BENCH_CROP)
            .unwrap()
            .with_threads(threads);
        plan.weights().unwrap();
        let out = plan.reassemble_position(patches.view()).unwrap();
        let cot = Array2::from_elem(plan.canvas_shape(), Complex32::new(1.0, -0.5));
        let fwd = median_ms(runs, || plan.reassemble_position(patches.view()).unwrap());
        let vjp = |wrt| {
            plan.reassemble_position_vjp(patches.view(), Some(out.view()), cot.view(), wrt)
                .unwrap()
        };
        let both = median_ms(runs, || vjp(Wrt::ALL));
        let only_patches = median_ms(runs, || vjp(Wrt::PATCHES));
        let only_offsets = median_ms(runs, || vjp(Wrt::OFFSETS));
        println!(
            "n={n} threads={threads}: forward {fwd:.2} ms; backward: patches+offsets {both:.2}, patches {only_patches:.2}, offsets {only_offsets:.2}"
        );
    }
}
