//! The diffusion stage through the binary, on a small class-folder dataset cut
//! from the real Fashion-MNIST test split: exact resume (weights, EMA, logged
//! losses), the latent cache noticing a changed image, another autoencoder
//! and a damaged shard, sampling, a short learning run, and bad inputs.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ldm_data::LabelledImages;

/// Classes × images of the test dataset.
const CLASSES: usize = 3;
const PER_CLASS: usize = 16;

/// A class folder `<dir>/<name>/<k>.png` of the first Fashion-MNIST test
/// images of the first [`CLASSES`] classes.
fn fashion_classes(dir: &Path) -> PathBuf {
    let fm = repo().join("datasets/fashion-mnist");
    assert!(
        fm.is_dir(),
        "{} is missing: run `bash scripts/setup.sh` first",
        fm.display()
    );
    let src = LabelledImages::idx_dir(&fm, "t10k").unwrap();
    let names = src.class_names().to_vec();
    let mut count = [0; CLASSES];
    for i in 0..src.len() {
        let c = src.label(i);
        if c >= CLASSES || count[c] == PER_CLASS {
            continue;
        }
        let d = dir.join(names[c].replace('/', "-"));
        std::fs::create_dir_all(&d).unwrap();
        src.load_rgb(i)
            .unwrap()
            .save(d.join(format!("{:02}.png", count[c])))
            .unwrap();
        count[c] += 1;
        if count.iter().all(|&n| n == PER_CLASS) {
            break;
        }
    }
    dir.to_path_buf()
}

/// The shared fixtures: the dataset and a 4-step tiny autoencoder on it
/// (checkpoints at steps 2 and 4, so two different autoencoders exist).
struct Fixture {
    data: PathBuf,
    ae: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = tmp("diffusion-fixture");
        let data = fashion_classes(&base.join("classes"));
        let ae = base.join("ae");
        let sets = [
            format!("data.root=\"{}\"", data.display()),
            "train.batch_size=4".into(),
            "train.max_steps=4".into(),
            "checkpoint.every=2".into(),
            "checkpoint.keep_last=3".into(),
            "logging.val_every=0".into(),
            "logging.image_every=0".into(),
            "loss.perceptual_weight=0".into(),
        ];
        ok(&ldm(&run_args(
            "autoencoder",
            "tiny/kl-f4-fashion.toml",
            &ae,
            &sets,
        )));
        Fixture { data, ae }
    })
}

