//! The one table that renames weights between our checkpoints and the
//! reference formats.
//!
//! Our autoencoder keys *are* the CompVis/LDM names (`encoder.down.0.block.1.norm1.weight`),
//! so an LDM or Stable Diffusion file differs only by its `first_stage_model.`
//! prefix. diffusers renames the structure (table [`DIFFUSERS`]), counts the
//! decoder levels the other way round, and stores the attention projections
//! as `Linear` `[C, C]` where LDM has 1×1 convs `[C, C, 1, 1]`. The taming
//! PatchGAN numbers its layers inside one `nn.Sequential` ([`taming_disc_key`]).

/// One rename rule between our (LDM) key prefix and diffusers'.
///
/// Placeholders: `{e}` = `encoder` | `decoder`; `{i}`, `{j}` = an index kept
/// as is; `{u}` (ours) ↔ `{r}` (diffusers) = a decoder level, `r = L − 1 − u`
/// for a decoder of L levels. Whatever follows the prefix is kept.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// Our key prefix.
    pub ours: &'static str,
    /// The diffusers key prefix.
    pub diffusers: &'static str,
    /// The `weight` under this prefix is a 1×1 conv for us, a `Linear` for diffusers.
    pub linear_weight: bool,
}

const fn rule(ours: &'static str, diffusers: &'static str) -> Rule {
    Rule {
        ours,
        diffusers,
        linear_weight: false,
    }
}

const fn linear(ours: &'static str, diffusers: &'static str) -> Rule {
    Rule {
        ours,
        diffusers,
        linear_weight: true,
    }
}

/// Autoencoder (`AutoencoderKL`, `VQModel`) names, most specific first. Keys
/// no rule matches (`{e}.conv_in.*`, `{e}.conv_out.*`, `quant_conv.*`,
/// `post_quant_conv.*`, `quantize.embedding.weight`) are the same in both.
pub const DIFFUSERS: &[Rule] = &[
    // Attention blocks: in a level, then in the middle.
    rule(
        "encoder.down.{i}.attn.{j}.norm.",
        "encoder.down_blocks.{i}.attentions.{j}.group_norm.",
    ),
    linear(
        "encoder.down.{i}.attn.{j}.q.",
        "encoder.down_blocks.{i}.attentions.{j}.to_q.",
    ),
    linear(
        "encoder.down.{i}.attn.{j}.k.",
        "encoder.down_blocks.{i}.attentions.{j}.to_k.",
    ),
    linear(
        "encoder.down.{i}.attn.{j}.v.",
        "encoder.down_blocks.{i}.attentions.{j}.to_v.",
    ),
    linear(
        "encoder.down.{i}.attn.{j}.proj_out.",
        "encoder.down_blocks.{i}.attentions.{j}.to_out.0.",
    ),
    rule(
        "decoder.up.{u}.attn.{j}.norm.",
        "decoder.up_blocks.{r}.attentions.{j}.group_norm.",
    ),
    linear(
        "decoder.up.{u}.attn.{j}.q.",
        "decoder.up_blocks.{r}.attentions.{j}.to_q.",
    ),
    linear(
        "decoder.up.{u}.attn.{j}.k.",
        "decoder.up_blocks.{r}.attentions.{j}.to_k.",
    ),
    linear(
        "decoder.up.{u}.attn.{j}.v.",
        "decoder.up_blocks.{r}.attentions.{j}.to_v.",
    ),
    linear(
        "decoder.up.{u}.attn.{j}.proj_out.",
        "decoder.up_blocks.{r}.attentions.{j}.to_out.0.",
    ),
    rule(
        "{e}.mid.attn_1.norm.",
        "{e}.mid_block.attentions.0.group_norm.",
    ),
    linear("{e}.mid.attn_1.q.", "{e}.mid_block.attentions.0.to_q."),
    linear("{e}.mid.attn_1.k.", "{e}.mid_block.attentions.0.to_k."),
    linear("{e}.mid.attn_1.v.", "{e}.mid_block.attentions.0.to_v."),
    linear(
        "{e}.mid.attn_1.proj_out.",
        "{e}.mid_block.attentions.0.to_out.0.",
    ),
    // Residual blocks (shortcut first: it is renamed inside the block).
    rule(
        "encoder.down.{i}.block.{j}.nin_shortcut.",
        "encoder.down_blocks.{i}.resnets.{j}.conv_shortcut.",
    ),
    rule(
        "encoder.down.{i}.block.{j}.",
        "encoder.down_blocks.{i}.resnets.{j}.",
    ),
    rule(
        "decoder.up.{u}.block.{j}.nin_shortcut.",
        "decoder.up_blocks.{r}.resnets.{j}.conv_shortcut.",
    ),
    rule(
        "decoder.up.{u}.block.{j}.",
        "decoder.up_blocks.{r}.resnets.{j}.",
    ),
    rule("{e}.mid.block_1.", "{e}.mid_block.resnets.0."),
    rule("{e}.mid.block_2.", "{e}.mid_block.resnets.1."),
    // Resampling and the output norm.
    rule(
        "encoder.down.{i}.downsample.",
        "encoder.down_blocks.{i}.downsamplers.0.",
    ),
    rule(
        "decoder.up.{u}.upsample.",
        "decoder.up_blocks.{r}.upsamplers.0.",
    ),
    rule("{e}.norm_out.", "{e}.conv_norm_out."),
];

