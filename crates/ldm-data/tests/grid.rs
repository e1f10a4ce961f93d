//! Writing sample grids to disk.

mod common;

use common::TempDir;
use ldm_data::{grid_rgb8, save_grid_png, GRID_PADDING};

#[test]
fn saved_grid_of_non_square_tiles_has_the_expected_size() {
    let dir = TempDir::new("grid");
    let path = dir.path().join("grid.png");
    let (n, h, w, nrow) = (7, 5, 9, 3);
    let images: Vec<f32> = (0..n * 3 * h * w)
        .map(|i| (i % 7) as f32 / 3.0 - 1.0)
        .collect();
    save_grid_png(&path, &images, n, h, w, nrow).unwrap();

    let saved = image::open(&path).unwrap().into_rgb8();
    let expect_w = 3 * (w + GRID_PADDING) + GRID_PADDING;
    let expect_h = 3 * (h + GRID_PADDING) + GRID_PADDING;
    assert_eq!(saved.dimensions(), (expect_w as u32, expect_h as u32));
    let (pixels, gw, gh) = grid_rgb8(&images, n, h, w, nrow);
    assert_eq!((gw, gh), saved.dimensions());
    assert_eq!(pixels, saved.into_raw());
}

#[test]
fn unwritable_path_is_an_error_naming_it() {
    let dir = TempDir::new("grid-err");
    let path = dir.path().join("no-such-dir").join("g.png");
    let err = save_grid_png(&path, &[0.0; 3], 1, 1, 1, 1).unwrap_err();
    assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
}