/// Overrides that shrink tiny/cin-fashion to test size, on the fixture.
fn small(run: &Path, extra: &[&str]) -> Vec<String> {
    let f = fixture();
    let mut sets: Vec<String> = vec![
        format!("data.root=\"{}\"", f.data.display()),
        format!("autoencoder.checkpoint=\"{}\"", f.ae.display()),
        format!("data.cache_dir=\"{}\"", run.join("cache").display()),
        "model.unet.model_channels=32".into(),
        "model.unet.num_head_channels=16".into(),
        "model.unet.context_dim=32".into(),
        "conditioning.embed_dim=32".into(),
        "train.batch_size=8".into(),
        "train.warmup_steps=2".into(),
        "checkpoint.every=2".into(),
        "logging.every=1".into(),
        "logging.sample_every=0".into(),
        "logging.sample_steps=5".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    sets
}

fn train_diffusion(run: &Path, extra: &[&str], resume: bool) -> std::process::Output {
    let mut args = run_args(
        "diffusion",
        "tiny/cin-fashion.toml",
        run,
        &small(run, extra),
    );
    if resume {
        args.push("--resume".into());
    }
    ldm(&args)
}

#[test]
fn resumed_diffusion_run_is_bit_identical() {
    let base = tmp("diffusion-resume");
    let (a, b) = (base.join("a"), base.join("b"));
    // Accumulation and flips make the data position and noise keys matter.
    let extra = ["train.accumulate_grad_batches=2", "data.hflip=true"];
    let with = |n: u64| {
        let mut e: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        e.push(format!("train.max_steps={n}"));
        e
    };
    let run = |dir: &Path, n: u64, resume: bool| {
        let e = with(n);
        let e: Vec<&str> = e.iter().map(String::as_str).collect();
        ok(&train_diffusion(dir, &e, resume));
    };
    run(&a, 4, false);
    run(&b, 2, false);
    run(&b, 4, true);
    let ck = "checkpoints/step-00000004";
    let read = |r: &Path, f: &str| std::fs::read(r.join(ck).join(f)).unwrap();
    for f in [
        "model.safetensors",
        "ema.safetensors",
        "first_stage.safetensors",
    ] {
        assert!(read(&a, f) == read(&b, f), "{f} differs after resume");
    }
    assert_eq!(
        read(&a, "optimizer.mpk").len(),
        read(&b, "optimizer.mpk").len()
    );
    let (la, lb) = (metrics_after(&a, 0), metrics_after(&b, 0));
    assert_eq!(la.len(), 4);
    assert_eq!(la, lb, "logged losses differ after resume");
    let state = String::from_utf8(read(&a, "state.json")).unwrap();
    assert!(
        state.contains("\"ema_updates\": 8"),
        "EMA follows every micro-batch: {state}"
    );
    assert!(state.contains("\"scale_factor\""), "{state}");
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn cache_notices_changed_images_autoencoders_and_damage() {
    let base = tmp("diffusion-cache");
    // Its own copy of the data, since one image gets rewritten.
    let data = fashion_classes(&base.join("classes"));
    let run = base.join("run");
    let cache = |extra: &[&str]| {
        let mut sets = small(&run, extra);
        sets.push(format!("data.root=\"{}\"", data.display()));
        let out = ldm(&run_args(
            "cache-latents",
            "tiny/cin-fashion.toml",
            &run,
            &sets,
        ));
        ok(&out);
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let first = cache(&[]);
    assert!(
        first.contains(&format!("{} items", CLASSES * PER_CLASS)),
        "{first}"
    );
    let again = cache(&[]);
    assert!(
        !again.contains("re-encoding"),
        "an unchanged cache is reused: {again}"
    );

    // One image's pixels change: its shard is re-encoded, named.
    let class0 = std::fs::read_dir(&data)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let img = class0.join("03.png");
    let mut pixels = image::open(&img).unwrap().to_rgb8();
    pixels.put_pixel(5, 5, image::Rgb([255, 0, 0]));
    pixels.save(&img).unwrap();
    let changed = cache(&[]);
    assert!(
        changed.contains("1 image(s)") && changed.contains("re-encoding shard-00000"),
        "{changed}"
    );

    // A truncated shard is reported and re-encoded.
    let shard = run.join("cache/shard-00000.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let damaged = cache(&[]);
    assert!(
        damaged.contains("shard-00000") && damaged.contains("truncated"),
        "{damaged}"
    );
    assert_eq!(std::fs::read(&shard).unwrap().len(), bytes.len());

    // Another autoencoder (the same run at step 2) re-encodes everything.
    let f = fixture();
    let other = format!(
        "autoencoder.checkpoint=\"{}\"",
        f.ae.join("checkpoints/step-00000002").display()
    );
    let swapped = cache(&[&other]);
    assert!(swapped.contains("another autoencoder"), "{swapped}");
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn short_run_learns_and_samples_are_written() {
    let base = tmp("diffusion-learn");
    let run = base.join("run");
    ok(&train_diffusion(
        &run,
        &[
            "train.max_steps=60",
            "train.base_lr=1e-3",
            "checkpoint.every=60",
        ],
        false,
    ));
    let losses: Vec<f64> = metrics_after(&run, 0)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["loss"].as_f64().unwrap()
        })
        .collect();
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (head, tail) = (mean(&losses[..10]), mean(&losses[losses.len() - 10..]));
    // Measured with train.seed 1–5 (Flex): tail/head 0.208–0.243.
    assert!(
        tail < 0.4 * head,
        "loss did not fall: {head:.3} → {tail:.3}"
    );

    let out_dir = base.join("samples");
    let sample = |out: &Path, extra: &[&str]| {
        let mut args: Vec<String> = ["sample", "--checkpoint"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(run.display().to_string());
        args.extend(["--out".to_string(), out.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        ldm(&args)
    };
    let fm_names = LabelledImages::idx_dir(&repo().join("datasets/fashion-mnist"), "t10k").unwrap();
    let second = fm_names.class_names()[1].clone();
    let args = [
        "--class",
        "0",
        "--class",
        second.as_str(),
        "--n",
        "2",
        "--steps",
        "5",
        "--guidance",
        "2",
        "--seed",
        "3",
    ];
    ok(&sample(&out_dir, &args));
    let grid = std::fs::read(out_dir.join("grid.png")).unwrap();
    assert!(out_dir
        .join(second.replace('/', "-"))
        .join("0001.png")
        .is_file());
    // DDIM with η = 0 is deterministic for a seed.
    let again = base.join("again");
    ok(&sample(&again, &args));
    assert_eq!(std::fs::read(again.join("grid.png")).unwrap(), grid);
    // Noise is keyed by sample, not batch: one class alone, one sample per
    // batch, draws the same images as its row among both classes.
    let alone = base.join("alone");
    let mut one = args.to_vec();
    one.drain(0..2);
    ok(&sample(
        &alone,
        &[one.as_slice(), &["--batch-size", "1"]].concat(),
    ));
    let class = second.replace('/', "-");
    for k in ["0000.png", "0001.png"] {
        let a = image::open(out_dir.join(&class).join(k)).unwrap().to_rgb8();
        let b = image::open(alone.join(&class).join(k)).unwrap().to_rgb8();
        let worst = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap();
        assert!(
            worst <= 2,
            "{k}: batched and alone differ by {worst} levels"
        );
    }
    for sampler in ["ddpm", "plms", "dpmpp-2m"] {
        ok(&sample(
            &base.join(sampler),
            &[
                "--class",
                "1",
                "--n",
                "1",
                "--steps",
                "5",
                "--sampler",
                sampler,
            ],
        ));
    }

    // FID of a few samples, and of a folder of samples, against the data.
    let eval = |extra: &[&str]| {
        let mut args: Vec<String> = ["eval", "diffusion", "--checkpoint"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(run.display().to_string());
        args.extend(["--data".to_string(), fixture().data.display().to_string()]);
        args.extend(
            ["--real-limit", "6", "--batch-size", "3", "--steps", "3"]
                .iter()
                .map(|s| s.to_string()),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        ldm(&args)
    };
    let sampled = eval(&["--n", "6", "--guidance", "2"]);
    ok(&sampled);
    let report: serde_json::Value = serde_json::from_slice(&sampled.stdout).unwrap();
    let fid = report["scores"][0]["fid"].as_f64().unwrap();
    assert!(fid.is_finite() && fid > 0.0, "{report}");
    assert_eq!(report["scores"][0]["samples"], 6);
    let folder = base.join("again-samples");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::rename(again.join(second.replace('/', "-")), folder.join("b")).unwrap();
    let scored = eval(&["--samples", folder.to_str().unwrap()]);
    ok(&scored);
    let report: serde_json::Value = serde_json::from_slice(&scored.stdout).unwrap();
    assert_eq!(report["scores"][0]["samples"], 2, "{report}");
    // A whole `sample` output folder: its class folders, not its grid.
    let scored = eval(&["--samples", out_dir.to_str().unwrap()]);
    ok(&scored);
    let report: serde_json::Value = serde_json::from_slice(&scored.stdout).unwrap();
    assert_eq!(report["scores"][0]["samples"], 4, "{report}");

    // Bad sampling inputs: one line naming the option.
    clean_error(
        &sample(&base.join("x"), &["--class", "7"]),
        &["--class 7", "out of range"],
    );
    clean_error(
        &sample(&base.join("x"), &["--class", "Robe"]),
        &["--class Robe", "no such class"],
    );
    clean_error(
        &sample(&base.join("x"), &["--steps", "2000"]),
        &["--steps 2000"],
    );
    clean_error(
        &sample(&base.join("x"), &["--sampler", "euler"]),
        &["--sampler"],
    );
    let _ = std::fs::remove_dir_all(base);
}

/// The paths the class-conditional tests leave out: a VQ first stage (its
/// pre-quantization latents cached, quantized again when decoding) under an
/// unconditional model, and `adm` class conditioning (a label embedding added
/// to the time embedding, no cross-attention context), each trained a couple
/// of steps, resumable and sampled.
#[test]
fn vq_latents_and_adm_conditioning_train_and_sample() {
    let base = tmp("diffusion-vq-adm");
    let f = fixture();
    let with_sets = |mut args: Vec<String>, sets: &[String]| {
        for s in sets {
            args.extend(["--set".to_string(), s.clone()]);
        }
        args
    };
    let vq = base.join("vq");
    let data = format!("\"{}\"", f.data.display());
    let ae_sets: Vec<String> = vec![
        format!("data.root={data}"),
        format!("data.val_root={data}"),
        "train.batch_size=4".into(),
        "train.max_steps=2".into(),
        "checkpoint.every=2".into(),
        "logging.val_every=0".into(),
        "logging.image_every=0".into(),
        "loss.perceptual_weight=0".into(),
    ];
    ok(&ldm(&with_sets(
        ["autoencoder", "--config", "tiny/vq-f4.toml", "--run-dir"]
            .iter()
            .map(|s| s.to_string())
            .chain([vq.display().to_string()])
            .collect(),
        &ae_sets,
    )));
    let tiny = |run: &Path, ae: &Path, extra: &[&str]| -> Vec<String> {
        let mut sets: Vec<String> = vec![
            format!("data.root={data}"),
            format!("autoencoder.checkpoint=\"{}\"", ae.display()),
            format!("data.cache_dir=\"{}\"", run.join("cache").display()),
            "model.unet.model_channels=32".into(),
            "model.unet.num_head_channels=16".into(),
            "train.batch_size=8".into(),
            "train.max_steps=2".into(),
            "train.warmup_steps=1".into(),
            "checkpoint.every=2".into(),
            "logging.every=1".into(),
            "logging.sample_every=0".into(),
        ];
        sets.extend(extra.iter().map(|s| s.to_string()));
        run_args("diffusion", "tiny/uncond-fashion.toml", run, &sets)
    };
    let sample = |run: &Path, out: &Path, extra: &[&str]| {
        let mut args: Vec<String> = vec!["sample".into(), "--checkpoint".into()];
        args.push(run.display().to_string());
        args.extend(["--out".to_string(), out.display().to_string()]);
        args.extend(
            ["--steps", "3", "--seed", "5"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string()),
        );
        ldm(&args)
    };

    // Unconditional on VQ-f4 latents: 3 channels, as the autoencoder's embed_dim.
    let uncond = base.join("uncond");
    let vq_unet = ["model.unet.in_channels=3", "model.unet.out_channels=3"];
    ok(&ldm(&tiny(&uncond, &vq, &vq_unet)));
    let out = base.join("uncond-samples");
    ok(&sample(&uncond, &out, &["--n", "2"]));
    for name in ["0000.png", "0001.png", "grid.png"] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    clean_error(
        &sample(&uncond, &base.join("x"), &["--n", "1", "--guidance", "3"]),
        &["--guidance"],
    );
    // A UNet that does not take the autoencoder's latent channels.
    clean_error(
        &ldm(&tiny(&base.join("mismatch"), &vq, &[])),
        &["in_channels"],
    );

    // adm class conditioning on the KL fixture, resumed once.
    let adm = base.join("adm");
    let adm_sets = [
        "conditioning.kind=\"class\"",
        "model.conditioning_key=\"adm\"",
    ];
    let mut first = tiny(&adm, &f.ae, &adm_sets);
    first.extend(["--set".to_string(), "train.max_steps=1".to_string()]);
    ok(&ldm(&first));
    let mut resumed = tiny(&adm, &f.ae, &adm_sets);
    resumed.push("--resume".into());
    ok(&ldm(&resumed));
    let model = std::fs::read(adm.join("checkpoints/step-00000002/model.safetensors")).unwrap();
    let text = String::from_utf8_lossy(&model);
    assert!(
        text.contains("label_emb.weight"),
        "adm has a label embedding"
    );
    assert!(
        !text.contains("cond_stage_model"),
        "adm has no class embedder"
    );
    let out = base.join("adm-samples");
    ok(&sample(
        &adm,
        &out,
        &["--class", "2", "--n", "1", "--guidance", "2"],
    ));
    // Class 2 of a class folder: the third folder name in sorted order.
    let third = LabelledImages::class_folder(&f.data).unwrap().class_names()[2].clone();
    assert!(out.join(&third).join("0000.png").is_file(), "{third}");
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn bad_diffusion_inputs_are_one_line_errors() {
    let base = tmp("diffusion-bad");
    let run = base.join("run");
    let with = |set: &str| {
        let mut sets = small(&run, &[]);
        sets.push(set.to_string());
        ldm(&run_args("diffusion", "tiny/cin-fashion.toml", &run, &sets))
    };
    clean_error(
        &with("autoencoder.checkpoint=\"/no/such/run\""),
        &["autoencoder.checkpoint", "/no/such/run"],
    );
    clean_error(&with("model.unet.chanels=3"), &["model.unet", "chanels"]);

    // An unconditional model: --guidance has nothing to guide, and the
    // autoencoder key refuses a checkpoint that is not an autoencoder.
    let uncond = base.join("uncond");
    let mut sets = small(&uncond, &["train.max_steps=1"]);
    sets.retain(|s| !s.starts_with("model.unet.context_dim") && !s.starts_with("conditioning."));
    ok(&ldm(&run_args(
        "diffusion",
        "tiny/uncond-fashion.toml",
        &uncond,
        &sets,
    )));
    let out = ldm(&[
        "sample".into(),
        "--checkpoint".into(),
        uncond.display().to_string(),
        "--guidance".into(),
        "3".into(),
        "--out".into(),
        base.join("x").display().to_string(),
    ]);
    clean_error(&out, &["--guidance 3", "unconditional"]);
    let not_ae = format!("autoencoder.checkpoint=\"{}\"", uncond.display());
    clean_error(
        &with(&not_ae),
        &["autoencoder.checkpoint", "expected `autoencoder-kl`"],
    );
    let _ = std::fs::remove_dir_all(base);
}
