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
//! - CLIP text encoder (`--only clip`: a random-weight transformers
//!   `CLIPTextModel`, hidden 32, 2 layers, 4 heads, vocab 1000) on real SD
//!   tokenizer ids moved into its vocabulary: last_hidden_state and pooled
//!   output 1e-5 absolute (PyTorch f32: 1.0e-6; values up to 4.1);
//!   gradients 1e-5 of each gradient's largest entry (PyTorch f32: ≤ 5.4e-7
//!   of it).

mod common;
use common::read;
use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use burn_store::ModuleSnapshot;
use ldm_models::conditioner::clip_text::LEGACY_EOS_TOKEN_ID;
use ldm_models::conditioner::text_transformer::{BlockPart, FfLayer, ProjectIn};
use ldm_models::conditioner::{
    mean_pooled_normalized, BertConfig, BertModel, ClipTextConfig, ClipTextModel, TextTransformer,
    TextTransformerConfig,
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

/// The fixed `<prefix>.probe` tensor the reference's loss sum(output · probe)
/// was taken with.
fn probe_of(st: &SafeTensors, prefix: &str) -> Tensor<AD, 3> {
    let (probe, ps) = read(st, &format!("{prefix}.probe"));
    Tensor::from_data(
        TensorData::new(probe, [ps[0], ps[1], ps[2]]),
        &Default::default(),
    )
}

/// Compares a weight's gradient with `<prefix>.grad.<key>`: max abs error
/// within 1e-5 of max |g| (PyTorch's own f32 drift is ~1e-6 of it).
fn check_grad(st: &SafeTensors, prefix: &str, key: &str, got: &[f32]) {
    let (want, _) = read(st, &format!("{prefix}.grad.{key}"));
    let scale = max_abs(&want);
    let err = max_abs_diff(got, &want);
    println!(
        "grad {key}: max abs error {err:.2e}, relative to max |g| {:.2e}",
        err / scale
    );
    assert!(
        err <= 1e-5 * scale,
        "grad {key}: max abs error {err} (max |g| {scale})"
    );
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

    let grads = (y * probe_of(&st, "tt")).sum().backward();
    let check = |key: &str, got: Vec<f32>| check_grad(&st, "tt", key, &got);
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

/// A safetensors file of `(key, dtype, shape, payload)` entries.
fn serialize(tensors: &[(String, Dtype, Vec<usize>, &[u8])]) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, d, s, b)| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, &None).unwrap()
}

#[test]
fn text_transformer_load_errors_name_the_key() {
    let dev = Default::default();
    let cfg = tt_config();
    let st = fixture();
    let gone = "text_transformer.attn_layers.layers.3.1.net.2.bias";
    let kept: Vec<(String, Dtype, Vec<usize>, &[u8])> = st
        .iter()
        .filter(|(k, v)| k.starts_with(TT_PREFIX) && *k != gone && v.dtype() == Dtype::F32)
        .map(|(k, v)| (k.to_string(), v.dtype(), v.shape().to_vec(), v.data()))
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

// ------------------------------------------------------------------ CLIP ----

const CLIP_REF: &[u8] = include_bytes!("fixtures/clip_text_ref.safetensors");
const CLIP_WEIGHTS: &[u8] = include_bytes!("fixtures/clip_text/model.safetensors");
/// Abs. tolerance of hidden states and pooled outputs (PyTorch f32: 1.0e-6).
const CLIP_TOL: f32 = 1e-5;

fn clip_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip_text")
}

fn clip_ref() -> SafeTensors<'static> {
    SafeTensors::deserialize(CLIP_REF).unwrap()
}

fn clip_config() -> ClipTextConfig {
    ClipTextConfig::from_json(&clip_dir().join("config.json")).unwrap()
}

/// Fixture ids `key` as a tensor.
fn clip_ids<Bk: Backend>(key: &str, dev: &Bk::Device) -> Tensor<Bk, 2, Int> {
    let (v, s) = read_i64(&clip_ref(), key);
    ids::<Bk>(v, [s[0], s[1]], dev)
}

/// Asserts `got` is within `CLIP_TOL` of fixture tensor `key`.
fn check_clip(key: &str, got: Vec<f32>) {
    let (want, _) = read(&clip_ref(), key);
    let err = max_abs_diff(&got, &want);
    println!(
        "{key}: max abs error {err:.2e}, relative to max |value| {:.2e}",
        err / max_abs(&want)
    );
    assert!(err <= CLIP_TOL, "{key}: max abs error {err}");
}

