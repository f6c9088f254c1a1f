//! An RGB canvas: paste u8 C×H×W images (magnified), fill rectangles, write text with the
//! public-domain 8×8 bitmap font, save as PNG. Used by `vab data preview`, the V&B entropy
//! histograms and the report's image grids.

use std::path::Path;

use anyhow::Context;
use font8x8::UnicodeFonts;

/// Height and width of one glyph, in pixels.
pub const GLYPH: usize = 8;

/// A white RGB canvas.
pub struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Self {
        Self { width, height, rgb: vec![255; width * height * 3] }
    }

    fn put(&mut self, x: usize, y: usize, color: [u8; 3]) {
        if x < self.width && y < self.height {
            let at = (y * self.width + x) * 3;
            self.rgb[at..at + 3].copy_from_slice(&color);
        }
    }

    /// Fills the `w`×`h` rectangle at (x, y) with `color` (clipped to the canvas).
    pub fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, color: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, color);
            }
        }
    }

    /// Pastes a C×H×W image (C = 1 or 3) with its top-left corner at (x, y), each pixel
    /// drawn as a `scale`×`scale` block.
    pub fn paste(&mut self, image: &[u8], shape: vab_data::ImageShape, x: usize, y: usize, scale: usize) {
        let plane = shape.height * shape.width;
        for row in 0..shape.height {
            for col in 0..shape.width {
                let at = row * shape.width + col;
                let color = if shape.channels >= 3 {
                    [image[at], image[plane + at], image[2 * plane + at]]
                } else {
                    [image[at]; 3]
                };
                for dy in 0..scale {
                    for dx in 0..scale {
                        self.put(x + col * scale + dx, y + row * scale + dy, color);
                    }
                }
            }
        }
    }

    /// Writes `text` in black starting at (x, y); characters outside the font show as '?'.
    pub fn text(&mut self, text: &str, x: usize, y: usize) {
        for (i, ch) in text.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')).unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..GLYPH {
                    if bits >> col & 1 == 1 {
                        self.put(x + i * GLYPH + col, y + row, [0, 0, 0]);
                    }
                }
            }
        }
    }

    /// The canvas as PNG bytes.
    pub fn png(self) -> anyhow::Result<Vec<u8>> {
        let image = image::RgbImage::from_raw(self.width as u32, self.height as u32, self.rgb).context("canvas size")?;
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, image::ImageFormat::Png).context("cannot encode PNG")?;
        Ok(bytes.into_inner())
    }

    /// Saves the canvas as a PNG.
    pub fn save(self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.png()?).with_context(|| format!("{}: cannot write PNG", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paste_magnifies_and_maps_channels() {
        let mut canvas = Canvas::new(4, 2);
        let shape = vab_data::ImageShape { channels: 3, height: 1, width: 2 };
        canvas.paste(&[10, 20, 30, 40, 50, 60], shape, 0, 0, 2);
        assert_eq!(&canvas.rgb[0..3], &[10, 30, 50]);
        assert_eq!(&canvas.rgb[(4 + 3) * 3..(4 + 3) * 3 + 3], &[20, 40, 60]);
    }

    #[test]
    fn text_draws_dark_pixels_inside_its_box_only() {
        let mut canvas = Canvas::new(20, 10);
        canvas.text("A", 1, 1);
        let dark: Vec<(usize, usize)> = (0..10)
            .flat_map(|y| (0..20).map(move |x| (x, y)))
            .filter(|&(x, y)| canvas.rgb[(y * 20 + x) * 3] == 0)
            .collect();
        assert!(!dark.is_empty());
        assert!(dark.iter().all(|&(x, y)| (1..9).contains(&x) && (1..9).contains(&y)));
    }
}
