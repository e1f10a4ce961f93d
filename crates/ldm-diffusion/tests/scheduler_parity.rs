//! Parity of this crate's diffusion arithmetic with diffusers 0.42.1, against
//! `crates/ldm-train/tests/fixtures/parity/schedulers.safetensors` (written by
//! `scripts/make_parity_fixtures.py --only schedulers`; its `config` metadata
//! describes every tensor and every diffusers setting).
//!
//! What is compared, and at which tolerance (u = 2⁻²⁴, the f32 unit
//! roundoff; ours runs the per-timestep scalars in f64 and the tensors in f32):
//! - schedules: ours (f64) against diffusers' own float32 β and ᾱ. β formed
//!   directly (scaled-linear, linear, cosine) within 8u relative, element by
//!   element; ᾱ_t within (t + 1)·2u relative, the forward-error bound of a
//!   float32 cumulative product of t + 1 rounded factors (doubled for the
//!   rounding of the factors themselves). Zero-terminal-SNR β are recovered
//!   from ratios of neighbouring ᾱ, so they inherit those two ᾱ errors: within
//!   (1 − β_t)·(tol_t + tol_{t−1}) + u absolute.
//! - everything downstream of a schedule (forward process, targets, SNR,
//!   weights, samplers) runs on the schedule exactly as diffusers holds it
//!   (the stored float32 ᾱ), so it measures the arithmetic alone; the schedule
//!   check is the other half of the chain. Why not our own schedule: float32
//!   ᾱ near 1 keeps few digits of 1 − ᾱ (sd: 1 − ᾱ_0 = 8.5e-4 is stored to
//!   ±3e-8, i.e. 3.5e-5 relative), and x_t = √ᾱ·x0 + √(1 − ᾱ)·ε passes that
//!   on; it is diffusers' rounding, within the ᾱ tolerance above.
//! - training quantities are diffusers' own float32 results; sampler samples
//!   are diffusers' step code run in float64 on its float32 schedule and
//!   rounded, because its float32 step formulas cancel (up to 3e-5 relative,
//!   see `exact_arithmetic` in the script). Tolerances: see each test.
//!
//! Intentional differences, handled rather than tolerated:
//! - PLMS with a v-model: diffusers' PNDMScheduler extrapolates raw v outputs
//!   and converts the mix with the current x_t; ours converts each output to
//!   ε at its own x_t and ᾱ_t first (see `plms.rs`). The fixture therefore
//!   runs PNDM in epsilon mode on those per-call ε (config `conventions.plms_v`).
//! - Min-SNR-γ at SNR 0 (zero terminal SNR, t = T − 1): diffusers' ε weight
//!   is 0/0 = NaN, ours is the limit 1.
//! - Final levels, timestep offsets and `lower_order_final` are configured in
//!   diffusers to the reference's conventions, which are ours (config
//!   `conventions`); DPM-Solver++ with zero terminal SNR is not compared
//!   (diffusers replaces ᾱ_{T−1} = 0 by 2⁻²⁴).
//!
//! Each check prints a row `component | configuration | quantity | max abs err
//! | max rel err | tolerance` (run with `--nocapture`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use ldm_diffusion::parameterization::noising;
use ldm_diffusion::weighting::min_snr_gamma;
use ldm_diffusion::{
    ddim, ddpm, dpm_solver_pp_2m, plms, sampling_timesteps, BetaSchedule, Denoiser, NoiseSchedule,
    Parameterization, Spacing,
};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// The backend of the crate's own tests (see `src/toy.rs`).
type B = Flex;

/// f32 unit roundoff.
const U: f64 = f32::EPSILON as f64 / 2.0;

/// Training steps of every stored schedule.
const T: usize = 1000;

/// The fixture file and its parsed `config`.
struct Fixture {
    bytes: Vec<u8>,
    config: Value,
}

