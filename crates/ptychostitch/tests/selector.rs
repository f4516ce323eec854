//! The one selector of an operation and its implementation (`Plan::run`, `Plan::vjp`,
//! `Extraction::run`, `Extraction::vjp`): each choice gives the named method's bits.

mod common;

use common::*;
use ndarray::Array2;
use ptychostitch::{Extraction, Implementation, Operation, Plan, Wrt};
use rand::RngExt;

const IMPLEMENTATIONS: [Implementation; 2] = [Implementation::Fast, Implementation::Reference];
const OPERATIONS: [Operation; 2] = [Operation::ShiftAndSum, Operation::ReassemblePosition];

fn f64_bits(a: &Array2<f64>) -> Vec<u64> {
    a.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn plan_run_and_vjp_are_the_named_methods() {
    let mut r = rng(31);
    let (n, size) = (23, 16);
    let patches = random_patches(&mut r, n, size);
    let offsets = offsets_from(n, |_| {
        [r.random_range(-9.0..9.0), r.random_range(-9.0..9.0)]
    });
    let plan = Plan::new(offsets.view(), size, 10).unwrap();
    let side = plan.canvas_shape().0;
    let cot = Array2::from_shape_fn((side, side), |(i, j)| {
        ptychostitch::Complex32::new((i as f32 * 0.3).sin(), (j as f32 * 0.7).cos())
    });
    for op in OPERATIONS {
        for how in IMPLEMENTATIONS {
            let named = match (op, how) {
                (Operation::ShiftAndSum, Implementation::Fast) => {
                    plan.shift_and_sum(patches.view())
                }
                (Operation::ShiftAndSum, Implementation::Reference) => {
                    plan.shift_and_sum_reference(patches.view())
                }
                (Operation::ReassemblePosition, Implementation::Fast) => {
                    plan.reassemble_position(patches.view())
                }
                (Operation::ReassemblePosition, Implementation::Reference) => {
                    plan.reassemble_position_reference(patches.view())
                }
            }
            .unwrap();
            let selected = plan.clone().with_implementation(how);
            assert_eq!(selected.implementation(), how);
            let out = selected.run(op, patches.view()).unwrap();
            assert_eq!(bits(&out), bits(&named), "{op:?} {how:?}");
            let g = selected
                .vjp(op, patches.view(), None, cot.view(), Wrt::ALL)
                .unwrap();
            let named = match (op, how) {
                (Operation::ShiftAndSum, Implementation::Fast) => {
                    plan.shift_and_sum_vjp(patches.view(), cot.view(), Wrt::ALL)
                }
                (Operation::ShiftAndSum, Implementation::Reference) => {
                    plan.shift_and_sum_vjp_reference(patches.view(), cot.view(), Wrt::ALL)
                }
                (Operation::ReassemblePosition, Implementation::Fast) => {
                    plan.reassemble_position_vjp(patches.view(), None, cot.view(), Wrt::ALL)
                }
                (Operation::ReassemblePosition, Implementation::Reference) => plan
                    .reassemble_position_vjp_reference(patches.view(), None, cot.view(), Wrt::ALL),
            }
            .unwrap();
            assert_eq!(g.patches, named.patches, "{op:?} {how:?}");
            let (a, b) = (g.offsets.unwrap(), named.offsets.unwrap());
            assert_eq!(f64_bits(&a), f64_bits(&b), "{op:?} {how:?}");
        }
    }
}

#[test]
fn extraction_run_and_vjp_are_the_named_methods() {
    let mut r = rng(32);
    let (images, per, side, size) = (3, 4, 30, 12);
    let imgs = random_patches(&mut r, images, side);
    let offsets = offsets_from(images * per, |_| {
        [r.random_range(-4.0..4.0), r.random_range(-4.0..4.0)]
    });
    let ext = Extraction::new(offsets.view(), per, side, size).unwrap();
    let cot = random_patches(&mut r, images * per, size);
    for how in IMPLEMENTATIONS {
        let named = match how {
            Implementation::Fast => ext.extract(imgs.view()),
            Implementation::Reference => ext.extract_reference(imgs.view()),
        }
        .unwrap();
        let selected = ext.clone().with_implementation(how);
        assert_eq!(selected.run(imgs.view()).unwrap(), named, "{how:?}");
        let g = selected.vjp(imgs.view(), cot.view(), Wrt::ALL).unwrap();
        let named = match how {
            Implementation::Fast => ext.extract_vjp(imgs.view(), cot.view(), Wrt::ALL),
            Implementation::Reference => {
                ext.extract_vjp_reference(imgs.view(), cot.view(), Wrt::ALL)
            }
        }
        .unwrap();
        assert_eq!(g.patches, named.patches, "{how:?}");
        assert_eq!(
            f64_bits(&g.offsets.unwrap()),
            f64_bits(&named.offsets.unwrap()),
            "{how:?}"
        );
    }
}
