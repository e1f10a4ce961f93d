//! ldm-diffusion: the arithmetic of latent diffusion, kept apart from any
//! network — noise schedules (the reference's scaled-linear "linear", plain
//! linear, cosine; zero-terminal-SNR rescale), what the model predicts (ε,
//! x0 or v) and how a prediction converts back, min-SNR-γ loss weights, the
//! timesteps samplers visit, and the samplers themselves: DDPM ancestral
//! ([`ddpm()`]), DDIM ([`ddim()`]), PLMS ([`plms()`]) and DPM-Solver++(2M)
//! ([`dpm_solver_pp_2m()`]), plus classifier-free guidance as a denoiser
//! adapter ([`ClassifierFreeGuidance`]). Schedules and weights are
//! per-timestep scalars (f64); samplers take tensors of any burn backend and
//! a [`Denoiser`] (any closure), so they know nothing of the network behind
//! it, and take their noise from the caller, so a seed fixes a sample.
//!
//! Final-step conventions follow the reference: DDIM, PLMS and
//! DPM-Solver++ end at ᾱ_0 (the level of timestep 0), DDPM at ᾱ = 1
//! (its last step returns the x0 prediction).

pub mod ddim;
pub mod ddpm;
pub mod dpm_solver;
pub mod guidance;
pub mod parameterization;
pub mod plms;
pub mod schedule;
pub mod timesteps;
#[cfg(test)]
pub(crate) mod toy;
pub mod weighting;

pub use ddim::{ddim, Denoiser};
pub use ddpm::ddpm;
pub use dpm_solver::dpm_solver_pp_2m;
pub use guidance::ClassifierFreeGuidance;
pub use parameterization::Parameterization;
pub use plms::plms;
pub use schedule::{BetaSchedule, NoiseSchedule};
pub use timesteps::{sampling_timesteps, Spacing};
