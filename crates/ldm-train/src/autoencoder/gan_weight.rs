//! The adaptive GAN weight without a second forward pass.
//!
//! The reference computes d_weight = ‖∂nll/∂W‖ / (‖∂g/∂W‖ + 1e-4) for the
//! decoder's last conv weight W with two `autograd.grad` calls on one graph.
//! burn 0.21 gives one backward per graph, so instead: both losses are built
//! on a detached copy of the reconstruction, giving ∂/∂x̂ of each; since
//! x̂ = conv(W, feats), ∂/∂W of each loss is the weight gradient of that
//! conv alone for that output gradient, computed on detached features.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::Tensor;

/// ‖∂L/∂W‖ (shape `[1]`, on the device) for `out = conv3x3(feats, W)` given
/// `grad_out` = ∂L/∂out.
pub fn conv_weight_grad_norm<B: AutodiffBackend>(
    feats: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    grad_out: &Tensor<B::InnerBackend, 4>,
) -> Tensor<B::InnerBackend, 1> {
    let w = weight.clone().detach().require_grad();
    let pad = weight.dims()[2] / 2;
    let out = conv2d(
        feats.clone().detach(),
        w.clone(),
        None,
        ConvOptions::new([1, 1], [pad, pad], [1, 1], 1),
    );
    let grads = (out * Tensor::from_inner(grad_out.clone()))
        .sum()
        .backward();
    let g = w.grad(&grads).expect("weight requires grad");
    g.powi_scalar(2).sum().sqrt()
}

/// d_weight = ‖∇nll‖ / (‖∇g‖ + 1e-4), clamped to [0, 1e4], times `disc_weight`
/// (detached by construction: the norms come from separate graphs).
pub fn adaptive_weight<B: Backend>(
    nll_norm: Tensor<B, 1>,
    g_norm: Tensor<B, 1>,
    disc_weight: f64,
) -> Tensor<B, 1> {
    (nll_norm / (g_norm + 1e-4)).clamp(0.0, 1e4) * disc_weight
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::AutodiffModule;
    use burn::optim::GradientsParams;
    use burn::tensor::Distribution;
    use ldm_models::discriminator::{DiscNorm, DiscriminatorConfig, NLayerDiscriminator};
    use ldm_models::{Autoencoder, AutoencoderConfig};

    type B = Autodiff<Flex>;

    fn setup() -> (Autoencoder<B>, NLayerDiscriminator<B>, Tensor<B, 4>) {
        let dev = Default::default();
        let cfg = AutoencoderConfig {
            ch_mult: vec![1, 1],
            z_channels: 2,
            embed_dim: 2,
            ..AutoencoderConfig::small(16)
        };
        let dcfg = DiscriminatorConfig {
            in_channels: 3,
            ndf: 8,
            n_layers: 2,
            norm: DiscNorm::Act,
        };
        let x = Tensor::random([2, 3, 16, 16], Distribution::Uniform(-1.0, 1.0), &dev);
        (
            Autoencoder::new(&cfg, &dev),
            NLayerDiscriminator::new(&dcfg, &dev),
            x,
        )
    }

    fn nll_of(x: Tensor<B, 4>, r: Tensor<B, 4>) -> Tensor<B, 1> {
        (x - r).abs().sum() / 2.0
    }

    /// The trick (one AE forward) against the plain computation (one forward
    /// per gradient), both for the weight and the resulting AE gradients.
    #[test]
    fn matches_two_forward_computation() {
        let (ae, disc, x) = setup();
        let w_id = ae.decoder.conv_out.weight.id;

        // Plain: forward twice, backward each loss to W.
        let grad_w = |use_g: bool| {
            let r = ae.reconstruct(x.clone());
            let loss = if use_g {
                -disc.forward(r).mean()
            } else {
                nll_of(x.clone(), r)
            };
            let g = GradientsParams::from_grads(loss.backward(), &ae);
            let gw: Tensor<Flex, 4> = g.get(w_id).unwrap();
            gw.powi_scalar(2).sum().sqrt()
        };
        let expect = f64::from(adaptive_weight(grad_w(false), grad_w(true), 0.5).into_scalar());

        // Trick: one forward, losses on detached leaves.
        let z = ae.encode(x.clone()).mode();
        let feats = ae.decode_features(z);
        let recon = ae.decoder.conv_out.forward(feats.clone());
        let r1 = recon.clone().detach().require_grad();
        let g1 = r1.grad(&nll_of(x.clone(), r1.clone()).backward()).unwrap();
        let r2 = recon.clone().detach().require_grad();
        let g2 = r2
            .grad(&(-disc.forward(r2.clone()).mean()).backward())
            .unwrap();
        let w = ae.decoder.conv_out.weight.val();
        let got = f64::from(
            adaptive_weight(
                conv_weight_grad_norm(&feats, &w, &g1),
                conv_weight_grad_norm(&feats, &w, &g2),
                0.5,
            )
            .into_scalar(),
        );
        assert!(
            (got - expect).abs() <= 1e-4 * expect.abs(),
            "{got} vs {expect}"
        );

        // The surrogate carries the same AE gradients as the full loss.
        let total = g1 + g2 * got;
        let sur = (recon * Tensor::from_inner(total)).sum();
        let gs = GradientsParams::from_grads(sur.backward(), &ae);
        let r = ae.reconstruct(x.clone());
        let full = nll_of(x.clone(), r.clone()) + (-disc.forward(r).mean()) * got;
        let gf = GradientsParams::from_grads(full.backward(), &ae);
        let enc_w = ae.encoder.conv_in.weight.id;
        for id in [w_id, enc_w] {
            let a: Tensor<Flex, 4> = gs.get(id).unwrap();
            let b: Tensor<Flex, 4> = gf.get(id).unwrap();
            let err = f64::from((a - b.clone()).abs().max().into_scalar());
            let scale = f64::from(b.abs().max().into_scalar());
            assert!(err <= 1e-4 * scale, "grad mismatch {err} (scale {scale})");
        }
        let _ = ae.valid();
    }
}