/// Prefixes of the first stage inside a CompVis / Stable Diffusion file, in
/// the order they are tried. The empty prefix last: a bare first-stage file
/// (a CompVis `first_stage_models/*/model.ckpt` state dict, the original
/// `sd-vae-ft-*` releases) keeps our names as they are.
pub const LDM_PREFIXES: &[&str] = &["first_stage_model.", ""];

/// Subtrees under the first-stage prefix that are not the autoencoder: the
/// training loss of a CompVis checkpoint (LPIPS, discriminator, logvar).
pub const LDM_SKIPPED: &[&str] = &["loss."];

/// Our keys with no counterpart in diffusers or LDM files: the statistics of
/// the EMA codebook (beyond the reference). Exports drop them; the codebook
/// itself (`quantize.embedding.weight`) carries over.
pub const OURS_ONLY: &[&str] = &["quantize.ema_cluster_size", "quantize.ema_embed_sum"];

/// Leaves of taming's discriminator state dict that ours does not keep:
/// BatchNorm's `num_batches_tracked` (unused with a fixed momentum) and
/// ActNorm's `initialized` flag (our init is an explicit call).
pub const TAMING_DISC_IGNORED: &[&str] = &["num_batches_tracked", "initialized"];

/// The first-stage prefix of an LDM / SD file: the first of [`LDM_PREFIXES`]
/// under which `has` finds `encoder.conv_in.weight`.
pub fn ldm_prefix(has: impl Fn(&str) -> bool) -> Option<&'static str> {
    LDM_PREFIXES
        .iter()
        .copied()
        .find(|p| has(&format!("{p}encoder.conv_in.weight")))
}

/// Whether an LDM key (prefix removed) belongs to a subtree that is not the
/// autoencoder ([`LDM_SKIPPED`]).
pub fn ldm_skipped(key: &str) -> bool {
    LDM_SKIPPED.iter().any(|p| key.starts_with(p))
}

/// Whether one of our keys has no counterpart in the reference formats ([`OURS_ONLY`]).
pub fn ours_only(key: &str) -> bool {
    OURS_ONLY.contains(&key)
}

/// Whether a taming discriminator key is a leaf we deliberately do not load
/// ([`TAMING_DISC_IGNORED`]).
pub fn taming_disc_ignored(key: &str) -> bool {
    key.rsplit('.')
        .next()
        .is_some_and(|leaf| TAMING_DISC_IGNORED.contains(&leaf))
}

/// Direction of a rename.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Our key → diffusers key.
    ToDiffusers,
    /// diffusers key → our key.
    FromDiffusers,
}

/// A renamed key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renamed {
    /// The key in the target naming.
    pub key: String,
    /// The tensor changes between `[C, C, 1, 1]` (ours) and `[C, C]` (diffusers).
    pub linear_weight: bool,
}