impl Fixture {
    /// Reads the file and parses its `config`.
    fn open() -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../ldm-train/tests/fixtures/parity/schedulers.safetensors");
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (see the module doc)", path.display()));
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let config = serde_json::from_str(&meta.metadata().as_ref().unwrap()["config"]).unwrap();
        Self { bytes, config }
    }

    /// The raw bytes and shape of `key`, which must have type `dtype`.
    fn view(&self, key: &str, dtype: Dtype) -> (Vec<u8>, Vec<usize>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let v = st
            .tensor(key)
            .unwrap_or_else(|_| panic!("fixture has no {key}"));
        assert_eq!(v.dtype(), dtype, "{key}");
        (v.data().to_vec(), v.shape().to_vec())
    }

    /// Whether the fixture stores `key`.
    fn has(&self, key: &str) -> bool {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        st.names().iter().any(|k| k.as_str() == key)
    }

    /// A float32 tensor's values and shape.
    fn f32s(&self, key: &str) -> (Vec<f32>, Vec<usize>) {
        let (bytes, shape) = self.view(key, Dtype::F32);
        let v = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (v, shape)
    }

    /// An int64 tensor's values.
    fn i64s(&self, key: &str) -> Vec<i64> {
        let (bytes, _) = self.view(key, Dtype::I64);
        bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    /// The leading-axis slices of a float32 tensor as rank-4 tensors
    /// (`[n, a, b, c, d]` gives n tensors `[a, b, c, d]`; `[a, b, c, d]` gives
    /// a slices `[1, b, c, d]`).
    fn slices(&self, key: &str) -> Vec<Tensor<B, 4>> {
        let (v, shape) = self.f32s(key);
        let inner: Vec<usize> = match shape.len() {
            5 => shape[1..].to_vec(),
            4 => [&[1], &shape[1..]].concat(),
            _ => panic!("{key}: shape {shape:?}"),
        };
        let n: usize = inner.iter().product();
        v.chunks_exact(n)
            .map(|c| tensor(c.to_vec(), inner.clone().try_into().unwrap()))
            .collect()
    }

    /// The schedule `name` exactly as diffusers holds it (float32, upcast).
    fn diffusers_schedule(&self, name: &str) -> NoiseSchedule {
        let up = |k: &str| -> Vec<f64> {
            let v = self.f32s(&format!("output.schedule.{name}.{k}")).0;
            v.iter().map(|x| *x as f64).collect()
        };
        NoiseSchedule {
            betas: up("betas"),
            alphas_cumprod: up("alphas_cumprod"),
        }
    }
}

/// A tensor of shape `shape` holding `v`.
fn tensor(v: Vec<f32>, shape: [usize; 4]) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// The elements of `x`.
fn values(x: Tensor<B, 4>) -> Vec<f32> {
    x.into_data().to_vec().unwrap()
}

/// (max |got − want|, that over max |want|): the normwise relative error.
fn normwise(got: &[f32], want: &[f32]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let abs = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - *w as f64).abs())
        .fold(0.0, f64::max);
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs() as f64));
    (abs, abs / scale)
}

/// Prints one row of the parity table.
fn row(component: &str, config: &str, what: &str, abs: f64, rel: f64, tol: &str) {
    eprintln!("| {component} | {config} | {what} | {abs:.3e} | {rel:.3e} | {tol} |");
}

/// Asserts the normwise relative error of `got` is at most `tol`.
fn check(component: &str, config: &str, what: &str, got: &[f32], want: &[f32], tol: f64) {
    let (abs, rel) = normwise(got, want);
    row(
        component,
        config,
        what,
        abs,
        rel,
        &format!("{tol:.1e} normwise"),
    );
    assert!(
        rel <= tol,
        "{component} {config} {what}: normwise error {rel:.3e} > {tol:.1e}"
    );
}

// ---- schedules ---------------------------------------------------------------

/// Our schedule for every name the fixture stores.
fn our_schedule(name: &str) -> NoiseSchedule {
    let sd = BetaSchedule::ScaledLinear {
        start: 0.00085,
        end: 0.012,
    };
    let linear = BetaSchedule::Linear {
        start: 1e-4,
        end: 0.02,
    };
    match name {
        "sd" => NoiseSchedule::new(sd, T),
        "ldm" => NoiseSchedule::new(
            BetaSchedule::ScaledLinear {
                start: 0.0015,
                end: 0.0195,
            },
            T,
        ),
        "linear" => NoiseSchedule::new(linear, T),
        // The reference's s = 8e-3 and β cap 0.999 are squaredcos_cap_v2's own.
        "cosine" => NoiseSchedule::new(BetaSchedule::Cosine { s: 8e-3 }, T),
        "sd_zsnr" => NoiseSchedule::new(sd, T).rescale_zero_terminal_snr(),
        "linear_zsnr" => NoiseSchedule::new(linear, T).rescale_zero_terminal_snr(),
        _ => panic!("the fixture has a schedule {name} this test does not know"),
    }
}

/// Relative tolerance on ᾱ_t: (t + 1)·2u (see the module doc).
fn alpha_tol(t: usize) -> f64 {
    (t + 1) as f64 * 2.0 * U
}

