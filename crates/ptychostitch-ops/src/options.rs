//! The region reassembly's options as strings name them (the operators' specs, and the
//! bindings' `Region(...)`): the one parser for both.

use ptychostitch::region::{Convention, Denominator, Numerator, RegionOptions, Threshold};

/// `"tf"` or `"torch"`: whose translation arithmetic.
pub fn parse_convention(name: &str) -> Result<Convention, String> {
    match name {
        "tf" => Ok(Convention::TensorFlow),
        "torch" => Ok(Convention::Torch),
        _ => Err(format!("convention must be 'tf' or 'torch', not {name:?}")),
    }
}

/// The support threshold of a `[kind, value]` option.
pub fn threshold(kind: &str, value: f32) -> Result<Threshold, String> {
    match kind {
        "above" => Ok(Threshold::Above(value)),
        "above_max_fraction" => Ok(Threshold::AboveMaxFraction(value)),
        _ => Err(format!(
            "support must be 'above' or 'above_max_fraction', not {kind:?}"
        )),
    }
}

/// The normalisation options as `Region(...)` and the operators' specs give them, parsed and
/// checked ([`RegionOptions::validate`]): the one parser for the plan, for
/// `_native.check_region_options` and for the compiled operators (this crate).
#[allow(clippy::too_many_arguments)]
pub fn options_from(
    convention: &str,
    recentre: bool,
    numerator: &str,
    denominator: &str,
    epsilon: f32,
    support: Option<&str>,
    threshold_value: f32,
    scale: f32,
) -> Result<RegionOptions, String> {
    let convention = parse_convention(convention)?;
    let numerator = match numerator {
        "sum" => Numerator::Sum,
        "weighted" => Numerator::Weighted,
        _ => {
            return Err(format!(
                "numerator must be 'sum' or 'weighted', not {numerator:?}"
            ));
        }
    };
    let denominator = match denominator {
        "add" => Denominator::Add(epsilon),
        "clamp" => Denominator::Clamp(epsilon),
        "one" => Denominator::One,
        "affine" => Denominator::Affine {
            scale,
            offset: epsilon,
        },
        "regularised" => Denominator::Regularised {
            scale,
            max_fraction: epsilon,
        },
        _ => {
            return Err(format!(
                "denominator must be 'add', 'clamp', 'one', 'affine' or 'regularised', not {denominator:?}"
            ));
        }
    };
    let support = support.map(|k| threshold(k, threshold_value)).transpose()?;
    let options = RegionOptions {
        convention,
        recentre,
        numerator,
        denominator,
        support,
    };
    options.validate().map_err(|e| e.to_string())?;
    Ok(options)
}
