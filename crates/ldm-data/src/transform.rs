//! How one decoded image becomes a fixed-size training sample.

use std::path::Path;

use image::imageops::{self, FilterType};
use image::RgbImage;

use crate::decode::decode_rgb8;
use crate::rng::SplitMix64;
use crate::DataError;

/// How an image is brought to the `r × r` square (`r` = `resize`, default
/// `size`) that the crop is then taken from.
///
/// Serialized in snake case: `"crop"`, `"pad"`, `"resize"`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// Resize (keeping the aspect ratio) so the *shorter* side is `r`; the
    /// crop then cuts off the excess of the longer side. Images whose
    /// shorter side is already `r` are used untouched. The default, and the
    /// only behaviour before `fit` existed: a 28 × 28 image with `size` 32 is
    /// upscaled to 32 × 32.
    #[default]
    Crop,
    /// Place the image, unscaled, at the centre of an `r × r` canvas of the
    /// constant [`Transform::pad_value`] (when the difference is odd, the
    /// extra pixel goes right / below). An image with a side longer than `r`
    /// is first shrunk, keeping its aspect ratio, so its longer side is `r`;
    /// images are never enlarged. For 28 × 28 Fashion-MNIST with `size` 32
    /// that is 2 pixels of border on every side; `resize = 36` with
    /// `random_crop` adds up to ±4 pixels of random translation.
    Pad,
    /// Resize to exactly `r × r`, ignoring the aspect ratio (nothing is cut
    /// off, shapes are stretched). Same as `Crop` for square images.
    Resize,
}

/// Resize, crop and flip settings that turn an image of any size into a
/// `3 × size × size` sample.
///
/// The pipeline is: bring the image to an `r × r` square with `r` =
/// `resize` (default `size`) as [`Fit`] says — by default, resize so the
/// *shorter* side equals `r` (keeping the aspect ratio) — crop `size × size`
/// (at a random offset with `random_crop`, else centred), then mirror
/// left-right with probability ½ when `hflip`. Training typically uses
/// `random_crop`/`hflip`; evaluation and reconstruction grids turn both off
/// so they are comparable across runs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// Side length of the square output, in pixels.
    pub size: u32,
    /// Shorter side after the resize, before cropping (≥ `size`); `None` =
    /// `size`. Smaller crops of images at a given scale make cheaper steps
    /// that still see that scale's statistics.
    #[serde(default)]
    pub resize: Option<u32>,
    /// Scale augmentation: when set (> `resize`), each sample's `r` is drawn
    /// log-uniformly from [`resize`, `resize_max`] instead of being `resize`,
    /// so every octave of scale is seen equally often: a model trained on
    /// large photos at one small scale only meets their densest detail,
    /// never the smooth skies and gradients the same photos show larger.
    /// `None` keeps the fixed scale, bit for bit.
    #[serde(default)]
    pub resize_max: Option<u32>,
    /// Crop at a random offset instead of the centre.
    pub random_crop: bool,
    /// Mirror horizontally with probability ½.
    pub hflip: bool,
    /// Colour augmentation: each sample's R, G, B planes in one of the six
    /// orders, drawn uniformly (the identity included). Luminance structure
    /// stays natural while the colours seen cover the whole cube, so a small
    /// autoencoder learns to carry hues its few training images lack (a
    /// lilac sky, a magenta flower) instead of pulling them to the ones it
    /// saw. Off by default; meaningless for labels that depend on colour.
    #[serde(default)]
    pub channel_shuffle: bool,
    /// How images are brought to the square the crop is taken from; the
    /// default [`Fit::Crop`] is the original behaviour.
    #[serde(default)]
    pub fit: Fit,
    /// Gray level (all three channels) of the border [`Fit::Pad`] adds, in
    /// 8-bit terms: 0 (the default, black) becomes −1.0 in the sample, 255
    /// (white) +1.0, 128 ≈ +0.004. Black matches Fashion-MNIST's background;
    /// white matches cut-outs composited over white. Ignored by the other fits.
    #[serde(default)]
    pub pad_value: u8,
}

/// Resampling filter for the resize. Catmull-Rom (PIL's "bicubic") widens
/// with the downscale factor, so it antialiases properly, and rings less and
/// costs less than Lanczos3 at visually equivalent sharpness.
const RESIZE_FILTER: FilterType = FilterType::CatmullRom;

