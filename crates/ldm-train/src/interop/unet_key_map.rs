//! The rename table between our UNet's keys and diffusers'
//! `UNet2DConditionModel`.
//!
//! Our UNet keeps the CompVis/LDM openaimodel layout (what a diffusion
//! checkpoint stores under `model.diffusion_model.`): numbered
//! `input_blocks.N.M`, `middle_block.M` and `output_blocks.N.M`, whose numbers
//! depend on the architecture. diffusers names the same layers by level
//! (`down_blocks.i.resnets.j`, `up_blocks.r.attentions.j`, …), so the table has
//! two halves: where each *block* goes, derived from a [`UNetConfig`] the way
//! [`ldm_models::UNet::new`] lays the blocks out ([`UnetKeyMap::new`]), and
//! how the *parameters inside* a block are named ([`RES`], [`TRANSFORMER`],
//! [`LINEAR`], [`PLAIN`]).
//!
//! Our keys are burn's parameter paths, which differ from PyTorch's in two
//! ways the table records as a [`Layout`]: burn `Linear` weights are `[in,
//! out]` (PyTorch: `[out, in]`), and burn's `LayerNorm` calls its parameters
//! `gamma`/`beta` (PyTorch: `weight`/`bias`). With `use_linear_projection`
//! diffusers' `proj_in`/`proj_out` are `Linear` where ours are 1×1 convs, as
//! the autoencoder's attention projections in [`crate::interop::key_map`].

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::TensorData;
use ldm_models::{UNet, UNetConfig};

use crate::interop::key_map::Direction;
use crate::shared::weights::{self, NamedTensor};

/// How one tensor's layout differs between our UNet and diffusers'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Same shape, same order.
    Same,
    /// A `Linear` weight: ours `[in, out]`, diffusers' `[out, in]`.
    Transposed,
    /// Our 1×1 conv `[out, in, 1, 1]` is a diffusers `Linear` `[out, in]`
    /// (`proj_in`/`proj_out` with `use_linear_projection`).
    ConvAsLinear,
}

impl Layout {
    /// The shape diffusers stores for a tensor that is `ours`-shaped here.
    pub fn diffusers_shape(self, ours: &[usize]) -> Vec<usize> {
        match (self, ours) {
            (Layout::Transposed, [i, o]) => vec![*o, *i],
            (Layout::ConvAsLinear, [o, i, 1, 1]) => vec![*o, *i],
            _ => ours.to_vec(),
        }
    }

    /// A diffusers f32 tensor in our layout.
    pub fn to_ours(self, data: TensorData) -> Result<TensorData, String> {
        match self {
            Layout::Same => Ok(data),
            Layout::Transposed => transpose(data),
            Layout::ConvAsLinear => match data.shape.to_vec()[..] {
                [o, i] => Ok(TensorData::new(f32s(&data)?, [o, i, 1, 1])),
                ref s => Err(format!("shape {s:?} is not a Linear weight [out, in]")),
            },
        }
    }

    /// One of our f32 tensors in diffusers' layout.
    pub fn to_diffusers(self, data: TensorData) -> Result<TensorData, String> {
        match self {
            Layout::Same => Ok(data),
            Layout::Transposed => transpose(data),
            Layout::ConvAsLinear => match data.shape.to_vec()[..] {
                [o, i, 1, 1] => Ok(TensorData::new(f32s(&data)?, [o, i])),
                ref s => Err(format!("shape {s:?} is not a 1×1 conv weight")),
            },
        }
    }
}

fn f32s(data: &TensorData) -> Result<Vec<f32>, String> {
    data.to_vec::<f32>()
        .map_err(|e| format!("not an f32 tensor ({e:?})"))
}

/// `[r, c]` → `[c, r]`.
fn transpose(data: TensorData) -> Result<TensorData, String> {
    let [r, c] = data.shape.to_vec()[..] else {
        return Err(format!(
            "shape {:?} is not a 2-D Linear weight",
            data.shape.to_vec()
        ));
    };
    let v = f32s(&data)?;
    let t: Vec<f32> = (0..c)
        .flat_map(|j| v[j..].iter().step_by(c).take(r).copied())
        .collect();
    Ok(TensorData::new(t, [c, r]))
}