/// Largest error of ours against diffusers' ᾱ, in units of its tolerance;
/// also returns the largest absolute and relative errors.
fn alpha_errors(ours: &[f64], theirs: &[f64]) -> (f64, f64, f64) {
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    for (t, (o, d)) in ours.iter().zip(theirs).enumerate() {
        let abs = (o - d).abs();
        // ᾱ = 0 (zero terminal SNR) must be exactly 0 on both sides.
        let rel = if *d == 0.0 { abs / U } else { abs / d.abs() };
        worst = (
            worst.0.max(rel / alpha_tol(t)),
            worst.1.max(abs),
            worst.2.max(rel),
        );
    }
    worst
}

/// Largest β error in units of its tolerance, plus the largest absolute and
/// relative errors. Direct β: 8u relative; zero-terminal-SNR β: derived
/// from two neighbouring ᾱ, (1 − β_t)(tol_t + tol_{t−1}) + u absolute.
fn beta_errors(ours: &[f64], theirs: &[f64], derived: bool) -> (f64, f64, f64) {
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    for (t, (o, d)) in ours.iter().zip(theirs).enumerate() {
        let abs = (o - d).abs();
        let rel = abs / d.abs();
        let ratio = if derived {
            let tol = (1.0 - d) * (alpha_tol(t) + alpha_tol(t.saturating_sub(1))) + U;
            abs / tol
        } else {
            rel / (8.0 * U)
        };
        worst = (worst.0.max(ratio), worst.1.max(abs), worst.2.max(rel));
    }
    worst
}

#[test]
fn schedules_match_diffusers() {
    let fx = Fixture::open();
    let names: Vec<&String> = fx.config["schedules"].as_object().unwrap().keys().collect();
    assert_eq!(names.len(), 6, "{names:?}");
    for name in names {
        let ours = our_schedule(name);
        let theirs = fx.diffusers_schedule(name);
        assert_eq!((ours.len(), theirs.len()), (T, T), "{name}");
        let derived = name.ends_with("_zsnr");
        let (b_ratio, b_abs, b_rel) = beta_errors(&ours.betas, &theirs.betas, derived);
        let b_tol = if derived {
            "(1−β)(tol_t+tol_{t−1})+u abs"
        } else {
            "8u rel"
        };
        let b_tol = format!("{b_tol} (max {b_ratio:.2} of it)");
        row("schedule", name, "β", b_abs, b_rel, &b_tol);
        assert!(b_ratio <= 1.0, "{name} β: {b_ratio:.2} × its tolerance");
        let (a_ratio, a_abs, a_rel) = alpha_errors(&ours.alphas_cumprod, &theirs.alphas_cumprod);
        let a_tol = format!("(t+1)·2u rel (max {a_ratio:.2} of it)");
        row("schedule", name, "ᾱ", a_abs, a_rel, &a_tol);
        assert!(a_ratio <= 1.0, "{name} ᾱ: {a_ratio:.2} × its tolerance");
        if derived {
            assert_eq!(theirs.alphas_cumprod[T - 1], 0.0);
            assert_eq!(ours.alphas_cumprod[T - 1], 0.0);
        }
    }
}

// ---- training: forward process, targets, min-SNR-γ -------------------------

/// Forward process and targets: each element is c_1·x0 + c_2·ε with one or
/// two f32 roundings per term on each side, so 4u normwise.
const TRAIN_TOL: f64 = 4.0 * U;
/// SNR and weights, element by element: diffusers' chain of five float32
/// operations for the SNR (two square roots, 1 − ᾱ, a division, a square;
/// the weights add one or two) against ours in f64 from the same ᾱ, so 8u
/// relative.
const SNR_TOL: f64 = 8.0 * U;

/// Applies the per-element coefficients `mix(ᾱ_t)` to (x0, ε) of each batch
/// element.
fn per_element(
    sch: &NoiseSchedule,
    ts: &[i64],
    x0: &[Tensor<B, 4>],
    noise: &[Tensor<B, 4>],
    mix: impl Fn(f64) -> (f64, f64),
) -> Vec<f32> {
    ts.iter()
        .zip(x0.iter().zip(noise))
        .flat_map(|(t, (x, n))| {
            let (c1, c2) = mix(sch.alphas_cumprod[*t as usize]);
            values(x.clone() * c1 + n.clone() * c2)
        })
        .collect()
}