#[test]
fn clip_matches_transformers() {
    let dev = Default::default();
    let mut clip = ClipTextModel::<B>::load(&clip_dir(), &dev).unwrap();
    assert_eq!(clip.hidden_size(), 32);
    for (prefix, ids_key) in [
        ("clip.", "clip.input_ids"),
        ("clip.short_", "clip.short_ids"),
    ] {
        let ids = clip_ids::<B>(ids_key, &dev);
        let h = clip.forward(ids.clone());
        check_clip(&format!("{prefix}last_hidden_state"), values(h.clone()));
        check_clip(
            &format!("{prefix}pooler_output"),
            values(clip.pooled(h, ids)),
        );
    }
    // The legacy rule (SD 1.x's config says eos 2) pools at the largest id:
    // the first end token of tokenizer output, row 1's top id in the short
    // batch, which has no end token.
    clip.eos_token_id = LEGACY_EOS_TOKEN_ID;
    let ids = clip_ids::<B>("clip.input_ids", &dev);
    let h = clip.forward(ids.clone());
    check_clip("clip.pooler_output", values(clip.pooled(h, ids)));
    let ids = clip_ids::<B>("clip.short_ids", &dev);
    let h = clip.forward(ids.clone());
    check_clip(
        "clip.short_pooler_output_legacy",
        values(clip.pooled(h, ids)),
    );
}

/// Turns gradients back on for every parameter of a frozen model.
struct Unfreeze;

impl<Bk: Backend> ModuleMapper<Bk> for Unfreeze {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<Bk, D>>) -> Param<Tensor<Bk, D>> {
        param.set_require_grad(true)
    }
}

#[test]
fn clip_gradients_match_transformers() {
    let dev = Default::default();
    let clip = ClipTextModel::<AD>::load(&clip_dir(), &dev)
        .unwrap()
        .map(&mut Unfreeze);
    let st = clip_ref();
    let y = clip.forward(clip_ids::<AD>("clip.input_ids", &dev));
    let grads = (y * probe_of(&st, "clip")).sum().backward();
    let check = |key: &str, got: Vec<f32>| check_grad(&st, "clip", key, &got);
    let grad2 = |p: &Param<Tensor<AD, 2>>| p.grad(&grads).unwrap();
    let layers = &clip.encoder.layers;
    check(
        "embeddings.position_embedding.weight",
        values(grad2(&clip.embeddings.position_embedding.weight)),
    );
    // burn's [in, out] is the transpose of PyTorch's weight (and its gradient).
    check(
        "encoder.layers.0.self_attn.q_proj.weight",
        values(grad2(&layers[0].self_attn.q_proj.weight).transpose()),
    );
    check(
        "encoder.layers.1.mlp.fc1.weight",
        values(grad2(&layers[1].mlp.fc1.weight).transpose()),
    );
    check(
        "final_layer_norm.weight",
        values(clip.final_layer_norm.weight.grad(&grads).unwrap()),
    );
}

#[test]
fn clip_is_causal() {
    let dev = Default::default();
    let clip = ClipTextModel::<B>::load(&clip_dir(), &dev).unwrap();
    let (mut id, s) = read_i64(&clip_ref(), "clip.input_ids");
    let [b, t] = [s[0], s[1]];
    let base = values(clip.forward(ids::<B>(id.clone(), [b, t], &dev)));
    // Another word at position 4 of every prompt.
    let at = 4;
    for row in 0..b {
        id[row * t + at] = (id[row * t + at] + 1) % 998;
    }
    let moved = values(clip.forward(ids::<B>(id, [b, t], &dev)));
    let d = clip.hidden_size();
    let (mut before, mut after) = (0.0f32, f32::INFINITY);
    for (pos, (x, y)) in base.chunks(d).zip(moved.chunks(d)).enumerate() {
        let change = max_abs_diff(x, y);
        if pos % t < at {
            before = before.max(change);
        } else {
            after = after.min(change);
        }
    }
    println!("earlier positions moved by {before:.1e}; every later one by ≥ {after:.1e}");
    // Later keys get exactly zero weight, so this is 0 on Flex; the bound
    // only leaves room for a backend that sums in another order.
    assert!(before <= 1e-6, "an earlier position moved by {before}");
    // Every position from the change on does move: the test is not vacuous.
    assert!(after > 1e-3, "a later position moved only by {after}");
}

/// The fixture weights' entries, optionally renamed.
fn clip_entries(
    rename: impl Fn(&str) -> String,
) -> Vec<(String, Dtype, Vec<usize>, &'static [u8])> {
    SafeTensors::deserialize(CLIP_WEIGHTS)
        .unwrap()
        .tensors()
        .into_iter()
        .map(|(k, v)| (rename(&k), v.dtype(), v.shape().to_vec(), v.data()))
        .collect()
}

