//! Parity of our UNet with diffusers' `UNet2DConditionModel` (0.42.1): each
//! fixture of section (h) of `scripts/make_parity_fixtures.py` is loaded
//! through the config derivation (`interop::import_config`) and the rename
//! table (`interop::unet_key_map`), run forward and backward on
//! `Autodiff<Flex>`, and compared with the stored reference. See
//! `crates/ldm-train/tests/fixtures/parity/README.md`.
//!
//! Tolerance, per compared tensor: max |ours − reference| ≤ 1e-4 ·
//! max |reference|, the rule of the other parity tests
//! (the rest of this test binary). The references are float64 results
//! rounded to f32 and we run in f32: diffusers' own float32 evaluation of the
//! same nets is off by at most 1.6e-6 of max |reference| (each fixture's
//! `float32_drift` metadata), so 1e-4 leaves a wide margin for another
//! summation order, while a weight in the wrong slot or layout moves results
//! by O(10%). Run with `--nocapture` for the table.

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::{Int, Tensor, TensorData};
use ldm_models::tensor_bytes::f32_values;
use ldm_models::UNet;
use ldm_train::interop::import_config::{unet_config_from_diffusers, DiffusersUnet};
use ldm_train::interop::key_map::Direction;
use ldm_train::interop::unet_key_map::{UnetKeyMap, UnetNaming};
use ldm_train::shared::weights;
use serde_json::Value;

use crate::{fixtures, grads_by_path, vals, Fixture, Table, AD};

/// A fixture's `config.json` and its weights (diffusers names, f32).
#[derive(Clone)]
struct Source {
    config: Value,
    tensors: Vec<(String, TensorData)>,
    file: String,
}

impl Source {
    fn read(dir: &Path) -> Self {
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let path = dir.join("diffusion_pytorch_model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let file = path.display().to_string();
        let st = weights::parse(&bytes, &file).unwrap();
        let mut tensors: Vec<(String, TensorData)> = st
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, TensorData::new(f32_values(v.data()), v.shape().to_vec())))
            .collect();
        // Sorted, so errors list keys in a stable order.
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            config: serde_json::from_str(&config).unwrap(),
            tensors,
            file,
        }
    }

    /// The architecture, the rename table and the loaded UNet.
    fn load(&self) -> Result<(DiffusersUnet, UnetKeyMap, UNet<AD>)> {
        let d = unet_config_from_diffusers(&self.config, "config.json")?;
        let map = UnetKeyMap::new(&d.unet, d.linear_projection).map_err(anyhow::Error::msg)?;
        let fresh = UNet::new(&d.unet, &Default::default());
        let unet = map.load(
            fresh,
            self.tensors.clone(),
            UnetNaming::Diffusers,
            &self.file,
        )?;
        Ok((d, map, unet))
    }

    /// The same weights under a config with `key` set to `value`.
    fn with(&self, key: &str, value: Value) -> Self {
        let mut changed = self.clone();
        changed.config[key] = value;
        changed
    }
}

/// [`Table::check`] of one UNet fixture, refusing an all-zero reference
/// (it could not fail).
fn check(table: &mut Table, name: &str, what: &str, got: &[f32], want: &[f32]) {
    assert!(
        want.iter().any(|v| *v != 0.0),
        "{what}: an all-zero reference cannot fail"
    );
    table.check(name, what, got, want);
}

/// Forward and backward of one fixture pair against its reference.
fn check_parity(name: &str) -> DiffusersUnet {
    let src = Source::read(&fixtures().join(format!("diffusers_unet_{name}")));
    let (d, map, unet) = src.load().unwrap();
    let io = Fixture::open(&format!("unet_{name}_io.safetensors"));
    let dev = Default::default();
    let x = Tensor::<AD, 4>::from_data(io.data("input.sample"), &dev).require_grad();
    let ctx = Tensor::<AD, 3>::from_data(io.data("input.context"), &dev).require_grad();
    let t: Vec<f64> = io
        .values("input.timesteps")
        .iter()
        .map(|&v| v as f64)
        .collect();
    let y = io
        .keys()
        .iter()
        .any(|k| k == "input.class_labels")
        .then(|| {
            let labels: Vec<i64> = io
                .values("input.class_labels")
                .iter()
                .map(|&v| v as i64)
                .collect();
            let n = labels.len();
            Tensor::<AD, 1, Int>::from_data(TensorData::new(labels, [n]), &dev)
        });
    let out = unet.forward(x.clone(), &t, Some(ctx.clone()), y);
    let mut table = Table::new("UNet2DConditionModel");
    check(
        &mut table,
        name,
        "output",
        &vals(out.clone()),
        &io.values("output.sample"),
    );
    let probe = Tensor::<AD, 4>::from_data(io.data("input.probe"), &dev);
    let grads = (out * probe).sum().backward();
    check(
        &mut table,
        name,
        "d/d sample",
        &vals(x.grad(&grads).unwrap()),
        &io.values("grad.sample"),
    );
    check(
        &mut table,
        name,
        "d/d context",
        &vals(ctx.grad(&grads).unwrap()),
        &io.values("grad.context"),
    );
    let by_path = grads_by_path::<AD, _>(&unet, &grads);
    let mut weight_grads = 0;
    for key in io.keys() {
        let Some(dkey) = key
            .strip_prefix("grad.")
            .filter(|k| !matches!(*k, "sample" | "context"))
        else {
            continue;
        };
        let m = map.rename(dkey, Direction::FromDiffusers).unwrap();
        let want = m.layout.to_ours(io.data(&key)).unwrap();
        let got = by_path
            .get(&m.key)
            .unwrap_or_else(|| panic!("no gradient for {}", m.key));
        check(
            &mut table,
            name,
            &format!("d/d {dkey}"),
            got,
            &want.to_vec::<f32>().unwrap(),
        );
        weight_grads += 1;
    }
    assert_eq!(weight_grads, 3, "{name}: the fixture's weight gradients");
    table.finish();
    d
}

