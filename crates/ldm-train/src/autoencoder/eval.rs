//! Reconstruction quality of an autoencoder over a folder: PSNR (RGB and
//! luma), SSIM and LPIPS per image and on average, rFID over the set, and
//! (VQ) code usage, next to the downsample baseline at the same factor; used
//! by `ldm-train eval autoencoder` and in-training validation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ldm_data::{
    open_source, save_grid_png, DataPosition, ImageSource, Loader, LoaderConfig, SourceKind,
    Transform,
};
use ldm_models::quantizer::usage_stats;
use ldm_models::{Autoencoder, InceptionFid, Lpips};
use serde::Serialize;

use crate::autoencoder::config::AutoencoderRunConfig;
use crate::autoencoder::metrics::{downsample_baseline, psnr, psnr_luma, ssim};
use crate::autoencoder::trainer::AUTOENCODER_KINDS;
use crate::shared::assets;
use crate::shared::checkpoint::{self, LoadedCheckpoint};
use crate::shared::config::{self, ConfigSource};
use crate::shared::fid::{frechet_distance, FeatureSet};
use crate::shared::weights;

/// The scores of one image, or their means over a folder.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Scores {
    /// PSNR of the reconstruction (dB).
    pub psnr: f64,
    /// PSNR of its BT.601 luma alone (dB): with `psnr`, tells colour errors
    /// from structure errors.
    pub psnr_y: f64,
    /// SSIM of the reconstruction.
    pub ssim: f64,
    /// LPIPS of the reconstruction (None without LPIPS weights).
    pub lpips: Option<f64>,
    /// Mean absolute error in [−1, 1] units.
    pub l1: f64,
    /// PSNR of the downsample-upsample baseline at the same f.
    pub baseline_psnr: f64,
    /// Luma PSNR of that baseline.
    pub baseline_psnr_y: f64,
    /// SSIM of that baseline.
    pub baseline_ssim: f64,
    /// LPIPS of that baseline (None without LPIPS weights).
    pub baseline_lpips: Option<f64>,
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
    /// Fréchet Inception distance between the inputs and their
    /// reconstructions (None when not computed). With few images it is a
    /// relative measure: compare runs on the same set, not with papers.
    pub rfid: Option<f64>,
    /// VQ models: how the set used the codebook.
    pub codes: Option<CodeUsage>,
    /// Per-image scores.
    pub per_image: Vec<ImageScores>,
}

/// Codebook usage of a VQ model over an evaluation set.
#[derive(Clone, Debug, Serialize)]
pub struct CodeUsage {
    /// Codes chosen at least once.
    pub used: usize,
    /// Codebook size.
    pub n_embed: usize,
    /// exp(entropy) of the code histogram: the effective number of codes.
    pub perplexity: f64,
}

/// What `ldm-train eval autoencoder` was asked to do.
pub struct EvalArgs {
    /// Checkpoint (directory, checkpoints/ or run directory).
    pub checkpoint: PathBuf,
    /// Folder of held-out images.
    pub data: PathBuf,
    /// Output folder (default `<checkpoint>/eval`).
    pub out: Option<PathBuf>,
    /// Center-crop size (default the checkpoint's `data.resize`, else `data.size`).
    pub size: Option<u32>,
    /// Images per batch.
    pub batch_size: usize,
    /// At most this many images (0 = all).
    pub limit: usize,
    /// Compute rFID.
    pub fid: bool,
    /// IDX datasets: which split of `data` (`train`, `t10k`).
    pub split: Option<String>,
}

/// The networks that score reconstructions, each optional.
#[derive(Clone, Copy)]
pub struct Scorers<'a, B: Backend> {
    /// LPIPS per image.
    pub lpips: Option<&'a Lpips<B>>,
    /// Inception features for rFID.
    pub inception: Option<&'a InceptionFid<B>>,
}

/// An evaluation loader: every image of `root` (a folder, an IDX dataset's
/// `split`, a manifest) once, in order, through `transform` (an evaluation
/// transform: no random crop or flip).
pub fn eval_loader(
    root: &Path,
    split: Option<&str>,
    transform: Transform,
    batch_size: usize,
) -> Result<Loader> {
    loader_of(
        open_source(root, SourceKind::Auto, split)?,
        transform,
        batch_size,
    )
}

