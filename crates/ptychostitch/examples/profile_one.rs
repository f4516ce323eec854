//! Single-threaded shift_and_sum at n=10,000, repeated, for a profiler.
use ptychostitch::Plan;
use ptychostitch::synthetic::{BENCH_CROP, BENCH_PATCH, bench_grid};
fn main() {
    let (patches, offsets) = bench_grid(10000, 1);
    let plan = Plan::new(offsets.view(), BENCH_PATCH, BENCH_CROP)
        .unwrap()
        .with_threads(1);
    for _ in 0..150 {
        std::hint::black_box(plan.shift_and_sum(patches.view()).unwrap());
    }
}
