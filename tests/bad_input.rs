//! Bad inputs end in one clear `error:` line naming the culprit, never a panic.

mod common;
use common::*;

fn run_with(run: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut e = vec!["train.max_steps=2", "loss.perceptual_weight=0"];
    e.extend_from_slice(extra);
    train(run, &e, false)
}

#[test]
fn config_errors_name_the_key() {
    let d = tmp("badcfg");
    clean_error(&run_with(&d.join("r1"), &["model.chanels=4"]), &["chanels"]);
    clean_error(
        &run_with(&d.join("r2"), &["train.batch_size=\"two\""]),
        &["train.batch_size"],
    );
    clean_error(&run_with(&d.join("r3"), &["data.size=30"]), &["data.size"]);
    // Scale augmentation's range must not end below the base scale (64 here).
    clean_error(
        &run_with(&d.join("r4"), &["data.resize_max=48"]),
        &["data.resize_max", "48"],
    );
    let cfg = d.join("broken.toml");
    std::fs::write(&cfg, "[model\nch = 1").unwrap();
    let out = ldm(&[
        "autoencoder".into(),
        "--config".into(),
        cfg.display().to_string(),
    ]);
    clean_error(&out, &["broken.toml", "invalid TOML"]);
    let out = ldm(&["autoencoder".into(), "--config".into(), "nope.toml".into()]);
    clean_error(&out, &["nope.toml"]);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn data_errors_name_the_folder() {
    let d = tmp("baddata");
    let missing = d.join("no-such-folder");
    let o = format!("data.root=\"{}\"", missing.display());
    clean_error(&run_with(&d.join("r1"), &[&o]), &["no-such-folder"]);
    let corrupt = d.join("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    for i in 0..3 {
        std::fs::write(corrupt.join(format!("img{i}.png")), b"not a png at all").unwrap();
    }
    let o = format!("data.root=\"{}\"", corrupt.display());
    clean_error(&run_with(&d.join("r2"), &[&o]), &["corrupt"]);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn checkpoint_errors_name_the_file() {
    let d = tmp("badckpt");
    let run = d.join("run");
    ok(&run_with(&run, &[]));
    let ck = run.join("checkpoints/step-00000002");

    // Starting fresh over an existing run is refused (nothing is overwritten).
    clean_error(&run_with(&run, &[]), &["--resume"]);

    // Another kind of checkpoint.
    let other = d.join("other");
    copy_dir(&ck, &other);
    let state = std::fs::read_to_string(other.join("state.json")).unwrap();
    std::fs::write(
        other.join("state.json"),
        state.replace("autoencoder-kl", "diffusion"),
    )
    .unwrap();
    let eval = |path: &std::path::Path| eval(path, &["--limit", "1"]);
    clean_error(&eval(&other), &["diffusion", "autoencoder-kl"]);

    // A truncated weight file.
    let trunc = d.join("trunc");
    copy_dir(&ck, &trunc);
    let m = trunc.join("model.safetensors");
    let bytes = std::fs::read(&m).unwrap();
    std::fs::write(&m, &bytes[..bytes.len() / 3]).unwrap();
    clean_error(&eval(&trunc), &["model.safetensors", "truncated"]);

    // Not a checkpoint at all.
    clean_error(&eval(&d.join("nothing-here")), &["nothing-here"]);

    // Weights of another architecture under a valid digest.
    let wrong = d.join("wrong");
    ok(&run_with(&wrong, &["model.ch_mult=[1, 2]", "data.size=32"]));
    let wrong_ck = wrong.join("checkpoints/step-00000002");
    let mixed = d.join("mixed");
    copy_dir(&ck, &mixed);
    std::fs::copy(
        wrong_ck.join("model.safetensors"),
        mixed.join("model.safetensors"),
    )
    .unwrap();
    // Keep our config but take the other model's digest, as a hand-edited checkpoint would.
    let read = |p: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let mut state = read(mixed.join("state.json"));
    state["files"]["model.safetensors"] =
        read(wrong_ck.join("state.json"))["files"]["model.safetensors"].clone();
    std::fs::write(mixed.join("state.json"), state.to_string()).unwrap();
    clean_error(&eval(&mixed), &["model.safetensors"]);
    let _ = std::fs::remove_dir_all(d);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