/// An evaluation loader (in order, no repeat, every image) over `source`.
pub fn loader_of(
    source: impl ImageSource + 'static,
    transform: Transform,
    batch_size: usize,
) -> Result<Loader> {
    let cfg = LoaderConfig {
        batch_size,
        workers: 0,
        seed: 0,
        shuffle: false,
        drop_last: false,
        repeat: false,
        transform,
        prefetch: 2,
        cache_mb: 0,
    };
    Ok(Loader::new(source, cfg, DataPosition::default())?)
}

/// Reconstructs up to `limit` images (0 = all) from `loader` through the
/// deterministic latent and scores them; writes `input | reconstruction` PNGs
/// into `out`.
pub fn evaluate<B: Backend>(
    ae: &Autoencoder<B>,
    scorers: Scorers<'_, B>,
    f: usize,
    mut loader: Loader,
    limit: usize,
    out: Option<&Path>,
    device: &B::Device,
) -> Result<EvalReport> {
    let lpips = scorers.lpips;
    let mut per_image = Vec::new();
    let mut size = 0;
    let mut feats = scorers
        .inception
        .map(|_| (FeatureSet::new(2048), FeatureSet::new(2048)));
    let mut counts = ae.quantize.as_ref().map(|q| vec![0u64; q.n_embed()]);
    while let Some(batch) = loader.next_batch()? {
        let [n, c, h, w] = batch.shape();
        size = h as u32;
        let x =
            Tensor::<B, 4>::from_data(TensorData::new(batch.images.clone(), [n, c, h, w]), device);
        let latent = ae.encode(x.clone()).mode();
        // VQ: find the codes once, count them, and decode those codes
        // (`decode` would search the codebook a second time).
        let r = match (&ae.quantize, counts.as_mut()) {
            (Some(q), Some(counts)) => {
                let [b, e, lh, lw] = latent.dims();
                let rows = latent.permute([0, 2, 3, 1]).reshape([b * lh * lw, e]);
                let indices = q.nearest(rows);
                for i in indices.clone().into_data().iter::<i64>() {
                    counts[i as usize] += 1;
                }
                let codes = q.lookup(indices, [b, lh, lw]);
                ae.decode_quantized(codes)
            }
            _ => ae.decode(latent),
        }
        .clamp(-1.0, 1.0);
        if let (Some(net), Some((real, fake))) = (scorers.inception, feats.as_mut()) {
            real.push(net.features(x.clone()));
            fake.push(net.features(r.clone()));
        }
        let base = downsample_baseline(x.clone(), f);
        let p = psnr(x.clone(), r.clone());
        let py = psnr_luma(x.clone(), r.clone());
        let bpy = psnr_luma(x.clone(), base.clone());
        let s = ssim(x.clone(), r.clone());
        let bp = psnr(x.clone(), base.clone());
        let bs = ssim(x.clone(), base.clone());
        let l1: Vec<f64> = (x.clone() - r.clone())
            .abs()
            .reshape([n as i32, -1])
            .mean_dim(1)
            .into_data()
            .iter::<f64>()
            .collect();
        let lpips_of = |y: &Tensor<B, 4>| -> Option<Vec<f64>> {
            lpips.map(|net| {
                net.forward(x.clone(), y.clone())
                    .into_data()
                    .iter::<f64>()
                    .collect()
            })
        };
        let lp = lpips_of(&r);
        let blp = lpips_of(&base);
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
                    psnr_y: py[i],
                    ssim: s[i],
                    lpips: lp.as_ref().map(|v| v[i]),
                    l1: l1[i],
                    baseline_psnr: bp[i],
                    baseline_psnr_y: bpy[i],
                    baseline_ssim: bs[i],
                    baseline_lpips: blp.as_ref().map(|v| v[i]),
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
        psnr_y: mean(|s| s.psnr_y),
        ssim: mean(|s| s.ssim),
        lpips: lpips.map(|_| mean(|s| s.lpips.unwrap_or(0.0))),
        l1: mean(|s| s.l1),
        baseline_psnr: mean(|s| s.baseline_psnr),
        baseline_psnr_y: mean(|s| s.baseline_psnr_y),
        baseline_ssim: mean(|s| s.baseline_ssim),
        baseline_lpips: lpips.map(|_| mean(|s| s.baseline_lpips.unwrap_or(0.0))),
    };
    let codes = counts.map(|c| {
        let (perplexity, used) = usage_stats(&c);
        CodeUsage {
            used: (used * c.len() as f64).round() as usize,
            n_embed: c.len(),
            perplexity,
        }
    });
    Ok(EvalReport {
        images: per_image.len(),
        size,
        f,
        mean,
        rfid: feats.map(|(real, fake)| frechet_distance(&real, &fake)),
        codes,
        per_image,
    })
}