impl Transform {
    /// The deterministic transform: fit to `size` as `fit` says (border
    /// `pad_value` for [`Fit::Pad`]), centre crop, no scale augmentation,
    /// flip or channel shuffle — what evaluation and latent caching use.
    pub fn fixed(size: u32, fit: Fit, pad_value: u8) -> Self {
        Self {
            size,
            resize: None,
            resize_max: None,
            random_crop: false,
            hflip: false,
            channel_shuffle: false,
            fit,
            pad_value,
        }
    }

    /// Rejects settings that cannot produce a sample.
    ///
    /// # Errors
    /// [`DataError::Config`] when `size` is zero.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.size == 0 {
            return Err(DataError::Config("transform size must be > 0".into()));
        }
        if self.resize.is_some_and(|r| r < self.size) {
            return Err(DataError::Config(format!(
                "transform resize ({}) must be at least the crop size ({})",
                self.resize.unwrap_or(0),
                self.size
            )));
        }
        let base = self.base_square();
        if let Some(max) = self.resize_max.filter(|&m| m < base) {
            return Err(DataError::Config(format!(
                "transform resize_max ({max}) must be at least resize ({base})"
            )));
        }
        Ok(())
    }

    /// Number of `f32` values in one output sample (`3 * size * size`).
    pub fn sample_len(&self) -> usize {
        3 * self.size as usize * self.size as usize
    }

    /// Applies the transform to a decoded image; output is CHW `f32` in
    /// `[-1, 1]` (`x / 127.5 - 1`), the range the autoencoder expects.
    ///
    /// The same as [`Transform::apply_prepared`] on [`Transform::prepare`]'s
    /// result: a loader that keeps prepared images gets identical samples.
    /// All randomness comes from `rng_seed` (see [`crate::sample_seed`]).
    ///
    /// # Panics
    /// If `size` is zero (call [`Transform::validate`] first).
    pub fn apply(&self, image: &RgbImage, rng_seed: u64) -> Vec<f32> {
        match self.prepare(image) {
            Some(prepared) => self.apply_prepared(&prepared, rng_seed),
            None => self.apply_prepared(image, rng_seed),
        }
    }

    /// The square side samples are cut from without scale augmentation.
    fn base_square(&self) -> u32 {
        self.resize.unwrap_or(self.size).max(self.size)
    }

    /// The largest square side a sample of this transform is cut from.
    fn largest_square(&self) -> u32 {
        let base = self.base_square();
        self.resize_max.map_or(base, |m| m.max(base))
    }

    /// The part of the transform that does not depend on the sample's seed:
    /// the image brought to the largest scale any sample needs (the fixed
    /// scale, or `resize_max` with scale augmentation), or `None` when the
    /// image is already there. Usually far smaller than the decoded image,
    /// so a loader can keep it in memory and skip decoding and resizing the
    /// file again (see [`crate::LoaderConfig::cache_mb`]).
    pub fn prepare(&self, image: &RgbImage) -> Option<RgbImage> {
        let side = self.largest_square();
        let (width, height) = image.dimensions();
        let fits = match self.fit {
            Fit::Crop => width.min(height) == side,
            Fit::Pad => width.max(height) <= side,
            Fit::Resize => (width, height) == (side, side),
        };
        (!fits).then(|| match self.fit {
            Fit::Crop => resize_shorter_side(image, side),
            Fit::Pad => shrink_to_fit(image, side),
            Fit::Resize => resize_exact(image, side),
        })
    }

    /// Applies the seed-dependent rest of the transform to an image that
    /// [`Transform::prepare`] has brought to scale: the scale draw (with
    /// `resize_max`), crop, flip and channel order, then the conversion to
    /// CHW `f32` in `[-1, 1]`.
    ///
    /// The generator draws the crop offsets and the flip in a fixed order
    /// whether or not the options are enabled, so turning `random_crop` on or
    /// off does not change which samples get flipped.
    ///
    /// # Panics
    /// If `size` is zero (call [`Transform::validate`] first).
    pub fn apply_prepared(&self, image: &RgbImage, rng_seed: u64) -> Vec<f32> {
        let size = self.size;
        assert!(size > 0, "Transform::size must be > 0");
        let mut rng = SplitMix64::new(rng_seed);
        let base = self.base_square();
        // Drawn first and only when asked for, so a fixed scale keeps the
        // crop and flip draws (and its samples) of earlier versions.
        let square = match self.resize_max {
            Some(max) if max > base => log_uniform(&mut rng, base, max),
            _ => base,
        };
        let resized = match self.fit {
            Fit::Crop => resize_shorter_side(image, square),
            Fit::Pad => pad_to_square(image, square, self.pad_value),
            Fit::Resize => resize_exact(image, square),
        };
        let (width, height) = resized.dimensions();

        let random_x = rng.below(u64::from(width - size) + 1) as u32;
        let random_y = rng.below(u64::from(height - size) + 1) as u32;
        let flip = rng.coin() && self.hflip;
        // Drawn last and only when asked for: earlier draws are unchanged.
        let order = if self.channel_shuffle {
            CHANNEL_ORDERS[rng.below(6) as usize]
        } else {
            [0, 1, 2]
        };
        let (left, top) = if self.random_crop {
            (random_x, random_y)
        } else {
            ((width - size) / 2, (height - size) / 2)
        };

        let side = size as usize;
        let mut out = vec![0.0f32; 3 * side * side];
        let (channels_r, rest) = out.split_at_mut(side * side);
        let (channels_g, channels_b) = rest.split_at_mut(side * side);
        for y in 0..size {
            for x in 0..size {
                let src_x = if flip { left + size - 1 - x } else { left + x };
                let rgb = resized.get_pixel(src_x, top + y).0;
                let i = y as usize * side + x as usize;
                channels_r[i] = u8_to_unit(rgb[order[0]]);
                channels_g[i] = u8_to_unit(rgb[order[1]]);
                channels_b[i] = u8_to_unit(rgb[order[2]]);
            }
        }
        out
    }
}

