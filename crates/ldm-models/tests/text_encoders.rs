//! The two text conditioners against `scripts/make_text_fixture.py`
//! (transformers 5.25.0, torch 2.15.0; references computed in float64).
//!
//! Tolerances, fixed from how far PyTorch's own float32 evaluation drifts
//! from the same float64 reference (printed by the script):
//! - MiniLM hidden states of real tokens: 1e-4 absolute (PyTorch f32: 2.3e-6;
//!   values up to 6.3). Padding positions: 1e-3 (PyTorch f32: 1.9e-4 — the
//!   padding rows of the two-token empty sentence are ill-conditioned; no
//!   real token reads them, the UNet does).
//! - Pooled sentence embedding: cosine ≥ 0.99999 and 1e-5 absolute (PyTorch
//!   f32: 1.9e-7).
//! - Text transformer output: 1e-5 absolute (PyTorch f32: 1.1e-6; values up
//!   to 3.2); gradients: 1e-5 of each gradient's largest entry (PyTorch f32:
//!   ≤ 8e-7 of it).

mod common;
use common::read;
use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use burn_store::ModuleSnapshot;
use ldm_models::conditioner::text_transformer::{BlockPart, FfLayer, ProjectIn};
use ldm_models::conditioner::{
    mean_pooled_normalized, BertConfig, BertModel, TextTransformer, TextTransformerConfig,
};
use ldm_models::torch_weights::TorchWeights;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

type B = Flex;
type AD = Autodiff<Flex>;

const FIXTURE: &[u8] = include_bytes!("fixtures/text_encoders_ref.safetensors");
const TT_PREFIX: &str = "text_transformer.";

fn minilm_dir() -> PathBuf {
    let cache = std::env::var_os("LDM_TRAIN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/ldm-train"));
    let p = cache.join("text/minilm");
    assert!(
        p.join("model.safetensors").is_file(),
        "{} missing: run `bash scripts/setup.sh`",
        p.display()
    );
    p
}

fn fixture() -> SafeTensors<'static> {
    SafeTensors::deserialize(FIXTURE).unwrap()
}

fn metadata(key: &str) -> String {
    let (_, meta) = SafeTensors::read_metadata(FIXTURE).unwrap();
    meta.metadata().as_ref().unwrap()[key].clone()
}

fn read_i64(st: &SafeTensors, key: &str) -> (Vec<i64>, Vec<usize>) {
    let v = st.tensor(key).unwrap();
    assert_eq!(v.dtype(), Dtype::I64, "{key}");
    let data = v
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (data, v.shape().to_vec())
}

fn ids<Bk: Backend>(v: Vec<i64>, [b, t]: [usize; 2], dev: &Bk::Device) -> Tensor<Bk, 2, Int> {
    Tensor::from_data(TensorData::new(v, [b, t]), dev)
}

fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// The fixture's MiniLM ids and mask: as tensors, plus the raw values.
struct MinilmInputs {
    ids: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Bool>,
    id_values: Vec<i64>,
    mask_values: Vec<i64>,
}

fn minilm_inputs() -> MinilmInputs {
    let dev = &Default::default();
    let st = fixture();
    let (id_values, s) = read_i64(&st, "minilm.input_ids");
    let (mask_values, _) = read_i64(&st, "minilm.attention_mask");
    let shape = [s[0], s[1]];
    let mask = Tensor::<B, 2, Bool>::from_data(
        TensorData::new(mask_values.iter().map(|&m| m == 1).collect(), shape),
        dev,
    );
    MinilmInputs {
        ids: ids::<B>(id_values.clone(), shape, dev),
        mask,
        id_values,
        mask_values,
    }
}

#[test]
fn minilm_matches_transformers() {
    let dev = Default::default();
    let bert = BertModel::<B>::load(&minilm_dir(), &dev).unwrap();
    assert_eq!(bert.hidden_size(), 384);
    let MinilmInputs {
        ids: id,
        mask,
        mask_values: mask_v,
        ..
    } = minilm_inputs();
    let h = bert.forward(id, mask.clone());
    let [b, t, d] = h.dims();
    assert_eq!([b, t, d], [4, 77, 384]);
    let got = values(h.clone());
    let (want, _) = read(&fixture(), "minilm.last_hidden_state");
    let (mut real, mut pad) = (0.0f32, 0.0f32);
    for (i, (x, y)) in got.iter().zip(&want).enumerate() {
        let e = (x - y).abs();
        if mask_v[i / d] == 1 {
            real = real.max(e);
        } else {
            pad = pad.max(e);
        }
    }
    println!(
        "MiniLM last_hidden_state: max abs error real tokens {real:.2e}, padding {pad:.2e} \
         (rel. to max |h| {:.2e})",
        real.max(pad) / max_abs(&want)
    );
    assert!(real <= 1e-4, "real tokens: max abs error {real}");
    assert!(pad <= 1e-3, "padding positions: max abs error {pad}");

    let e = values(mean_pooled_normalized(h, mask));
    let (want, _) = read(&fixture(), "minilm.sentence_embedding");
    let err = max_abs_diff(&e, &want);
    for (i, (a, w)) in e.chunks(d).zip(want.chunks(d)).enumerate() {
        let dot: f32 = a.iter().zip(w).map(|(x, y)| x * y).sum();
        let cos = dot
            / (a.iter().map(|x| x * x).sum::<f32>().sqrt()
                * w.iter().map(|x| x * x).sum::<f32>().sqrt());
        println!("sentence {i}: cosine {cos:.7}");
        assert!(cos >= 0.99999, "sentence {i}: cosine {cos}");
    }
    println!("MiniLM sentence embedding: max abs error {err:.2e}");
    assert!(err <= 1e-5, "sentence embedding: max abs error {err}");
}

