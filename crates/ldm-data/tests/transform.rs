//! The `fit` modes of `Transform`: pad and resize for sizes the autoencoder's
//! downsampling factor does not divide (28 × 28 Fashion-MNIST → 32 × 32).

use image::{imageops, Rgb, RgbImage};
use ldm_data::{u8_to_unit, Fit, Transform};

fn transform(size: u32, fit: Fit) -> Transform {
    Transform::fixed(size, fit, 0)
}

/// 28 × 28 with distinct values: red = column * 9, green = row * 9, blue 200.
fn fashion_like() -> RgbImage {
    RgbImage::from_fn(28, 28, |x, y| Rgb([(x * 9) as u8, (y * 9) as u8, 200]))
}

fn at(sample: &[f32], side: u32, c: u32, x: u32, y: u32) -> f32 {
    sample[(c * side * side + y * side + x) as usize]
}

#[test]
fn pad_28_to_32_keeps_the_centre_and_fills_the_border() {
    let image = fashion_like();
    for (pad_value, border) in [(0u8, -1.0f32), (255, 1.0), (51, u8_to_unit(51))] {
        let t = Transform {
            pad_value,
            ..transform(32, Fit::Pad)
        };
        t.validate().unwrap();
        let out = t.apply(&image, 5);
        assert_eq!(out.len(), 3 * 32 * 32);
        for y in 0..32 {
            for x in 0..32 {
                let inside = (2..30).contains(&x) && (2..30).contains(&y);
                for c in 0..3 {
                    let v = at(&out, 32, c, x, y);
                    if inside {
                        let original = image.get_pixel(x - 2, y - 2).0[c as usize];
                        assert_eq!(v, u8_to_unit(original), "centre ({x},{y}) channel {c}");
                    } else {
                        assert_eq!(v, border, "border ({x},{y}) channel {c}");
                    }
                }
            }
        }
    }
    // Black is −1.0: the documented value of the default pad.
    assert_eq!(transform(32, Fit::Pad).pad_value, 0);
}

#[test]
fn pad_with_a_larger_canvas_and_random_crop_translates() {
    let t = Transform {
        resize: Some(36),
        resize_max: None,
        random_crop: true,
        ..transform(32, Fit::Pad)
    };
    t.validate().unwrap();
    let image = fashion_like();
    let mut offsets = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let out = t.apply(&image, seed);
        // Find where the image's top-left pixel (0, 0, 200 blue) landed.
        let found = (0..32)
            .flat_map(|y| (0..32).map(move |x| (x, y)))
            .find(|&(x, y)| at(&out, 32, 2, x, y) == u8_to_unit(200))
            .expect("some of the image is always visible");
        offsets.insert(found);
    }
    // Canvas offset 4 minus crop offset 0..=4 on each axis: 25 placements.
    assert_eq!(offsets.len(), 25);
}

#[test]
fn pad_shrinks_images_that_do_not_fit() {
    let wide = RgbImage::from_pixel(64, 16, Rgb([255, 255, 255]));
    let out = transform(32, Fit::Pad).apply(&wide, 0);
    // 64 × 16 → 32 × 8, centred: rows 12..20 white, the rest black.
    for y in 0..32 {
        let v = at(&out, 32, 0, 16, y);
        let expected = if (12..20).contains(&y) { 1.0 } else { -1.0 };
        assert!((v - expected).abs() < 1e-6, "row {y}: {v}");
    }
}

#[test]
fn resize_28_to_32_stretches_to_the_exact_size() {
    let image = fashion_like();
    let out = transform(32, Fit::Resize).apply(&image, 0);
    let expected = imageops::resize(&image, 32, 32, imageops::FilterType::CatmullRom);
    for y in 0..32 {
        for x in 0..32 {
            for c in 0..3 {
                assert_eq!(
                    at(&out, 32, c, x, y),
                    u8_to_unit(expected.get_pixel(x, y).0[c as usize])
                );
            }
        }
    }
    // Square input: the same as the default shorter-side resize.
    assert_eq!(out, transform(32, Fit::Crop).apply(&image, 0));
    // Non-square input: nothing is cut off, unlike Crop.
    let tall = RgbImage::from_fn(8, 16, |_, y| Rgb([if y < 8 { 0 } else { 255 }, 0, 0]));
    let squeezed = transform(8, Fit::Resize).apply(&tall, 0);
    assert_eq!(at(&squeezed, 8, 0, 4, 0), -1.0);
    assert_eq!(at(&squeezed, 8, 0, 4, 7), 1.0);
    // An image already the right size is used untouched.
    let exact = RgbImage::from_fn(32, 32, |x, y| Rgb([x as u8, y as u8, 3]));
    let out = transform(32, Fit::Resize).apply(&exact, 0);
    assert_eq!(at(&out, 32, 0, 31, 0), u8_to_unit(31));
}

#[test]
fn fit_defaults_to_crop_when_absent_from_a_config() {
    let t: Transform = serde_json::from_str(
        r#"{"size": 32, "resize": null, "random_crop": false, "hflip": true}"#,
    )
    .unwrap();
    assert_eq!(t.fit, Fit::Crop);
    assert_eq!(t.pad_value, 0);
    let padded: Transform = serde_json::from_str(
        r#"{"size": 32, "random_crop": false, "hflip": false, "fit": "pad", "pad_value": 255}"#,
    )
    .unwrap();
    assert_eq!((padded.fit, padded.pad_value), (Fit::Pad, 255));
}