/// Renames one autoencoder key; `levels` = `len(ch_mult)` (for the reversed
/// decoder numbering). Keys outside the table keep their name.
pub fn rename(key: &str, dir: Direction, levels: usize) -> Renamed {
    for r in DIFFUSERS {
        let (from, to) = match dir {
            Direction::ToDiffusers => (r.ours, r.diffusers),
            Direction::FromDiffusers => (r.diffusers, r.ours),
        };
        if let Some((caps, rest)) = match_prefix(from, key) {
            if let Some(prefix) = fill(to, &caps, levels) {
                return Renamed {
                    key: format!("{prefix}{rest}"),
                    linear_weight: r.linear_weight && rest == "weight",
                };
            }
        }
    }
    Renamed {
        key: key.to_string(),
        linear_weight: false,
    }
}

/// Captured placeholder values, by name.
type Captures = Vec<(&'static str, String)>;

/// Matches `pattern` (a dotted prefix ending in '.') against the start of
/// `key`; returns the captures and the rest of the key.
fn match_prefix<'k>(pattern: &'static str, key: &'k str) -> Option<(Captures, &'k str)> {
    let mut caps = Vec::new();
    let mut rest = key;
    for tok in pattern.trim_end_matches('.').split('.') {
        let (seg, tail) = match rest.split_once('.') {
            Some((s, t)) => (s, t),
            None => return None, // the pattern needs more segments than the key has
        };
        let ok = match tok {
            "{e}" => seg == "encoder" || seg == "decoder",
            "{i}" | "{j}" | "{u}" | "{r}" => {
                !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit())
            }
            lit => seg == lit,
        };
        if !ok {
            return None;
        }
        if tok.starts_with('{') {
            caps.push((tok, seg.to_string()));
        }
        rest = tail;
    }
    Some((caps, rest))
}

/// Writes `pattern` with the captures; `{u}` ↔ `{r}` flip the level order.
fn fill(pattern: &str, caps: &Captures, levels: usize) -> Option<String> {
    let get = |name: &str| {
        caps.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    };
    let mut out = String::new();
    for tok in pattern.trim_end_matches('.').split('.') {
        let seg = match tok {
            "{e}" | "{i}" | "{j}" => get(tok)?,
            "{u}" | "{r}" => {
                let other = if tok == "{u}" { "{r}" } else { "{u}" };
                let v: usize = get(other)?.parse().ok()?;
                levels.checked_sub(v + 1)?.to_string()
            }
            lit => lit.to_string(),
        };
        out.push_str(&seg);
        out.push('.');
    }
    Some(out)
}

