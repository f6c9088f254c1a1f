//! Reading user-supplied trigger images (Blend triggers, BadNets patches) as u8 pixels.

use std::path::Path;

use vab_data::ImageShape;

use crate::error::{AttackError, Result};

/// An RGBA image read from a file, row-major, 4 bytes per pixel.
pub struct RgbaImage {
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u8>,
}

/// Reads any PNG/JPEG as RGBA, optionally resized to `resize` (width, height) with a triangle
/// filter.
pub fn read_rgba(path: &Path, resize: Option<(usize, usize)>) -> Result<RgbaImage> {
    let fail = |message: String| AttackError::TriggerFile { path: path.to_path_buf(), message };
    let image = image::open(path).map_err(|e| fail(format!("cannot read trigger image: {e}")))?;
    let image = match resize {
        Some((w, h)) => image.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle),
        None => image,
    };
    let rgba = image.to_rgba8();
    Ok(RgbaImage { width: rgba.width() as usize, height: rgba.height() as usize, rgba: rgba.into_raw() })
}

/// ITU-R BT.601 luma of an RGB colour, for 1-channel images.
pub fn luma([r, g, b]: [u8; 3]) -> u8 {
    (0.299 * r as f64 + 0.587 * g as f64 + 0.114 * b as f64).round() as u8
}

/// The value of `color` in channel `c` of an image with `shape.channels` channels.
pub fn channel_value(color: [u8; 3], c: usize, shape: ImageShape) -> u8 {
    if shape.channels == 1 {
        luma(color)
    } else {
        color[c.min(2)]
    }
}

/// Converts an RGBA image of exactly `shape`'s size to C×H×W pixels.
pub fn to_chw(image: &RgbaImage, shape: ImageShape) -> Vec<u8> {
    let plane = shape.height * shape.width;
    let mut out = vec![0u8; shape.len()];
    for p in 0..plane {
        let color = [image.rgba[p * 4], image.rgba[p * 4 + 1], image.rgba[p * 4 + 2]];
        for c in 0..shape.channels {
            out[c * plane + p] = channel_value(color, c, shape);
        }
    }
    out
}