/// An autoencoder rebuilt from a checkpoint alone (its embedded config).
pub fn load_autoencoder<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(Autoencoder<B>, AutoencoderRunConfig, LoadedCheckpoint)> {
    let ck = checkpoint::load(path, &AUTOENCODER_KINDS)?;
    let src = ConfigSource {
        name: format!("{}/config.toml", ck.dir.display()),
        text: ck.config_text.clone(),
    };
    let cfg: AutoencoderRunConfig = config::parse(&src, &[])?;
    let file = format!("{}/model.safetensors", ck.dir.display());
    let st = weights::parse(ck.file("model.safetensors")?, &file)?;
    let ae = weights::load(Autoencoder::new(&cfg.model, device), &st, "", &file)
        .context("the checkpoint's weights do not fit its own config")?;
    Ok((ae, cfg, ck))
}

/// `ldm-train eval autoencoder`: scores a checkpoint on a folder, prints a
/// summary and writes `eval.json` plus `input | reconstruction` PNGs.
pub fn run<B: Backend>(a: EvalArgs, device: &B::Device) -> Result<()> {
    let (ae, cfg, ck) = load_autoencoder::<B>(&a.checkpoint, device)?;
    // LPIPS and rFID are reported whenever their weights exist, whatever the
    // training loss used.
    let lpips = assets::lpips::load::<B>(&cfg.loss.lpips_weights, device)
        .map_err(|e| eprintln!("warning: {e:#}; LPIPS will not be reported"))
        .ok();
    let inception = if a.fid {
        assets::inception::load::<B>("", device)
            .map_err(|e| eprintln!("warning: {e:#}; rFID will not be reported"))
            .ok()
    } else {
        None
    };
    let out = a.out.unwrap_or_else(|| ck.dir.join("eval"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let size = a.size.unwrap_or_else(|| cfg.data.eval_size());
    let f = cfg.model.downsampling();
    if size == 0 || !(size as usize).is_multiple_of(f) {
        anyhow::bail!("--size {size}: must be a positive multiple of the model's f = {f}");
    }
    let transform = Transform {
        size,
        ..cfg.data.eval_transform()
    };
    let loader = eval_loader(&a.data, a.split.as_deref(), transform, a.batch_size)?;
    let scorers = Scorers {
        lpips: lpips.as_ref(),
        inception: inception.as_ref(),
    };
    let rep = evaluate(&ae, scorers, f, loader, a.limit, Some(&out), device)?;
    let json = out.join("eval.json");
    std::fs::write(&json, serde_json::to_string_pretty(&rep)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    let opt = |v: Option<f64>, digits: usize| {
        v.map(|v| format!("{v:.digits$}"))
            .unwrap_or_else(|| "n/a".into())
    };
    println!(
        "{} images at {size}² (f = {f}): PSNR {:.2} dB (luma {:.2}), SSIM {:.4}, LPIPS {}, rFID {}, L1 {:.4}",
        rep.images,
        rep.mean.psnr,
        rep.mean.psnr_y,
        rep.mean.ssim,
        opt(rep.mean.lpips, 4),
        opt(rep.rfid, 2),
        rep.mean.l1
    );
    if let Some(c) = &rep.codes {
        println!(
            "codebook: {} of {} codes used, perplexity {:.1}",
            c.used, c.n_embed, c.perplexity
        );
    }
    println!(
        "baseline (avg-pool ×{f} + bilinear): PSNR {:.2} dB (luma {:.2}), SSIM {:.4}, LPIPS {}",
        rep.mean.baseline_psnr,
        rep.mean.baseline_psnr_y,
        rep.mean.baseline_ssim,
        opt(rep.mean.baseline_lpips, 4)
    );
    println!("wrote {} and reconstructions", json.display());
    Ok(())
}