/// A parameter's layout as the static tables state it; `Projection` is
/// [`Layout::Same`] or [`Layout::ConvAsLinear`] by `use_linear_projection`.
#[derive(Clone, Copy, Debug)]
enum LeafLayout {
    Same,
    Transposed,
    Projection,
}

/// One parameter inside a block, ours ↔ diffusers (the rest of the key after
/// the block's prefix). Placeholders match one key segment and are copied to
/// the other side: `{p}` = `weight` | `bias`, `{t}` = a transformer block
/// index, `{attn}` = `attn1` | `attn2`, `{qkv}` = `to_q` | `to_k` | `to_v`,
/// `{norm}` = `norm1` | `norm2` | `norm3`.
#[derive(Clone, Copy, Debug)]
pub struct Leaf {
    ours: &'static str,
    diffusers: &'static str,
    layout: LeafLayout,
}

const fn leaf(ours: &'static str, diffusers: &'static str) -> Leaf {
    Leaf {
        ours,
        diffusers,
        layout: LeafLayout::Same,
    }
}

/// A `Linear` weight (transposed between burn and PyTorch).
const fn linear_weight(ours: &'static str, diffusers: &'static str) -> Leaf {
    Leaf {
        ours,
        diffusers,
        layout: LeafLayout::Transposed,
    }
}

/// openaimodel `ResBlock` ↔ diffusers `ResnetBlock2D`.
pub const RES: &[Leaf] = &[
    leaf("in_layers.0.{p}", "norm1.{p}"),
    leaf("in_layers.2.{p}", "conv1.{p}"),
    linear_weight("emb_layers.1.weight", "time_emb_proj.weight"),
    leaf("emb_layers.1.bias", "time_emb_proj.bias"),
    leaf("out_layers.0.{p}", "norm2.{p}"),
    leaf("out_layers.3.{p}", "conv2.{p}"),
    leaf("skip_connection.{p}", "conv_shortcut.{p}"),
];

/// ldm `SpatialTransformer` ↔ diffusers `Transformer2DModel`: the same names
/// inside, but burn's Linear and LayerNorm layouts.
pub const TRANSFORMER: &[Leaf] = &[
    leaf("norm.{p}", "norm.{p}"),
    Leaf {
        ours: "proj_in.weight",
        diffusers: "proj_in.weight",
        layout: LeafLayout::Projection,
    },
    leaf("proj_in.bias", "proj_in.bias"),
    Leaf {
        ours: "proj_out.weight",
        diffusers: "proj_out.weight",
        layout: LeafLayout::Projection,
    },
    leaf("proj_out.bias", "proj_out.bias"),
    linear_weight(
        "transformer_blocks.{t}.{attn}.{qkv}.weight",
        "transformer_blocks.{t}.{attn}.{qkv}.weight",
    ),
    linear_weight(
        "transformer_blocks.{t}.{attn}.to_out.0.weight",
        "transformer_blocks.{t}.{attn}.to_out.0.weight",
    ),
    leaf(
        "transformer_blocks.{t}.{attn}.to_out.0.bias",
        "transformer_blocks.{t}.{attn}.to_out.0.bias",
    ),
    leaf(
        "transformer_blocks.{t}.{norm}.gamma",
        "transformer_blocks.{t}.{norm}.weight",
    ),
    leaf(
        "transformer_blocks.{t}.{norm}.beta",
        "transformer_blocks.{t}.{norm}.bias",
    ),
    linear_weight(
        "transformer_blocks.{t}.ff.net.0.proj.weight",
        "transformer_blocks.{t}.ff.net.0.proj.weight",
    ),
    leaf(
        "transformer_blocks.{t}.ff.net.0.proj.bias",
        "transformer_blocks.{t}.ff.net.0.proj.bias",
    ),
    linear_weight(
        "transformer_blocks.{t}.ff.net.2.weight",
        "transformer_blocks.{t}.ff.net.2.weight",
    ),
    leaf(
        "transformer_blocks.{t}.ff.net.2.bias",
        "transformer_blocks.{t}.ff.net.2.bias",
    ),
];

/// A lone `Linear` (the time embedding's).
pub const LINEAR: &[Leaf] = &[linear_weight("weight", "weight"), leaf("bias", "bias")];

/// Convolutions, GroupNorms and the class table: same leaves, same layout.
pub const PLAIN: &[Leaf] = &[leaf("{p}", "{p}")];

