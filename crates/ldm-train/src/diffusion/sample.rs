//! `ldm-train sample`: images from a diffusion checkpoint, decoded by the
//! autoencoder it carries — a grid with a row per class (or prompt) and one
//! PNG per sample under `<out>/<class name or prompt>/`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use ldm_data::save_grid_png;

use ldm_models::Autoencoder;

use crate::diffusion::condition::{Conditions, TextSide};
use crate::diffusion::config::DiffusionRunConfig;
use crate::diffusion::load::{load_diffusion, LoadedDiffusion};
use crate::diffusion::model::LatentDiffusion;
use crate::diffusion::sampler::{sample_latents, SampleSpec};

/// Arguments of `ldm-train sample`.
#[derive(Clone, Debug)]
pub struct SampleArgs {
    /// Checkpoint, `checkpoints/` or run directory.
    pub checkpoint: PathBuf,
    /// Classes to sample, by index or name (repeatable; class models).
    pub classes: Vec<String>,
    /// Prompts to sample (text models).
    pub prompts: Vec<String>,
    /// Samples per class or prompt (or in all, unconditional).
    pub n: usize,
    /// Sampler settings.
    pub spec: SampleSpec,
    /// Seed of the initial noise.
    pub seed: u64,
    /// Output folder.
    pub out: PathBuf,
    /// Use the raw weights instead of the EMA.
    pub no_ema: bool,
    /// Samples per batch (memory; the images do not depend on it).
    pub batch: usize,
}

/// The preview grid `sample` writes at the top of its output folder;
/// `eval diffusion --samples` leaves it out of the images it scores.
pub const GRID_FILE: &str = "grid.png";

/// A folder name for a class or a prompt: path separators replaced, at most
/// 80 characters.
pub fn class_dir(name: &str) -> String {
    name.replace(['/', '\\'], "-").chars().take(80).collect()
}

/// Resolves `--class` values (an index or a name, case-insensitive) to labels.
pub fn resolve_classes(asked: &[String], names: &[String]) -> Result<Vec<usize>> {
    asked
        .iter()
        .map(|a| {
            if let Ok(i) = a.parse::<usize>() {
                if i < names.len() {
                    return Ok(i);
                }
                bail!(
                    "--class {a}: out of range, the model has classes 0..{}",
                    names.len() - 1
                );
            }
            names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(a) || class_dir(n).eq_ignore_ascii_case(a))
                .with_context(|| {
                    format!("--class {a}: no such class (known: {})", names.join(", "))
                })
        })
        .collect()
}

/// Writes one CHW image in [−1, 1] as an RGB PNG.
pub fn save_png(path: &Path, chw: &[f32], h: usize, w: usize) -> Result<()> {
    let plane = h * w;
    let rgb: Vec<u8> = (0..plane)
        .flat_map(|p| (0..3).map(move |c| p + c * plane))
        .map(|i| ldm_data::unit_to_u8(chw[i]))
        .collect();
    image::save_buffer(
        path,
        &rgb,
        w as u32,
        h as u32,
        image::ExtendedColorType::Rgb8,
    )
    .with_context(|| format!("cannot write {}", path.display()))
}

/// The folder name of each sample's condition: its class name or prompt
/// (see [`class_dir`]); None when unconditional.
pub fn condition_dirs(conds: Option<&Conditions>, class_names: &[String]) -> Option<Vec<String>> {
    conds.map(|c| match c {
        Conditions::Classes(l) => l.iter().map(|&l| class_dir(&class_names[l])).collect(),
        Conditions::Prompts(p) => p.iter().map(|p| class_dir(p)).collect(),
    })
}

/// Writes a decoded batch (CHW images in [−1, 1] back to back, sample
/// `start + j` the j-th) as PNGs named `file(sample)`: under `<out>/<dir>/`
/// when `dirs` gives each sample's folder (see [`condition_dirs`]),
/// directly in `out` otherwise.
pub fn write_batch(
    out: &Path,
    dirs: Option<&[String]>,
    start: usize,
    chw: &[f32],
    (h, w): (usize, usize),
    file: impl Fn(usize) -> String,
) -> Result<()> {
    for (j, img) in chw.chunks_exact(3 * h * w).enumerate() {
        let i = start + j;
        let dir = match dirs {
            Some(d) => out.join(&d[i]),
            None => out.to_path_buf(),
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        save_png(&dir.join(file(i)), img, h, w)?;
    }
    Ok(())
}

/// What drawing images needs: the denoiser, the first stage that decodes
/// its latents, and how the latents were trained. Borrowed from a loaded
/// checkpoint ([`LoadedDiffusion::sampling`]) or from a training run.
pub struct Sampling<'a, B: Backend> {
    /// UNet + conditioner.
    pub model: &'a LatentDiffusion<B>,
    /// Tokenizer and frozen encoder of a text model.
    pub text: Option<&'a TextSide<B>>,
    /// The frozen first stage.
    pub ae: &'a Autoencoder<B>,
    /// The diffusion config (schedule, parameterization).
    pub cfg: &'a DiffusionRunConfig,
    /// Latents are divided by this before decoding.
    pub scale_factor: f64,
    /// `[C, h, w]` of the latents.
    pub latent_shape: [usize; 3],
}