#[test]
fn minilm_ignores_padding_keys() {
    let dev = Default::default();
    let bert = BertModel::<B>::load(&minilm_dir(), &dev).unwrap();
    let input = minilm_inputs();
    let [b, t] = input.ids.dims();
    let mask_v = &input.mask_values;
    let base = values(bert.forward(input.ids.clone(), input.mask.clone()));
    // Other ids behind the mask: the real tokens must not see them.
    let mut other = input.id_values.clone();
    for (i, v) in other.iter_mut().enumerate() {
        if mask_v[i] == 0 {
            *v = 1000 + (i as i64 * 7919) % 29000;
        }
    }
    let moved = values(bert.forward(ids::<B>(other, [b, t], &dev), input.mask));
    let d = bert.hidden_size();
    let mut worst = 0.0f32;
    let mut pad_changed = 0.0f32;
    for (i, (x, y)) in base.iter().zip(&moved).enumerate() {
        if mask_v[i / d] == 1 {
            worst = worst.max((x - y).abs());
        } else {
            pad_changed = pad_changed.max((x - y).abs());
        }
    }
    println!("real tokens moved by {worst:.1e} when the padding ids changed");
    // Masked keys get exactly zero weight, so this is 0 on Flex; the bound
    // only leaves room for a backend that sums in another order.
    assert!(
        worst <= 1e-6,
        "a real token's state moved by {worst} with the padding ids"
    );
    // The padding positions themselves do change: the test is not vacuous.
    assert!(pad_changed > 1e-2, "{pad_changed}");
}

#[test]
fn bert_load_errors_name_the_file_and_key() {
    let dev = Default::default();
    let dir = minilm_dir();
    let err = BertModel::<B>::load(&dir.join("no-such-dir"), &dev).unwrap_err();
    assert!(err.to_string().contains("no-such-dir/config.json"), "{err}");

    // A config that disagrees with the weights: the first misshaped key is named.
    let mut cfg = BertConfig::from_json(&dir.join("config.json")).unwrap();
    cfg.intermediate_size = 1000;
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let w = TorchWeights::parse(&bytes, "minilm/model.safetensors").unwrap();
    let err = BertModel::<B>::from_weights(&cfg, &w, &dev).unwrap_err();
    assert_eq!(
        err.to_string(),
        "minilm/model.safetensors: key `encoder.layer.0.intermediate.dense.weight` is F32 \
         [1536, 384], expected F32 [1000, 384]"
    );
    cfg.intermediate_size = 1536;
    cfg.num_hidden_layers = 7;
    let err = BertModel::<B>::from_weights(&cfg, &w, &dev).unwrap_err();
    assert_eq!(
        err.to_string(),
        "minilm/model.safetensors: missing key `encoder.layer.6.attention.self.query.weight`"
    );
    cfg.num_hidden_layers = 6;
    cfg.hidden_act = "relu".into();
    let err = BertModel::<B>::from_weights(&cfg, &w, &dev).unwrap_err();
    assert!(err.to_string().contains("hidden_act `relu`"), "{err}");
}

fn tt_config() -> TextTransformerConfig {
    serde_json::from_str(&metadata("tt.config")).unwrap()
}

/// PyTorch tensors of the fixture's reference state dict, key → shape.
fn reference_shapes() -> BTreeMap<String, Vec<usize>> {
    fixture()
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(TT_PREFIX)?.to_string(), v.shape().to_vec())))
        .collect()
}