/// Element-by-element relative comparison of per-timestep scalars.
fn check_scalars(config: &str, what: &str, got: &[f64], want: &[f32]) {
    let mut worst = (0.0f64, 0.0f64);
    for (g, w) in got.iter().zip(want) {
        let abs = (g - *w as f64).abs();
        worst = (worst.0.max(abs), worst.1.max(abs / (*w as f64).abs()));
    }
    row("training", config, what, worst.0, worst.1, "8u rel");
    assert!(worst.1 <= SNR_TOL, "{config} {what}: {:.3e}", worst.1);
}

#[test]
fn training_quantities_match_diffusers() {
    let fx = Fixture::open();
    let ts = fx.i64s("input.train.timesteps");
    let x0 = fx.slices("input.train.x0");
    let noise = fx.slices("input.train.noise");
    let flat =
        |v: &[Tensor<B, 4>]| -> Vec<f32> { v.iter().flat_map(|t| values(t.clone())).collect() };
    let gamma = fx.config["train"]["gamma"].as_f64().unwrap();
    for name in ["sd", "sd_zsnr"] {
        let sch = fx.diffusers_schedule(name);
        let out = |q: &str| fx.f32s(&format!("output.train.{name}.{q}")).0;
        let noisy = per_element(&sch, &ts, &x0, &noise, noising);
        check(
            "training",
            name,
            "add_noise",
            &noisy,
            &out("noisy"),
            TRAIN_TOL,
        );
        let target = |p: Parameterization| per_element(&sch, &ts, &x0, &noise, |a| p.target(a));
        check(
            "training",
            name,
            "v target",
            &target(Parameterization::V),
            &out("v"),
            TRAIN_TOL,
        );
        // ε and x0 targets are the inputs themselves, bit for bit.
        assert_eq!(
            target(Parameterization::Eps),
            flat(&noise),
            "{name} ε target"
        );
        assert_eq!(target(Parameterization::X0), flat(&x0), "{name} x0 target");

        let snr: Vec<f64> = ts.iter().map(|t| sch.snr(*t as usize)).collect();
        check_scalars(name, "compute_snr", &snr, &out("snr"));
        for (p, q) in [
            (Parameterization::Eps, "min_snr_eps"),
            (Parameterization::V, "min_snr_v"),
        ] {
            let (mut got, mut want, mut at_zero) = (Vec::new(), Vec::new(), 0);
            for (s, w) in snr.iter().zip(out(q)) {
                let g = min_snr_gamma(*s, gamma, p);
                if *s == 0.0 && p == Parameterization::Eps {
                    // Intentional: diffusers divides 0 by 0; ours gives the limit.
                    assert!(w.is_nan() && g == 1.0, "{name} {q} at SNR 0: {g} vs {w}");
                    at_zero += 1;
                    continue;
                }
                got.push(g);
                want.push(w);
            }
            let expected = usize::from(name == "sd_zsnr" && p == Parameterization::Eps);
            assert_eq!(at_zero, expected, "{name} {q}: timesteps at SNR 0");
            check_scalars(name, &format!("{q} (γ {gamma})"), &got, &want);
        }
    }
}

// ---- samplers ------------------------------------------------------------------

/// A sampler run of the fixture: its settings and the replayed model.
struct Run {
    name: String,
    config: Value,
    schedule: NoiseSchedule,
    param: Parameterization,
    /// Visited timesteps, ascending (the samplers' convention).
    timesteps: Vec<usize>,
    x_t: Tensor<B, 4>,
    /// Fresh noise of the k-th step in diffusers' (descending) order.
    noise: Vec<Tensor<B, 4>>,
}

impl Run {
    /// The run `name` and its replayed model.
    fn load(fx: &Fixture, name: &str) -> (Self, Replay) {
        let config = fx.config["runs"][name].clone();
        assert!(config.is_object(), "fixture has no run {name}");
        let param = match config["our_parameterization"].as_str().unwrap() {
            "Eps" => Parameterization::Eps,
            "X0" => Parameterization::X0,
            "V" => Parameterization::V,
            p => panic!("{name}: parameterization {p}"),
        };
        let calls: Vec<usize> = fx
            .i64s(&format!("output.{name}.timesteps"))
            .into_iter()
            .map(|t| t as usize)
            .collect();
        // PLMS calls the model twice at its second timestep (the Heun point).
        let mut timesteps = calls.clone();
        timesteps.dedup();
        timesteps.reverse();
        let noise_key = format!("input.{name}.noise");
        let run = Self {
            name: name.into(),
            schedule: fx.diffusers_schedule(config["schedule"].as_str().unwrap()),
            param,
            timesteps,
            x_t: fx.slices("input.x_T").remove(0),
            // Only the stochastic runs (DDPM, DDIM with η > 0) store noise.
            noise: if fx.has(&noise_key) {
                fx.slices(&noise_key)
            } else {
                Vec::new()
            },
            config,
        };
        let replay = Replay {
            outputs: fx.slices(&format!("input.{name}.model_outputs")),
            calls,
            seen: Vec::new(),
        };
        (run, replay)
    }