/// The taming `NLayerDiscriminator` key of one of ours, and back.
///
/// taming keeps the whole network in `main = nn.Sequential(...)`:
/// conv 0 at `main.0` (then LeakyReLU), conv k ≥ 1 at `main.{3k−1}` followed
/// by its norm at `main.{3k}`; the last conv (k = n_layers + 1) has no norm.
/// Ours: `convs.{k}`, `bn.{k−1}` / `actnorm.{k−1}`; BatchNorm's
/// `gamma`/`beta` are `weight`/`bias` there.
pub fn taming_disc_key(ours: &str) -> Option<String> {
    let mut it = ours.splitn(3, '.');
    let (group, idx, leaf) = (it.next()?, it.next()?.parse::<usize>().ok()?, it.next()?);
    match group {
        "convs" => {
            let pos = if idx == 0 { 0 } else { 3 * idx - 1 };
            Some(format!("main.{pos}.{leaf}"))
        }
        "bn" | "actnorm" => {
            let leaf = match leaf {
                "gamma" => "weight",
                "beta" => "bias",
                other => other,
            };
            Some(format!("main.{}.{leaf}", 3 * (idx + 1)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldm_models::{Autoencoder, AutoencoderConfig};

    #[test]
    fn known_names_in_both_directions() {
        let cases = [
            (
                "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
                false,
            ),
            (
                "decoder.up.0.block.2.norm1.bias",
                "decoder.up_blocks.2.resnets.2.norm1.bias",
                false,
            ),
            (
                "decoder.up.2.upsample.conv.weight",
                "decoder.up_blocks.0.upsamplers.0.conv.weight",
                false,
            ),
            (
                "encoder.mid.attn_1.proj_out.weight",
                "encoder.mid_block.attentions.0.to_out.0.weight",
                true,
            ),
            (
                "encoder.mid.attn_1.proj_out.bias",
                "encoder.mid_block.attentions.0.to_out.0.bias",
                false,
            ),
            (
                "decoder.up.1.attn.2.q.weight",
                "decoder.up_blocks.1.attentions.2.to_q.weight",
                true,
            ),
            (
                "decoder.norm_out.weight",
                "decoder.conv_norm_out.weight",
                false,
            ),
            (
                "decoder.mid.block_2.conv1.weight",
                "decoder.mid_block.resnets.1.conv1.weight",
                false,
            ),
            (
                "quantize.embedding.weight",
                "quantize.embedding.weight",
                false,
            ),
            ("encoder.conv_in.weight", "encoder.conv_in.weight", false),
        ];
        for (ours, theirs, lin) in cases {
            let to = rename(ours, Direction::ToDiffusers, 3);
            assert_eq!((to.key.as_str(), to.linear_weight), (theirs, lin), "{ours}");
            let back = rename(theirs, Direction::FromDiffusers, 3);
            assert_eq!(
                (back.key.as_str(), back.linear_weight),
                (ours, lin),
                "{theirs}"
            );
        }
    }

    #[test]
    fn every_key_of_a_model_round_trips_and_stays_unique() {
        use burn::backend::Flex;
        let cfg = AutoencoderConfig {
            ch_mult: vec![1, 2, 2],
            attn_resolutions: vec![8],
            ..AutoencoderConfig::small(16)
        };
        let ae = Autoencoder::<Flex>::new(&cfg, &Default::default());
        let keys: Vec<String> = crate::shared::weights::collect(&ae, "")
            .unwrap()
            .into_iter()
            .map(|t| t.key)
            .collect();
        let mut seen = std::collections::HashSet::new();
        for k in &keys {
            let d = rename(k, Direction::ToDiffusers, 3);
            assert!(seen.insert(d.key.clone()), "two keys map to {}", d.key);
            assert_eq!(rename(&d.key, Direction::FromDiffusers, 3).key, *k);
        }
        // Level attention and the mid block were both renamed.
        assert!(seen.contains("decoder.up_blocks.1.attentions.0.to_k.weight"));
        assert!(seen.contains("encoder.mid_block.attentions.0.group_norm.bias"));
    }

    #[test]
    fn ldm_prefixes_and_skipped_keys() {
        let sd = [
            "first_stage_model.encoder.conv_in.weight",
            "cond_stage_model.x",
        ];
        assert_eq!(ldm_prefix(|k| sd.contains(&k)), Some("first_stage_model."));
        let bare = ["encoder.conv_in.weight"];
        assert_eq!(ldm_prefix(|k| bare.contains(&k)), Some(""));
        assert_eq!(ldm_prefix(|_| false), None);
        assert!(ldm_skipped("loss.discriminator.main.0.weight"));
        assert!(!ldm_skipped("encoder.conv_in.weight"));
        assert!(ours_only("quantize.ema_embed_sum"));
        assert!(!ours_only("quantize.embedding.weight"));
        assert!(taming_disc_ignored("main.3.num_batches_tracked"));
        assert!(taming_disc_ignored("main.6.initialized"));
        assert!(!taming_disc_ignored("main.6.loc"));
    }

    #[test]
    fn taming_discriminator_layout() {
        assert_eq!(taming_disc_key("convs.0.weight").unwrap(), "main.0.weight");
        assert_eq!(taming_disc_key("convs.1.weight").unwrap(), "main.2.weight");
        assert_eq!(taming_disc_key("bn.0.gamma").unwrap(), "main.3.weight");
        assert_eq!(
            taming_disc_key("bn.2.running_var").unwrap(),
            "main.9.running_var"
        );
        assert_eq!(taming_disc_key("convs.4.bias").unwrap(), "main.11.bias");
        assert_eq!(taming_disc_key("actnorm.1.loc").unwrap(), "main.6.loc");
    }
}
