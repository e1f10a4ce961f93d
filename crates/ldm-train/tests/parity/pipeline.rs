//! A whole tiny Stable-Diffusion-1.x pipeline (fixtures `sd_tiny/`, its
//! CompVis single-file form `sd_tiny.safetensors`, and diffusers' DDIM run
//! `sd_tiny_ddim.safetensors`; section (i) of the generator) through
//! `import`, `sample`'s sampler and `export`:
//!
//! * the diffusers folder imports, tokenizes the prompts to diffusers' ids,
//!   encodes them to CLIP's context and samples, from the same initial
//!   latents, the same final latents and images as diffusers' DDIM
//!   (10 steps, guidance 5);
//! * the single file imports to the same weights (its `model_ema.*` as the
//!   EMA, its `model.diffusion_model.*` as the trained weights);
//! * export to diffusers and to ldm, re-imported, gives the same tensors;
//! * bad pipelines are one-line errors naming the file and what is wrong.
//!
//! Tolerances: the reference is float64 diffusers rounded to f32 (see the
//! fixture's `float32_drift`: diffusers' own float32 run is off by 2.1e-5 of
//! 27 on the final latents); ours runs in f32, so the table's relative 1e-4
//! bound applies to every compared tensor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::Tensor;
use ldm_train::diffusion::condition::{encode_conditions, Cond, Conditions};
use ldm_train::diffusion::load::load_diffusion;
use ldm_train::diffusion::sampler::{denoise, SampleSpec, SamplerKind, SpacingName};
use ldm_train::interop::export::{self, ExportArgs, Target};
use ldm_train::interop::import::Format;
use ldm_train::interop::pipeline_config::Heads;
use ldm_train::interop::pipeline_import::{self, PipelineOptions};
use safetensors::SafeTensors;

use crate::{fixtures, vals, Fixture, Table};

/// A fresh scratch directory for one test.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ldm-parity-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The fixture pipeline folder.
fn folder() -> PathBuf {
    fixtures().join("sd_tiny")
}

/// What shapes cannot tell about the tiny single file.
fn single_file_options() -> PipelineOptions {
    PipelineOptions {
        unet_heads: Some(Heads::Count(2)),
        unet_norm_groups: Some(4),
        norm_groups: Some(4),
        text_heads: Some(2),
        image_size: Some(16),
        tokenizer: Some(folder().join("tokenizer")),
        ..Default::default()
    }
}

/// Imports `path` into a fresh `dir/name`; returns the run directory.
fn import(format: Format, path: &Path, dir: &Path, name: &str, opts: &PipelineOptions) -> PathBuf {
    let out = dir.join(name);
    pipeline_import::run(format, path, &out, None, opts)
        .unwrap_or_else(|e| panic!("import {}: {e:#}", path.display()));
    out
}

/// Imports the fixture folder into a fresh `dir/name`.
fn import_folder(dir: &Path, name: &str) -> PathBuf {
    import(Format::Diffusers, &folder(), dir, name, &Default::default())
}

/// Every tensor of a safetensors file as f32 values, by key.
fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let values = ldm_models::tensor_bytes::float_values(v.data(), v.dtype())
                .unwrap_or_else(|| panic!("{k}: not float"));
            (k, values)
        })
        .collect()
}

/// The latest checkpoint directory of a run directory.
fn ck(run: &Path) -> PathBuf {
    ldm_train::shared::checkpoint::resolve(run).unwrap()
}

