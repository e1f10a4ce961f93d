//! Tiling sample images into one picture for sample files and TensorBoard.

use std::path::Path;

use image::{ExtendedColorType, ImageFormat};

use crate::DataError;

/// Pixels of black border around and between tiles (as torchvision's
/// `make_grid`, so grids look like the reference's).
pub const GRID_PADDING: usize = 2;

/// Tiles `n` CHW images in `[-1, 1]` into one row-major RGB8 picture with
/// [`GRID_PADDING`] pixels of black between and around tiles. Returns
/// `(pixels, width, height)`.
///
/// `nrow` is the number of images *per row* (torchvision's naming); the last
/// row may be partly empty. Tiles may be non-square (`height != width`).
/// Values outside `[-1, 1]` are clamped and NaN shows as black, so a
/// diverging model still produces a viewable grid.
///
/// # Panics
/// If `images.len() != n * 3 * height * width`, or `n`, `nrow`, `height` or
/// `width` is zero, or the grid would exceed `u32` pixels per side. Use
/// [`save_grid_png`], which reports these as errors, when the shape comes
/// from outside.
pub fn grid_rgb8(
    images: &[f32],
    n: usize,
    height: usize,
    width: usize,
    nrow: usize,
) -> (Vec<u8>, u32, u32) {
    let layout = GridLayout::new(images.len(), n, height, width, nrow)
        .unwrap_or_else(|e| panic!("grid_rgb8: {e}"));
    let (grid_w, grid_h) = (layout.width, layout.height);
    let mut pixels = vec![0u8; grid_w * grid_h * 3];
    let plane = height * width;
    for (i, image) in images.chunks_exact(3 * plane).enumerate() {
        let left = GRID_PADDING + (i % layout.columns) * (width + GRID_PADDING);
        let top = GRID_PADDING + (i / layout.columns) * (height + GRID_PADDING);
        for y in 0..height {
            for x in 0..width {
                let dst = ((top + y) * grid_w + left + x) * 3;
                for c in 0..3 {
                    pixels[dst + c] = crate::unit_to_u8(image[c * plane + y * width + x]);
                }
            }
        }
    }
    // GridLayout::new checked that both sides fit in u32.
    (pixels, grid_w as u32, grid_h as u32)
}

/// Writes the grid of [`grid_rgb8`] to `path` as a PNG (whatever the
/// extension says).
///
/// # Errors
/// [`DataError::Shape`] for inconsistent sizes, [`DataError::Write`] naming
/// `path` if encoding or writing fails.
pub fn save_grid_png(
    path: &Path,
    images: &[f32],
    n: usize,
    height: usize,
    width: usize,
    nrow: usize,
) -> Result<(), DataError> {
    GridLayout::new(images.len(), n, height, width, nrow).map_err(DataError::Shape)?;
    let (pixels, w, h) = grid_rgb8(images, n, height, width, nrow);
    image::save_buffer_with_format(
        path,
        &pixels,
        w,
        h,
        ExtendedColorType::Rgb8,
        ImageFormat::Png,
    )
    .map_err(|e| DataError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Grid geometry, computed once and validated.
struct GridLayout {
    columns: usize,
    width: usize,
    height: usize,
}

impl GridLayout {
    fn new(
        values: usize,
        n: usize,
        height: usize,
        width: usize,
        nrow: usize,
    ) -> Result<Self, String> {
        if n == 0 || nrow == 0 || height == 0 || width == 0 {
            return Err(format!(
                "n ({n}), nrow ({nrow}), height ({height}) and width ({width}) must all be > 0"
            ));
        }
        let expected = n.checked_mul(3 * height * width);
        if expected != Some(values) {
            return Err(format!(
                "{values} values do not make {n} images of 3x{height}x{width}"
            ));
        }
        let columns = nrow.min(n);
        let rows = n.div_ceil(columns);
        let side = |count: usize, tile: usize| count * (tile + GRID_PADDING) + GRID_PADDING;
        let (grid_w, grid_h) = (side(columns, width), side(rows, height));
        if u32::try_from(grid_w).is_err() || u32::try_from(grid_h).is_err() {
            return Err(format!("a {grid_w}x{grid_h} grid is too large"));
        }
        Ok(Self {
            columns,
            width: grid_w,
            height: grid_h,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_square_tiles_give_expected_size() {
        // 5 tiles of 3x4 (h x w), 2 per row -> 2 columns, 3 rows.
        let images = vec![0.0; 5 * 3 * 3 * 4];
        let (pixels, w, h) = grid_rgb8(&images, 5, 3, 4, 2);
        assert_eq!((w, h), (2 * (4 + 2) + 2, 3 * (3 + 2) + 2));
        assert_eq!(pixels.len(), (w * h * 3) as usize);
    }

    #[test]
    fn tiles_land_in_place_and_padding_is_black() {
        // Two 1x2 tiles side by side: first white, second black-and-white.
        let images = vec![
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0,
        ];
        let (pixels, w, h) = grid_rgb8(&images, 2, 1, 2, 8);
        assert_eq!((w, h), (10, 5));
        let at = |x: usize, y: usize| &pixels[(y * w as usize + x) * 3..][..3];
        assert_eq!(at(0, 0), [0, 0, 0]);
        assert_eq!(at(2, 2), [255, 255, 255]);
        assert_eq!(at(3, 2), [255, 255, 255]);
        assert_eq!(at(6, 2), [0, 0, 0]);
        assert_eq!(at(7, 2), [255, 255, 255]);
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        assert_eq!(crate::unit_to_u8(5.0), 255);
        assert_eq!(crate::unit_to_u8(-5.0), 0);
        assert_eq!(crate::unit_to_u8(f32::NAN), 0);
        assert_eq!(crate::unit_to_u8(0.0), 128);
    }

    #[test]
    fn bad_shape_is_an_error_not_a_panic() {
        let err =
            save_grid_png(Path::new("/tmp/never-written.png"), &[0.0; 5], 1, 1, 1, 1).unwrap_err();
        assert!(matches!(err, DataError::Shape(_)), "{err}");
    }
}
