//! FID with the real Inception on the six validation photos (64² crops):
//! zero for the same set, and growing with blur. Needs the converted
//! Inception weights (`bash scripts/setup.sh`); skipped with a notice without them.

#[path = "../../../tests/common/mod.rs"]
mod common;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use image::imageops::{self, FilterType};
use ldm_models::inception::FEATURE_DIM;
use ldm_train::shared::assets;
use ldm_train::shared::fid::{frechet_distance, FeatureSet};

type B = Flex;
const SIZE: u32 = 64;

/// Center square of each val photo, resized to 64², blurred by `sigma` (0 = none).
fn photo_set(sigma: f32) -> Tensor<B, 4> {
    let dir = common::photos("val");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut values = Vec::new();
    for p in &names {
        let img = image::open(p).unwrap().to_rgb8();
        let side = img.width().min(img.height());
        let crop = imageops::crop_imm(
            &img,
            (img.width() - side) / 2,
            (img.height() - side) / 2,
            side,
            side,
        )
        .to_image();
        let mut small = imageops::resize(&crop, SIZE, SIZE, FilterType::Triangle);
        if sigma > 0.0 {
            small = imageops::blur(&small, sigma);
        }
        for c in 0..3 {
            values.extend(small.pixels().map(|px| f32::from(px[c]) / 127.5 - 1.0));
        }
    }
    let s = SIZE as usize;
    Tensor::from_data(
        TensorData::new(values, [names.len(), 3, s, s]),
        &Default::default(),
    )
}

fn features(net: &ldm_models::InceptionFid<B>, x: Tensor<B, 4>) -> FeatureSet {
    let mut set = FeatureSet::new(FEATURE_DIM);
    set.push(net.features(x));
    set
}

#[test]
fn fid_is_zero_for_the_same_set_and_grows_with_blur() {
    let path = assets::inception::default_path();
    if !path.is_file() {
        eprintln!(
            "SKIPPED: {} missing; run `bash scripts/setup.sh`",
            path.display()
        );
        return;
    }
    let net = assets::inception::load::<B>("", &Default::default()).unwrap();
    let sharp = photo_set(0.0);
    let n = sharp.dims()[0];
    let reference = features(&net, sharp.clone());
    // The same images in other batches: equal up to float noise.
    let mut again = FeatureSet::new(FEATURE_DIM);
    again.push(net.features(sharp.clone().narrow(0, 0, 2)));
    again.push(net.features(sharp.narrow(0, 2, n - 2)));
    let mild = features(&net, photo_set(0.7));
    let strong = features(&net, photo_set(2.0));

    let same = frechet_distance(&reference, &again);
    let fid_mild = frechet_distance(&reference, &mild);
    let fid_strong = frechet_distance(&reference, &strong);
    println!("FID over {n} photos at 64²: same {same:.3e}, blur σ=0.7 {fid_mild:.2}, σ=2 {fid_strong:.2}");
    assert!(same < 1e-3, "FID of a set with itself: {same}");
    assert!(fid_mild > 1.0, "mild blur should register: {fid_mild}");
    assert!(
        fid_strong > fid_mild,
        "σ=2 ({fid_strong}) not above σ=0.7 ({fid_mild})"
    );
}
