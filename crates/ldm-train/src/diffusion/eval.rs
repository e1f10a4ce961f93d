//! `ldm-train eval diffusion`: FID of a model's samples (or of a folder of
//! samples made elsewhere, e.g. by the PyTorch calibration script) against
//! held-out images, with the FID Inception of `scripts/setup.sh`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ldm_data::ImageFolder;
use serde::Serialize;

use crate::autoencoder::eval::{eval_loader, loader_of};
use crate::diffusion::condition::Conditions;
use crate::diffusion::load::load_diffusion;
use crate::diffusion::sample::{condition_dirs, sample_images, write_batch, GRID_FILE};
use crate::diffusion::sampler::SampleSpec;
use crate::shared::assets;
use crate::shared::fid::{frechet_distance, FeatureSet};
use crate::shared::progress;

/// Arguments of `ldm-train eval diffusion`.
#[derive(Clone, Debug)]
pub struct EvalDiffusionArgs {
    /// The diffusion checkpoint (its data settings fit the real images too).
    pub checkpoint: PathBuf,
    /// Real images: a folder, an IDX dataset or a manifest.
    pub data: PathBuf,
    /// IDX datasets: the split of `data`.
    pub split: Option<String>,
    /// Samples in all (split evenly over the classes of a conditional model).
    pub n: usize,
    /// Score these folders of PNGs instead of sampling (one FID each).
    pub samples: Vec<PathBuf>,
    /// Real images used (0 = all of `data`).
    pub real_limit: usize,
    /// How to sample.
    pub spec: SampleSpec,
    /// Seed of the first sample (sample k uses its own noise).
    pub seed: u64,
    /// Images per sampling / Inception batch.
    pub batch: usize,
    /// Also write the samples as PNGs here (`<class>/<k>.png`).
    pub out: Option<PathBuf>,
}

/// The FID of one set of samples.
#[derive(Debug, Serialize)]
pub struct SampleSetScore {
    /// Where the samples came from (a folder, or `sampled`).
    pub source: String,
    /// Fréchet Inception distance of the samples to the real images.
    pub fid: f64,
    /// Samples scored.
    pub samples: usize,
}

/// What `eval diffusion` reports.
#[derive(Debug, Serialize)]
pub struct DiffusionEvalReport {
    /// One entry per set of samples.
    pub scores: Vec<SampleSetScore>,
    /// Real images scored.
    pub real: usize,
    /// Seconds spent sampling (0 when scoring a folder).
    pub sample_seconds: f64,
    /// Seconds in all.
    pub seconds: f64,
}

/// Appends the FID Inception features of `n` CHW images (values in
/// [−1, 1], back to back) to `into`.
pub(crate) fn features_of<B: Backend>(
    net: &ldm_models::InceptionFid<B>,
    images: Vec<f32>,
    n: usize,
    h: usize,
    w: usize,
    device: &B::Device,
    into: &mut FeatureSet,
) {
    let x = Tensor::<B, 4>::from_data(TensorData::new(images, [n, 3, h, w]), device);
    into.push(net.features(x));
}

fn score(source: String, real: &FeatureSet, fake: &FeatureSet) -> Result<SampleSetScore> {
    if real.len() < 2 || fake.len() < 2 {
        bail!(
            "FID needs at least 2 images on each side ({} real, {} samples in {source})",
            real.len(),
            fake.len()
        );
    }
    Ok(SampleSetScore {
        fid: frechet_distance(real, fake),
        samples: fake.len(),
        source,
    })
}

/// Runs the evaluation and prints the report as JSON.
pub fn run<B: Backend>(a: EvalDiffusionArgs, device: &B::Device) -> Result<DiffusionEvalReport> {
    let t0 = Instant::now();
    if a.n == 0 || a.batch == 0 {
        bail!("--n and --batch-size: must be at least 1");
    }
    let ld = load_diffusion::<B>(&a.checkpoint, true, device)?;
    let net = assets::inception::load::<B>("", device)?;
    let transform = ld.cfg.data.transform();
    let mut real = FeatureSet::new(2048);
    let mut loader = eval_loader(&a.data, a.split.as_deref(), transform.clone(), a.batch)
        .map_err(|e| anyhow::anyhow!("--data: {e:#}"))?;
    let pb = progress::bar(0, 0, "real images");
    while let Some(b) = loader.next_batch()? {
        let [n, _, h, w] = b.shape();
        let keep = match a.real_limit {
            0 => n,
            limit => n.min(limit - real.len()),
        };
        features_of(
            &net,
            b.images[..keep * 3 * h * w].to_vec(),
            keep,
            h,
            w,
            device,
            &mut real,
        );
        pb.inc(keep as u64);
        if a.real_limit > 0 && real.len() >= a.real_limit {
            break;
        }
    }
    pb.finish_and_clear();
    let mut scores = Vec::new();
    for dir in &a.samples {
        let mut fake = FeatureSet::new(2048);
        // Every image below the folder, class subfolders included, except
        // the preview grid `ldm-train sample` writes at its top.
        let grid = dir.join(GRID_FILE);
        let src = Arc::new(
            ImageFolder::scan_filtered(dir, |p| p != grid)
                .map_err(|e| anyhow::anyhow!("--samples: {e}"))?,
        );
        let mut l = loader_of(Arc::clone(&src), transform.clone(), a.batch)?;
        while let Some(b) = l.next_batch()? {
            let [n, _, h, w] = b.shape();
            features_of(&net, b.images, n, h, w, device, &mut fake);
        }
        if fake.len() != src.len() {
            bail!(
                "--samples {}: only {} of {} images could be read",
                dir.display(),
                fake.len(),
                src.len()
            );
        }
        scores.push(score(dir.display().to_string(), &real, &fake)?);
    }
    let mut sample_seconds = 0.0;
    if a.samples.is_empty() {
        let mut fake = FeatureSet::new(2048);
        {
            let ts = Instant::now();
            if ld.model.text {
                bail!("eval diffusion: text models need prompts; score samples written by `sample --prompt` with --samples");
            }
            let conds = ld.model.is_conditional().then(|| {
                let k = ld.class_names.len();
                Conditions::Classes((0..a.n).map(|i| i * k / a.n).collect())
            });
            let dirs = condition_dirs(conds.as_ref(), &ld.class_names);
            let pb = progress::bar(a.n as u64, 0, "samples");
            let ids: Vec<usize> = (0..a.n).collect();
            sample_images(
                &ld.sampling(),
                &a.spec,
                conds.as_ref(),
                &ids,
                a.seed,
                a.batch,
                device,
                |start, v, (h, w)| {
                    let per = 3 * h * w;
                    let n = v.len() / per;
                    if let Some(out) = &a.out {
                        write_batch(out, dirs.as_deref(), start, v, (h, w), |i| {
                            format!("{i:05}.png")
                        })?;
                    }
                    features_of(&net, v.to_vec(), n, h, w, device, &mut fake);
                    pb.inc(n as u64);
                    Ok(())
                },
            )?;
            pb.finish_and_clear();
            sample_seconds = ts.elapsed().as_secs_f64();
        }
        scores.push(score("sampled".into(), &real, &fake)?);
    }
    Ok(DiffusionEvalReport {
        scores,
        real: real.len(),
        sample_seconds,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