/// Integer ids of an int64 fixture tensor.
fn ids(fx: &Fixture, key: &str) -> Vec<i64> {
    let bytes = std::fs::read(fixtures().join(&fx.name)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(key)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn diffusers_pipeline_samples_what_diffusers_samples() {
    let tmp = scratch("samples");
    let run = import_folder(&tmp, "sd");
    let fx = Fixture::open("sd_tiny_ddim.safetensors");
    let dev = Default::default();
    let d = load_diffusion::<Flex>(&run, true, &dev).unwrap();
    let text = d.text.as_ref().expect("a text model");
    let prompts = vec![
        "a red fox on a hill".to_string(),
        "two blue birds".to_string(),
    ];
    let conds = Conditions::Prompts(prompts.clone());
    // Token ids, then CLIP's context.
    let mut table = Table::new("pipeline");
    let mut got_ids = Vec::new();
    for p in prompts.iter().chain(std::iter::once(&String::new())) {
        got_ids.extend(
            text.tokenizer
                .encode(p)
                .unwrap()
                .ids
                .iter()
                .map(|&i| i as i64),
        );
    }
    let mut want_ids = ids(&fx, "input.ids");
    want_ids.extend(ids(&fx, "input.uncond_ids"));
    assert_eq!(got_ids, want_ids, "CLIP token ids");
    let Cond::Context(ctx) = encode_conditions(&conds, Some(text), &dev).unwrap() else {
        panic!("a frozen encoder gives a context")
    };
    table.check(
        &fx.name,
        "context",
        &vals(ctx),
        &fx.values("output.context"),
    );
    let Cond::Context(u) =
        encode_conditions(&Conditions::Prompts(vec![String::new()]), Some(text), &dev).unwrap()
    else {
        panic!("a frozen encoder gives a context")
    };
    table.check(
        &fx.name,
        "uncond_context",
        &vals(u),
        &fx.values("output.uncond_context"),
    );
    // DDIM from diffusers' initial latents.
    let spec = SampleSpec {
        sampler: SamplerKind::Ddim,
        steps: 10,
        eta: 0.0,
        guidance: 5.0,
        spacing: SpacingName::Uniform,
        negative_prompt: String::new(),
    };
    let x: Tensor<Flex, 4> = fx.t4("input.latents");
    let s = d.sampling();
    let z = denoise(
        s.model,
        s.text,
        &s.cfg.model.schedule(),
        s.cfg.model.parameterization.into(),
        &spec,
        Some(&conds),
        x,
        |_| unreachable!("DDIM with η = 0 adds no noise"),
        &dev,
    )
    .unwrap();
    table.check(
        &fx.name,
        "final latents",
        &vals(z.clone()),
        &fx.values("output.latents"),
    );
    let images = (s.ae.decode(z / s.scale_factor).clamp(-1.0, 1.0) + 1.0) / 2.0;
    table.check(
        &fx.name,
        "images",
        &vals(images),
        &fx.values("output.images"),
    );
    table.finish();
    assert_eq!(d.latent_shape, [4, 8, 8]);
    assert_eq!(d.scale_factor, 0.18215);
}

#[test]
fn single_file_imports_the_same_pipeline_with_its_ema() {
    let tmp = scratch("single");
    let a = ck(&import_folder(&tmp, "a"));
    let b = ck(&import(
        Format::Ldm,
        &fixtures().join("sd_tiny.safetensors"),
        &tmp,
        "b",
        &single_file_options(),
    ));
    // The diffusers UNet is the file's model_ema; its raw UNet differs.
    assert_eq!(
        tensors(&a.join("ema.safetensors")),
        tensors(&b.join("ema.safetensors"))
    );
    assert_ne!(
        tensors(&a.join("model.safetensors")),
        tensors(&b.join("model.safetensors"))
    );
    for f in ["first_stage.safetensors", "cond_stage.safetensors"] {
        let (ta, tb) = (tensors(&a.join(f)), tensors(&b.join(f)));
        // The single file's CLIP keys carry `text_model.` as the folder's do.
        assert_eq!(ta, tb, "{f}");
    }
    // (first_stage.toml differs in `resolution`, which shapes cannot tell
    // and which changes nothing in the network.)
    let merges = "bpe_simple_vocab_16e6.txt.gz";
    assert_eq!(
        std::fs::read(a.join(merges)).unwrap(),
        std::fs::read(b.join(merges)).unwrap()
    );
    let cfg = |dir: &Path| {
        load_diffusion::<Flex>(dir, true, &Default::default())
            .unwrap()
            .cfg
    };
    let (ca, cb) = (cfg(&a), cfg(&b));
    assert_eq!(ca.model, cb.model);
    assert_eq!(ca.data.size, cb.data.size);
}

#[test]
fn export_to_diffusers_and_ldm_and_back_keeps_every_tensor() {
    let tmp = scratch("export");
    let b = import(
        Format::Ldm,
        &fixtures().join("sd_tiny.safetensors"),
        &tmp,
        "b",
        &single_file_options(),
    );
    let b_ck = ck(&b);
    for (to, out) in [(Target::Diffusers, "exp"), (Target::Ldm, "exp.safetensors")] {
        export::run(&ExportArgs {
            checkpoint: b.clone(),
            to,
            out: tmp.join(out),
        })
        .unwrap_or_else(|e| panic!("export {to:?}: {e:#}"));
    }
    // diffusers: the EMA weights (what samples use), with a config that
    // re-imports to the same model.
    let c = ck(&import(
        Format::Diffusers,
        &tmp.join("exp"),
        &tmp,
        "c",
        &Default::default(),
    ));
    assert_eq!(
        tensors(&b_ck.join("ema.safetensors")),
        tensors(&c.join("ema.safetensors"))
    );
    // ldm: both sets of weights, and everything else.
    let d = ck(&import(
        Format::Ldm,
        &tmp.join("exp.safetensors"),
        &tmp,
        "d",
        &single_file_options(),
    ));
    for f in [
        "model.safetensors",
        "ema.safetensors",
        "first_stage.safetensors",
        "cond_stage.safetensors",
    ] {
        assert_eq!(tensors(&b_ck.join(f)), tensors(&d.join(f)), "{f}");
    }
    let cfg = |dir: &Path| {
        load_diffusion::<Flex>(dir, true, &Default::default())
            .unwrap()
            .cfg
    };
    assert_eq!(cfg(&b_ck).model, cfg(&c).model);
    assert_eq!(cfg(&b_ck).model, cfg(&d).model);
    // The exported scheduler is our DDIM set up as Stable Diffusion's.
    let sched: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.join("exp/scheduler/scheduler_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sched["beta_schedule"], "scaled_linear");
    assert_eq!(sched["steps_offset"], 1);
}

/// A copy of the fixture folder in `dir`, changed by `edit`.
fn broken_folder(dir: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    let out = dir.join("broken");
    copy_dir(&folder(), &out);
    edit(&out);
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Sets `key` of the JSON file `path` to `value`.
fn set_json(path: &Path, key: &str, value: serde_json::Value) {
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    j[key] = value;
    std::fs::write(path, serde_json::to_string(&j).unwrap()).unwrap();
}

/// The one-line error of importing `path` into `out`; each of `parts` must
/// be in it.
fn import_error(format: Format, path: &Path, out: &Path, opts: &PipelineOptions, parts: &[&str]) {
    let err = match pipeline_import::run(format, path, out, None, opts) {
        Ok(_) => panic!("{} imported", path.display()),
        Err(e) => format!("{e:#}"),
    };
    assert!(!err.contains('\n'), "{err}");
    for p in parts {
        assert!(err.contains(p), "`{p}` not in: {err}");
    }
    // Nothing that could pass for a model is left behind.
    assert!(!out.join("checkpoints").join("latest").exists());
}

#[test]
fn bad_pipelines_are_one_line_errors_naming_the_file() {
    let tmp = scratch("bad");
    let t = tmp.as_path();
    // A file without a UNet (the autoencoder fixture's single file).
    let ae = fixtures().join("ldm_kl_first_stage.safetensors");
    import_error(
        Format::Ldm,
        &ae,
        &t.join("o1"),
        &single_file_options(),
        &[
            "ldm_kl_first_stage.safetensors: no UNet in it",
            "model.diffusion_model.input_blocks.0.0.weight",
        ],
    );
    // A folder without unet/.
    let no_unet = broken_folder(&t.join("a"), |d| {
        std::fs::remove_dir_all(d.join("unet")).unwrap()
    });
    import_error(
        Format::Diffusers,
        &no_unet,
        &t.join("o2"),
        &Default::default(),
        &["no unet/ folder"],
    );
    // A UNet whose shapes disagree with its config.
    let wide = broken_folder(&t.join("b"), |d| {
        set_json(
            &d.join("unet/config.json"),
            "cross_attention_dim",
            16.into(),
        )
    });
    import_error(
        Format::Diffusers,
        &wide,
        &t.join("o3"),
        &Default::default(),
        &[
            "unet/diffusion_pytorch_model.safetensors: does not fit the UNet its config describes",
            "attn2.to_k.weight` has shape [16, 32], the config implies [16, 16]",
        ],
    );
    // A truncated single file.
    let bytes = std::fs::read(fixtures().join("sd_tiny.safetensors")).unwrap();
    let cut = t.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    import_error(
        Format::Ldm,
        &cut,
        &t.join("o4"),
        &single_file_options(),
        &["cut.safetensors: not a valid safetensors file"],
    );
    // A text encoder we do not implement.
    let t5 = broken_folder(&t.join("c"), |d| {
        set_json(
            &d.join("text_encoder/config.json"),
            "architectures",
            serde_json::json!(["T5EncoderModel"]),
        )
    });
    import_error(
        Format::Diffusers,
        &t5,
        &t.join("o5"),
        &Default::default(),
        &[
            "text_encoder/config.json",
            "T5EncoderModel",
            "is not a CLIP text encoder",
        ],
    );
    // A tokenizer with more ids than the encoder's table: refused, and the
    // half-written run removed.
    let merges = std::fs::read_to_string(folder().join("tokenizer/merges.txt")).unwrap();
    let bigger = t.join("merges.txt");
    std::fs::write(&bigger, format!("{}\nz q</w>\n", merges.trim_end())).unwrap();
    let opts = PipelineOptions {
        tokenizer: Some(bigger),
        ..Default::default()
    };
    let o7 = t.join("o7");
    import_error(
        Format::Diffusers,
        &folder(),
        &o7,
        &opts,
        &[
            "conditioning.tokenizer_file",
            "has 1515 tokens",
            "has 1514 rows",
        ],
    );
    assert!(!o7.exists(), "a failed import leaves nothing");
    // Shapes that no head count fits.
    let mut opts = single_file_options();
    opts.unet_heads = Some(Heads::Count(5));
    import_error(
        Format::Ldm,
        &fixtures().join("sd_tiny.safetensors"),
        &t.join("o6"),
        &opts,
        &[
            "sd_tiny.safetensors: the UNet its shapes describe is invalid",
            "--unet-heads",
        ],
    );
}

/// Runs the binary; returns (success, stderr).
fn ldm_train(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ldm-train"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn imported_pipeline_samples_and_fine_tunes_from_the_command_line() {
    let tmp = scratch("finetune");
    // The single file, told from an autoencoder by its UNet (no --model).
    let run = tmp.join("sd");
    let run_s = run.to_str().unwrap();
    let file = fixtures().join("sd_tiny.safetensors");
    let tokenizer = folder().join("tokenizer");
    let (ok, err) = ldm_train(&[
        "import",
        "--from",
        "ldm",
        file.to_str().unwrap(),
        "--out",
        run_s,
        "--unet-heads",
        "2",
        "--unet-norm-groups",
        "4",
        "--norm-groups",
        "4",
        "--text-heads",
        "2",
        "--image-size",
        "16",
        "--tokenizer",
        tokenizer.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("skipped 3 keys that are no part of the model"),
        "{err}"
    );
    // `sample` reads prompts through the imported CLIP.
    let samples = tmp.join("samples");
    let (ok, err) = ldm_train(&[
        "sample",
        "--checkpoint",
        run_s,
        "--prompt",
        "a red fox",
        "--n",
        "1",
        "--steps",
        "2",
        "--guidance",
        "3",
        "--device",
        "flex",
        "--out",
        samples.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let pngs = std::fs::read_dir(&samples).unwrap().count();
    assert!(pngs >= 1, "no sample written");
    // Four captioned 16² images.
    let data = tmp.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (i, caption) in [
        "a red square",
        "a blue square",
        "a green dot",
        "a white line",
    ]
    .iter()
    .enumerate()
    {
        let img = image::RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([(x * 16) as u8, (y * 16) as u8, (i * 60) as u8])
        });
        img.save(data.join(format!("{i}.png"))).unwrap();
        std::fs::write(data.join(format!("{i}.txt")), caption).unwrap();
    }
    let config = run.join("config.toml");
    let root = format!("data.root={:?}", data.to_str().unwrap());
    let base = [
        "diffusion",
        "--config",
        config.to_str().unwrap(),
        "--set",
        root.as_str(),
        "--set",
        "train.max_steps=2",
        "--set",
        "train.batch_size=2",
        "--set",
        "checkpoint.every=2",
        "--set",
        "logging.sample_every=0",
        "--set",
        "train.warmup_steps=0",
        "--device",
        "flex",
        "--init-from",
        run_s,
    ];
    // A model that is not the checkpoint's is refused, naming the key.
    let other = tmp.join("other");
    let mut args = base.to_vec();
    args.extend([
        "--set",
        "model.unet.transformer_depth=2",
        "--run-dir",
        other.to_str().unwrap(),
    ]);
    let (ok, err) = ldm_train(&args);
    assert!(!ok && err.contains("model.unet.transformer_depth"), "{err}");
    // The real fine-tune starts from the imported EMA weights and moves
    // them; it may change the schedule (here to cosine), not the network.
    let ft = tmp.join("ft");
    let mut args = base.to_vec();
    args.extend([
        "--set",
        "model.beta_schedule=\"cosine\"",
        "--run-dir",
        ft.to_str().unwrap(),
    ]);
    let (ok, err) = ldm_train(&args);
    assert!(ok, "{err}");
    assert!(
        err.contains("weights from") && err.contains("ema.safetensors"),
        "{err}"
    );
    let ema = tensors(&ck(&run).join("ema.safetensors"));
    let raw = tensors(&ck(&run).join("model.safetensors"));
    let after = tensors(&ck(&ft).join("model.safetensors"));
    assert_eq!(
        ema.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    let max_diff = |a: &BTreeMap<String, Vec<f32>>| -> f32 {
        a.iter()
            .map(|(k, v)| {
                v.iter()
                    .zip(&after[k])
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max)
            })
            .fold(0.0, f32::max)
    };
    let (from_ema, from_raw) = (max_diff(&ema), max_diff(&raw));
    // Two AdamW steps at the base lr move weights by about 2·lr, no more;
    // the raw UNet of the file is a different perturbation, far away.
    assert!(from_ema > 0.0 && from_ema < 1e-2, "max change {from_ema}");
    assert!(from_raw > 10.0 * from_ema, "{from_raw} vs {from_ema}");
    // A cosine schedule has no single-file form; the diffusers one has it,
    // once: a second export into the same folder is refused.
    let ft_s = ft.to_str().unwrap();
    let (ok, err) = ldm_train(&[
        "export",
        "--checkpoint",
        ft_s,
        "--to",
        "ldm",
        "--out",
        "x.safetensors",
    ]);
    assert!(!ok && err.contains("is not Stable Diffusion's"), "{err}");
    let out = tmp.join("ft-diffusers");
    let out_s = out.to_str().unwrap();
    let export = [
        "export",
        "--checkpoint",
        ft_s,
        "--to",
        "diffusers",
        "--out",
        out_s,
    ];
    let (ok, err) = ldm_train(&export);
    assert!(ok, "{err}");
    let sched: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("scheduler/scheduler_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sched["beta_schedule"], "squaredcos_cap_v2");
    let (ok, err) = ldm_train(&export);
    assert!(!ok && err.contains("exists and is not empty"), "{err}");
}
