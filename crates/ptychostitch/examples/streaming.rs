//! Streaming overhead: the accumulator in chunks against the one-shot call, in memory, on the
//! bench-grid scan (medians of interleaved runs, one process):
//! `cargo run --release --example streaming -- [n] [chunk]` (defaults 100000 and 4096).
use ptychostitch::synthetic::{BENCH_CROP, BENCH_PATCH, bench_grid};
use ptychostitch::{Complex32, Operation, Plan};
use std::time::Instant;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let n = args.next().unwrap_or(100_000);
    let chunk = args.next().unwrap_or(4096);
    let (patches, offsets) = bench_grid(n, 1).expect("bench-grid scan fits in memory");
    let plan = Plan::new(offsets.view(), BENCH_PATCH, BENCH_CROP).unwrap();
    plan.weights().unwrap();
    let one_shot = || plan.reassemble_position(patches.view()).unwrap();
    let streamed = || {
        let mut acc = plan
            .accumulator::<Complex32>(Operation::ReassemblePosition)
            .unwrap();
        for start in (0..n).step_by(chunk) {
            let end = (start + chunk).min(n);
            acc.add(start, patches.slice(ndarray::s![start..end, .., ..]))
                .unwrap();
        }
        acc.finish().unwrap()
    };
    assert_eq!(one_shot(), streamed(), "streaming changed the result");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        let t = Instant::now();
        std::hint::black_box(one_shot());
        a.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(streamed());
        b.push(t.elapsed().as_secs_f64());
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (a, b) = (a[a.len() / 2], b[b.len() / 2]);
    println!(
        "n={n} chunk={chunk} ({} chunks), canvas {}²: one-shot {:.2} ms, streamed {:.2} ms, ratio {:.3}",
        n.div_ceil(chunk),
        plan.canvas_shape().0,
        a * 1e3,
        b * 1e3,
        b / a
    );
}
