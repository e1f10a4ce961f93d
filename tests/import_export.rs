//! `ldm-train import` / `export` / `autoencoder --init-from` through the
//! binary: bad inputs end in one `error:` line naming the tensor or file, an
//! imported checkpoint evaluates and seeds a training run.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use ldm_train::shared::weights::{self, NamedTensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(name)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn import(from: &str, path: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "import".to_string(),
        "--from".into(),
        from.into(),
        s(path),
        "--out".into(),
        s(out),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    ldm(&args)
}

/// The tensors of a safetensors file, for editing.
fn read_tensors(path: &Path) -> Vec<NamedTensor> {
    let bytes = std::fs::read(path).unwrap();
    let st = weights::parse(&bytes, "x").unwrap();
    let mut t: Vec<NamedTensor> = st
        .tensors()
        .into_iter()
        .map(|(key, v)| NamedTensor {
            key,
            shape: v.shape().to_vec(),
            bytes: v.data().to_vec(),
        })
        .collect();
    t.sort_by(|a, b| a.key.cmp(&b.key));
    t
}

/// A copy of the diffusers_vq folder whose weights went through `edit`.
fn edited_vq(dir: &Path, tag: &str, edit: impl FnOnce(&mut Vec<NamedTensor>)) -> PathBuf {
    let out = dir.join(tag);
    std::fs::create_dir_all(&out).unwrap();
    let src = fixture("diffusers_vq");
    std::fs::copy(src.join("config.json"), out.join("config.json")).unwrap();
    let mut t = read_tensors(&src.join("diffusion_pytorch_model.safetensors"));
    edit(&mut t);
    let bytes = weights::to_safetensors(&t, Default::default()).unwrap();
    std::fs::write(out.join("diffusion_pytorch_model.safetensors"), bytes).unwrap();
    out
}