/// The six orders of the R, G, B planes, identity first.
const CHANNEL_ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];

/// An integer in [`lo`, `hi`] whose logarithm is uniform: each octave of the
/// range is drawn equally often.
fn log_uniform(rng: &mut SplitMix64, lo: u32, hi: u32) -> u32 {
    // 53 random bits make a uniform double in [0, 1).
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let (a, b) = (f64::from(lo).ln(), f64::from(hi).ln());
    ((a + u * (b - a)).exp().round() as u32).clamp(lo, hi)
}

/// An 8-bit pixel value in the models' range `[-1, 1]` (`v / 127.5 − 1`).
pub fn u8_to_unit(v: u8) -> f32 {
    f32::from(v) / 127.5 - 1.0
}

/// The inverse of [`u8_to_unit`], rounded to the nearest level; values
/// outside `[-1, 1]` clamp and NaN maps to 0 (what `as u8` does), so a
/// model's raw output can be written as an image.
pub fn unit_to_u8(x: f32) -> u8 {
    ((x + 1.0) * 127.5).round() as u8
}

/// Scales so the shorter side is exactly `size`, the longer side rounded to
/// the nearest pixel (never below `size`). Returns a copy untouched when no
/// scaling is needed, so exact-size datasets are bit-exact and fast.
fn resize_shorter_side(image: &RgbImage, size: u32) -> RgbImage {
    let (width, height) = image.dimensions();
    let short = width.min(height);
    if short == size {
        return image.clone();
    }
    let scale_long = |long: u32| -> u32 {
        let scaled = (u64::from(long) * u64::from(size) + u64::from(short) / 2) / u64::from(short);
        u32::try_from(scaled).unwrap_or(u32::MAX).max(size)
    };
    let (new_w, new_h) = if width <= height {
        (size, scale_long(height))
    } else {
        (scale_long(width), size)
    };
    imageops::resize(image, new_w, new_h, RESIZE_FILTER)
}

/// Resizes to exactly `side × side`; a copy when it already is.
fn resize_exact(image: &RgbImage, side: u32) -> RgbImage {
    if image.dimensions() == (side, side) {
        return image.clone();
    }
    imageops::resize(image, side, side, RESIZE_FILTER)
}

/// `image` shrunk, keeping its aspect ratio, so its longer side is `side`;
/// a copy when it already fits (images are never enlarged).
fn shrink_to_fit(image: &RgbImage, side: u32) -> RgbImage {
    let (width, height) = image.dimensions();
    let long = width.max(height);
    if long <= side {
        return image.clone();
    }
    let scale_short = |short: u32| -> u32 {
        let scaled = (u64::from(short) * u64::from(side) + u64::from(long) / 2) / u64::from(long);
        (scaled as u32).clamp(1, side)
    };
    let (new_w, new_h) = if width >= height {
        (side, scale_short(height))
    } else {
        (scale_short(width), side)
    };
    imageops::resize(image, new_w, new_h, RESIZE_FILTER)
}

