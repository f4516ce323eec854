//! Per-tile patch lists: for each `TILE×TILE` tile of the canvas, the patches whose footprint
//! meets it, in increasing index order (CSR layout), which is what a GPU block walks.

use super::TILE;
use crate::error::{Error, Result};
use crate::geometry::Geometry;

/// The patches of every tile, CSR: tile `t`'s patches are `patches[start[t]..start[t + 1]]`.
/// Tiles are numbered row-major, `tiles_x` per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileLists {
    /// Tiles per row (and per column: the canvas is square).
    pub tiles_x: usize,
    /// `tiles_x² + 1` offsets into `patches`.
    pub start: Vec<i32>,
    /// Scan indices, increasing within each tile.
    pub patches: Vec<i32>,
}

impl TileLists {
    /// Builds the lists from a geometry's footprints: a counting pass, then a fill pass in patch
    /// order (so each list is sorted). `O(n · tiles per footprint)`.
    pub fn new(geometry: &Geometry) -> Result<Self> {
        let side = geometry.side();
        let tiles_x = side.div_ceil(TILE).max(1);
        let tiles = tiles_x * tiles_x;
        let too_many = |what: &str| Error::OutOfMemory {
            what: format!("GPU tile lists: {what} exceed the kernel's 32-bit indices"),
            bytes: 0.0,
        };
        if geometry.len() > i32::MAX as usize {
            return Err(too_many("the patch indices"));
        }
        let span = |f: &crate::geometry::Footprint| {
            let rows = f.rows.start / TILE..f.rows.end.div_ceil(TILE);
            let cols = f.cols.start / TILE..f.cols.end.div_ceil(TILE);
            (rows, cols)
        };
        let mut count = vec![0_usize; tiles + 1];
        for f in geometry.footprints() {
            if f.rows.is_empty() || f.cols.is_empty() {
                continue;
            }
            let (rows, cols) = span(f);
            for ty in rows {
                for tx in cols.clone() {
                    count[ty * tiles_x + tx + 1] += 1;
                }
            }
        }
        for t in 0..tiles {
            count[t + 1] += count[t];
        }
        let total = count[tiles];
        if total > i32::MAX as usize {
            return Err(too_many("the list entries"));
        }
        let mut next = count.clone();
        let mut patches = crate::memory::try_zeroed_vec::<i32>(total, || {
            format!("GPU tile lists of {total} entries")
        })?;
        for (k, f) in geometry.footprints().iter().enumerate() {
            if f.rows.is_empty() || f.cols.is_empty() {
                continue;
            }
            let (rows, cols) = span(f);
            for ty in rows {
                for tx in cols.clone() {
                    let t = ty * tiles_x + tx;
                    patches[next[t]] = k as i32;
                    next[t] += 1;
                }
            }
        }
        Ok(Self {
            tiles_x,
            start: count.into_iter().map(|c| c as i32).collect(),
            patches,
        })
    }

    /// Number of tiles.
    pub fn tiles(&self) -> usize {
        self.tiles_x * self.tiles_x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_patch_is_listed_in_exactly_the_tiles_its_footprint_meets() {
        let positions: Vec<[f64; 2]> = (0..60)
            .map(|i| [(i % 8) as f64 * 3.3 - 7.0, (i / 8) as f64 * 4.1 + 0.5])
            .collect();
        let g = Geometry::new(&positions, 32, 16).unwrap();
        let lists = TileLists::new(&g).unwrap();
        assert_eq!(lists.start.len(), lists.tiles() + 1);
        for ty in 0..lists.tiles_x {
            for tx in 0..lists.tiles_x {
                let t = ty * lists.tiles_x + tx;
                let got = &lists.patches[lists.start[t] as usize..lists.start[t + 1] as usize];
                assert!(got.windows(2).all(|w| w[0] < w[1]), "sorted");
                let expected: Vec<i32> = g
                    .footprints()
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| {
                        f.rows.start < (ty + 1) * TILE
                            && f.rows.end > ty * TILE
                            && f.cols.start < (tx + 1) * TILE
                            && f.cols.end > tx * TILE
                    })
                    .map(|(k, _)| k as i32)
                    .collect();
                assert_eq!(got, &expected[..], "tile ({ty}, {tx})");
            }
        }
    }
}
