//! What the timing examples share.

use std::time::Instant;

/// Median of `runs` timings of `f`, in ms, after one warm-up run.
pub fn median_ms<R>(runs: usize, mut f: impl FnMut() -> R) -> f64 {
    std::hint::black_box(f());
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2] * 1e3
}
