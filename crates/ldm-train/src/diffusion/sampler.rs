//! Drawing latents from a trained model: the sampler choice, classifier-free
//! guidance with the null class or the negative prompt, and reproducible
//! noise per seed.

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use ldm_diffusion::timesteps::sampling_timesteps;
use ldm_diffusion::{
    ddim, ddpm, dpm_solver_pp_2m, plms, ClassifierFreeGuidance, NoiseSchedule, Parameterization,
    Spacing,
};
use serde::{Deserialize, Serialize};

use crate::diffusion::condition::{encode_conditions, Cond, Conditions, TextSide};
use crate::diffusion::model::LatentDiffusion;
use crate::shared::noise::{mix, normal};

/// Which sampler walks the reverse process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerKind {
    /// DDIM (η = 0 deterministic; η = 1 ancestral).
    Ddim,
    /// DDPM ancestral sampling with the posterior variance.
    Ddpm,
    /// Pseudo linear multistep (the LDM `PLMSSampler`).
    Plms,
    /// DPM-Solver++(2M), the multistep solver of Stable Diffusion UIs.
    #[value(name = "dpmpp-2m")]
    #[serde(rename = "dpmpp-2m")]
    DpmppTwoM,
}

impl SamplerKind {
    /// The name the CLI and configs use.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "ddim",
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Plms => "plms",
            SamplerKind::DpmppTwoM => "dpmpp-2m",
        }
    }
}

/// Timestep spacing, as the CLI names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SpacingName {
    /// The reference's uniform spacing (1, 1 + T/S, …).
    Uniform,
    /// The reference's quadratic spacing (dense near t = 0).
    Quad,
    /// diffusers "leading".
    Leading,
    /// diffusers "trailing" (starts at T − 1).
    Trailing,
}

impl From<SpacingName> for Spacing {
    fn from(s: SpacingName) -> Self {
        match s {
            SpacingName::Uniform => Spacing::Uniform,
            SpacingName::Quad => Spacing::Quad,
            SpacingName::Leading => Spacing::Leading,
            SpacingName::Trailing => Spacing::Trailing,
        }
    }
}

/// How to sample.
#[derive(Clone, Debug)]
pub struct SampleSpec {
    /// The sampler.
    pub sampler: SamplerKind,
    /// Sampling steps S (1 ≤ S ≤ T).
    pub steps: usize,
    /// DDIM's η.
    pub eta: f64,
    /// Guidance scale (1 = the conditional prediction alone).
    pub guidance: f64,
    /// Timestep spacing.
    pub spacing: SpacingName,
    /// Text models: the prompt guidance steers away from (empty: the
    /// unconditional prediction, as the model was trained to drop captions).
    pub negative_prompt: String,
}

/// Standard-normal values of sample `id` for `seed`: the initial noise, or
/// (`step = Some(i)`) the noise a stochastic sampler adds at step `i`. Keyed
/// per sample, so sample k is the same whichever batch it is drawn in and
/// however large `--n` or `--batch-size` is.
fn sample_noise(seed: u64, id: usize, step: Option<usize>, len: usize) -> Vec<f32> {
    match step {
        None => normal(mix(&[seed, 0x5A3D, id as u64]), len),
        Some(i) => normal(mix(&[seed, 0x5A3E, i as u64, id as u64]), len),
    }
}

/// `ids`' noise (each sample's [`sample_noise`]) as one `[n, C, h, w]` batch.
fn noise_batch<B: Backend>(
    seed: u64,
    ids: &[usize],
    step: Option<usize>,
    shape: [usize; 3],
    device: &B::Device,
) -> Tensor<B, 4> {
    let [c, h, w] = shape;
    let values: Vec<f32> = ids
        .iter()
        .flat_map(|&id| sample_noise(seed, id, step, c * h * w))
        .collect();
    Tensor::from_data(
        burn::tensor::TensorData::new(values, [ids.len(), c, h, w]),
        device,
    )
}

