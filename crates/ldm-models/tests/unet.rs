//! The diffusion UNet: shapes through every conditioning branch, the
//! zero-initialized output, the reference parameter paths, and gradients
//! reaching the input, the context and the label table.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use burn_store::ModuleSnapshot;
use ldm_models::conditioner::ClassEmbedder;
use ldm_models::{UNet, UNetConfig};

type B = Flex;

fn tiny(spatial: bool) -> UNetConfig {
    UNetConfig {
        image_size: Some(8),
        in_channels: 4,
        out_channels: 4,
        model_channels: 32,
        num_res_blocks: 1,
        attention_resolutions: vec![2],
        dropout: 0.0,
        channel_mult: vec![1, 2],
        num_heads: None,
        num_head_channels: Some(16),
        use_spatial_transformer: spatial,
        transformer_depth: 1,
        context_dim: spatial.then_some(24),
        use_scale_shift_norm: false,
        num_classes: None,
        norm_groups: 32,
    }
}

/// Replaces every float parameter with N(0, 0.1) values.
struct Randomize;

impl<Bk: Backend> ModuleMapper<Bk> for Randomize {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<Bk, D>>) -> Param<Tensor<Bk, D>> {
        let (id, tensor, mapper) = param.consume();
        let fresh = tensor
            .random_like(Distribution::Normal(0.0, 0.1))
            .detach()
            .require_grad();
        Param::from_mapped_value(id, fresh, mapper)
    }
}

fn paths<M: ModuleSnapshot<B>>(m: &M) -> Vec<String> {
    let mut p: Vec<String> = m
        .collect(None, None, true)
        .iter()
        .map(|s| s.full_path())
        .collect();
    p.sort();
    p
}

#[test]
fn fresh_unet_outputs_zero_and_keeps_the_shape() {
    let dev = Default::default();
    let cfg = tiny(true);
    cfg.validate().unwrap();
    let unet = UNet::<B>::new(&cfg, &dev);
    let x = Tensor::<B, 4>::random([2, 4, 8, 12], Distribution::Normal(0.0, 1.0), &dev);
    let ctx = Tensor::<B, 3>::random([2, 3, 24], Distribution::Normal(0.0, 1.0), &dev);
    let y = unet.forward(x, &[1.0, 999.0], Some(ctx), None);
    assert_eq!(y.dims(), [2, 4, 8, 12]);
    // `out.2` is zero-initialized, as in the reference: a fresh model predicts 0.
    let m: f32 = y.abs().max().into_scalar();
    assert_eq!(m, 0.0);
    assert!(unet.check_size(8, 12).is_ok() && unet.check_size(7, 8).is_err());
}

#[test]
fn parameter_paths_are_the_reference_keys() {
    let dev = Default::default();
    let mut cfg = tiny(true);
    cfg.num_classes = Some(5);
    let p = paths(&UNet::<B>::new(&cfg, &dev));
    // Level 0: input_blocks 1 (Res), 2 (Downsample); level 1: 3 (Res + ST).
    for key in [
        "time_embed.0.weight",
        "time_embed.2.bias",
        "label_emb.weight",
        "input_blocks.0.0.weight",
        "input_blocks.1.0.in_layers.0.weight",
        "input_blocks.1.0.in_layers.2.weight",
        "input_blocks.1.0.emb_layers.1.weight",
        "input_blocks.1.0.out_layers.0.bias",
        "input_blocks.1.0.out_layers.3.weight",
        "input_blocks.2.0.op.weight",
        "input_blocks.3.0.skip_connection.weight",
        "input_blocks.3.1.norm.weight",
        "input_blocks.3.1.proj_in.weight",
        "input_blocks.3.1.transformer_blocks.0.attn1.to_q.weight",
        "input_blocks.3.1.transformer_blocks.0.attn1.to_out.0.bias",
        "input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight",
        "input_blocks.3.1.transformer_blocks.0.ff.net.0.proj.weight",
        "input_blocks.3.1.transformer_blocks.0.ff.net.2.weight",
        "input_blocks.3.1.transformer_blocks.0.norm3.gamma",
        "input_blocks.3.1.proj_out.weight",
        "middle_block.0.in_layers.0.weight",
        "middle_block.1.proj_out.bias",
        "middle_block.2.out_layers.3.bias",
        "output_blocks.0.1.proj_in.weight",
        "output_blocks.1.2.conv.weight",
        "output_blocks.3.0.skip_connection.weight",
        "out.0.weight",
        "out.2.weight",
    ] {
        assert!(p.iter().any(|k| k == key), "missing {key}; have {p:?}");
    }
    // Level 1 has no Downsample, level 0 no Upsample; bias-free q/k/v.
    assert!(!p.iter().any(|k| k.starts_with("input_blocks.4")));
    assert!(!p.iter().any(|k| k.starts_with("output_blocks.4")));
    assert!(!p
        .iter()
        .any(|k| k.contains("to_q.bias") || k.contains("to_k.bias")));
    assert!(!p.iter().any(|k| k.starts_with("output_blocks.3.2")));
}