impl<B: Backend> LoadedDiffusion<B> {
    /// This checkpoint's [`Sampling`] parts.
    pub fn sampling(&self) -> Sampling<'_, B> {
        Sampling {
            model: &self.model,
            text: self.text.as_ref(),
            ae: &self.ae,
            cfg: &self.cfg,
            scale_factor: self.scale_factor,
            latent_shape: self.latent_shape,
        }
    }
}

/// Samples `ids` (with `conds` when conditional; see [`sample_latents`]) in
/// batches of `batch` and decodes them with the first stage, handing each
/// batch to `sink` as (index of its first sample, CHW values in [−1, 1] back
/// to back, image (h, w)).
#[allow(clippy::too_many_arguments)]
pub fn sample_images<B: Backend>(
    s: &Sampling<'_, B>,
    spec: &SampleSpec,
    conds: Option<&Conditions>,
    ids: &[usize],
    seed: u64,
    batch: usize,
    device: &B::Device,
    mut sink: impl FnMut(usize, &[f32], (usize, usize)) -> Result<()>,
) -> Result<()> {
    let schedule = s.cfg.model.schedule();
    for start in (0..ids.len()).step_by(batch.max(1)) {
        let end = (start + batch).min(ids.len());
        let z = sample_latents(
            s.model,
            s.text,
            &schedule,
            s.cfg.model.parameterization.into(),
            spec,
            conds.map(|c| c.slice(start..end)).as_ref(),
            &ids[start..end],
            s.latent_shape,
            seed,
            device,
        )?;
        let x = s.ae.decode(z / s.scale_factor).clamp(-1.0, 1.0);
        let [_, _, h, w] = x.dims();
        let v: Vec<f32> = x.into_data().convert::<f32>().to_vec().unwrap_or_default();
        sink(start, &v, (h, w))?;
    }
    Ok(())
}

/// Sample ids for a grid of `rows` rows of `per` columns: column k of every
/// row is sample k, so every row starts from the same noise.
pub fn grid_ids(rows: usize, per: usize) -> Vec<usize> {
    (0..rows * per).map(|i| i % per).collect()
}

/// The per-sample conditions of `sample`: each class (default: all) or
/// prompt repeated `n` times; None for an unconditional model.
fn requested(a: &SampleArgs, ld: &LoadedDiffusion<impl Backend>) -> Result<Option<Conditions>> {
    if ld.model.text {
        if !a.classes.is_empty() {
            bail!("--class: the model is text-conditioned; use --prompt");
        }
        if a.prompts.is_empty() {
            bail!("--prompt: the model is text-conditioned; give at least one prompt");
        }
        return Ok(Some(
            Conditions::Prompts(a.prompts.clone()).repeat_each(a.n),
        ));
    }
    if !a.prompts.is_empty() {
        bail!("--prompt: the model is not text-conditioned");
    }
    if !ld.model.is_conditional() {
        if !a.classes.is_empty() {
            bail!("--class: the model is unconditional");
        }
        return Ok(None);
    }
    let classes = if a.classes.is_empty() {
        (0..ld.class_names.len()).collect()
    } else {
        resolve_classes(&a.classes, &ld.class_names)?
    };
    Ok(Some(Conditions::Classes(classes).repeat_each(a.n)))
}

/// Samples, decodes and writes the images.
pub fn run<B: Backend>(a: SampleArgs, device: &B::Device) -> Result<()> {
    let ld = load_diffusion::<B>(&a.checkpoint, !a.no_ema, device)?;
    if a.n == 0 {
        bail!("--n: must be at least 1");
    }
    let conds = requested(&a, &ld)?;
    if a.batch == 0 {
        bail!("--batch-size: must be at least 1");
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let t0 = Instant::now();
    // `--class 3` alone draws the noise of class 3's row among all classes.
    let ids = grid_ids(conds.as_ref().map_or(1, |c| c.len() / a.n), a.n);
    let dirs = condition_dirs(conds.as_ref(), &ld.class_names);
    let mut v: Vec<f32> = Vec::new();
    let (mut h, mut w) = (0, 0);
    sample_images(
        &ld.sampling(),
        &a.spec,
        conds.as_ref(),
        &ids,
        a.seed,
        a.batch,
        device,
        |start, chw, hw| {
            (h, w) = hw;
            write_batch(&a.out, dirs.as_deref(), start, chw, hw, |i| {
                format!("{:04}.png", ids[i])
            })?;
            v.extend_from_slice(chw);
            Ok(())
        },
    )?;
    let n = ids.len();
    let grid = a.out.join(GRID_FILE);
    save_grid_png(&grid, &v, n, h, w, a.n)?;
    println!(
        "wrote {n} samples ({} steps of {}, guidance {}) in {:.1} s: {}",
        a.spec.steps,
        a.spec.sampler.name(),
        a.spec.guidance,
        t0.elapsed().as_secs_f64(),
        grid.display()
    );
    Ok(())
}
