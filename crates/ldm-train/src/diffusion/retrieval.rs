//! `ldm-train eval retrieval`: does a text model draw what its prompt says?
//!
//! For each of N captions of the training data, one image is sampled from
//! the caption; the nearest training image to it (cosine similarity of FID
//! Inception pool features, 2048-d) counts as a hit when it carries that
//! caption. The hit rate is compared with the chance rate — the share of
//! training images that carry the caption, averaged over the captions — and
//! with the rate of a control that samples every caption from the empty
//! prompt (the same noise, no text), which is what the model draws when the
//! text is ignored. Top-k counts a hit anywhere among the k nearest.
//!
//! When the images sit in several top-level folders (the Tux Paint stamps'
//! animals, food, vehicles, …), the same samples are also scored a level
//! coarser: a group hit is a nearest image from a folder that holds an image
//! carrying the caption. A model that has learnt what kind of thing a
//! caption names, but not yet the exact stamp, shows there first.
//!
//! `--out DIR` keeps the samples as `DIR/captions.json` (the captions, in
//! order), `DIR/prompted/NNNN.png` and `DIR/empty/NNNN.png`; `--samples DIR`
//! scores such a folder instead of sampling — one written by another
//! implementation (the PyTorch twin `scripts/calibrate_txt2img.py`) or by an
//! earlier run. Samples are scored as the 8-bit images those files hold, so
//! re-scoring a folder gives the report it was written with.
//!
//! Why nearest-neighbour retrieval: a tiny model trained on a few hundred
//! captioned stamps reproduces them more than it composes them, so "is the
//! sample recognisably the stamp the caption names" is the honest question,
//! and it needs no captioning or CLIP model the machine cannot fetch.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use ldm_data::{open_source, u8_to_unit, unit_to_u8, ImageFolder, SourceKind};
use serde::Serialize;

use crate::autoencoder::eval::loader_of;
use crate::diffusion::condition::Conditions;
use crate::diffusion::eval::features_of;
use crate::diffusion::load::load_diffusion;
use crate::diffusion::sample::{sample_images, write_batch};
use crate::diffusion::sampler::SampleSpec;
use crate::shared::assets;
use crate::shared::fid::FeatureSet;
use crate::shared::progress;

/// Arguments of `ldm-train eval retrieval`.
#[derive(Clone, Debug)]
pub struct RetrievalArgs {
    /// The text-conditioned diffusion checkpoint.
    pub checkpoint: PathBuf,
    /// Captioned images to retrieve from (usually the training data).
    pub data: PathBuf,
    /// Captions to sample (spread evenly over the sorted distinct captions;
    /// 0 = all).
    pub n: usize,
    /// The k of top-k.
    pub top_k: usize,
    /// How to sample.
    pub spec: SampleSpec,
    /// Seed of the samples' noise.
    pub seed: u64,
    /// Images per sampling / Inception batch.
    pub batch: usize,
    /// Also write the samples here (captions.json, prompted/, empty/).
    pub out: Option<PathBuf>,
    /// Score this folder (the layout `out` writes) instead of sampling.
    pub samples: Option<PathBuf>,
}

/// Hit rates of one set of samples.
#[derive(Debug, Serialize, PartialEq)]
pub struct Rates {
    /// Share of captions whose sample's nearest image carries the caption.
    pub top1: f64,
    /// Same, anywhere among the `top_k` nearest.
    pub top_k: f64,
}

/// The rates of one way of judging a hit, for both sample sets and chance.
#[derive(Debug, Serialize)]
pub struct Scores {
    /// Samples drawn from their captions.
    pub prompted: Rates,
    /// The same noise sampled from the empty prompt (the text ignored).
    pub empty_prompt: Rates,
    /// Expected rates of a sample that lands on a random image.
    pub chance: Rates,
}

/// Scores at the level of top-level folders.
#[derive(Debug, Serialize)]
pub struct GroupScores {
    /// Distinct top-level folders (images at the root form one more).
    pub groups: usize,
    /// Hit = a nearest image shares a folder with an image of the caption.
    #[serde(flatten)]
    pub scores: Scores,
}

/// What `eval retrieval` reports.
#[derive(Debug, Serialize)]
pub struct RetrievalReport {
    /// Captions sampled.
    pub captions: usize,
    /// Images searched.
    pub images: usize,
    /// The k of `top_k`.
    pub k: usize,
    /// Guidance scale of the samples (none when a folder was scored).
    pub guidance: Option<f64>,
    /// Hit = a nearest image carries the caption.
    #[serde(flatten)]
    pub caption: Scores,
    /// The same samples judged by folder; absent when all images share one.
    pub group: Option<GroupScores>,
    /// Seconds in all.
    pub seconds: f64,
}

