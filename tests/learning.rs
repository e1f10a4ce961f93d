//! Training on real photos learns: the reconstruction loss falls, the
//! checkpoint evaluates, and reconstructions are written.
//!
//! The bars hold across seeds with a margin, not only for the config's seed:
//! float results depend on the CPU (see the README on exact resume), so the
//! trajectory of one seed differs between machines as a change of seed does.
//! `learning_spread` (ignored; `cargo test --release -p ldm-train --test
//! learning -- --ignored --nocapture`) re-measures the figures quoted in
//! `common::KL_MAX_RATIO` and below.

mod common;
use common::*;

/// Bars of the VQ recipe (`tiny/vq-f4.toml`, Adam (0.9, 0.999)), seeds 0–4
/// and 23:
/// - Flex, this machine (Intel Xeon): L1 ratio 0.694–0.842 (0.842, 0.825,
///   0.797, 0.694, 0.753, 0.815), PSNR 12.84–14.34, codes used on the
///   held-out photos 371–440 of 1024;
/// - Flex shown an AMD EPYC core's caches: ratio 0.694–0.842, PSNR
///   12.85–14.36, codes 377–449;
/// - libtorch, this machine: ratio 0.660–0.822, PSNR 13.57–15.10, codes
///   266–551.
///
/// After one step the PSNR is 11.48. (With the former Adam (0.5, 0.9) the
/// ratio was 0.680–0.756: the GAN betas move a VQ model faster in its first
/// 80 steps.) Margins: 0.078 in ratio, 0.64 dB, and a collapse to under 100
/// codes.
const VQ_MAX_RATIO: f64 = 0.92;
const VQ_MIN_PSNR: f64 = 12.2;
const VQ_MIN_CODES: u64 = 100;

#[test]
fn loss_falls_and_eval_reports() {
    let l = learn("tiny/kl-f4.toml", "learn-kl", "flex", &[]);
    l.assert_learned(KL_MAX_RATIO, KL_MIN_PSNR);
    let rfid = l.eval["rfid"].as_f64().expect("rFID is reported");
    assert!(rfid.is_finite() && rfid >= 0.0, "rFID {rfid}");
    assert!(l.eval["codes"].is_null(), "a KL model has no codebook");
}

/// The VQ model learns, and eval reports its code usage.
#[test]
fn vq_loss_falls_and_eval_reports_code_usage() {
    let l = learn("tiny/vq-f4.toml", "learn-vq", "flex", &[]);
    l.assert_learned(VQ_MAX_RATIO, VQ_MIN_PSNR);
    let codes = &l.eval["codes"];
    assert_eq!(codes["n_embed"].as_u64(), Some(1024));
    let used = codes["used"].as_u64().unwrap();
    assert!(
        used >= VQ_MIN_CODES,
        "the codebook collapsed to {used} code(s)"
    );
}

/// Prints the figures behind the bars for seeds `LDM_SEEDS` (default
/// 0,1,2,3,4,23) on `LDM_DEVICE` (default flex). Run it under
/// `scripts/fake_cpu_caches.sh` to see another CPU's trajectories.
#[test]
#[ignore = "measurement: ~10 min on 2 cores"]
fn learning_spread() {
    let seeds = std::env::var("LDM_SEEDS").unwrap_or_else(|_| "0,1,2,3,4,23".into());
    let device = std::env::var("LDM_DEVICE").unwrap_or_else(|_| "flex".into());
    for config in ["tiny/kl-f4.toml", "tiny/vq-f4.toml"] {
        for seed in seeds.split(',') {
            let set = format!("train.seed={seed}");
            let l = learn(config, &format!("spread-{seed}"), &device, &[&set]);
            println!(
                "{config} {device} seed {seed}: rec_loss {:.4} -> {:.4} (ratio {:.3}), PSNR {:.2}, codes used {}",
                l.first,
                l.last,
                l.ratio(),
                l.psnr(),
                l.eval["codes"]["used"]
            );
        }
    }
}