#[test]
fn clip_loads_files_with_the_text_model_prefix() {
    let dev = Default::default();
    // A transformers 4.x / CLIPModel file: prefixed keys, the position_ids
    // buffer, and the other tower's keys.
    let position_ids: Vec<u8> = (0..77i64).flat_map(|i| i.to_le_bytes()).collect();
    let other = [0u8; 4];
    let mut entries: Vec<(String, Dtype, Vec<usize>, &[u8])> =
        clip_entries(|k| format!("text_model.{k}"));
    entries.push((
        "text_model.embeddings.position_ids".into(),
        Dtype::I64,
        vec![1, 77],
        &position_ids,
    ));
    entries.push((
        "vision_model.post_layernorm.bias".into(),
        Dtype::F32,
        vec![1],
        &other,
    ));
    entries.push(("logit_scale".into(), Dtype::F32, vec![], &other));
    let bytes = serialize(&entries);
    let w = TorchWeights::parse(&bytes, "clip-4x.safetensors").unwrap();
    let prefixed = ClipTextModel::<B>::from_weights(&clip_config(), &w, &dev).unwrap();
    let bare = ClipTextModel::<B>::load(&clip_dir(), &dev).unwrap();
    let ids = clip_ids::<B>("clip.input_ids", &dev);
    assert_eq!(
        values(prefixed.forward(ids.clone())),
        values(bare.forward(ids))
    );
}

#[test]
fn clip_paths_are_transformers_keys() {
    let dev = Default::default();
    let clip = ClipTextModel::<B>::load(&clip_dir(), &dev).unwrap();
    let ours: BTreeMap<String, Vec<usize>> = clip
        .collect(None, None, true)
        .iter()
        .map(|s| (s.full_path(), s.shape.to_vec()))
        .collect();
    let theirs: BTreeMap<String, Vec<usize>> = clip_entries(str::to_string)
        .into_iter()
        .map(|(k, _, mut shape, _)| {
            if shape.len() == 2 && !k.starts_with("embeddings.") {
                shape.reverse();
            }
            (k, shape)
        })
        .collect();
    assert_eq!(ours, theirs);
}

#[test]
fn clip_load_errors_name_every_key() {
    let dev = Default::default();
    let cfg = clip_config();
    let load = |entries: &[(String, Dtype, Vec<usize>, &[u8])]| {
        let bytes = serialize(entries);
        let w = TorchWeights::parse(&bytes, "clip.safetensors").unwrap();
        ClipTextModel::<B>::from_weights(&cfg, &w, &dev)
            .unwrap_err()
            .to_string()
    };
    let gone = "encoder.layers.1.mlp.fc2.bias";
    let mut entries = clip_entries(str::to_string);
    entries.retain(|e| e.0 != gone);
    assert_eq!(
        load(&entries),
        format!("clip.safetensors: missing key `{gone}`")
    );

    // Three problems at once, all named on one line.
    let bent = "encoder.layers.0.self_attn.k_proj.weight";
    let k = entries.iter().position(|e| e.0 == bent).unwrap();
    entries[k].2 = vec![32 * 32];
    let (_, dtype, shape, data) = entries
        .iter()
        .find(|e| e.0 == "encoder.layers.0.mlp.fc1.weight")
        .unwrap()
        .clone();
    entries.push(("encoder.layers.2.mlp.fc1.weight".into(), dtype, shape, data));
    assert_eq!(
        load(&entries),
        format!(
            "clip.safetensors: 3 problems: key `{bent}` is F32 [1024], expected F32 [32, 32]; \
             missing key `{gone}`; unexpected key `encoder.layers.2.mlp.fc1.weight`"
        )
    );

    let err = ClipTextModel::<B>::load(&clip_dir().join("no-such-dir"), &dev).unwrap_err();
    assert!(err.to_string().contains("no-such-dir/config.json"), "{err}");
}

#[test]
fn clip_unsupported_activation_is_named() {
    let dev = Default::default();
    let dir = std::env::temp_dir().join(format!("ldm-clip-act-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = std::fs::read_to_string(clip_dir().join("config.json")).unwrap();
    assert!(config.contains(r#""hidden_act": "quick_gelu""#));
    let config = config.replace(r#""hidden_act": "quick_gelu""#, r#""hidden_act": "relu""#);
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("model.safetensors"), CLIP_WEIGHTS).unwrap();
    let err = ClipTextModel::<B>::load(&dir, &dev)
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        err,
        format!(
            "{}: key `hidden_act`: unknown variant `relu`, expected `quick_gelu` or `gelu`",
            dir.join("config.json").display()
        )
    );
}
