//! Turning one file into an 8-bit RGB image, whatever it holds.
//!
//! Datasets scraped from the web mix grayscale, palette, RGBA and 16-bit
//! files, and some are broken. This module gives the rest of the crate one
//! simple contract: either an RGB8 image that looks like what an image viewer
//! shows, or a [`DataError::Decode`] naming the file — never a panic.

use std::io::{BufRead, Cursor, Seek};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use crate::DataError;

/// Decodes `path` to RGB8.
///
/// * The format is detected from the file's first bytes, falling back to the
///   extension, so a PNG saved as `.jpg` still loads.
/// * The EXIF orientation (phone photos) is applied, so the model sees
///   images upright, as a viewer shows them.
/// * Gray images are replicated to three channels; 16-bit images are rounded
///   to 8 bits (a training sample ends up in 8-bit range anyway).
/// * Transparency is composited over **white** rather than dropped: pixels
///   with alpha 0 carry arbitrary colour (often black, sometimes junk left by
///   an editor), and dropping alpha would teach the model that junk. White is
///   what viewers and browsers show behind such images. (PIL's
///   `convert("RGB")`, used by the reference code, drops alpha instead; the
///   two agree on every opaque image.)
/// * The image crate's default memory limit (512 MiB per image) applies, so a
///   forged header claiming a gigantic image is rejected instead of
///   exhausting memory.
///
/// # Errors
/// [`DataError::Decode`] with the decoder's reason for anything unreadable,
/// including a panic inside a decoder, which is caught and reported.
pub fn decode_rgb8(path: &Path) -> Result<RgbImage, DataError> {
    decode_guarded(path, || {
        let reader = ImageReader::open(path).map_err(|e| e.to_string())?;
        decode_dynamic(reader)
    })
}

/// Decodes an image file already read into memory, exactly as
/// [`decode_rgb8`] would decode the file itself; `path` supplies the
/// extension fallback of the format detection and the name in errors.
///
/// Useful when the bytes are needed anyway (to fingerprint them, see
/// [`crate::LabelledImages::load_item`]) so the file is read only once.
///
/// # Errors
/// As [`decode_rgb8`].
pub fn decode_rgb8_bytes(bytes: &[u8], path: &Path) -> Result<RgbImage, DataError> {
    decode_guarded(path, || {
        let mut reader = ImageReader::new(Cursor::new(bytes));
        // What `ImageReader::open` does: the extension's format until the
        // content says otherwise.
        if let Ok(format) = ImageFormat::from_path(path) {
            reader.set_format(format);
        }
        decode_dynamic(reader)
    })
}

fn decode_guarded(
    path: &Path,
    decode: impl FnOnce() -> Result<DynamicImage, String>,
) -> Result<RgbImage, DataError> {
    // A decoder bug on hostile input must cost one skipped file, not the run.
    let outcome = panic::catch_unwind(AssertUnwindSafe(decode));
    let reason = match outcome {
        Ok(Ok(image)) => return Ok(flatten_to_rgb8(image)),
        Ok(Err(reason)) => reason,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            format!("decoder panicked: {message}")
        }
    };
    Err(DataError::Decode {
        path: path.to_path_buf(),
        // Messages are promised to be one line; some decoders nest causes.
        reason: reason.replace(['\n', '\r'], " "),
    })
}

fn decode_dynamic<R: BufRead + Seek>(reader: ImageReader<R>) -> Result<DynamicImage, String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let reader = reader.with_guessed_format().map_err(|e| text(&e))?;
    let mut decoder = reader.into_decoder().map_err(|e| text(&e))?;
    // `ImageReader::decode` reserves the output size against the limits;
    // going through the decoder ourselves (to read the orientation) means
    // doing that check here.
    Limits::default()
        .reserve(decoder.total_bytes())
        .map_err(|e| text(&e))?;
    // Broken EXIF must not reject an otherwise fine image.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| text(&e))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(format!(
            "image has no pixels ({}x{})",
            image.width(),
            image.height()
        ));
    }
    image.apply_orientation(orientation);
    Ok(image)
}

/// Converts any colour type to RGB8, compositing transparency over white.
fn flatten_to_rgb8(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    // f32 handles 8- and 16-bit alpha alike, and rounding once at the end
    // keeps fully opaque pixels exactly as they were.
    let rgba = image.into_rgba32f();
    let (width, height) = rgba.dimensions();
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for pixel in rgba.pixels() {
        let alpha = pixel[3].clamp(0.0, 1.0);
        for &c in &pixel.0[..3] {
            let over_white = c.clamp(0.0, 1.0) * alpha + (1.0 - alpha);
            out.push((over_white * 255.0).round() as u8);
        }
    }
    RgbImage::from_raw(width, height, out).expect("buffer sized from the image's own dimensions")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgba, RgbaImage};

    #[test]
    fn transparency_becomes_white_and_opaque_pixels_are_untouched() {
        let mut rgba = RgbaImage::new(3, 1);
        rgba.put_pixel(0, 0, Rgba([0, 0, 0, 0]));
        rgba.put_pixel(1, 0, Rgba([10, 200, 30, 255]));
        rgba.put_pixel(2, 0, Rgba([0, 0, 0, 128]));
        let rgb = flatten_to_rgb8(DynamicImage::ImageRgba8(rgba));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [10, 200, 30]);
        assert_eq!(rgb.get_pixel(2, 0).0, [127, 127, 127]);
    }

    #[test]
    fn missing_file_is_a_decode_error_naming_it() {
        let err = decode_rgb8(Path::new("/nonexistent/x.png")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.png"), "{err}");
    }
}
