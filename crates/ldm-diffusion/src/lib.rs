//! ldm-diffusion: the arithmetic of latent diffusion, kept apart from any
//! network — noise schedules (the reference's scaled-linear "linear", plain
//! linear, cosine; zero-terminal-SNR rescale), what the model predicts (ε,
//! x0 or v) and how a prediction converts back, min-SNR-γ loss weights, and
//! the timesteps and DDIM noise levels samplers use. Schedules and weights
//! are per-timestep scalars (f64); samplers ([`ddim()`]) take tensors of any
//! burn backend and a [`ddim::Denoiser`] (any closure), so they know nothing
//! of the network behind it.

pub mod ddim;
pub mod parameterization;
pub mod schedule;
pub mod timesteps;
pub mod weighting;

pub use ddim::{ddim, Denoiser};
pub use parameterization::Parameterization;
pub use schedule::{BetaSchedule, NoiseSchedule};
pub use timesteps::{sampling_timesteps, Spacing};