    /// The noise our samplers ask for with step index `i` (ascending
    /// timesteps): diffusers' step S − 1 − i.
    fn noise(&self, i: usize) -> Tensor<B, 4> {
        self.noise[self.timesteps.len() - 1 - i].clone()
    }

    /// A setting of ours for this run (config `runs.<name>.ours`).
    fn ours(&self, key: &str) -> &Value {
        &self.config["ours"][key]
    }

    /// Our spacing that gives diffusers' timesteps.
    fn spacing(&self) -> Spacing {
        match self.ours("spacing").as_str().unwrap() {
            "Uniform" => Spacing::Uniform,
            "Leading" => Spacing::Leading,
            "Trailing" => Spacing::Trailing,
            s => panic!("{}: spacing {s}", self.name),
        }
    }
}

/// The fixed model: call k must come at diffusers' k-th timestep and gets
/// diffusers' k-th output; it records what it was called with, which is our
/// sample after each step.
struct Replay {
    outputs: Vec<Tensor<B, 4>>,
    calls: Vec<usize>,
    seen: Vec<Tensor<B, 4>>,
}

impl Denoiser<B> for Replay {
    fn predict(&mut self, x: Tensor<B, 4>, t: usize) -> Tensor<B, 4> {
        let k = self.seen.len();
        assert!(k < self.calls.len(), "more model calls than diffusers made");
        assert_eq!(t, self.calls[k], "model call {k}");
        self.seen.push(x);
        self.outputs[k].clone()
    }
}

/// Step-by-step tolerance, in units of u·(k + 1)·G_k for the sample after
/// step k (see [`growth`]): each of our steps adds a few f32 roundings (the
/// reference is float64, rounded once), and the replay lets earlier
/// differences grow by G_k. Measured: at most 1.8 of those units.
const SAMPLER_TOL: f64 = 4.0;

/// How much a difference in the sample can have grown from the first model
/// call to the sample after step k. The replayed outputs ignore x, unlike a
/// real model's, so with an ε-model every step scales a difference in x by
/// √(ᾱ_prev/ᾱ) (x̂0 = (x − √(1−ᾱ)·ε)/√ᾱ, then × √ᾱ_prev: DDIM, PLMS, DDPM's
/// posterior mean and DPM-Solver's update all reduce to this) and G_k =
/// √(ᾱ after step k / ᾱ at the first call), up to 1/√ᾱ_T ≈ 84 on the LDM
/// schedule. With a v-model a DDIM step maps δx to (√ᾱ_prev·√ᾱ +
/// d·√(1−ᾱ))·δx, d ≤ √(1−ᾱ_prev), at most 1 by Cauchy–Schwarz; with an
/// x0-model to d/√(1−ᾱ)·δx ≤ 1 (DPM-Solver: α_t·α_s + σ_t·σ_s and σ_t/σ_s,
/// DDPM: likewise): G_k = 1.
fn growth(run: &Run, calls: &[usize], k: usize) -> f64 {
    if run.param != Parameterization::Eps {
        return 1.0;
    }
    let a = &run.schedule.alphas_cumprod;
    let after = match calls.get(k + 1) {
        Some(t) => a[*t],
        // DDPM's chain ends at ᾱ = 1, the others at ᾱ_0 (lib.rs).
        None if run.config["sampler"] == "ddpm" => 1.0,
        None => a[0],
    };
    (after / a[calls[0]]).sqrt()
}

