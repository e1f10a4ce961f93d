//! The UNet's residual block with the timestep embedding (openaimodel
//! `ResBlock`); parameter paths are the reference's.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{DropoutConfig, Initializer, LinearConfig, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::norm::GroupNorm;
use crate::resnet::conv1;
use crate::sequential::{run, Layer, Silu};

/// Epsilon of the UNet's `normalization()` (PyTorch's GroupNorm default; the
/// autoencoder and the spatial transformer use 1e-6).
pub const UNET_NORM_EPS: f64 = 1e-5;
/// Groups of the reference's UNet GroupNorm (`GroupNorm32`), the default of
/// [`crate::UNetConfig::norm_groups`].
pub const UNET_NORM_GROUPS: usize = 32;

/// The UNet's `normalization(channels)`: GroupNorm(`groups`, channels, eps 1e-5).
pub fn unet_norm<B: Backend>(groups: usize, channels: usize, device: &B::Device) -> Layer<B> {
    Layer::Norm(GroupNorm::new(groups, channels, UNET_NORM_EPS, device))
}

/// A 3×3 conv with padding 1; `zero` gives the reference's `zero_module`
/// (weight and bias 0), which makes a fresh block start as the identity.
pub fn conv3_init<B: Backend>(
    cin: usize,
    cout: usize,
    zero: bool,
    device: &B::Device,
) -> Conv2d<B> {
    let cfg =
        Conv2dConfig::new([cin, cout], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1));
    let cfg = if zero {
        cfg.with_initializer(Initializer::Zeros)
    } else {
        cfg
    };
    cfg.init(device)
}

/// in_layers (GN → SiLU → conv3) → + projected embedding (or scale-shift norm)
/// → out_layers (GN → SiLU → dropout → zero-init conv3), plus the input
/// through a 1×1 `skip_connection` when the width changes.
#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    /// `[GroupNorm, SiLU, conv3]`.
    pub in_layers: Vec<Layer<B>>,
    /// `[SiLU, Linear(emb → out or 2·out)]`.
    pub emb_layers: Vec<Layer<B>>,
    /// `[GroupNorm, SiLU, Dropout, zero conv3]`.
    pub out_layers: Vec<Layer<B>>,
    /// 1×1 conv when in ≠ out channels (the reference's `nn.Identity` otherwise).
    pub skip_connection: Option<Conv2d<B>>,
    /// `use_scale_shift_norm`: the embedding gives `(1 + scale)·GN(h) + shift`.
    pub scale_shift: bool,
}

impl<B: Backend> ResBlock<B> {
    /// A block from `cin` to `cout` channels taking an `emb_dim` embedding,
    /// its GroupNorms in `groups` groups.
    pub fn new(
        cin: usize,
        cout: usize,
        emb_dim: usize,
        dropout: f64,
        scale_shift: bool,
        groups: usize,
        device: &B::Device,
    ) -> Self {
        let emb_out = if scale_shift { 2 * cout } else { cout };
        Self {
            in_layers: vec![
                unet_norm(groups, cin, device),
                Layer::Silu(Silu),
                Layer::Conv(conv3_init(cin, cout, false, device)),
            ],
            emb_layers: vec![
                Layer::Silu(Silu),
                Layer::Linear(LinearConfig::new(emb_dim, emb_out).init(device)),
            ],
            out_layers: vec![
                unet_norm(groups, cout, device),
                Layer::Silu(Silu),
                Layer::Dropout(DropoutConfig::new(dropout).init()),
                Layer::Conv(conv3_init(cout, cout, true, device)),
            ],
            skip_connection: (cin != cout).then(|| conv1(cin, cout, device)),
            scale_shift,
        }
    }

    /// `x`: `[N, C, H, W]`; `emb`: `[N, emb_dim]`.
    pub fn forward(&self, x: Tensor<B, 4>, emb: Tensor<B, 2>) -> Tensor<B, 4> {
        let h = run(&self.in_layers, x.clone());
        let e: Tensor<B, 4> = run(&self.emb_layers, emb)
            .unsqueeze_dim::<3>(2)
            .unsqueeze_dim(3);
        let h = if self.scale_shift {
            let [scale, shift] = e.chunk(2, 1).try_into().expect("two halves");
            let (norm, rest) = self.out_layers.split_first().expect("out_layers");
            let h = norm.forward(h) * (scale + 1.0) + shift;
            run(rest, h)
        } else {
            run(&self.out_layers, h + e)
        };
        let skip = match &self.skip_connection {
            Some(conv) => conv.forward(x),
            None => x,
        };
        skip + h
    }
}
