//! Text-to-image through the binary, on a small captioned set cut from the
//! real Tux Paint stamps (sidecar captions, a few with two lines): the
//! jointly trained text transformer resumes bit-exactly and carries the
//! reference keys and its tokenizer; the frozen MiniLM trains the UNet alone;
//! `sample --prompt/--negative-prompt` writes a row per prompt; and bad
//! captions, tokenizer files and prompts are one-line errors or warnings.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Stamps in the test set.
const STAMPS: usize = 24;

/// Every file with extension `ext` below `dir`, sorted.
fn files_below(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `<dir>/<category>/<name>.png + .txt` copies of the first [`STAMPS`]
/// captioned training stamps; every fourth gets a second caption line.
fn captioned_stamps(dir: &Path) -> PathBuf {
    let src = repo().join("datasets/tux-stamps/train");
    assert!(
        src.is_dir(),
        "{} is missing: run `bash scripts/setup.sh` first",
        src.display()
    );
    // Spread over the whole set, so the stamps come from several category
    // folders (retrieval scores folders too).
    let pngs = files_below(&src, "png");
    let stride = pngs.len() / STAMPS;
    for (k, png) in pngs.iter().step_by(stride).take(STAMPS).enumerate() {
        let rel = png.strip_prefix(&src).unwrap();
        let to = dir.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(png, &to).unwrap();
        let mut caption = std::fs::read_to_string(png.with_extension("txt")).unwrap();
        if k % 4 == 0 {
            caption = format!("{}\nA picture of {}\n", caption.trim(), rel.display());
        }
        std::fs::write(to.with_extension("txt"), caption).unwrap();
    }
    dir.to_path_buf()
}

/// The captioned set and a 2-step tiny autoencoder on it.
struct Fixture {
    data: PathBuf,
    ae: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = tmp("txt2img-fixture");
        let data = captioned_stamps(&base.join("stamps"));
        let ae = base.join("ae");
        let sets = [
            format!("data.root=\"{}\"", data.display()),
            format!("data.val_root=\"{}\"", data.display()),
            "train.batch_size=4".into(),
            "train.max_steps=2".into(),
            "checkpoint.every=2".into(),
            "logging.val_every=0".into(),
            "logging.image_every=0".into(),
            "loss.perceptual_weight=0".into(),
        ];
        ok(&ldm(&run_args(
            "autoencoder",
            "tiny/kl-f4-tux.toml",
            &ae,
            &sets,
        )));
        Fixture { data, ae }
    })
}

/// `diffusion` on `config` shrunk to test size (32² images → 8² latents).
fn train_text(
    config: &str,
    run: &Path,
    extra: &[impl AsRef<str>],
    resume: bool,
) -> std::process::Output {
    let f = fixture();
    let mut sets: Vec<String> = vec![
        format!("data.root=\"{}\"", f.data.display()),
        format!("autoencoder.checkpoint=\"{}\"", f.ae.display()),
        format!("data.cache_dir=\"{}\"", run.join("cache").display()),
        "data.size=32".into(),
        "model.unet.image_size=8".into(),
        "model.unet.model_channels=32".into(),
        "model.unet.num_head_channels=16".into(),
        "train.batch_size=8".into(),
        "train.warmup_steps=2".into(),
        "checkpoint.every=2".into(),
        "logging.every=1".into(),
        "logging.sample_every=0".into(),
        "logging.sample_steps=3".into(),
        "logging.sample_n=2".into(),
    ];
    sets.extend(extra.iter().map(|s| s.as_ref().to_string()));
    let mut args = run_args("diffusion", config, run, &sets);
    if resume {
        args.push("--resume".into());
    }
    ldm(&args)
}

/// The jointly trained transformer, shrunk.
const SMALL_TEXT: [&str; 5] = [
    "conditioning.n_embed=32",
    "model.unet.context_dim=32",
    "conditioning.n_layer=1",
    "conditioning.heads=2",
    "conditioning.dim_head=16",
];