#[test]
fn import_bad_inputs_name_the_culprit() {
    let d = tmp("import-bad");
    let missing = edited_vq(&d, "missing", |t| {
        t.retain(|x| x.key != "decoder.conv_out.bias")
    });
    clean_error(
        &import("diffusers", &missing, &d.join("o1"), &[]),
        &["missing `decoder.conv_out.bias`"],
    );
    let extra = edited_vq(&d, "extra", |t| {
        t.push(NamedTensor {
            key: "encoder.extra.weight".into(),
            shape: vec![1],
            bytes: vec![0; 4],
        });
    });
    clean_error(
        &import("diffusers", &extra, &d.join("o2"), &[]),
        &["unexpected `encoder.extra.weight`"],
    );
    let misshaped = edited_vq(&d, "misshaped", |t| {
        let x = t
            .iter_mut()
            .find(|x| x.key == "encoder.conv_in.bias")
            .unwrap();
        x.shape = vec![4];
        x.bytes.truncate(16);
    });
    clean_error(
        &import("diffusers", &misshaped, &d.join("o3"), &[]),
        &["`encoder.conv_in.bias` has shape [4]"],
    );
    let linear = edited_vq(&d, "linear", |t| {
        let x = t
            .iter_mut()
            .find(|x| x.key.ends_with("attentions.0.to_q.weight"))
            .unwrap();
        x.shape = vec![32 * 32];
    });
    clean_error(
        &import("diffusers", &linear, &d.join("o4"), &[]),
        &["to_q.weight", "[1024]"],
    );
    // Wrong kind of model.
    let unet = edited_vq(&d, "unet", |_| {});
    let cfg = std::fs::read_to_string(unet.join("config.json")).unwrap();
    std::fs::write(
        unet.join("config.json"),
        cfg.replace("\"VQModel\"", "\"UNet2DModel\""),
    )
    .unwrap();
    clean_error(
        &import("diffusers", &unet, &d.join("o5"), &[]),
        &["UNet2DModel"],
    );
    // Truncated weights.
    let trunc = edited_vq(&d, "trunc", |_| {});
    let w = trunc.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    clean_error(
        &import("diffusers", &trunc, &d.join("o6"), &[]),
        &[
            "diffusion_pytorch_model.safetensors",
            "not a valid safetensors",
        ],
    );
    // LDM: a file without a first stage, a broken PyTorch pickle, missing norm groups.
    clean_error(
        &import("ldm", &fixture("ae_kl_io.safetensors"), &d.join("o7"), &[]),
        &["ae_kl_io.safetensors", "first_stage_model"],
    );
    let ckpt = d.join("model.ckpt");
    std::fs::write(&ckpt, b"PK\x03\x04").unwrap();
    clean_error(
        &import("ldm", &ckpt, &d.join("o8"), &[]),
        &["model.ckpt", "pytorch"],
    );
    clean_error(
        &import(
            "ldm",
            &fixture("ldm_kl_first_stage.safetensors"),
            &d.join("o9"),
            &[],
        ),
        &["norm_groups", "--norm-groups"],
    );
    clean_error(
        &import("diffusers", &d.join("nope"), &d.join("o10"), &[]),
        &["nope"],
    );
    // Importing over an existing checkpoint is refused.
    ok(&import(
        "diffusers",
        &fixture("diffusers_vq"),
        &d.join("ck"),
        &[],
    ));
    clean_error(
        &import("diffusers", &fixture("diffusers_vq"), &d.join("ck"), &[]),
        &["already holds"],
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn imported_checkpoint_evaluates_exports_and_seeds_training() {
    let d = tmp("import-e2e");
    let ck = d.join("ck");
    ok(&import("diffusers", &fixture("diffusers_vq"), &ck, &[]));
    // eval reads it like any checkpoint (f = 2, so 32² crops).
    ok(&eval(
        &ck,
        &[
            "--out",
            &s(&d.join("eval")),
            "--size",
            "32",
            "--limit",
            "2",
            "--no-fid",
        ],
    ));
    // Export refuses a diffusers-inexpressible [model]: see export.rs unit tests;
    // here the CLI path and a kind error.
    clean_error(
        &ldm(&[
            "export".into(),
            "--checkpoint".into(),
            s(&d.join("none")),
            "--to".into(),
            "ldm".into(),
            "--out".into(),
            s(&d.join("x.safetensors")),
        ]),
        &["none"],
    );
    // --init-from: the imported weights start a fresh run.
    let config = ck.join("step-00000000/config.toml");
    let run = d.join("run");
    let train = |run: &Path, extra: &[&str]| {
        let mut args = vec![
            "autoencoder".to_string(),
            "--config".into(),
            s(&config),
            "--run-dir".into(),
            s(run),
            "--init-from".into(),
            s(&ck),
        ];
        let sets = tiny_overrides().into_iter().chain(
            [
                "train.max_steps=2",
                "checkpoint.every=2",
                "loss.perceptual_weight=0",
                "loss.disc_start=100",
            ]
            .iter()
            .chain(extra)
            .map(|x| x.to_string()),
        );
        for o in sets {
            args.push("--set".into());
            args.push(o);
        }
        ldm(&args)
    };
    clean_error(
        &train(&d.join("bad"), &["model.num_res_blocks=2"]),
        &["--init-from", "model.num_res_blocks"],
    );
    ok(&train(&run, &[]));
    // Two small Adam steps from the imported weights: every tensor moved by at
    // most a few lr, which a fresh initialization would not match.
    let a = read_tensors(&ck.join("step-00000000/model.safetensors"));
    let b = read_tensors(&run.join("checkpoints/step-00000002/model.safetensors"));
    assert_eq!(a.len(), b.len());
    let f = |x: &NamedTensor| ldm_models::tensor_bytes::f32_values(&x.bytes);
    let mut max = 0.0f32;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.key, y.key);
        max = f(x)
            .iter()
            .zip(f(y))
            .map(|(p, q)| (p - q).abs())
            .fold(max, f32::max);
    }
    assert!(max > 0.0 && max < 1e-3, "max weight change {max}");
    let _ = std::fs::remove_dir_all(d);
}
