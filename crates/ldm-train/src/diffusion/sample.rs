//! `ldm-train sample`: images from a diffusion checkpoint, decoded by the
//! autoencoder it carries — a grid with a row per class and one PNG per
//! sample under `<out>/<class name>/`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use ldm_data::save_grid_png;

use crate::diffusion::load::load_diffusion;
use crate::diffusion::sampler::{sample_latents, SampleSpec};

/// Arguments of `ldm-train sample`.
#[derive(Clone, Debug)]
pub struct SampleArgs {
    /// Checkpoint, `checkpoints/` or run directory.
    pub checkpoint: PathBuf,
    /// Classes to sample, by index or name (repeatable; conditional models).
    pub classes: Vec<String>,
    /// Samples per class (or in all, unconditional).
    pub n: usize,
    /// Sampler settings.
    pub spec: SampleSpec,
    /// Seed of the initial noise.
    pub seed: u64,
    /// Output folder.
    pub out: PathBuf,
    /// Use the raw weights instead of the EMA.
    pub no_ema: bool,
}

/// The preview grid `sample` writes at the top of its output folder;
/// `eval diffusion --samples` leaves it out of the images it scores.
pub const GRID_FILE: &str = "grid.png";

/// A folder name for a class: its name with path separators replaced.
pub fn class_dir(name: &str) -> String {
    name.replace(['/', '\\'], "-")
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
        // `as u8` saturates and maps NaN to 0: the clamp we want.
        .map(|i| ((chw[i] + 1.0) * 127.5).round() as u8)
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

/// Samples, decodes and writes the images.
pub fn run<B: Backend>(a: SampleArgs, device: &B::Device) -> Result<()> {
    let ld = load_diffusion::<B>(&a.checkpoint, !a.no_ema, device)?;
    if a.n == 0 {
        bail!("--n: must be at least 1");
    }
    let conditional = ld.model.is_conditional();
    let labels: Option<Vec<usize>> = if conditional {
        let classes = if a.classes.is_empty() {
            (0..ld.class_names.len()).collect()
        } else {
            resolve_classes(&a.classes, &ld.class_names)?
        };
        Some(
            classes
                .iter()
                .flat_map(|&c| std::iter::repeat_n(c, a.n))
                .collect(),
        )
    } else {
        if !a.classes.is_empty() {
            bail!("--class: the model is unconditional");
        }
        None
    };
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let t0 = Instant::now();
    let z = sample_latents(
        &ld.model,
        &ld.cfg.model.schedule(),
        ld.cfg.model.parameterization.into(),
        &a.spec,
        labels.as_deref(),
        a.n,
        ld.latent_shape,
        a.seed,
        device,
    )?;
    let x = ld.ae.decode(z / ld.scale_factor).clamp(-1.0, 1.0);
    let [n, _, h, w] = x.dims();
    let v: Vec<f32> = x.into_data().convert::<f32>().to_vec().unwrap_or_default();
    let per = 3 * h * w;
    for i in 0..n {
        let (dir, k) = match &labels {
            Some(l) => (a.out.join(class_dir(&ld.class_names[l[i]])), i % a.n),
            None => (a.out.clone(), i),
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        save_png(
            &dir.join(format!("{k:04}.png")),
            &v[i * per..(i + 1) * per],
            h,
            w,
        )?;
    }
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