/// [`SMALL_TEXT`] and `extra`.
fn with_small(extra: &[&str]) -> Vec<String> {
    SMALL_TEXT
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

fn sample(run: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = vec!["sample".into(), "--checkpoint".into()];
    args.push(run.display().to_string());
    args.extend(["--out".to_string(), out.display().to_string()]);
    args.extend(["--seed", "3"].iter().chain(extra).map(|s| s.to_string()));
    ldm(&args)
}

#[test]
fn text_transformer_resumes_exactly_and_samples_prompts() {
    let base = tmp("txt2img-transformer");
    let (a, b) = (base.join("a"), base.join("b"));
    // Accumulation makes the caption draw's data position matter.
    let run = |dir: &Path, n: &str, resume: bool| {
        let steps = format!("train.max_steps={n}");
        let e = with_small(&["train.accumulate_grad_batches=2", &steps]);
        ok(&train_text("tiny/txt2img-tux.toml", dir, &e, resume));
    };
    run(&a, "4", false);
    run(&b, "2", false);
    run(&b, "4", true);
    let ck = "checkpoints/step-00000004";
    let read = |r: &Path, f: &str| std::fs::read(r.join(ck).join(f)).unwrap();
    for f in ["model.safetensors", "ema.safetensors", "tokenizer.json"] {
        assert!(read(&a, f) == read(&b, f), "{f} differs after resume");
    }
    assert_eq!(
        metrics_after(&a, 0),
        metrics_after(&b, 0),
        "logged losses differ after resume"
    );
    let weights = String::from_utf8_lossy(&read(&a, "model.safetensors")).to_string();
    for key in [
        "cond_stage_model.transformer.token_emb.weight",
        "cond_stage_model.transformer.pos_emb.emb.weight",
        "cond_stage_model.transformer.attn_layers.layers.0.1.to_q.weight",
        "cond_stage_model.transformer.attn_layers.layers.1.1.net.2.weight",
        "cond_stage_model.transformer.norm.weight",
    ] {
        assert!(weights.contains(key), "{key} missing from the checkpoint");
    }

    // A model that moved far from its zero-initialised attention outputs
    // (large steps), so the prompt visibly reaches the pixels.
    let c = base.join("c");
    let fast = with_small(&[
        "train.max_steps=6",
        "train.base_lr=1e-2",
        "train.warmup_steps=0",
    ]);
    ok(&train_text("tiny/txt2img-tux.toml", &c, &fast, false));
    let a = c;

    // A row per prompt, a folder per prompt, deterministic for a seed.
    let out = base.join("samples");
    let args = [
        "--prompt",
        "A horse.",
        "--prompt",
        "A red apple.",
        "--negative-prompt",
        "",
        "--guidance",
        "5",
        "--sampler",
        "dpmpp-2m",
        "--steps",
        "4",
        "--n",
        "2",
    ];
    ok(&sample(&a, &out, &args));
    for f in ["grid.png", "A horse./0001.png", "A red apple./0000.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let grid = image::open(out.join("grid.png")).unwrap();
    // 2 columns × 2 rows of 32² tiles, 2 px padding around and between.
    assert_eq!((grid.width(), grid.height()), (70, 70));
    let again = base.join("again");
    ok(&sample(&a, &again, &args));
    assert_eq!(
        std::fs::read(out.join("grid.png")).unwrap(),
        std::fs::read(again.join("grid.png")).unwrap()
    );
    // The prompt matters: another prompt from the same noise differs.
    let other = base.join("other");
    let mut swapped = args;
    swapped[1] = "A red apple.";
    ok(&sample(&a, &other, &swapped));
    assert_ne!(
        std::fs::read(out.join("A horse./0000.png")).unwrap(),
        std::fs::read(other.join("A red apple./0000.png")).unwrap(),
        "two prompts gave the same image from the same noise"
    );
    // So does the negative prompt, when guiding.
    let neg = base.join("neg");
    let mut negated = args;
    negated[5] = "A horse.";
    ok(&sample(&a, &neg, &negated));
    assert_ne!(
        std::fs::read(out.join("A horse./0000.png")).unwrap(),
        std::fs::read(neg.join("A horse./0000.png")).unwrap(),
        "the negative prompt changed nothing"
    );

    // Caption retrieval: N captions sampled, nearest images looked up; the
    // report's counts and chance rates follow from the data.
    let kept = base.join("retrieval");
    let retrieval = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "eval",
            "retrieval",
            "--checkpoint",
            &a.display().to_string(),
            "--data",
            &fixture().data.display().to_string(),
            "--n",
            "4",
            "--top-k",
            "3",
            "--steps",
            "2",
            "--guidance",
            "2",
            "--batch-size",
            "4",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        ldm(&args)
    };
    let o = retrieval(&["--out", &kept.display().to_string()]);
    ok(&o);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["captions"], 4, "{r}");
    assert_eq!(r["images"], STAMPS, "{r}");
    assert_eq!(r["k"], 3, "{r}");
    // The four picked captions each sit on exactly one of the 24 stamps.
    let chance = r["chance"]["top1"].as_f64().unwrap();
    assert!((chance - 1.0 / STAMPS as f64).abs() < 1e-9, "{r}");
    let chance_k = r["chance"]["top_k"].as_f64().unwrap();
    assert!((chance_k - 3.0 / STAMPS as f64).abs() < 1e-9, "{r}");
    let g = &r["group"];
    assert!(g["groups"].as_u64().unwrap() >= 2, "{r}");
    for (scores, key) in [
        (&r, "prompted"),
        (&r, "empty_prompt"),
        (g, "prompted"),
        (g, "empty_prompt"),
    ] {
        for rate in ["top1", "top_k"] {
            let v = scores[key][rate].as_f64().unwrap();
            assert!(
                (0.0..=1.0).contains(&v) && (v * 4.0).fract() == 0.0,
                "{key}.{rate}: {r}"
            );
        }
    }
    // A folder holds at least the caption's own stamp, usually more.
    for rate in ["top1", "top_k"] {
        let (c, gc) = (
            r["chance"][rate].as_f64().unwrap(),
            g["chance"][rate].as_f64().unwrap(),
        );
        assert!(gc >= c && gc <= 1.0, "chance.{rate}: {r}");
    }
    assert!(g["chance"]["top1"].as_f64().unwrap() > chance, "{r}");

    // The kept samples score as they were scored when drawn.
    let o = retrieval(&["--samples", &kept.display().to_string()]);
    ok(&o);
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["prompted", "empty_prompt", "chance", "group"] {
        assert_eq!(again[key], r[key], "{key}: {again} vs {r}");
    }
    assert!(again["guidance"].is_null(), "{again}");
    // A caption the data does not carry, and a missing sample: one line each.
    let captions = kept.join("captions.json");
    let good = std::fs::read_to_string(&captions).unwrap();
    std::fs::write(&captions, r#"["A unicorn.", "b", "c", "d"]"#).unwrap();
    clean_error(
        &retrieval(&["--samples", &kept.display().to_string()]),
        &["captions.json", "A unicorn."],
    );
    std::fs::write(&captions, good).unwrap();
    std::fs::remove_file(kept.join("empty/0003.png")).unwrap();
    clean_error(
        &retrieval(&["--samples", &kept.display().to_string()]),
        &["empty", "0000.png"],
    );

    // A prompt longer than 77 tokens is truncated with one warning naming it.
    let long = "a horse ".repeat(60);
    let o = sample(
        &a,
        &base.join("long"),
        &["--prompt", &long, "--n", "1", "--steps", "2"],
    );
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.lines().any(|l| l.starts_with("warning: prompt")
            && l.contains("a horse a horse")
            && l.contains("77-token context")),
        "{err}"
    );
    clean_error(
        &sample(&a, &base.join("x"), &["--class", "1"]),
        &["--class", "text-conditioned"],
    );
    clean_error(&sample(&a, &base.join("x"), &[]), &["--prompt"]);
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn frozen_minilm_conditions_and_stays_frozen() {
    let base = tmp("txt2img-minilm");
    let run = base.join("run");
    ok(&train_text(
        "tiny/txt2img-tux-minilm.toml",
        &run,
        &["train.max_steps=2"],
        false,
    ));
    let ck = run.join("checkpoints/step-00000002");
    let weights =
        String::from_utf8_lossy(&std::fs::read(ck.join("model.safetensors")).unwrap()).to_string();
    assert!(
        !weights.contains("cond_stage_model"),
        "the frozen encoder is not among the trained weights"
    );
    // The checkpoint carries the encoder it was trained with, unchanged.
    let cache = std::env::var_os("LDM_TRAIN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/ldm-train"));
    let minilm = cache.join("text/minilm");
    assert!(
        std::fs::read(ck.join("cond_stage.safetensors")).unwrap()
            == std::fs::read(minilm.join("model.safetensors")).unwrap()
    );
    let out = base.join("samples");
    ok(&sample(
        &run,
        &out,
        &[
            "--prompt",
            "A horse.",
            "--guidance",
            "3",
            "--steps",
            "3",
            "--n",
            "1",
        ],
    ));
    assert!(out.join("A horse./0000.png").is_file());
    // The frozen encoder's context reaches the pixels: after large steps
    // two prompts from the same noise give different images.
    let fast = base.join("fast");
    ok(&train_text(
        "tiny/txt2img-tux-minilm.toml",
        &fast,
        &[
            "train.max_steps=6",
            "train.base_lr=1e-2",
            "train.warmup_steps=0",
        ],
        false,
    ));
    let two = base.join("two");
    ok(&sample(
        &fast,
        &two,
        &[
            "--prompt",
            "A horse.",
            "--prompt",
            "A red apple.",
            "--guidance",
            "5",
            "--steps",
            "3",
            "--n",
            "1",
        ],
    ));
    assert_ne!(
        std::fs::read(two.join("A horse./0000.png")).unwrap(),
        std::fs::read(two.join("A red apple./0000.png")).unwrap(),
        "two prompts gave the same image from the same noise"
    );
    // A UNet whose context width is not the encoder's.
    clean_error(
        &train_text(
            "tiny/txt2img-tux-minilm.toml",
            &base.join("narrow"),
            &["model.unet.context_dim=32", "train.max_steps=1"],
            false,
        ),
        &["model.unet.context_dim", "384"],
    );
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn bad_text_inputs_are_one_line_errors() {
    let base = tmp("txt2img-bad");
    let f = fixture();
    let small = |extra: &[&str]| with_small(&[extra, &["train.max_steps=1"]].concat());

    // An empty caption file, named.
    let data = base.join("data");
    captioned_stamps(&data);
    let txts = files_below(&data, "txt");
    std::fs::write(&txts[3], " \n").unwrap();
    let root = format!("data.root=\"{}\"", data.display());
    let name = txts[3].file_name().unwrap().to_string_lossy().to_string();
    clean_error(
        &train_text(
            "tiny/txt2img-tux.toml",
            &base.join("empty"),
            &small(&[&root]),
            false,
        ),
        &["data.root", &name],
    );
    // Unreadable (not UTF-8) caption file, named.
    std::fs::write(&txts[3], [0xff, 0xfe, 0x41]).unwrap();
    clean_error(
        &train_text(
            "tiny/txt2img-tux.toml",
            &base.join("binary"),
            &small(&[&root]),
            false,
        ),
        &["data.root", &name],
    );
    // A tokenizer file that is missing, or not a tokenizer.
    clean_error(
        &train_text(
            "tiny/txt2img-tux.toml",
            &base.join("notok"),
            &small(&["conditioning.tokenizer_file=\"/no/such/tokenizer.json\""]),
            false,
        ),
        &["conditioning.tokenizer_file", "/no/such/tokenizer.json"],
    );
    let junk = base.join("junk.json");
    std::fs::write(&junk, "{\"not\": \"a tokenizer\"}").unwrap();
    let set = format!("conditioning.tokenizer_file=\"{}\"", junk.display());
    clean_error(
        &train_text(
            "tiny/txt2img-tux.toml",
            &base.join("junk"),
            &small(&[&set]),
            false,
        ),
        &["conditioning.tokenizer_file", "junk.json"],
    );
    // Text conditioning on images without captions.
    let uncaptioned = format!("data.root=\"{}\"", photos("train").display());
    clean_error(
        &train_text(
            "tiny/txt2img-tux.toml",
            &base.join("nocap"),
            &small(&[&uncaptioned]),
            false,
        ),
        &["data.root", "no captions"],
    );
    // Config mistakes name the key.
    clean_error(
        &train_text(
            "tiny/txt2img-tux.toml",
            &base.join("ctx"),
            &small(&["model.unet.context_dim=48"]),
            false,
        ),
        &["model.unet.context_dim", "n_embed"],
    );
    clean_error(
        &train_text(
            "tiny/txt2img-tux.toml",
            &base.join("key"),
            &small(&["conditioning.n_layers=2"]),
            false,
        ),
        &["conditioning", "n_layers"],
    );
    let _ = f;
    let _ = std::fs::remove_dir_all(base);
}
