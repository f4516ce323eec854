//! PNG pictures of a complex canvas: amplitude in grey and phase in a cyclic colour map, side
//! by side, each with a colour legend labelled with its value range. Pixels no patch reaches
//! are drawn as background (a dark checkerboard), not as zero amplitude.

use ndarray::Array2;
use ptychostitch::Complex32;
use ptychostitch::atomic::Fill;

const BACKGROUND: [[u8; 3]; 2] = [[40, 44, 52], [52, 56, 66]];
const PAPER: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [20, 20, 20];
const MARGIN: usize = 12;
const LEGEND_HEIGHT: usize = 14;
const TEXT_SCALE: usize = 2;
const GLYPH_W: usize = 6 * TEXT_SCALE;
const LINE_H: usize = 9 * TEXT_SCALE;

/// An RGB image being drawn.
pub struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        let mut rgb = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            rgb.extend_from_slice(&PAPER);
        }
        Self { width, height, rgb }
    }

    fn put(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    fn text(&mut self, x: usize, y: usize, s: &str) {
        for (i, ch) in s.chars().enumerate() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for c in 0..5 {
                    if bits & (0x10 >> c) != 0 {
                        for dy in 0..TEXT_SCALE {
                            for dx in 0..TEXT_SCALE {
                                self.put(
                                    x + i * GLYPH_W + c * TEXT_SCALE + dx,
                                    y + r * TEXT_SCALE + dy,
                                    INK,
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The PNG encoder of this picture, for [`ptychostitch::atomic::write_files_atomically`].
    pub fn png_fill(&self) -> Fill<'_> {
        Box::new(move |w| {
            let mut encoder = png::Encoder::new(w, self.width as u32, self.height as u32);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
            writer
                .write_image_data(&self.rgb)
                .map_err(std::io::Error::other)?;
            writer.finish().map_err(std::io::Error::other)
        })
    }
}

/// Bytes a picture of an `S×S` canvas takes while it is drawn: two panels of per-pixel colours
/// (4 bytes a pixel each), the coverage mask and the RGB canvas of both panels side by side.
pub fn bytes_for(side: usize) -> f64 {
    let s = side as f64;
    s * s * (4.0 * 2.0 + 1.0) + (2.0 * s + 4.0 * MARGIN as f64) * (s + 80.0) * 3.0
}

/// A panel: per-pixel colours (None = background), a title and a legend.
struct Panel {
    title: String,
    colours: Array2<Option<[u8; 3]>>,
    legend: Box<dyn Fn(f64) -> [u8; 3]>,
    low: String,
    high: String,
}

/// Amplitude and phase of `image` side by side. `covered` marks pixels some patch reached.
pub fn amplitude_phase(image: &Array2<Complex32>, covered: &Array2<bool>, title: &str) -> Canvas {
    let (lo, hi) = image
        .iter()
        .zip(covered)
        .filter(|&(v, &c)| c && v.norm().is_finite())
        .map(|(v, _)| v.norm() as f64)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
    let span = if hi > lo { hi - lo } else { 1.0 };
    let grey = |t: f64| {
        let g = (t.clamp(0.0, 1.0) * 255.0).round() as u8;
        [g, g, g]
    };
    let cyclic = |t: f64| {
        let c = colorous::SINEBOW.eval_continuous(t.rem_euclid(1.0));
        [c.r, c.g, c.b]
    };
    let tau = std::f64::consts::TAU;
    let amplitude = Panel {
        title: format!("{title} AMPLITUDE"),
        colours: ndarray::Zip::from(image)
            .and(covered)
            .map_collect(|v, &c| c.then(|| grey((v.norm() as f64 - lo) / span))),
        legend: Box::new(grey),
        low: format_value(lo),
        high: format_value(hi),
    };
    let phase = Panel {
        title: format!("{title} PHASE RAD"),
        colours: ndarray::Zip::from(image)
            .and(covered)
            .map_collect(|v, &c| c.then(|| cyclic((v.arg() as f64 + std::f64::consts::PI) / tau))),
        legend: Box::new(cyclic),
        low: "-3.14".into(),
        high: "+3.14".into(),
    };
    compose(&[amplitude, phase])
}

fn format_value(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

fn compose(panels: &[Panel]) -> Canvas {
    let (rows, cols) = panels[0].colours.dim();
    let longest = rows.max(cols).max(1);
    let zoom = (320 / longest).clamp(1, 8);
    let (pw, ph) = (cols * zoom, rows * zoom);
    let title_w = panels
        .iter()
        .map(|p| p.title.len() * GLYPH_W)
        .max()
        .unwrap_or(0);
    let panel_w = pw.max(title_w).max(20 * GLYPH_W);
    let width = MARGIN + panels.len() * (panel_w + MARGIN);
    let height = MARGIN + LINE_H + 4 + ph + 6 + LEGEND_HEIGHT + 4 + LINE_H + MARGIN;
    let mut canvas = Canvas::new(width, height);
    for (i, panel) in panels.iter().enumerate() {
        let x0 = MARGIN + i * (panel_w + MARGIN);
        let y0 = MARGIN;
        canvas.text(x0, y0, &panel.title);
        let top = y0 + LINE_H + 4;
        for y in 0..ph {
            for x in 0..pw {
                let colour = panel.colours[[y / zoom, x / zoom]]
                    .unwrap_or(BACKGROUND[((x / 4) + (y / 4)) % 2]);
                canvas.put(x0 + x, top + y, colour);
            }
        }
        let legend_top = top + ph + 6;
        for x in 0..pw {
            let c = (panel.legend)(x as f64 / (pw.max(2) - 1) as f64);
            for y in 0..LEGEND_HEIGHT {
                canvas.put(x0 + x, legend_top + y, c);
            }
        }
        let label_y = legend_top + LEGEND_HEIGHT + 4;
        canvas.text(x0, label_y, &panel.low);
        let high_w = panel.high.len() * GLYPH_W;
        canvas.text(
            (x0 + pw).saturating_sub(high_w).max(x0),
            label_y,
            &panel.high,
        );
    }
    canvas
}

/// A 5×7 bitmap glyph (rows top to bottom, bit 4 = leftmost column). Lower case is drawn as
/// upper case, except `e` (exponents); unknown characters are a box.
fn glyph(ch: char) -> [u8; 7] {
    match ch {
        ' ' => [0; 7],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '/' => [0x01, 0x02, 0x02, 0x04, 0x08, 0x08, 0x10],
        '|' => [0x04; 7],
        'e' => [0, 0, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        c => match c.to_ascii_uppercase() {
            'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
            'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
            'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
            'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
            'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
            'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
            'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
            'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
            'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
            'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
            'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
            'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
            'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
            'N' => [0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11],
            'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
            'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
            'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
            'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
            'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
            'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
            'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
            'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
            'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
            'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
            'Y' => [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
            'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
            _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
        },
    }
}
