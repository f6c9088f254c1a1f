//! BadNets (Gu et al. 2017): a small patch stamped where a mask is set; poison-label.
//!
//! Presets: `vab`, the 2×2 patch of the V&B paper and code at rows/cols 4-5 with colours
//! (180,249,112), (155,50,126) on row 4 and (234,82,68), (187,201,219) on row 5 (method.md §9);
//! `white-3x3-br`, a white 3×3 square in the bottom-right corner (BackdoorBench's convention);
//! `checker-3x3-br`, a 3×3 white/black checkerboard (white corners) in the same place. A PNG
//! patch may be given instead (`patch_file`); its fully transparent pixels are outside the mask.
//! On 1-channel images each colour becomes its BT.601 luma.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vab_data::ImageShape;

use crate::error::{AttackError, Result};
use crate::trigger_image::{channel_value, read_rgba};
use crate::{Attack, LabelMode};

const NAME: &str = "badnets";

/// BadNets parameters (config keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// `vab`, `white-3x3-br` or `checker-3x3-br`; ignored when `patch_file` is set.
    pub preset: String,
    /// A PNG/JPEG whose pixels form the patch.
    pub patch_file: Option<String>,
    /// Row of the patch's top-left pixel; default from the preset (`vab`: 4, others: flush with
    /// the bottom edge).
    pub row: Option<usize>,
    /// Column of the patch's top-left pixel; default like `row`.
    pub col: Option<usize>,
}

impl Default for Params {
    fn default() -> Self {
        Self { preset: "vab".into(), patch_file: None, row: None, col: None }
    }
}

/// A patch: colours and mask, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Patch {
    pub height: usize,
    pub width: usize,
    pub colors: Vec<[u8; 3]>,
    pub mask: Vec<bool>,
}

impl Patch {
    fn solid(colors: Vec<[u8; 3]>, height: usize, width: usize) -> Self {
        Self { height, width, mask: vec![true; colors.len()], colors }
    }

    /// The named built-in patch and whether it sits at the top-left (else bottom-right).
    pub fn preset(name: &str) -> Option<(Self, bool)> {
        const W: [u8; 3] = [255, 255, 255];
        const K: [u8; 3] = [0, 0, 0];
        match name {
            "vab" => Some((Self::solid(vec![[180, 249, 112], [155, 50, 126], [234, 82, 68], [187, 201, 219]], 2, 2), true)),
            "white-3x3-br" => Some((Self::solid(vec![W; 9], 3, 3), false)),
            "checker-3x3-br" => Some((Self::solid(vec![W, K, W, K, W, K, W, K, W], 3, 3), false)),
            _ => None,
        }
    }

    fn from_file(path: &Path) -> Result<Self> {
        let image = read_rgba(path, None)?;
        let pixels = image.rgba.chunks_exact(4);
        Ok(Self {
            height: image.height,
            width: image.width,
            colors: pixels.clone().map(|p| [p[0], p[1], p[2]]).collect(),
            mask: pixels.map(|p| p[3] > 0).collect(),
        })
    }
}

/// The BadNets trigger, placed for one image shape.
pub struct BadNets {
    params: Params,
    patch: Patch,
    row: usize,
    col: usize,
    shape: ImageShape,
}

impl BadNets {
    /// Builds the trigger for `shape`; errors on an unknown preset, an unreadable patch file or
    /// a patch that does not fit.
    pub fn new(mut params: Params, shape: ImageShape) -> Result<Self> {
        let (patch, top_left) = match &params.patch_file {
            Some(file) => (Patch::from_file(Path::new(file))?, false),
            None => Patch::preset(&params.preset).ok_or_else(|| {
                AttackError::params(NAME, format!("unknown preset `{}`; use vab, white-3x3-br, checker-3x3-br or patch_file", params.preset))
            })?,
        };
        let row = params.row.unwrap_or(if top_left { 4 } else { shape.height.saturating_sub(patch.height) });
        let col = params.col.unwrap_or(if top_left { 4 } else { shape.width.saturating_sub(patch.width) });
        if row + patch.height > shape.height || col + patch.width > shape.width {
            return Err(AttackError::params(
                NAME,
                format!(
                    "a {}×{} patch at row {row}, col {col} does not fit a {}×{} image",
                    patch.height, patch.width, shape.height, shape.width
                ),
            ));
        }
        (params.row, params.col) = (Some(row), Some(col));
        Ok(Self { params, patch, row, col, shape })
    }