#[test]
fn text_transformer_forward_and_gradients_match_reference() {
    let dev = Default::default();
    let cfg = tt_config();
    let w = TorchWeights::parse(FIXTURE, "text_encoders_ref.safetensors").unwrap();
    let model = TextTransformer::<AD>::from_reference(&cfg, &w, TT_PREFIX, &dev).unwrap();
    let st = fixture();
    let (id, s) = read_i64(&st, "tt.ids");
    let y = model.forward(ids::<AD>(id, [s[0], s[1]], &dev));
    let (want, _) = read(&st, "tt.output");
    let err = max_abs_diff(&values(y.clone()), &want);
    println!(
        "text transformer output: max abs error {err:.2e} (max |y| {:.2})",
        max_abs(&want)
    );
    assert!(err <= 1e-5, "output: max abs error {err}");

    let (probe, ps) = read(&st, "tt.probe");
    let probe = Tensor::<AD, 3>::from_data(TensorData::new(probe, [ps[0], ps[1], ps[2]]), &dev);
    let grads = (y * probe).sum().backward();
    let check = |key: &str, got: Vec<f32>| {
        let (want, _) = read(&st, &format!("tt.grad.{key}"));
        let scale = max_abs(&want);
        let err = max_abs_diff(&got, &want);
        println!(
            "grad {key}: max abs error {err:.2e}, relative to max |g| {:.2e}",
            err / scale
        );
        assert!(
            err <= 1e-5 * scale,
            "grad {key}: max abs error {err} (max |g| {scale})"
        );
    };
    let grad2 = |p: &Param<Tensor<AD, 2>>| p.grad(&grads).unwrap();
    check("token_emb.weight", values(grad2(&model.token_emb.weight)));
    let layers = &model.attn_layers.layers;
    let BlockPart::Attention(attn) = &layers[0][1] else {
        panic!("layer 0 is attention")
    };
    // burn's [in, out] is the transpose of PyTorch's weight (and its gradient).
    check(
        "attn_layers.layers.0.1.to_q.weight",
        values(grad2(&attn.to_q.weight).transpose()),
    );
    let BlockPart::FeedForward(ff) = &layers[1][1] else {
        panic!("layer 1 is feed-forward")
    };
    let FfLayer::ProjectIn(project_in) = &ff.net[0] else {
        panic!("net.0 is the input projection")
    };
    let ProjectIn::Linear(lin) = &project_in[0] else {
        panic!("net.0.0 is linear")
    };
    check(
        "attn_layers.layers.1.1.net.0.0.weight",
        values(grad2(&lin.weight).transpose()),
    );
    check(
        "norm.weight",
        values(model.norm.weight.grad(&grads).unwrap()),
    );
}

#[test]
fn text_transformer_paths_are_the_reference_keys() {
    let dev = Default::default();
    let model = TextTransformer::<B>::new(&tt_config(), &dev);
    let ours: BTreeMap<String, Vec<usize>> = model
        .collect(None, None, true)
        .iter()
        .map(|s| (s.full_path(), s.shape.to_vec()))
        .collect();
    let mut reference = reference_shapes();
    reference.retain(|k, _| !k.starts_with("to_logits."));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>()
    );
    for (key, shape) in &ours {
        let mut want = reference[key].clone();
        if want.len() == 2 && !key.contains("emb") {
            want.reverse();
        }
        assert_eq!(shape, &want, "{key}");
    }
}

fn serialize(tensors: &[(String, Vec<usize>, &[u8])]) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, &None).unwrap()
}

#[test]
fn text_transformer_load_errors_name_the_key() {
    let dev = Default::default();
    let cfg = tt_config();
    let st = fixture();
    let gone = "text_transformer.attn_layers.layers.3.1.net.2.bias";
    let kept: Vec<(String, Vec<usize>, &[u8])> = st
        .iter()
        .filter(|(k, v)| k.starts_with(TT_PREFIX) && *k != gone && v.dtype() == Dtype::F32)
        .map(|(k, v)| (k.to_string(), v.shape().to_vec(), v.data()))
        .collect();
    let bytes = serialize(&kept);
    let w = TorchWeights::parse(&bytes, "partial.safetensors").unwrap();
    let err = TextTransformer::<B>::from_reference(&cfg, &w, TT_PREFIX, &dev).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("partial.safetensors: missing key `{gone}`")
    );

    let w = TorchWeights::parse(FIXTURE, "fixture.safetensors").unwrap();
    let wide = TextTransformerConfig {
        heads: 4,
        ..cfg.clone()
    };
    let err = TextTransformer::<B>::from_reference(&wide, &w, TT_PREFIX, &dev).unwrap_err();
    assert_eq!(
        err.to_string(),
        "fixture.safetensors: key `text_transformer.attn_layers.layers.0.1.to_q.weight` is F32 \
         [32, 32], expected F32 [64, 32]"
    );
}

/// Sums parameter sizes without materializing them: the reference-size
/// encoder (543 M parameters) stays lazily initialized.
struct LazyCount(usize);

impl<Bk: Backend> ModuleVisitor<Bk> for LazyCount {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
        self.0 += param.lazy_shape().num_elements();
    }
}

#[test]
fn reference_size_parameter_count() {
    let dev = Default::default();
    let cfg = TextTransformerConfig::reference_txt2img();
    let model = TextTransformer::<B>::new(&cfg, &dev);
    let mut count = LazyCount(0);
    model.visit(&mut count);
    let (v, n, d, depth, inner) = (30522, 77, 1280, 32, 8 * 64);
    let attention = 3 * d * inner + inner * d + d;
    let feed_forward = d * 4 * d + 4 * d + 4 * d * d + d;
    let norms = 2 * (2 * d);
    let expected = v * d + n * d + depth * (attention + feed_forward + norms) + 2 * d;
    assert_eq!(expected, 542_895_360);
    assert_eq!(count.0, expected);
    let ids = Tensor::<B, 2, Int>::zeros([1, 3], &dev);
    let small = TextTransformer::<B>::new(&tt_config(), &dev);
    assert_eq!(small.forward(ids).dims(), [1, 3, 32]);
}