/// Which leaf table a block uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Res,
    Transformer,
    Linear,
    Plain,
}

impl Kind {
    fn leaves(self) -> &'static [Leaf] {
        match self {
            Kind::Res => RES,
            Kind::Transformer => TRANSFORMER,
            Kind::Linear => LINEAR,
            Kind::Plain => PLAIN,
        }
    }
}

/// One block: our key prefix ↔ diffusers' (both end in '.').
#[derive(Clone, Debug)]
struct Block {
    ours: String,
    diffusers: String,
    kind: Kind,
}

/// A renamed key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The key in the target naming.
    pub key: String,
    /// How the tensor's layout changes.
    pub layout: Layout,
}

/// The rename table of one UNet architecture.
#[derive(Clone, Debug)]
pub struct UnetKeyMap {
    blocks: Vec<Block>,
    linear_projection: bool,
}

impl UnetKeyMap {
    /// The table for the UNet `cfg` builds; `linear_projection` = diffusers'
    /// `use_linear_projection`. Fails, naming the key, for a UNet with no
    /// `UNet2DConditionModel` counterpart.
    pub fn new(cfg: &UNetConfig, linear_projection: bool) -> Result<Self, String> {
        if !cfg.use_spatial_transformer {
            // Plain AttentionBlocks: UNet2DConditionModel's middle block has
            // either cross-attention or none (its UNetMidBlock2D drops
            // attention), and the fused head-interleaved `qkv` conv would
            // have to be split, not renamed.
            return Err(
                "use_spatial_transformer = false: a UNet with plain self-attention \
                 blocks has no diffusers UNet2DConditionModel counterpart"
                    .into(),
            );
        }
        let mut m = Self {
            blocks: Vec::new(),
            linear_projection,
        };
        m.push("time_embed.0.", "time_embedding.linear_1.", Kind::Linear);
        m.push("time_embed.2.", "time_embedding.linear_2.", Kind::Linear);
        if cfg.num_classes.is_some() {
            m.push("label_emb.", "class_embedding.", Kind::Plain);
        }
        m.push("input_blocks.0.0.", "conv_in.", Kind::Plain);
        m.push_down_levels(cfg);
        m.push("middle_block.0.", "mid_block.resnets.0.", Kind::Res);
        m.push(
            "middle_block.1.",
            "mid_block.attentions.0.",
            Kind::Transformer,
        );
        m.push("middle_block.2.", "mid_block.resnets.1.", Kind::Res);
        m.push_up_levels(cfg);
        m.push("out.0.", "conv_norm_out.", Kind::Plain);
        m.push("out.2.", "conv_out.", Kind::Plain);
        Ok(m)
    }

    fn push(&mut self, ours: impl Into<String>, diffusers: impl Into<String>, kind: Kind) {
        self.blocks.push(Block {
            ours: ours.into(),
            diffusers: diffusers.into(),
            kind,
        });
    }

    /// `input_blocks.1…` ↔ `down_blocks.*`: per level `num_res_blocks` blocks
    /// of a ResBlock (+ transformer), then, but for the last level, one
    /// block holding the Downsample.
    fn push_down_levels(&mut self, cfg: &UNetConfig) {
        let levels = cfg.channel_mult.len();
        let mut k = 1;
        for i in 0..levels {
            for j in 0..cfg.num_res_blocks {
                self.push(
                    format!("input_blocks.{k}.0."),
                    format!("down_blocks.{i}.resnets.{j}."),
                    Kind::Res,
                );
                if has_attention(cfg, i) {
                    self.push(
                        format!("input_blocks.{k}.1."),
                        format!("down_blocks.{i}.attentions.{j}."),
                        Kind::Transformer,
                    );
                }
                k += 1;
            }
            if i + 1 < levels {
                self.push(
                    format!("input_blocks.{k}.0.op."),
                    format!("down_blocks.{i}.downsamplers.0.conv."),
                    Kind::Plain,
                );
                k += 1;
            }
        }
    }

