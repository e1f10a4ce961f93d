//! Pieces shared by encoder and decoder: a level's block/attention sequence
//! and the Res → Attn → Res bottleneck.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::attention::AttnBlock;
use crate::config::{AttnType, AutoencoderConfig};
use crate::resnet::ResnetBlock;

/// Builds one level's `count` residual blocks (`cin` → `cout`, then `cout` →
/// `cout`) and, where `curr_res` is listed in `attn_resolutions`, an attention
/// block after each (shared by encoder and decoder levels).
pub fn build_blocks<B: Backend>(
    cfg: &AutoencoderConfig,
    cin: usize,
    cout: usize,
    count: usize,
    curr_res: usize,
    device: &B::Device,
) -> (Vec<ResnetBlock<B>>, Vec<AttnBlock<B>>) {
    let with_attn = cfg.attn_type == AttnType::Vanilla && cfg.attn_resolutions.contains(&curr_res);
    let (mut block, mut attn) = (Vec::with_capacity(count), Vec::new());
    // Interleaved as in the reference, so seeded initialization draws in its order.
    for k in 0..count {
        let c = if k == 0 { cin } else { cout };
        block.push(ResnetBlock::new(
            c,
            cout,
            cfg.norm_groups,
            cfg.dropout,
            device,
        ));
        if with_attn {
            attn.push(AttnBlock::new(cout, cfg.norm_groups, device));
        }
    }
    (block, attn)
}

/// Runs a level's residual blocks, each followed by its attention block when
/// the level has them (shared by encoder and decoder levels).
pub fn run_blocks<B: Backend>(
    blocks: &[ResnetBlock<B>],
    attn: &[AttnBlock<B>],
    mut h: Tensor<B, 4>,
) -> Tensor<B, 4> {
    for (i, block) in blocks.iter().enumerate() {
        h = block.forward(h);
        if let Some(a) = attn.get(i) {
            h = a.forward(h);
        }
    }
    h
}

/// Res → Attn → Res at the bottleneck, shared by encoder and decoder.
#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    /// First residual block.
    pub block_1: ResnetBlock<B>,
    /// Self-attention (absent with `attn_type = "none"`).
    pub attn_1: Option<AttnBlock<B>>,
    /// Second residual block.
    pub block_2: ResnetBlock<B>,
}

impl<B: Backend> MidBlock<B> {
    /// A bottleneck of width `ch`, with or without its self-attention.
    pub fn new(
        ch: usize,
        groups: usize,
        dropout: f64,
        attention: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            block_1: ResnetBlock::new(ch, ch, groups, dropout, device),
            attn_1: attention.then(|| AttnBlock::new(ch, groups, device)),
            block_2: ResnetBlock::new(ch, ch, groups, dropout, device),
        }
    }

    /// Applies the bottleneck.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.block_1.forward(x);
        let h = match &self.attn_1 {
            Some(attn) => attn.forward(h),
            None => h,
        };
        self.block_2.forward(h)
    }
}
