//! Reconstruction quality of an autoencoder over a folder: PSNR, SSIM and
//! LPIPS per image and on average, next to the downsample baseline at the
//! same factor; used by `ldm-train eval autoencoder` and in-training validation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ldm_data::{save_grid_png, DataPosition, ImageFolder, Loader, LoaderConfig, Transform};
use ldm_models::{AutoencoderKl, Lpips};
use serde::Serialize;

use crate::ae_trainer::KIND_KL;
use crate::checkpoint::{self, LoadedCheckpoint};
use crate::config::{self, AutoencoderRunConfig, ConfigSource};
use crate::metrics::{downsample_baseline, psnr, ssim};
use crate::weights;

/// The scores of one image, or their means over a folder.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Scores {
    /// PSNR of the reconstruction (dB).
    pub psnr: f64,
    /// SSIM of the reconstruction.
    pub ssim: f64,
    /// LPIPS of the reconstruction (None without LPIPS weights).
    pub lpips: Option<f64>,
    /// Mean absolute error in [−1, 1] units.
    pub l1: f64,
    /// PSNR of the downsample-upsample baseline at the same f.
    pub baseline_psnr: f64,
    /// SSIM of that baseline.
    pub baseline_ssim: f64,
}

/// Scores of one image.
#[derive(Clone, Debug, Serialize)]
pub struct ImageScores {
    /// Source file.
    pub path: PathBuf,
    /// Its scores.
    #[serde(flatten)]
    pub scores: Scores,
}

/// Means over a folder plus the per-image table.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// Images evaluated.
    pub images: usize,
    /// Crop size used.
    pub size: u32,
    /// Downsampling factor of the model (and of the baseline).
    pub f: usize,
    /// Mean scores.
    #[serde(flatten)]
    pub mean: Scores,
    /// Per-image scores.
    pub per_image: Vec<ImageScores>,
}

/// An evaluation loader: every image once, in order, center-cropped.
pub fn eval_loader(root: &Path, size: u32, batch_size: usize) -> Result<Loader> {
    let folder = ImageFolder::scan(root)?;
    let cfg = LoaderConfig {
        batch_size,
        workers: 0,
        seed: 0,
        shuffle: false,
        drop_last: false,
        repeat: false,
        transform: Transform {
            size,
            random_crop: false,
            hflip: false,
        },
        prefetch: 2,
    };
    Ok(Loader::new(folder, cfg, DataPosition::default())?)
}

/// Reconstructs up to `limit` images (0 = all) from `loader` with the posterior
/// mode and scores them; writes `input | reconstruction` PNGs into `out`.
pub fn evaluate<B: Backend>(
    ae: &AutoencoderKl<B>,
    lpips: Option<&Lpips<B>>,
    f: usize,
    mut loader: Loader,
    limit: usize,
    out: Option<&Path>,
    device: &B::Device,
) -> Result<EvalReport> {
    let mut per_image = Vec::new();
    let mut size = 0;
    while let Some(batch) = loader.next_batch()? {
        let [n, c, h, w] = batch.shape();
        size = h as u32;
        let x =
            Tensor::<B, 4>::from_data(TensorData::new(batch.images.clone(), [n, c, h, w]), device);
        let r = ae.reconstruct(x.clone()).clamp(-1.0, 1.0);
        let base = downsample_baseline(x.clone(), f);
        let p = psnr(x.clone(), r.clone());
        let s = ssim(x.clone(), r.clone());
        let bp = psnr(x.clone(), base.clone());
        let bs = ssim(x.clone(), base);
        let l1: Vec<f64> = (x.clone() - r.clone())
            .abs()
            .reshape([n as i32, -1])
            .mean_dim(1)
            .into_data()
            .iter::<f64>()
            .collect();
        let lp: Option<Vec<f64>> = lpips.map(|net| {
            net.forward(x.clone(), r.clone())
                .into_data()
                .iter::<f64>()
                .collect()
        });
        if let Some(dir) = out {
            let recon: Vec<f32> = r
                .clone()
                .into_data()
                .convert::<f32>()
                .to_vec()
                .unwrap_or_default();
            let per = c * h * w;
            for i in 0..n {
                let mut pair = batch.images[i * per..(i + 1) * per].to_vec();
                pair.extend_from_slice(&recon[i * per..(i + 1) * per]);
                let stem = batch.paths[i]
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                save_grid_png(
                    &dir.join(format!("{:04}-{stem}.png", per_image.len() + i)),
                    &pair,
                    2,
                    h,
                    w,
                    2,
                )?;
            }
        }
        for i in 0..n {
            per_image.push(ImageScores {
                path: batch.paths[i].clone(),
                scores: Scores {
                    psnr: p[i],
                    ssim: s[i],
                    lpips: lp.as_ref().map(|v| v[i]),
                    l1: l1[i],
                    baseline_psnr: bp[i],
                    baseline_ssim: bs[i],
                },
            });
        }
        if limit > 0 && per_image.len() >= limit {
            per_image.truncate(limit);
            break;
        }
    }
    anyhow::ensure!(!per_image.is_empty(), "no images were evaluated");
    let n = per_image.len() as f64;
    let mean = |g: fn(&Scores) -> f64| per_image.iter().map(|i| g(&i.scores)).sum::<f64>() / n;
    let mean = Scores {
        psnr: mean(|s| s.psnr),
        ssim: mean(|s| s.ssim),
        lpips: lpips.map(|_| mean(|s| s.lpips.unwrap_or(0.0))),
        l1: mean(|s| s.l1),
        baseline_psnr: mean(|s| s.baseline_psnr),
        baseline_ssim: mean(|s| s.baseline_ssim),
    };
    Ok(EvalReport {
        images: per_image.len(),
        size,
        f,
        mean,
        per_image,
    })
}

/// An autoencoder rebuilt from a checkpoint alone (its embedded config).
pub fn load_autoencoder<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(AutoencoderKl<B>, AutoencoderRunConfig, LoadedCheckpoint)> {
    let ck = checkpoint::load(path, KIND_KL)?;
    let src = ConfigSource {
        name: format!("{}/config.toml", ck.dir.display()),
        text: ck.config_text.clone(),
    };
    let cfg: AutoencoderRunConfig = config::parse(&src, &[])?;
    let file = format!("{}/model.safetensors", ck.dir.display());
    let st = weights::parse(ck.file("model.safetensors")?, &file)?;
    let ae = weights::load(AutoencoderKl::new(&cfg.model, device), &st, "", &file)
        .context("the checkpoint's weights do not fit its own config")?;
    Ok((ae, cfg, ck))
}