    /// The (row, col) image positions the trigger writes.
    pub fn masked_pixels(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.patch.height * self.patch.width)
            .filter(|&i| self.patch.mask[i])
            .map(|i| (self.row + i / self.patch.width, self.col + i % self.patch.width))
    }
}

impl Attack for BadNets {
    fn name(&self) -> &'static str {
        NAME
    }

    fn label_mode(&self) -> LabelMode {
        LabelMode::PoisonLabel
    }

    fn apply(&self, image: &mut [u8]) {
        let (h, w) = (self.shape.height, self.shape.width);
        for (i, color) in self.patch.colors.iter().enumerate() {
            if !self.patch.mask[i] {
                continue;
            }
            let (r, c) = (self.row + i / self.patch.width, self.col + i % self.patch.width);
            for ch in 0..self.shape.channels {
                image[ch * h * w + r * w + c] = channel_value(*color, ch, self.shape);
            }
        }
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.params).expect("params serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CIFAR: ImageShape = ImageShape { channels: 3, height: 32, width: 32 };

    #[test]
    fn vab_preset_changes_exactly_the_masked_pixels_to_the_preset_colours() {
        let attack = BadNets::new(Params::default(), CIFAR).unwrap();
        let clean: Vec<u8> = (0..CIFAR.len()).map(|i| (i % 251) as u8).collect();
        let mut image = clean.clone();
        attack.apply(&mut image);
        let changed: Vec<usize> = (0..image.len()).filter(|&i| image[i] != clean[i]).collect();
        let plane = 32 * 32;
        let expected = [((4, 4), [180, 249, 112]), ((4, 5), [155, 50, 126]), ((5, 4), [234, 82, 68]), ((5, 5), [187, 201, 219])];
        for ((r, c), color) in expected {
            for ch in 0..3 {
                assert_eq!(image[ch * plane + r * 32 + c], color[ch], "pixel ({r},{c}) channel {ch}");
            }
        }
        let allowed: Vec<usize> = expected.iter().flat_map(|((r, c), _)| (0..3).map(move |ch| ch * plane + r * 32 + c)).collect();
        assert!(changed.iter().all(|i| allowed.contains(i)), "changed outside the patch: {changed:?}");
    }

    #[test]
    fn bottom_right_presets_sit_in_the_corner() {
        let white = BadNets::new(Params { preset: "white-3x3-br".into(), ..Default::default() }, CIFAR).unwrap();
        let pixels: Vec<_> = white.masked_pixels().collect();
        assert_eq!(pixels.first(), Some(&(29, 29)));
        assert_eq!(pixels.last(), Some(&(31, 31)));
        let checker = BadNets::new(Params { preset: "checker-3x3-br".into(), ..Default::default() }, CIFAR).unwrap();
        let mut image = vec![7u8; CIFAR.len()];
        checker.apply(&mut image);
        assert_eq!((image[29 * 32 + 29], image[29 * 32 + 30], image[30 * 32 + 30]), (255, 0, 255));
    }

    #[test]
    fn patch_that_does_not_fit_and_unknown_preset_are_rejected() {
        let params = Params { row: Some(31), ..Default::default() };
        let err = BadNets::new(params, CIFAR).err().unwrap().to_string();
        assert_eq!(err, "badnets: a 2×2 patch at row 31, col 4 does not fit a 32×32 image");
        let err = BadNets::new(Params { preset: "nope".into(), ..Default::default() }, CIFAR).err().unwrap().to_string();
        assert!(err.contains("unknown preset `nope`"), "{err}");
    }

    #[test]
    fn patch_file_uses_alpha_as_mask_and_luma_on_gray_images() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let mut png = image::RgbaImage::new(2, 1);
        png.put_pixel(0, 0, image::Rgba([255, 0, 0, 255]));
        png.put_pixel(1, 0, image::Rgba([0, 255, 0, 0]));
        png.save(&path).unwrap();
        let gray = ImageShape { channels: 1, height: 4, width: 4 };
        let params = Params { patch_file: Some(path.to_string_lossy().into()), row: Some(0), col: Some(0), ..Default::default() };
        let attack = BadNets::new(params, gray).unwrap();
        let mut image = vec![9u8; 16];
        attack.apply(&mut image);
        assert_eq!(&image[..3], &[76, 9, 9]); // luma(255,0,0) = 76; the transparent pixel is untouched
        let missing = Params { patch_file: Some("/nonexistent/p.png".into()), ..Default::default() };
        let err = BadNets::new(missing, gray).err().unwrap().to_string();
        assert!(err.starts_with("/nonexistent/p.png: cannot read trigger image"), "{err}");
    }
}
