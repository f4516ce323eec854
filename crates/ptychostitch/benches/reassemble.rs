//! Criterion benchmarks on docs/semantics.md §5's bench-grid scan.
//!
//! - `reassemble_position/fast/N`: the free function (plan + weights + image in one pass),
//!   all cores, for N = 100 … 10,000.
//! - `reassemble_position/plan_reuse/N`: a plan with its weight canvas cached (training loop).
//! - `reassemble_position/reference/N`: the oracle, for N ≤ 2,000.
//!
//! `python3 scripts/bench_table.py` turns the results into the table of docs/performance.md.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ptychostitch::Plan;
use ptychostitch::synthetic::{BENCH_CROP, BENCH_PATCH, BENCH_SIZES, bench_grid};
use std::hint::black_box;
use std::time::Duration;

fn reassemble(c: &mut Criterion) {
    let mut group = c.benchmark_group("reassemble_position");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500));
    for n in BENCH_SIZES {
        let (patches, offsets) = bench_grid(n, 1).expect("bench-grid scan fits in memory");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("fast", n), &n, |b, _| {
            b.iter(|| {
                ptychostitch::reassemble_position(
                    black_box(patches.view()),
                    offsets.view(),
                    BENCH_CROP,
                )
                .unwrap()
            })
        });
        let plan = Plan::new(offsets.view(), BENCH_PATCH, BENCH_CROP).unwrap();
        plan.weights().unwrap();
        group.bench_with_input(BenchmarkId::new("plan_reuse", n), &n, |b, _| {
            b.iter(|| plan.reassemble_position(black_box(patches.view())).unwrap())
        });
        if n <= 2000 {
            group.sample_size(10);
            group.bench_with_input(BenchmarkId::new("reference", n), &n, |b, _| {
                b.iter(|| {
                    ptychostitch::reassemble_position_reference(
                        black_box(patches.view()),
                        offsets.view(),
                        BENCH_CROP,
                    )
                    .unwrap()
                })
            });
            group.sample_size(20);
        }
    }
    group.finish();
}

criterion_group!(benches, reassemble);
criterion_main!(benches);