/// The captions of a samples folder, in sample order.
const CAPTIONS_FILE: &str = "captions.json";
/// Sub-folder of the samples drawn from their captions.
const PROMPTED: &str = "prompted";
/// Sub-folder of the control samples drawn from the empty prompt.
const EMPTY: &str = "empty";

/// File name of sample `i` in a samples folder.
fn sample_file(i: usize) -> String {
    format!("{i:04}.png")
}

fn write_captions(dir: &Path, prompts: &[String]) -> Result<()> {
    let path = dir.join(CAPTIONS_FILE);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(&path, serde_json::to_string_pretty(prompts)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_captions(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(CAPTIONS_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--samples: cannot read {}", path.display()))?;
    let prompts: Vec<String> = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a JSON list of captions ({e})", path.display()))?;
    if prompts.is_empty() {
        bail!("{}: no captions", path.display());
    }
    Ok(prompts)
}

/// `n` captions spread evenly over `all` (sorted, distinct); all when `n`
/// is 0 or covers them.
pub fn pick_captions(all: &[String], n: usize) -> Vec<String> {
    if n == 0 || n >= all.len() {
        return all.to_vec();
    }
    (0..n).map(|i| all[i * all.len() / n].clone()).collect()
}

/// A feature set's rows as f32 (exactly the values the network produced),
/// row-normalised.
fn normalised_rows(set: &FeatureSet) -> Vec<f32> {
    let rows = set.rows().iter().map(|&v| v as f32).collect();
    normalised(rows, set.dim())
}

/// Row-normalised features, so a dot product is the cosine similarity.
fn normalised(mut rows: Vec<f32>, dim: usize) -> Vec<f32> {
    for r in rows.chunks_exact_mut(dim) {
        let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        r.iter_mut().for_each(|v| *v /= norm);
    }
    rows
}

/// Indices of the `k` rows of `bank` most similar to `query` (best first).
pub fn nearest(bank: &[f32], dim: usize, query: &[f32], k: usize) -> Vec<usize> {
    let mut sims: Vec<(f32, usize)> = bank
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, r)| (r.iter().zip(query).map(|(a, b)| a * b).sum(), i))
        .collect();
    sims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    sims.into_iter().take(k).map(|(_, i)| i).collect()
}

/// Top-1 and top-k hit rates of `queries` (one feature row per caption)
/// against `bank`, where `carries(c, i)` says image `i` has caption `c`.
pub fn hit_rates(
    bank: &[f32],
    dim: usize,
    queries: &[f32],
    k: usize,
    carries: &dyn Fn(usize, usize) -> bool,
) -> Rates {
    let n = queries.len() / dim;
    let (mut top1, mut topk) = (0usize, 0usize);
    for (c, q) in queries.chunks_exact(dim).enumerate() {
        let near = nearest(bank, dim, q, k);
        top1 += usize::from(near.first().is_some_and(|&i| carries(c, i)));
        topk += usize::from(near.iter().any(|&i| carries(c, i)));
    }
    Rates {
        top1: top1 as f64 / n as f64,
        top_k: topk as f64 / n as f64,
    }
}

/// Expected rates of `k` distinct uniformly random images out of `total`,
/// where query `c` has `relevant[c]` relevant images: `m / total` for top-1
/// and `1 − C(total − m, k) / C(total, k)` for top-k, averaged.
pub fn chance_rates(total: usize, k: usize, relevant: &[usize]) -> Rates {
    let total = total as f64;
    let (mut one, mut many) = (0.0, 0.0);
    for &m in relevant {
        let m = m as f64;
        one += m / total;
        let miss: f64 = (0..k)
            .map(|j| ((total - m - j as f64) / (total - j as f64)).max(0.0))
            .product();
        many += 1.0 - miss;
    }
    let n = relevant.len() as f64;
    Rates {
        top1: one / n,
        top_k: many / n,
    }
}

/// The top-level folder of `name` below `root` ("" for a file at the root).
fn group_of(root: &Path, name: &Path) -> String {
    let rel = name.strip_prefix(root).unwrap_or(name);
    let mut parts = rel.components();
    match (parts.next(), parts.next()) {
        (Some(first), Some(_)) => first.as_os_str().to_string_lossy().into_owned(),
        _ => String::new(),
    }
}

/// Runs the evaluation.
pub fn run<B: Backend>(a: RetrievalArgs, device: &B::Device) -> Result<RetrievalReport> {
    let t0 = Instant::now();
    if a.batch == 0 || a.top_k == 0 {
        bail!("--batch-size and --top-k: must be at least 1");
    }
    let ld = load_diffusion::<B>(&a.checkpoint, true, device)?;
    if !ld.model.text {
        bail!(
            "eval retrieval: {} is not a text-conditioned model",
            a.checkpoint.display()
        );
    }
    let source =
        open_source(&a.data, SourceKind::Auto, None).map_err(|e| anyhow::anyhow!("--data: {e}"))?;
    let captions: Vec<Vec<String>> = (0..source.len())
        .map(|i| source.captions(i).to_vec())
        .collect();
    let groups: Vec<String> = (0..source.len())
        .map(|i| group_of(source.root(), &source.name(i)))
        .collect();
    if captions.iter().all(Vec::is_empty) {
        bail!("--data: {} has no captions", a.data.display());
    }
    let mut distinct: Vec<String> = captions.iter().flatten().cloned().collect();
    distinct.sort();
    distinct.dedup();
    // A kept folder's captions are checked before the minute of features.
    let kept_prompts = match &a.samples {
        Some(dir) => {
            let prompts = read_captions(dir)?;
            if let Some(c) = prompts.iter().find(|p| !distinct.contains(p)) {
                bail!(
                    "{}: caption {c:?} is on no image of --data {}",
                    dir.join(CAPTIONS_FILE).display(),
                    a.data.display()
                );
            }
            Some(prompts)
        }
        None => None,
    };
    let net = assets::inception::load::<B>("", device)?;
    let dim = 2048;

    // The bank: every readable image, preprocessed as the model's data.
    let transform = ld.cfg.data.transform();
    let mut loader = loader_of(source, transform.clone(), a.batch)?;
    let (mut bank, mut bank_items) = (FeatureSet::new(dim), Vec::new());
    let pb = progress::bar(captions.len() as u64, 0, "images");
    while let Some(b) = loader.next_batch()? {
        let [n, _, h, w] = b.shape();
        features_of(&net, b.images, n, h, w, device, &mut bank);
        bank_items.extend(b.indices);
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    let bank = normalised_rows(&bank);

    let (prompts, prompted, empty) = match (&a.samples, kept_prompts) {
        (Some(dir), Some(prompts)) => {
            let read = |tag: &str| -> Result<Vec<f32>> {
                let mut out = FeatureSet::new(dim);
                let sub = dir.join(tag);
                let src = ImageFolder::scan(&sub).map_err(|e| anyhow::anyhow!("--samples: {e}"))?;
                let want: Vec<PathBuf> = (0..prompts.len())
                    .map(|i| sub.join(sample_file(i)))
                    .collect();
                if src.paths() != want {
                    bail!(
                        "--samples {}: expected exactly {} images named 0000.png … (one per caption of {CAPTIONS_FILE}), found {}",
                        sub.display(),
                        prompts.len(),
                        src.len()
                    );
                }
                let mut l = loader_of(src, transform.clone(), a.batch)?;
                let mut read = 0;
                while let Some(b) = l.next_batch()? {
                    let [n, _, h, w] = b.shape();
                    features_of(&net, b.images, n, h, w, device, &mut out);
                    read += n;
                }
                if read != prompts.len() {
                    bail!(
                        "--samples {}: only {read} of {} images could be read",
                        sub.display(),
                        prompts.len()
                    );
                }
                Ok(normalised_rows(&out))
            };
            let (prompted, empty) = (read(PROMPTED)?, read(EMPTY)?);
            (prompts, prompted, empty)
        }
        _ => {
            let prompts = pick_captions(&distinct, a.n);
            if let Some(dir) = &a.out {
                write_captions(dir, &prompts)?;
            }
            // One sample per caption, and the control from the empty prompt;
            // sample k uses the noise of id k in both.
            let ids: Vec<usize> = (0..prompts.len()).collect();
            let sampled = |conds: Conditions, tag: &str| -> Result<Vec<f32>> {
                let mut out = FeatureSet::new(dim);
                let pb = progress::bar(ids.len() as u64, 0, tag);
                sample_images(
                    &ld.sampling(),
                    &a.spec,
                    Some(&conds),
                    &ids,
                    a.seed,
                    a.batch,
                    device,
                    |start, v, (h, w)| {
                        let n = v.len() / (3 * h * w);
                        if let Some(dir) = &a.out {
                            write_batch(&dir.join(tag), None, start, v, (h, w), sample_file)?;
                        }
                        // Scored as saved, so `--samples` on `--out` agrees.
                        let saved = v.iter().map(|&x| u8_to_unit(unit_to_u8(x))).collect();
                        features_of(&net, saved, n, h, w, device, &mut out);
                        pb.inc(n as u64);
                        Ok(())
                    },
                )?;
                pb.finish_and_clear();
                Ok(normalised_rows(&out))
            };
            let prompted = sampled(Conditions::Prompts(prompts.clone()), PROMPTED)?;
            let empty = sampled(
                Conditions::Prompts(vec![String::new(); prompts.len()]),
                EMPTY,
            )?;
            (prompts, prompted, empty)
        }
    };
    let carries = |c: usize, i: usize| captions[bank_items[i]].contains(&prompts[c]);
    let k = a.top_k.min(bank_items.len());
    let n_bank = bank_items.len();
    // Both the samples and chance are judged by the same `relevant` rule.
    let score = |relevant: &dyn Fn(usize, usize) -> bool| Scores {
        prompted: hit_rates(&bank, dim, &prompted, k, relevant),
        empty_prompt: hit_rates(&bank, dim, &empty, k, relevant),
        chance: chance_rates(
            n_bank,
            k,
            &(0..prompts.len())
                .map(|c| (0..n_bank).filter(|&i| relevant(c, i)).count())
                .collect::<Vec<_>>(),
        ),
    };
    let caption = score(&carries);
    let mut distinct_groups: Vec<&String> = bank_items.iter().map(|&i| &groups[i]).collect();
    distinct_groups.sort();
    distinct_groups.dedup();
    let group = (distinct_groups.len() > 1).then(|| {
        // The folders holding each caption's images.
        let of_caption: Vec<Vec<&String>> = (0..prompts.len())
            .map(|c| {
                (0..n_bank)
                    .filter(|&i| carries(c, i))
                    .map(|i| &groups[bank_items[i]])
                    .collect()
            })
            .collect();
        GroupScores {
            groups: distinct_groups.len(),
            scores: score(&|c, i| of_caption[c].contains(&&groups[bank_items[i]])),
        }
    });
    Ok(RetrievalReport {
        captions: prompts.len(),
        images: n_bank,
        k,
        guidance: a.samples.is_none().then_some(a.spec.guidance),
        caption,
        group,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_and_hit_rates_count_what_they_should() {
        // Three unit "images" on the axes; queries near image 1 and image 2.
        let bank = normalised(vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], 3);
        let q = normalised(vec![0.1, 0.9, 0.2, 0.0, 0.3, 0.8], 3);
        assert_eq!(nearest(&bank, 3, &q[..3], 2), vec![1, 2]);
        // Caption 0 is on image 1 (hit), caption 1 on image 0 (miss at top-1,
        // miss at top-2: its two nearest are 2 and 1).
        let on = [1usize, 0];
        let r = hit_rates(&bank, 3, &q, 2, &|c, i| on[c] == i);
        assert_eq!(
            r,
            Rates {
                top1: 0.5,
                top_k: 0.5
            }
        );
        let r = hit_rates(&bank, 3, &q, 3, &|c, i| on[c] == i);
        assert_eq!(r.top_k, 1.0);
    }

    #[test]
    fn chance_rates_and_groups() {
        // 10 images; a query with 1 relevant image and one with 4, k = 2:
        // top-1 (0.1 + 0.4) / 2; top-2 misses with (9·8)/(10·9) and (6·5)/(10·9).
        let r = chance_rates(10, 2, &[1, 4]);
        assert!((r.top1 - 0.25).abs() < 1e-12);
        let expect = ((1.0 - 72.0 / 90.0) + (1.0 - 30.0 / 90.0)) / 2.0;
        assert!((r.top_k - expect).abs() < 1e-12);
        assert_eq!(chance_rates(3, 3, &[1]).top_k, 1.0);
        let root = Path::new("/d/stamps");
        assert_eq!(group_of(root, Path::new("/d/stamps/food/a/b.png")), "food");
        assert_eq!(group_of(root, Path::new("/d/stamps/x.png")), "");
    }

    #[test]
    fn captions_are_picked_evenly_and_deterministically() {
        let all: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        assert_eq!(pick_captions(&all, 0), all);
        assert_eq!(pick_captions(&all, 20), all);
        assert_eq!(pick_captions(&all, 3), vec!["c0", "c3", "c6"]);
    }
}