    /// `output_blocks.*` ↔ `up_blocks.*`: levels from the lowest resolution
    /// (diffusers' `up_blocks.0` is our last level), `num_res_blocks + 1`
    /// blocks each; the level's last block ends in the Upsample, except at
    /// level 0.
    fn push_up_levels(&mut self, cfg: &UNetConfig) {
        let levels = cfg.channel_mult.len();
        let mut k = 0;
        for (r, level) in (0..levels).rev().enumerate() {
            for j in 0..=cfg.num_res_blocks {
                self.push(
                    format!("output_blocks.{k}.0."),
                    format!("up_blocks.{r}.resnets.{j}."),
                    Kind::Res,
                );
                let mut m = 1;
                if has_attention(cfg, level) {
                    self.push(
                        format!("output_blocks.{k}.1."),
                        format!("up_blocks.{r}.attentions.{j}."),
                        Kind::Transformer,
                    );
                    m = 2;
                }
                if level > 0 && j == cfg.num_res_blocks {
                    self.push(
                        format!("output_blocks.{k}.{m}.conv."),
                        format!("up_blocks.{r}.upsamplers.0.conv."),
                        Kind::Plain,
                    );
                }
                k += 1;
            }
        }
    }

    /// Renames `key` (ours → diffusers or back); `None` when no block of
    /// this architecture holds such a parameter.
    pub fn rename(&self, key: &str, dir: Direction) -> Option<Mapped> {
        self.blocks.iter().find_map(|b| {
            let (from, to) = match dir {
                Direction::ToDiffusers => (&b.ours, &b.diffusers),
                Direction::FromDiffusers => (&b.diffusers, &b.ours),
            };
            let rest = key.strip_prefix(from.as_str())?;
            b.kind.leaves().iter().find_map(|l| {
                let (lf, lt) = match dir {
                    Direction::ToDiffusers => (l.ours, l.diffusers),
                    Direction::FromDiffusers => (l.diffusers, l.ours),
                };
                let caps = match_leaf(lf, rest)?;
                Some(Mapped {
                    key: format!("{to}{}", fill(lt, &caps)),
                    layout: self.layout(l.layout),
                })
            })
        })
    }

    fn layout(&self, l: LeafLayout) -> Layout {
        match l {
            LeafLayout::Same => Layout::Same,
            LeafLayout::Transposed => Layout::Transposed,
            LeafLayout::Projection if self.linear_projection => Layout::ConvAsLinear,
            LeafLayout::Projection => Layout::Same,
        }
    }

    /// How `naming` calls our parameter `ours`, and how its layout differs;
    /// `None` when this architecture has no such parameter.
    pub fn foreign_name(&self, ours: &str, naming: UnetNaming) -> Option<Mapped> {
        let m = self.rename(ours, Direction::ToDiffusers)?;
        Some(match naming {
            UnetNaming::Diffusers => m,
            // The CompVis modules are ours, in PyTorch: only LayerNorm's
            // parameter names and the Linear layouts differ.
            UnetNaming::CompVis => Mapped {
                key: match ours.rsplit_once('.') {
                    Some((head, "gamma")) => format!("{head}.weight"),
                    Some((head, "beta")) => format!("{head}.bias"),
                    _ => ours.to_string(),
                },
                layout: m.layout,
            },
        })
    }

    /// Loads f32 `tensors` named by `naming` into `model` (built from the
    /// same config as this table). Every tensor must name a parameter of the
    /// model with the matching shape and every parameter must be given;
    /// otherwise one error (from `file`) names each offending key as the
    /// file names it.
    pub fn load<B: Backend>(
        &self,
        model: UNet<B>,
        tensors: Vec<(String, TensorData)>,
        naming: UnetNaming,
        file: &str,
    ) -> Result<UNet<B>> {
        // Their name → (ours, layout, our shape), for every parameter.
        let mut table: BTreeMap<String, (String, Layout, Vec<usize>)> = BTreeMap::new();
        for t in weights::collect(&model, "")? {
            let m = self
                .foreign_name(&t.key, naming)
                .with_context(|| format!("`{}` has no name in the rename table", t.key))?;
            table.insert(m.key, (t.key, m.layout, t.shape));
        }
        // Misshaped and missing tensors say most about a mismatch: they lead.
        let (mut problems, mut unexpected) = (Vec::new(), Vec::new());
        let mut loaded = Vec::new();
        let mut seen = BTreeSet::new();
        for (key, data) in tensors {
            let Some((ours, layout, shape)) = table.get(&key) else {
                unexpected.push(format!("unexpected `{key}` (no place in this UNet)"));
                continue;
            };
            let want = layout.diffusers_shape(shape);
            if data.shape.to_vec() != want {
                problems.push(format!(
                    "`{key}` has shape {:?}, the config implies {want:?}",
                    data.shape.to_vec()
                ));
                continue;
            }
            let data = layout
                .to_ours(data)
                .map_err(|e| anyhow::anyhow!("{file}: `{key}`: {e}"))?;
            seen.insert(key.clone());
            loaded.push((ours.clone(), data));
        }
        for theirs in table.keys().filter(|k| !seen.contains(*k)) {
            problems.push(format!("missing `{theirs}`"));
        }
        problems.append(&mut unexpected);
        if !problems.is_empty() {
            bail!(
                "{file}: does not fit the UNet its config describes: {}",
                weights::list_some(&problems)
            );
        }
        weights::load_data(model, loaded, "", file)
    }