/// The timesteps of `spec`, checked against the schedule's T.
pub fn timesteps_for(spec: &SampleSpec, t: usize) -> Result<Vec<usize>> {
    if spec.steps == 0 || spec.steps > t {
        bail!(
            "--steps {}: must be between 1 and the model's {t} timesteps",
            spec.steps
        );
    }
    if spec.sampler == SamplerKind::Ddpm && spec.steps == t {
        return Ok((0..t).collect());
    }
    let mut ts = sampling_timesteps(spec.spacing.into(), t, spec.steps);
    // The reference's +1 offset reaches T itself when S = T; that level does not exist.
    ts.retain(|&s| s < t);
    Ok(ts)
}

/// Draws one latent `[C, h, w]` per entry of `ids` (the sample ids that key
/// their noise), in the model's scaled latent space; `conds`, one per id,
/// when the model is conditional (`text` encodes prompts).
#[allow(clippy::too_many_arguments)]
pub fn sample_latents<B: Backend>(
    model: &LatentDiffusion<B>,
    text: Option<&TextSide<B>>,
    schedule: &NoiseSchedule,
    param: Parameterization,
    spec: &SampleSpec,
    conds: Option<&Conditions>,
    ids: &[usize],
    shape: [usize; 3],
    seed: u64,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    if let Some(c) = conds {
        assert_eq!(c.len(), ids.len(), "one condition per sample id");
    }
    let x = noise_batch::<B>(seed, ids, None, shape, device);
    let step_noise = |i: usize| noise_batch::<B>(seed, ids, Some(i), shape, device);
    denoise(
        model, text, schedule, param, spec, conds, x, step_noise, device,
    )
}

/// Runs `spec`'s sampler from the initial noise `x` (`[n, C, h, w]`, in the
/// scaled latent space); `step_noise(i)` is the noise a stochastic sampler
/// adds at step `i`. [`sample_latents`] with noise from elsewhere (e.g. the
/// same initial latents as another implementation).
#[allow(clippy::too_many_arguments)]
pub fn denoise<B: Backend>(
    model: &LatentDiffusion<B>,
    text: Option<&TextSide<B>>,
    schedule: &NoiseSchedule,
    param: Parameterization,
    spec: &SampleSpec,
    conds: Option<&Conditions>,
    x: Tensor<B, 4>,
    step_noise: impl FnMut(usize) -> Tensor<B, 4>,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    if model.is_conditional() && conds.is_none() {
        bail!("the model is conditional: give the classes or prompts to sample");
    }
    if !model.is_conditional() && spec.guidance != 1.0 {
        bail!(
            "--guidance {}: the model is unconditional, there is nothing to guide",
            spec.guidance
        );
    }
    let ts = timesteps_for(spec, schedule.len())?;
    let cond = conds
        .map(|c| encode_conditions(c, text, device))
        .transpose()?;
    // The guidance adapter's doubled batch: unconditional half first. Only
    // built when guiding (scale 1 skips the unconditional pass).
    let doubled = match (&cond, conds) {
        (Some(c), Some(conds)) if spec.guidance != 1.0 => {
            let uncond = conds.unconditional(model.null_class(), &spec.negative_prompt);
            Some(Cond::cat(
                encode_conditions(&uncond, text, device)?,
                c.clone(),
            ))
        }
        _ => None,
    };
    let inner = |x: Tensor<B, 4>, t: usize| {
        let b = x.dims()[0];
        let tf = vec![t as f64; b];
        let c = match (&doubled, &cond) {
            (Some(d), _) if d.batch() == b => Some(d.clone()),
            (_, c) => c.clone(),
        };
        model.forward(x, &tf, c)
    };
    let mut den = ClassifierFreeGuidance::new(inner, spec.guidance);
    Ok(match spec.sampler {
        SamplerKind::Ddim => ddim(schedule, param, &ts, spec.eta, x, &mut den, step_noise),
        SamplerKind::Ddpm => ddpm(schedule, param, &ts, None, x, &mut den, step_noise),
        SamplerKind::Plms => plms(schedule, param, &ts, x, &mut den),
        SamplerKind::DpmppTwoM => dpm_solver_pp_2m(schedule, param, &ts, true, x, &mut den),
    })
}