/// Runs `sampler` on the fixture run `name` with the replayed model and
/// compares the timesteps, the call pattern and every intermediate sample.
fn check_run(
    fx: &Fixture,
    component: &str,
    name: &str,
    sampler: impl FnOnce(&Run, &mut Replay) -> Tensor<B, 4>,
) {
    let (run, mut replay) = Run::load(fx, name);
    let steps = run.config["steps"].as_u64().unwrap() as usize;
    assert_eq!(
        sampling_timesteps(run.spacing(), T, steps),
        run.timesteps,
        "{name}: timesteps"
    );
    let last = sampler(&run, &mut replay);
    let calls = replay.calls;
    assert_eq!(replay.seen.len(), calls.len(), "{name}: model calls");
    let samples = fx.slices(&format!("output.{name}.samples"));
    assert_eq!(samples.len(), calls.len(), "{name}: one sample per call");
    let ours = replay.seen.into_iter().skip(1).chain([last]);
    // (max abs, max normwise, max in units of the tolerance's scale)
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    for (k, (got, want)) in ours.zip(&samples).enumerate() {
        let (abs, rel) = normwise(&values(got), &values(want.clone()));
        let scale = U * (k + 1) as f64 * growth(&run, &calls, k);
        assert!(
            rel <= SAMPLER_TOL * scale,
            "{component} {name}: step {k}: normwise error {rel:.3e} = {:.1} × u(k+1)G_k > {SAMPLER_TOL}",
            rel / scale
        );
        worst = (worst.0.max(abs), worst.1.max(rel), worst.2.max(rel / scale));
    }
    let what = format!(
        "{} samples (G ≤ {:.0})",
        calls.len(),
        growth(&run, &calls, calls.len() - 1)
    );
    let tol = format!("{SAMPLER_TOL}u(k+1)G_k normwise (max {:.2})", worst.2);
    row(component, name, &what, worst.0, worst.1, &tol);
}

/// The fixture's runs, by the sampler that replays them.
const DDPM_RUNS: [&str; 2] = ["ddpm_eps_ldm_leading", "ddpm_v_sd_trailing_clip"];
const DDIM_RUNS: [&str; 4] = [
    "ddim_eps_ldm_eta0",
    "ddim_eps_ldm_eta1",
    "ddim_v_sdzsnr_trailing_eta0",
    "ddim_x0_cosine_trailing_eta1",
];
const PLMS_RUNS: [&str; 2] = ["plms_eps_ldm", "plms_v_sd"];
const DPM_RUNS: [&str; 4] = [
    "dpmpp2m_eps_sd",
    "dpmpp2m_x0_sd",
    "dpmpp2m_v_sd",
    "dpmpp2m_eps_ldm_second_order_final",
];

/// The run's η (diffusers' and ours are checked equal where used).
fn eta(run: &Run) -> f64 {
    run.config["eta"].as_f64().unwrap()
}

#[test]
fn ddpm_matches_diffusers() {
    let fx = Fixture::open();
    for name in DDPM_RUNS {
        check_run(&fx, "DDPMScheduler", name, |run, model| {
            let clip = run.ours("clip_x0").as_f64();
            ddpm(
                &run.schedule,
                run.param,
                &run.timesteps,
                clip,
                run.x_t.clone(),
                model,
                |i| run.noise(i),
            )
        });
    }
}

#[test]
fn ddim_matches_diffusers() {
    let fx = Fixture::open();
    for name in DDIM_RUNS {
        check_run(&fx, "DDIMScheduler", name, |run, model| {
            assert_eq!(eta(run), run.ours("eta").as_f64().unwrap());
            ddim(
                &run.schedule,
                run.param,
                &run.timesteps,
                eta(run),
                run.x_t.clone(),
                model,
                |i| run.noise(i),
            )
        });
    }
}

#[test]
fn plms_matches_diffusers() {
    let fx = Fixture::open();
    for name in PLMS_RUNS {
        check_run(&fx, "PNDMScheduler (PLMS)", name, |run, model| {
            plms(
                &run.schedule,
                run.param,
                &run.timesteps,
                run.x_t.clone(),
                model,
            )
        });
    }
}

#[test]
fn dpm_solver_matches_diffusers() {
    let fx = Fixture::open();
    for name in DPM_RUNS {
        check_run(&fx, "DPMSolverMultistep++ 2M", name, |run, model| {
            dpm_solver_pp_2m(
                &run.schedule,
                run.param,
                &run.timesteps,
                run.ours("lower_order_final").as_bool().unwrap(),
                run.x_t.clone(),
                model,
            )
        });
    }
}

/// Every run of the fixture is checked by one of the tests above.
#[test]
fn every_run_is_checked() {
    let fx = Fixture::open();
    let stored: BTreeSet<&str> = fx.config["runs"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let checked: BTreeSet<&str> = [&DDPM_RUNS[..], &DDIM_RUNS, &PLMS_RUNS, &DPM_RUNS]
        .concat()
        .into_iter()
        .collect();
    assert_eq!(stored, checked);
}