    /// Our UNet's tensors (`ours`, our names and layout) as `naming` stores
    /// them.
    pub fn to_foreign(
        &self,
        ours: Vec<NamedTensor>,
        naming: UnetNaming,
    ) -> Result<Vec<NamedTensor>> {
        ours.into_iter()
            .map(|t| {
                let m = self
                    .foreign_name(&t.key, naming)
                    .with_context(|| format!("`{}` has no name in the rename table", t.key))?;
                let data = TensorData::new(ldm_models::tensor_bytes::f32_values(&t.bytes), t.shape);
                let data = m
                    .layout
                    .to_diffusers(data)
                    .map_err(|e| anyhow::anyhow!("`{}`: {e}", t.key))?;
                Ok(NamedTensor {
                    key: m.key,
                    shape: data.shape.to_vec(),
                    bytes: data.as_bytes().to_vec(),
                })
            })
            .collect()
    }
}

/// The two ways foreign files name a UNet's tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnetNaming {
    /// diffusers' `UNet2DConditionModel` (`down_blocks.0.resnets.1.…`).
    Diffusers,
    /// CompVis openaimodel, as in a Stable Diffusion single file under
    /// `model.diffusion_model.` (our block names, PyTorch's layouts).
    CompVis,
}

/// The CompVis `LitEma` buffer name of the UNet parameter `compvis` (its
/// name under `model.diffusion_model.`): `model_ema.` then
/// `diffusion_model.<name>` with the dots removed, as LitEma registers it.
pub fn compvis_ema_name(compvis: &str) -> String {
    format!("model_ema.diffusion_model{}", compvis.replace('.', ""))
}

/// Whether level `i` has attention blocks (`attention_resolutions` are
/// downsampling factors, 2^i at level i).
fn has_attention(cfg: &UNetConfig, level: usize) -> bool {
    cfg.attention_resolutions.contains(&(1 << level))
}

/// Captured placeholder values, in pattern order.
type Captures = Vec<(&'static str, String)>;

/// Matches the whole of `key` against `pattern`, segment by segment.
fn match_leaf(pattern: &'static str, key: &str) -> Option<Captures> {
    let mut caps = Vec::new();
    let mut segs = key.split('.');
    for tok in pattern.split('.') {
        let seg = segs.next()?;
        let ok = match tok {
            "{p}" => matches!(seg, "weight" | "bias"),
            "{t}" => !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()),
            "{attn}" => matches!(seg, "attn1" | "attn2"),
            "{qkv}" => matches!(seg, "to_q" | "to_k" | "to_v"),
            "{norm}" => matches!(seg, "norm1" | "norm2" | "norm3"),
            lit => seg == lit,
        };
        if !ok {
            return None;
        }
        if tok.starts_with('{') {
            caps.push((tok, seg.to_string()));
        }
    }
    segs.next().is_none().then_some(caps)
}