#[test]
fn plain_attention_and_scale_shift_branches() {
    let dev = Default::default();
    let mut cfg = tiny(false);
    cfg.use_scale_shift_norm = true;
    cfg.num_head_channels = None;
    cfg.num_heads = Some(4);
    cfg.validate().unwrap();
    let unet = UNet::<B>::new(&cfg, &dev);
    let p = paths(&unet);
    assert!(p.iter().any(|k| k == "input_blocks.3.1.qkv.weight"));
    assert!(p.iter().any(|k| k == "middle_block.1.proj_out.weight"));
    let x = Tensor::<B, 4>::random([1, 4, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
    assert_eq!(unet.forward(x, &[10.0], None, None).dims(), [1, 4, 4, 4]);
}

#[test]
fn gradients_reach_input_context_and_labels() {
    type A = Autodiff<Flex>;
    let dev = Default::default();
    let mut cfg = tiny(true);
    cfg.num_classes = Some(3);
    // Zero-initialized output convs (ResBlocks, transformers, `out`) block
    // every upstream gradient of a fresh model; randomize all weights so the
    // whole path is exercised.
    let unet = UNet::<A>::new(&cfg, &dev).map(&mut Randomize);
    let embedder = ClassEmbedder::<A>::new(3, 24, &dev);
    let x =
        Tensor::<A, 4>::random([2, 4, 8, 8], Distribution::Normal(0.0, 1.0), &dev).require_grad();
    let labels = Tensor::<A, 1, Int>::from_ints([0, 3], &dev);
    let ctx = embedder.forward(labels.clone());
    let y = unet.forward(
        x.clone(),
        &[5.0, 500.0],
        Some(ctx),
        Some(labels.clone().clamp_max(2)),
    );
    let grads = y.powi_scalar(2).sum().backward();
    let gx: f32 = x.grad(&grads).unwrap().abs().sum().into_scalar();
    let ge: f32 = embedder
        .embedding
        .weight
        .grad(&grads)
        .unwrap()
        .abs()
        .sum()
        .into_scalar();
    let gl: f32 = unet
        .label_emb
        .as_ref()
        .unwrap()
        .weight
        .grad(&grads)
        .unwrap()
        .abs()
        .sum()
        .into_scalar();
    assert!(gx > 0.0 && ge > 0.0 && gl > 0.0, "{gx} {ge} {gl}");
}

#[test]
fn norm_groups_must_split_every_width_model_channels_included() {
    // 96 and 192 split into 32 groups; the first ResBlock's 48 does not.
    let cfg = UNetConfig {
        model_channels: 48,
        channel_mult: vec![2, 4],
        num_heads: Some(4),
        num_head_channels: None,
        ..tiny(true)
    };
    let err = cfg.validate().unwrap_err();
    assert!(
        err.contains("width 48 does not split into norm_groups = 32"),
        "{err}"
    );
    let ok = UNetConfig {
        norm_groups: 16,
        ..cfg
    };
    ok.validate().unwrap();
}