/// Centres `image` on a `side × side` canvas of gray `value`, first shrinking
/// it (keeping the aspect ratio, longer side = `side`) if it does not fit.
fn pad_to_square(image: &RgbImage, side: u32, value: u8) -> RgbImage {
    let fitted = shrink_to_fit(image, side);
    let mut canvas = RgbImage::from_pixel(side, side, image::Rgb([value; 3]));
    let (w, h) = fitted.dimensions();
    imageops::replace(
        &mut canvas,
        &fitted,
        i64::from((side - w) / 2),
        i64::from((side - h) / 2),
    );
    canvas
}

/// Decodes `path` and applies `transform` with randomness from `rng_seed`.
///
/// This is exactly what the [`crate::Loader`] does for each sample; call it
/// directly for one-off images (a sampling prompt image, a test fixture) or
/// to reproduce a loader sample with seed
/// [`sample_seed(seed, epoch, position)`](crate::sample_seed).
///
/// # Errors
/// [`DataError::Config`] for an invalid transform, [`DataError::Decode`]
/// naming the file if it cannot be decoded.
pub fn load_image_chw(
    path: &Path,
    transform: &Transform,
    rng_seed: u64,
) -> Result<Vec<f32>, DataError> {
    transform.validate()?;
    let image = decode_rgb8(path)?;
    Ok(transform.apply(&image, rng_seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// An image whose red channel encodes the column and green the row, so
    /// crops can be located from the output.
    fn coordinate_image(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            Rgb([(x * 10) as u8, (y * 10) as u8, 0])
        })
    }

    fn pixel(sample: &[f32], side: usize, channel: usize, x: usize, y: usize) -> u8 {
        unit_to_u8(sample[channel * side * side + y * side + x])
    }

    #[test]
    fn center_crop_is_centered_without_resize() {
        let t = Transform::fixed(8, Fit::Crop, 0);
        let out = t.apply(&coordinate_image(12, 8), 0);
        assert_eq!(out.len(), 3 * 8 * 8);
        // (12 - 8) / 2 = 2 columns trimmed on each side.
        assert_eq!(pixel(&out, 8, 0, 0, 0), 20);
        assert_eq!(pixel(&out, 8, 0, 7, 0), 90);
        assert_eq!(pixel(&out, 8, 1, 0, 7), 70);
    }

    #[test]
    fn flip_mirrors_columns() {
        let t = Transform {
            size: 8,
            resize: None,
            resize_max: None,
            random_crop: false,
            hflip: true,
            channel_shuffle: false,
            fit: Fit::Crop,
            pad_value: 0,
        };
        let image = coordinate_image(8, 8);
        let plain = Transform {
            hflip: false,
            channel_shuffle: false,
            ..t.clone()
        }
        .apply(&image, 0);
        let flipped = (0..64u64)
            .map(|seed| t.apply(&image, seed))
            .find(|s| s != &plain)
            .expect("some of 64 seeds flips");
        for x in 0..8 {
            assert_eq!(pixel(&flipped, 8, 0, x, 3), pixel(&plain, 8, 0, 7 - x, 3));
        }
    }

    #[test]
    fn random_crop_stays_inside_and_varies() {
        let t = Transform {
            size: 4,
            resize: None,
            resize_max: None,
            random_crop: true,
            hflip: false,
            channel_shuffle: false,
            fit: Fit::Crop,
            pad_value: 0,
        };
        let image = coordinate_image(4, 10);
        let mut tops = std::collections::BTreeSet::new();
        for seed in 0..100 {
            let out = t.apply(&image, seed);
            let top = pixel(&out, 4, 1, 0, 0) / 10;
            assert!(top <= 6);
            assert_eq!(pixel(&out, 4, 1, 0, 3), (top + 3) * 10);
            tops.insert(top);
        }
        assert_eq!(tops.len(), 7, "all 7 offsets should occur in 100 draws");
    }

    #[test]
    fn resize_keeps_aspect_and_hits_size() {
        assert_eq!(
            resize_shorter_side(&coordinate_image(40, 20), 10).dimensions(),
            (20, 10)
        );
        assert_eq!(
            resize_shorter_side(&coordinate_image(3, 5), 6).dimensions(),
            (6, 10)
        );
        assert_eq!(
            resize_shorter_side(&coordinate_image(1, 1000), 4).dimensions(),
            (4, 4000)
        );
    }

    #[test]
    fn values_span_minus_one_to_one() {
        let image = RgbImage::from_fn(
            2,
            1,
            |x, _| if x == 0 { Rgb([0; 3]) } else { Rgb([255; 3]) },
        );
        let out = Transform::fixed(1, Fit::Crop, 0)
            .apply(&RgbImage::from_fn(1, 1, |_, _| Rgb([255, 0, 0])), 0);
        assert_eq!(out, vec![1.0, -1.0, -1.0]);
        let wide = Transform {
            size: 1,
            resize: None,
            resize_max: None,
            random_crop: true,
            hflip: false,
            channel_shuffle: false,
            fit: Fit::Crop,
            pad_value: 0,
        };
        let values: Vec<f32> = (0..32).map(|s| wide.apply(&image, s)[0]).collect();
        assert!(values.iter().all(|&v| v == 1.0 || v == -1.0));
    }

    #[test]
    fn log_uniform_covers_each_octave_equally() {
        let mut rng = SplitMix64::new(7);
        let draws: Vec<u32> = (0..4000).map(|_| log_uniform(&mut rng, 64, 256)).collect();
        assert!(draws.iter().all(|&r| (64..=256).contains(&r)));
        let low = draws.iter().filter(|&&r| r < 128).count() as f64 / draws.len() as f64;
        assert!((0.45..0.55).contains(&low), "share of [64, 128): {low}");
        assert!(draws.contains(&64) && draws.contains(&256));
    }

    #[test]
    fn resize_max_varies_the_scale_and_none_keeps_it() {
        // Columns are 10 apart at the image's own scale (shorter side 10):
        // a larger scale shows them closer together in the crop.
        let image = coordinate_image(20, 10);
        let fixed = Transform {
            size: 4,
            resize: Some(10),
            resize_max: None,
            random_crop: false,
            hflip: false,
            channel_shuffle: false,
            fit: Fit::Crop,
            pad_value: 0,
        };
        let same = Transform {
            resize_max: Some(10),
            ..fixed.clone()
        };
        let jittered = Transform {
            resize_max: Some(40),
            ..fixed.clone()
        };
        jittered.validate().unwrap();
        let step = |s: &[f32]| i32::from(pixel(s, 4, 0, 3, 0)) - i32::from(pixel(s, 4, 0, 0, 0));
        let mut steps = std::collections::BTreeSet::new();
        for seed in 0..32 {
            assert_eq!(fixed.apply(&image, seed), same.apply(&image, seed));
            assert_eq!(step(&fixed.apply(&image, seed)), 30);
            steps.insert(step(&jittered.apply(&image, seed)));
        }
        assert!(steps.len() > 3, "scales drawn: {steps:?}");
        assert!(
            steps.iter().all(|&d| d <= 30),
            "never smaller than resize: {steps:?}"
        );
        let bad = Transform {
            resize_max: Some(8),
            ..fixed
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn channel_shuffle_permutes_planes_and_off_keeps_them() {
        let image = RgbImage::from_pixel(2, 2, Rgb([10, 100, 200]));
        let plain = Transform {
            size: 2,
            resize: None,
            resize_max: None,
            random_crop: true,
            hflip: true,
            channel_shuffle: false,
            fit: Fit::Crop,
            pad_value: 0,
        };
        let shuffled = Transform {
            channel_shuffle: true,
            ..plain.clone()
        };
        let mut orders = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let rgb = |t: &Transform| {
                let s = t.apply(&image, seed);
                [
                    pixel(&s, 2, 0, 0, 0),
                    pixel(&s, 2, 1, 0, 0),
                    pixel(&s, 2, 2, 0, 0),
                ]
            };
            assert_eq!(rgb(&plain), [10, 100, 200]);
            let got = rgb(&shuffled);
            let mut sorted = got;
            sorted.sort_unstable();
            assert_eq!(sorted, [10, 100, 200], "a permutation of the pixel");
            orders.insert(got);
        }
        assert_eq!(orders.len(), 6, "all six orders in 64 draws");
    }

    #[test]
    fn resize_then_smaller_crop_keeps_the_resized_scale() {
        // A 16×8 gradient resized to shorter side 8 is itself; a centred 4×4
        // crop then takes columns 6..10 of it, not a shrunk copy of the image.
        let img = RgbImage::from_fn(16, 8, |x, _| image::Rgb([(x * 16) as u8, 0, 0]));
        let t = Transform {
            size: 4,
            resize: Some(8),
            resize_max: None,
            random_crop: false,
            hflip: false,
            channel_shuffle: false,
            fit: Fit::Crop,
            pad_value: 0,
        };
        t.validate().unwrap();
        let out = t.apply(&img, 1);
        assert_eq!(out.len(), 3 * 16);
        assert_eq!(out[0], u8_to_unit(6 * 16));
        assert_eq!(out[3], u8_to_unit(9 * 16));
        let bad = Transform {
            resize: Some(2),
            resize_max: None,
            ..t
        };
        assert!(bad.validate().is_err());
    }
}