/// `pattern` with its placeholders replaced by the captures of the same name.
fn fill(pattern: &str, caps: &Captures) -> String {
    pattern
        .split('.')
        .map(|tok| {
            caps.iter()
                .find(|(name, _)| *name == tok)
                .map_or(tok, |(_, v)| v.as_str())
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// Two levels (attention at level 1 only), two res blocks, transformer
    /// depth 2, a class table: every kind of block and index arithmetic.
    fn cfg() -> UNetConfig {
        UNetConfig {
            image_size: None,
            in_channels: 4,
            out_channels: 4,
            model_channels: 32,
            num_res_blocks: 2,
            attention_resolutions: vec![2],
            dropout: 0.0,
            channel_mult: vec![1, 2],
            num_heads: Some(2),
            num_head_channels: None,
            use_spatial_transformer: true,
            transformer_depth: 2,
            context_dim: Some(8),
            use_scale_shift_norm: false,
            num_classes: Some(3),
            norm_groups: 32,
        }
    }

    fn our_keys(cfg: &UNetConfig) -> Vec<(String, Vec<usize>)> {
        let unet = UNet::<Flex>::new(cfg, &Default::default());
        weights::collect(&unet, "")
            .unwrap()
            .into_iter()
            .map(|t| (t.key, t.shape))
            .collect()
    }

    #[test]
    fn known_names_in_both_directions() {
        let map = UnetKeyMap::new(&cfg(), false).unwrap();
        let cases = [
            ("input_blocks.0.0.weight", "conv_in.weight", Layout::Same),
            (
                "input_blocks.2.0.emb_layers.1.weight",
                "down_blocks.0.resnets.1.time_emb_proj.weight",
                Layout::Transposed,
            ),
            (
                "input_blocks.3.0.op.bias",
                "down_blocks.0.downsamplers.0.conv.bias",
                Layout::Same,
            ),
            (
                "input_blocks.4.0.skip_connection.weight",
                "down_blocks.1.resnets.0.conv_shortcut.weight",
                Layout::Same,
            ),
            (
                "input_blocks.5.1.transformer_blocks.1.attn2.to_k.weight",
                "down_blocks.1.attentions.1.transformer_blocks.1.attn2.to_k.weight",
                Layout::Transposed,
            ),
            (
                "middle_block.1.transformer_blocks.0.norm3.gamma",
                "mid_block.attentions.0.transformer_blocks.0.norm3.weight",
                Layout::Same,
            ),
            (
                "middle_block.2.out_layers.3.weight",
                "mid_block.resnets.1.conv2.weight",
                Layout::Same,
            ),
            (
                "output_blocks.2.2.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
                Layout::Same,
            ),
            (
                "output_blocks.1.1.proj_in.weight",
                "up_blocks.0.attentions.1.proj_in.weight",
                Layout::Same,
            ),
            (
                "output_blocks.3.0.in_layers.0.bias",
                "up_blocks.1.resnets.0.norm1.bias",
                Layout::Same,
            ),
            (
                "time_embed.2.weight",
                "time_embedding.linear_2.weight",
                Layout::Transposed,
            ),
            ("label_emb.weight", "class_embedding.weight", Layout::Same),
            ("out.0.weight", "conv_norm_out.weight", Layout::Same),
            ("out.2.bias", "conv_out.bias", Layout::Same),
        ];
        for (ours, theirs, layout) in cases {
            let want = Mapped {
                key: theirs.into(),
                layout,
            };
            assert_eq!(
                map.rename(ours, Direction::ToDiffusers),
                Some(want),
                "{ours}"
            );
            let back = Mapped {
                key: ours.into(),
                layout,
            };
            assert_eq!(
                map.rename(theirs, Direction::FromDiffusers),
                Some(back),
                "{theirs}"
            );
        }
        // Level 0 has no attention, and a name of another architecture maps nowhere.
        assert_eq!(
            map.rename(
                "down_blocks.0.attentions.0.norm.weight",
                Direction::FromDiffusers
            ),
            None
        );
        assert_eq!(
            map.rename("input_blocks.1.1.norm.weight", Direction::ToDiffusers),
            None
        );
    }

    #[test]
    fn every_key_of_a_model_round_trips_and_stays_unique() {
        for (linear, scale_shift) in [(false, false), (true, true)] {
            let cfg = UNetConfig {
                use_scale_shift_norm: scale_shift,
                ..cfg()
            };
            let map = UnetKeyMap::new(&cfg, linear).unwrap();
            let keys = our_keys(&cfg);
            let mut seen = BTreeSet::new();
            for (k, shape) in &keys {
                let d = map
                    .rename(k, Direction::ToDiffusers)
                    .unwrap_or_else(|| panic!("{k} has no diffusers name"));
                assert!(seen.insert(d.key.clone()), "two keys map to {}", d.key);
                let back = map.rename(&d.key, Direction::FromDiffusers).unwrap();
                assert_eq!((&back.key, back.layout), (k, d.layout));
                // Linear weights (2-D, but for the class table) and only they transpose.
                let is_linear = shape.len() == 2 && k != "label_emb.weight";
                assert_eq!(d.layout == Layout::Transposed, is_linear, "{k}");
            }
            assert_eq!(seen.len(), keys.len());
            let proj = map
                .rename("middle_block.1.proj_out.weight", Direction::ToDiffusers)
                .unwrap();
            let want = if linear {
                Layout::ConvAsLinear
            } else {
                Layout::Same
            };
            assert_eq!(proj.layout, want);
        }
    }

    #[test]
    fn plain_attention_unets_are_refused() {
        let cfg = UNetConfig {
            use_spatial_transformer: false,
            context_dim: None,
            ..cfg()
        };
        let err = UnetKeyMap::new(&cfg, false).unwrap_err();
        assert!(err.starts_with("use_spatial_transformer = false"), "{err}");
    }

    #[test]
    fn layouts_convert_both_ways() {
        let lin = TensorData::new(vec![1f32, 2., 3., 4., 5., 6.], [2, 3]);
        let t = Layout::Transposed.to_ours(lin.clone()).unwrap();
        assert_eq!(t.shape.to_vec(), vec![3, 2]);
        assert_eq!(t.to_vec::<f32>().unwrap(), vec![1., 4., 2., 5., 3., 6.]);
        assert_eq!(Layout::Transposed.to_diffusers(t).unwrap(), lin);
        assert_eq!(Layout::Transposed.diffusers_shape(&[3, 2]), vec![2, 3]);
        let conv = Layout::ConvAsLinear.to_ours(lin.clone()).unwrap();
        assert_eq!(conv.shape.to_vec(), vec![2, 3, 1, 1]);
        assert_eq!(
            Layout::ConvAsLinear.diffusers_shape(&[2, 3, 1, 1]),
            vec![2, 3]
        );
        assert_eq!(Layout::ConvAsLinear.to_diffusers(conv).unwrap(), lin);
        assert!(Layout::ConvAsLinear
            .to_ours(TensorData::new(vec![0f32; 4], [2, 2, 1, 1]))
            .is_err());
        assert!(Layout::Transposed
            .to_ours(TensorData::new(vec![0f32; 2], [2]))
            .is_err());
    }

    #[test]
    fn load_names_every_misfit_by_its_diffusers_key() {
        let cfg = cfg();
        let map = UnetKeyMap::new(&cfg, false).unwrap();
        let mut tensors: Vec<(String, TensorData)> = our_keys(&cfg)
            .into_iter()
            .map(|(k, shape)| {
                let m = map.rename(&k, Direction::ToDiffusers).unwrap();
                let shape = m.layout.diffusers_shape(&shape);
                let n = shape.iter().product();
                (m.key, TensorData::new(vec![0.5f32; n], shape))
            })
            .collect();
        let fresh = || UNet::<Flex>::new(&cfg, &Default::default());
        // The full set loads: every non-square Linear weight (time_embed.0 is
        // [32, 128] here, [128, 32] in diffusers) passed its transpose.
        map.load(fresh(), tensors.clone(), UnetNaming::Diffusers, "x")
            .unwrap();
        tensors.retain(|(k, _)| k != "conv_out.bias");
        let bad = tensors
            .iter_mut()
            .find(|(k, _)| k == "mid_block.attentions.0.proj_in.weight")
            .unwrap();
        bad.1 = TensorData::new(vec![0f32; 64 * 32], [64, 32, 1, 1]);
        tensors.push((
            "down_blocks.0.attentions.0.norm.weight".into(),
            TensorData::new(vec![0f32; 32], [32]),
        ));
        let err = map
            .load(fresh(), tensors, UnetNaming::Diffusers, "unet.safetensors")
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\n'), "{err}");
        for part in [
            "unet.safetensors: ",
            "`mid_block.attentions.0.proj_in.weight` has shape [64, 32, 1, 1], the config implies [64, 64, 1, 1]",
            "unexpected `down_blocks.0.attentions.0.norm.weight`",
            "missing `conv_out.bias`",
        ] {
            assert!(err.contains(part), "{part} not in: {err}");
        }
    }
}
