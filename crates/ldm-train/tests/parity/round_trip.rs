//! import → export gives back the reference files tensor for tensor, and
//! the files for the one-off Python check of an exported model of our own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use ldm_models::{Autoencoder, AutoencoderConfig, Regularizer};
use ldm_train::interop::export::{self, ExportArgs, Target};
use ldm_train::interop::import::{self, Format, ImportArgs};
use ldm_train::shared::weights::{self, NamedTensor};
use serde_json::Value;

use crate::{fixtures, vals};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ldm-parity-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `key → (shape, bytes)` of a safetensors file, keys filtered by `keep`.
fn tensors(path: &Path, keep: impl Fn(&str) -> bool) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = weights::parse(&bytes, "x").unwrap();
    st.tensors()
        .into_iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

fn import_to(from: Format, path: &Path, out: &Path, norm_groups: Option<usize>) -> PathBuf {
    import::run(&ImportArgs {
        from,
        path: path.to_path_buf(),
        out: out.to_path_buf(),
        base_config: None,
        norm_groups,
    })
    .unwrap()
}

fn export_to(ck: &Path, to: Target, out: &Path) {
    export::run(&ExportArgs {
        checkpoint: ck.to_path_buf(),
        to,
        out: out.to_path_buf(),
    })
    .unwrap();
}

