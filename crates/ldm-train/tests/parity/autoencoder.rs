//! KL and VQ autoencoders imported from the diffusers folders and the LDM
//! single file: forward outputs, d/dx and weight gradients.

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use ldm_models::{Autoencoder, DiagonalGaussian};
use ldm_train::interop::import::{self, Format};
use ldm_train::interop::key_map::{rename, Direction};

use crate::{fixtures, grads_by_path, vals, Fixture, Table, AD};

/// Compares every `grad.<diffusers key>` of `io` with our gradient of the
/// parameter that key maps to (linear `[C, C]` vs 1×1 conv: same values).
fn check_weight_grads(
    t: &mut Table,
    io: &Fixture,
    ours: &std::collections::HashMap<String, Vec<f32>>,
    levels: usize,
) {
    for key in io.keys() {
        let Some(dkey) = key.strip_prefix("grad.").filter(|k| *k != "x") else {
            continue;
        };
        let mapped = rename(dkey, Direction::FromDiffusers, levels).key;
        let got = ours
            .get(&mapped)
            .unwrap_or_else(|| panic!("no gradient for {mapped} (from {dkey})"));
        t.check(&io.name, &format!("d/d {dkey}"), got, &io.values(&key));
    }
}

/// Backward of L = sum(decoded · probe): checks d/dx and the listed weight
/// gradients, then prints the table.
fn check_backward(
    mut t: Table,
    io: &Fixture,
    ae: &Autoencoder<AD>,
    x: &Tensor<AD, 4>,
    decoded: Tensor<AD, 4>,
    dx_label: &str,
    levels: usize,
) {
    let grads = (decoded * io.t4::<AD>("input.probe")).sum().backward();
    t.check(
        &io.name,
        dx_label,
        &vals(x.grad(&grads).unwrap()),
        &io.values("grad.x"),
    );
    check_weight_grads(&mut t, io, &grads_by_path(ae, &grads), levels);
    t.finish();
}

#[test]
fn kl_from_diffusers_matches_reference() {
    let dev = Default::default();
    let imp = import::read(Format::Diffusers, &fixtures().join("diffusers_kl"), None).unwrap();
    let ae: Autoencoder<AD> = imp.build(&dev).unwrap();
    let io = Fixture::open("ae_kl_io.safetensors");
    let mut t = Table::new("AutoencoderKL (diffusers_kl)");
    let x: Tensor<AD, 4> = io.t4::<AD>("input.x").require_grad();
    let post = DiagonalGaussian::from_moments(ae.moments(x.clone()));
    t.check(
        &io.name,
        "posterior mean",
        &vals(post.mean.clone()),
        &io.values("output.mean"),
    );
    t.check(
        &io.name,
        "posterior logvar",
        &vals(post.logvar.clone()),
        &io.values("output.logvar"),
    );
    t.check(
        &io.name,
        "kl per image",
        &vals(post.kl()),
        &io.values("output.kl"),
    );
    let decoded = ae.decode(post.mode());
    t.check(
        &io.name,
        "decoded",
        &vals(decoded.clone()),
        &io.values("output.decoded"),
    );
    check_backward(t, &io, &ae, &x, decoded, "d/dx", imp.model.ch_mult.len());
}

#[test]
fn kl_from_ldm_file_equals_diffusers_import() {
    let dev = Default::default();
    let ldm = import::read(
        Format::Ldm,
        &fixtures().join("ldm_kl_first_stage.safetensors"),
        Some(8),
    )
    .unwrap();
    let dif = import::read(Format::Diffusers, &fixtures().join("diffusers_kl"), None).unwrap();
    // The two unrelated keys are skipped and counted, nothing else.
    assert_eq!(ldm.report.outside_prefix, 2);
    assert_eq!(
        (ldm.report.loaded, ldm.report.skipped_loss),
        (dif.report.loaded, 0)
    );
    // Same architecture up to where attn_resolutions are counted from.
    assert_eq!(
        (
            ldm.model.ch,
            &ldm.model.ch_mult,
            ldm.model.num_res_blocks,
            ldm.model.z_channels
        ),
        (
            dif.model.ch,
            &dif.model.ch_mult,
            dif.model.num_res_blocks,
            dif.model.z_channels
        )
    );
    assert_eq!(ldm.tensors.len(), dif.tensors.len());
    for (k, (_, d)) in &dif.tensors {
        let (src, l) = ldm
            .tensors
            .get(k)
            .unwrap_or_else(|| panic!("ldm import lacks {k}"));
        assert_eq!(l, d, "{k} (from {src}) differs between the two imports");
    }
    let ae = ldm.build::<AD>(&dev).unwrap().valid();
    let io = Fixture::open("ae_kl_io.safetensors");
    let mut t = Table::new("AutoencoderKL (ldm file)");
    let out = ae.reconstruct(io.t4("input.x"));
    t.check(
        &io.name,
        "decoded",
        &vals(out),
        &io.values("output.decoded"),
    );
    t.finish();
}

#[test]
fn vq_from_diffusers_matches_reference() {
    let dev = Default::default();
    let imp = import::read(Format::Diffusers, &fixtures().join("diffusers_vq"), None).unwrap();
    assert_eq!(
        imp.model.attn_resolutions,
        vec![16],
        "level 1 of sample_size 32"
    );
    let ae: Autoencoder<AD> = imp.build(&dev).unwrap();
    let io = Fixture::open("ae_vq_io.safetensors");
    let mut t = Table::new("VQModel (diffusers_vq)");
    let x: Tensor<AD, 4> = io.t4::<AD>("input.x").require_grad();
    let h = ae.moments(x.clone());
    t.check(
        &io.name,
        "h (pre-quantization)",
        &vals(h.clone()),
        &io.values("output.h"),
    );
    let q = ae.quantize.as_ref().unwrap().forward(h.clone());
    t.check(
        &io.name,
        "z_q",
        &vals(q.z_q.clone()),
        &io.values("output.z_q"),
    );
    // Indices: exact (the fixture's codebook keeps a clear nearest-code margin).
    let idx: Vec<f32> = q
        .indices
        .clone()
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap()
        .iter()
        .map(|i| *i as f32)
        .collect();
    t.check_tol(
        &io.name,
        "indices (exact)",
        &idx,
        &io.values("output.indices"),
        0.0,
    );
    t.check(
        &io.name,
        "commit_loss",
        &vals(q.loss),
        &io.values("output.commit_loss"),
    );
    // decode(h) re-quantizes; its gradient flows straight through z_q.
    let plain = ae.valid().decode(h.clone().inner());
    t.check(
        &io.name,
        "decoded = decode(h)",
        &vals(plain),
        &io.values("output.decoded"),
    );
    let decoded = ae.decoder.conv_out.forward(ae.decode_features(q.z_q));
    check_backward(
        t,
        &io,
        &ae,
        &x,
        decoded,
        "d/dx (straight-through)",
        imp.model.ch_mult.len(),
    );
}