#[test]
fn cross_attention_unet_matches_diffusers() {
    let d = check_parity("xattn");
    // Level 1 only has attention; 4 heads of 8; SD 1.x's conv projections.
    let u = &d.unet;
    assert_eq!(
        (
            &u.channel_mult,
            &u.attention_resolutions,
            u.num_heads,
            u.context_dim,
            u.transformer_depth
        ),
        (&vec![1, 1], &vec![2], Some(4), Some(24), 1)
    );
    assert!(!d.linear_projection && !u.use_scale_shift_norm && u.num_classes.is_none());
}

#[test]
fn class_unet_with_linear_projection_matches_diffusers() {
    let d = check_parity("class");
    // Middle attention only, depth 2, SD 2.x's Linear projections, labels, scale-shift.
    let u = &d.unet;
    assert_eq!(
        (
            u.in_channels,
            u.out_channels,
            &u.attention_resolutions,
            u.num_heads,
            u.transformer_depth,
            u.num_classes
        ),
        (5, 3, &vec![], Some(2), 2, Some(5))
    );
    assert!(d.linear_projection && u.use_scale_shift_norm);
}

/// The error of loading `src`: one line containing every `parts`.
fn assert_load_error(src: &Source, parts: &[&str]) {
    let err = match src.load() {
        Ok(_) => panic!("loaded; expected an error with {parts:?}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(!err.contains('\n'), "not one line: {err}");
    for p in parts {
        assert!(err.contains(p), "`{p}` not in: {err}");
    }
}

#[test]
fn shapes_that_disagree_with_the_config_are_named() {
    let src = Source::read(&fixtures().join("diffusers_unet_xattn"));
    // A context width the weights were not made for: every attn2 key/value projection.
    assert_load_error(
        &src.with("cross_attention_dim", 16.into()),
        &[
            "diffusion_pytorch_model.safetensors: does not fit the UNet its config describes",
            "`down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight` has shape [32, 24], \
             the config implies [32, 16]",
        ],
    );
    // Linear projections claimed for conv weights.
    assert_load_error(
        &src.with("use_linear_projection", true.into()),
        &["`up_blocks.0.attentions.0.proj_in.weight` has shape [32, 32, 1, 1], the config implies [32, 32]"],
    );
    // Attention moved to level 0: level 0's transformers are missing (and
    // level 1's unexpected, further down the list).
    let moved = src
        .with(
            "down_block_types",
            serde_json::json!(["CrossAttnDownBlock2D", "DownBlock2D"]),
        )
        .with(
            "up_block_types",
            serde_json::json!(["UpBlock2D", "CrossAttnUpBlock2D"]),
        );
    assert_load_error(&moved, &["missing `down_blocks.0.attentions.0.", "more)"]);
    // A tensor with the wrong shape in the file itself.
    let mut bad = src.clone();
    let conv_in = bad
        .tensors
        .iter_mut()
        .find(|(k, _)| k == "conv_in.weight")
        .unwrap();
    conv_in.1 = TensorData::new(vec![0f32; 32 * 3 * 9], [32, 3, 3, 3]);
    assert_load_error(
        &bad,
        &["`conv_in.weight` has shape [32, 3, 3, 3], the config implies [32, 4, 3, 3]"],
    );
}

#[test]
fn settings_we_lack_are_one_line_errors_naming_the_key() {
    let src = Source::read(&fixtures().join("diffusers_unet_xattn"));
    let cases: [(&str, Value, &str); 7] = [
        (
            "resnet_time_scale_shift",
            "spatial".into(),
            "`resnet_time_scale_shift` = \"spatial\"",
        ),
        (
            "norm_num_groups",
            12.into(),
            "width 32 does not split into norm_groups = 12 groups",
        ),
        (
            "flip_sin_to_cos",
            false.into(),
            "`flip_sin_to_cos` = false is not supported",
        ),
        (
            "class_embed_type",
            "timestep".into(),
            "`class_embed_type` = \"timestep\" is not supported",
        ),
        (
            "mid_block_type",
            Value::Null,
            "`mid_block_type` = null is not supported",
        ),
        (
            "layers_per_block",
            serde_json::json!([1, 2]),
            "`layers_per_block` = [1, 2] differs between levels",
        ),
        (
            "attention_head_dim",
            serde_json::json!([4, 3]),
            "`attention_head_dim` = [4, 3] (heads per level)",
        ),
    ];
    for (key, value, part) in cases {
        assert_load_error(&src.with(key, value), &["config.json: ", part]);
    }
    // Settings that change nothing in f32 are accepted.
    src.with("upcast_attention", true.into())
        .load()
        .context("upcast_attention")
        .unwrap();
}
