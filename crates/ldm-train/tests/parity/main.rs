//! Parity with the reference PyTorch/diffusers/taming code through the
//! import path, against `tests/fixtures/parity/` (see its README.md).
//!
//! Tolerance, for every compared tensor: max |ours − reference| ≤ 1e-4 ·
//! max |reference| (the fixtures are float64 results rounded to f32; we run
//! in f32). Exceptions, each stated where it is checked: code indices are
//! compared exactly; ActNorm's data-dependent init uses the population std
//! on purpose (README), so its scale is compared after converting to the
//! unbiased std.
//!
//! Each test prints its rows of the table `component | fixture | quantity |
//! max abs err | max |ref| | err / max|ref|` (run with `--nocapture`).

mod autoencoder;
mod disc_lpips_losses;
mod pipeline;
mod round_trip;
mod unet;

use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use std::collections::HashMap;

/// The autodiff backend the tests run on.
pub type AD = Autodiff<Flex>;

/// Relative tolerance: max abs error / max |reference|.
pub const REL_TOL: f64 = 1e-4;

/// The fixtures folder.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity")
}

/// One fixture file's tensors (all f32).
pub struct Fixture {
    bytes: Vec<u8>,
    /// File name, for the table.
    pub name: String,
}

impl Fixture {
    /// Reads `fixtures()/name`.
    pub fn open(name: &str) -> Self {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        Self {
            bytes,
            name: name.to_string(),
        }
    }

    fn st(&self) -> safetensors::SafeTensors<'_> {
        safetensors::SafeTensors::deserialize(&self.bytes).unwrap()
    }

    /// Every key.
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.st().names().into_iter().cloned().collect();
        k.sort();
        k
    }

    /// Values and shape of `key`.
    pub fn get(&self, key: &str) -> (Vec<f32>, Vec<usize>) {
        let st = self.st();
        let v = st
            .tensor(key)
            .unwrap_or_else(|_| panic!("{}: no {key}", self.name));
        (
            ldm_models::tensor_bytes::f32_values(v.data()),
            v.shape().to_vec(),
        )
    }

    /// Values of `key`.
    pub fn values(&self, key: &str) -> Vec<f32> {
        self.get(key).0
    }

    /// `key` as data.
    pub fn data(&self, key: &str) -> TensorData {
        let (v, s) = self.get(key);
        TensorData::new(v, s)
    }

    /// `key` as a rank-4 tensor on backend `B`.
    pub fn t4<B: burn::tensor::backend::Backend>(&self, key: &str) -> Tensor<B, 4> {
        Tensor::from_data(self.data(key), &Default::default())
    }
}

/// Values of a tensor.
pub fn vals<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// Collects the rows of one test and fails at the end if any exceeds its tolerance.
pub struct Table {
    component: String,
    rows: Vec<(String, String, f64, f64, f64, bool)>,
}

impl Table {
    /// A table for `component`.
    pub fn new(component: &str) -> Self {
        Self {
            component: component.into(),
            rows: Vec::new(),
        }
    }

    /// Compares `got` with `want` at [`REL_TOL`].
    pub fn check(&mut self, fixture: &str, what: &str, got: &[f32], want: &[f32]) {
        self.check_tol(fixture, what, got, want, REL_TOL);
    }

    /// Compares `got` with `want`: max abs error ≤ `tol` · max |want|.
    pub fn check_tol(&mut self, fixture: &str, what: &str, got: &[f32], want: &[f32], tol: f64) {
        assert_eq!(got.len(), want.len(), "{fixture} {what}: length");
        let err = got
            .iter()
            .zip(want)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .fold(0.0, f64::max);
        let scale = want.iter().map(|v| (*v as f64).abs()).fold(0.0, f64::max);
        let ok = err <= tol * scale || (scale == 0.0 && err == 0.0);
        self.rows.push((
            fixture.to_string(),
            what.to_string(),
            err,
            scale,
            err / scale.max(1e-30),
            ok,
        ));
    }

    /// Prints the rows and fails if one is out of tolerance.
    pub fn finish(self) {
        for (f, w, e, s, r, ok) in &self.rows {
            println!(
                "| {} | {f} | {w} | {e:.3e} | {s:.3e} | {r:.2e} |{}",
                self.component,
                if *ok { "" } else { " FAIL" }
            );
        }
        let bad: Vec<&String> = self.rows.iter().filter(|r| !r.5).map(|r| &r.1).collect();
        assert!(
            bad.is_empty(),
            "{}: out of tolerance: {bad:?}",
            self.component
        );
    }
}

/// Gradients of every float parameter of a module, by parameter path
/// (enum variant names left out, as in our checkpoint keys).
struct GradsByPath<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    path: Vec<String>,
    out: HashMap<String, Vec<f32>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradsByPath<'_, B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }
    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.path.pop();
        }
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            self.out.insert(self.path.join("."), vals(g));
        }
    }
}

/// `path → gradient values` of every parameter of `m` that has one.
pub fn grads_by_path<B: AutodiffBackend, M: Module<B>>(
    m: &M,
    grads: &B::Gradients,
) -> HashMap<String, Vec<f32>> {
    let mut v = GradsByPath::<B> {
        grads,
        path: Vec::new(),
        out: HashMap::new(),
    };
    m.visit(&mut v);
    v.out
}
