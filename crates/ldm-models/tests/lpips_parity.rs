//! LPIPS with the real converted VGG16 weights against an independent
//! float64 numpy implementation (`scripts/make_lpips_fixture.py`).
//! Tolerance: 1e-5 absolute per tap and in total (f32 vs f64 differ by ~3e-8).

mod common;
use common::read;
use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use ldm_models::Lpips;

fn weights() -> PathBuf {
    let cache = std::env::var_os("LDM_TRAIN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/ldm-train"));
    let p = cache.join("weights/lpips_vgg16.safetensors");
    assert!(
        p.is_file(),
        "{} missing: run `bash scripts/setup.sh`",
        p.display()
    );
    p
}

fn fixture() -> safetensors::SafeTensors<'static> {
    let bytes = include_bytes!("fixtures/lpips_vgg16_ref.safetensors");
    safetensors::SafeTensors::deserialize(bytes).unwrap()
}

#[test]
fn matches_numpy_reference() {
    let dev = Default::default();
    let net = Lpips::<Flex>::load(&weights(), &dev).unwrap();
    let st = fixture();
    let t = |key: &str| {
        let (d, s) = read(&st, key);
        Tensor::<Flex, 4>::from_data(TensorData::new(d, [s[0], s[1], s[2], s[3]]), &dev)
    };
    let per_tap: Vec<f32> = net
        .forward_per_tap(t("x"), t("y"))
        .into_data()
        .to_vec()
        .unwrap();
    let (expect_tap, _) = read(&st, "per_tap");
    for (i, (a, b)) in per_tap.iter().zip(&expect_tap).enumerate() {
        assert!((a - b).abs() < 1e-5, "tap {i}: {a} vs {b}");
    }
    let total: Vec<f32> = net.forward(t("x"), t("y")).into_data().to_vec().unwrap();
    let (expect, _) = read(&st, "expected");
    for (a, b) in total.iter().zip(&expect) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn zero_for_identical_images_and_missing_file_is_named() {
    let dev = Default::default();
    let net = Lpips::<Flex>::load(&weights(), &dev).unwrap();
    let (d, s) = read(&fixture(), "x");
    let x = Tensor::<Flex, 4>::from_data(TensorData::new(d, [s[0], s[1], s[2], s[3]]), &dev);
    let v: Vec<f32> = net.forward(x.clone(), x).into_data().to_vec().unwrap();
    assert!(v.iter().all(|d| d.abs() < 1e-7));
    let err = Lpips::<Flex>::load("no/such/lpips.safetensors".as_ref(), &dev).unwrap_err();
    assert!(err.to_string().contains("no/such/lpips.safetensors"));
}