#[test]
fn diffusers_import_export_is_exact() {
    for (name, vq) in [("diffusers_kl", false), ("diffusers_vq", true)] {
        let d = tmp(name);
        let src = fixtures().join(name);
        let ck = import_to(Format::Diffusers, &src, &d.join("ck"), None);
        export_to(&ck, Target::Diffusers, &d.join("out"));
        let weights_file = "diffusion_pytorch_model.safetensors";
        assert_eq!(
            tensors(&d.join("out").join(weights_file), |_| true),
            tensors(&src.join(weights_file), |_| true),
            "{name}: exported tensors differ from the reference folder"
        );
        let read = |p: PathBuf| -> Value {
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        };
        let ours = read(d.join("out/config.json"));
        let theirs = read(src.join("config.json"));
        for (k, v) in theirs.as_object().unwrap() {
            // VQ: no latent statistics → scaling_factor 1.0 (documented), not diffusers' 0.18215.
            if k == "_diffusers_version" || (vq && k == "scaling_factor") {
                continue;
            }
            assert_eq!(ours.get(k), Some(v), "{name}: config.json `{k}`");
        }
        // Through the LDM naming and back: the same tensors again.
        export_to(&ck, Target::Ldm, &d.join("ldm.safetensors"));
        let again = import_to(
            Format::Ldm,
            &d.join("ldm.safetensors"),
            &d.join("ck2"),
            Some(8),
        );
        assert_eq!(
            tensors(&again.join("model.safetensors"), |_| true),
            tensors(&ck.join("model.safetensors"), |_| true),
            "{name}: ldm export → import changed tensors"
        );
        if !vq {
            // The exported LDM file equals the reference single file's first stage.
            let prefix = "first_stage_model.";
            assert_eq!(
                tensors(&d.join("ldm.safetensors"), |_| true),
                tensors(&fixtures().join("ldm_kl_first_stage.safetensors"), |k| k
                    .starts_with(prefix)),
            );
        }
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn ldm_ckpt_imports_like_the_safetensors_file() {
    // The same tensors as a torch.save'd `{"state_dict": …, "global_step": 0}`
    // (scripts/make_ckpt_fixture.py), read by burn-store's pytorch reader.
    let st = fixtures().join("ldm_kl_first_stage.safetensors");
    let ckpt = fixtures().join("ldm_kl_first_stage.ckpt");
    let a = import::read(Format::Ldm, &st, Some(8)).unwrap();
    let b = import::read(Format::Ldm, &ckpt, Some(8)).unwrap();
    assert_eq!(
        b.report, a.report,
        "counts differ (loaded, skipped, converted)"
    );
    assert_eq!(b.model, a.model, "derived [model] differs");
    assert_eq!(
        b.tensors.keys().collect::<Vec<_>>(),
        a.tensors.keys().collect::<Vec<_>>()
    );
    for (k, (src, data)) in &a.tensors {
        assert_eq!(&b.tensors[k], &(src.clone(), data.clone()), "{k}");
    }
    // The whole import writes the same weights.
    let d = tmp("ckpt");
    let from_st = import_to(Format::Ldm, &st, &d.join("st"), Some(8));
    let from_ckpt = import_to(Format::Ldm, &ckpt, &d.join("ckpt"), Some(8));
    assert_eq!(
        tensors(&from_ckpt.join("model.safetensors"), |_| true),
        tensors(&from_st.join("model.safetensors"), |_| true),
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn truncated_ckpt_fails_with_one_line_naming_it() {
    let d = tmp("ckpt-trunc");
    let bytes = std::fs::read(fixtures().join("ldm_kl_first_stage.ckpt")).unwrap();
    let half = d.join("half.ckpt");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let err = match import::read(Format::Ldm, &half, Some(8)) {
        Ok(_) => panic!("a truncated .ckpt was imported"),
        Err(e) => format!("{e:#}"),
    };
    assert!(!err.contains('\n'), "more than one line: {err}");
    assert!(err.contains(&half.display().to_string()), "{err}");
    let _ = std::fs::remove_dir_all(d);
}

/// A random tiny model of ours (attention inside level 1 too), as a checkpoint.
fn tiny_checkpoint(
    dir: &Path,
    regularizer: Regularizer,
) -> (Autoencoder<Flex>, PathBuf, AutoencoderConfig) {
    let dev = Default::default();
    Flex::seed(&dev, 7);
    let model = AutoencoderConfig {
        regularizer,
        ch: 16,
        ch_mult: vec![1, 2],
        num_res_blocks: 1,
        attn_resolutions: vec![16],
        resolution: 32,
        z_channels: 4,
        embed_dim: if regularizer == Regularizer::Vq { 3 } else { 4 },
        norm_groups: 8,
        n_embed: (regularizer == Regularizer::Vq).then_some(32),
        // KL: a logvar bias of −2 in quant_conv, so the check sees that
        // bias exported (PyTorch's default init would leave it near 0).
        posterior_logvar_init: (regularizer == Regularizer::Kl).then_some(-2.0),
        ..AutoencoderConfig::small(32)
    };
    let cfg = import::run_config(&model, None).unwrap();
    let ae = Autoencoder::<Flex>::new(&model, &dev);
    let ck = import::write_checkpoint(&ae, &cfg, &dir.join("ck"), "test").unwrap();
    (ae, ck, model)
}

/// Writes an exported tiny model and `input.x` / `output.decoded` for
/// `scripts/check_diffusers_export.py` (run by hand; see the README).
#[test]
fn writes_files_for_the_python_export_check() {
    let d = tmp("pycheck");
    let dev = Default::default();
    for (kind, reg) in [("kl", Regularizer::Kl), ("vq", Regularizer::Vq)] {
        let sub = d.join(kind);
        let (mut ae, ck, model) = tiny_checkpoint(&sub, reg);
        let x = Tensor::<Flex, 4>::random([2, 3, 16, 24], Distribution::Uniform(-1.0, 1.0), &dev);
        let (ck, decoded) = if reg == Regularizer::Vq {
            // Codes at actual latents (every 6th of 192), so each latent's
            // nearest code has a clear margin, as in the fixture.
            let h = ae.moments(x.clone());
            let rows = h.permute([0, 2, 3, 1]).reshape([192, 3]);
            let codes = rows.select(0, Tensor::arange_step(0..192, 6, &dev));
            let q = ae.quantize.as_mut().unwrap();
            q.embedding.weight = burn::module::Param::from_tensor(codes);
            let cfg = import::run_config(&model, None).unwrap();
            let ck = import::write_checkpoint(&ae, &cfg, &sub.join("ck-codes"), "test").unwrap();
            (ck, ae.decode(ae.moments(x.clone())))
        } else {
            (ck, ae.reconstruct(x.clone()))
        };
        let out = sub.join("diffusers");
        export_to(&ck, Target::Diffusers, &out);
        let io = vec![
            named("input.x", x.clone()),
            named("output.decoded", decoded),
        ];
        let io_file = sub.join("io.safetensors");
        std::fs::write(
            &io_file,
            weights::to_safetensors(&io, Default::default()).unwrap(),
        )
        .unwrap();
        println!(
            "python check: ~/.cache/ldm-train/ref-venv/bin/python scripts/check_diffusers_export.py \
             --model {} --io {} --kind {kind}",
            out.display(),
            io_file.display()
        );
    }
}

fn named(key: &str, t: Tensor<Flex, 4>) -> NamedTensor {
    let shape = t.dims().to_vec();
    NamedTensor {
        key: key.into(),
        shape,
        bytes: vals(t).iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}
