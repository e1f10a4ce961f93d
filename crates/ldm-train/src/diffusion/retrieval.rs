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
//! Why nearest-neighbour retrieval: a tiny model trained on a few hundred
//! captioned stamps reproduces them more than it composes them, so "is the
//! sample recognisably the stamp the caption names" is the honest question,
//! and it needs no captioning or CLIP model the machine cannot fetch.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use ldm_data::{open_source, SourceKind};
use serde::Serialize;

use crate::autoencoder::eval::loader_of;
use crate::diffusion::condition::Conditions;
use crate::diffusion::eval::features_of;
use crate::diffusion::load::load_diffusion;
use crate::diffusion::sample::{condition_dirs, sample_images, write_batch};
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
    /// Also write the samples as PNGs here (`<caption>/<k>.png`).
    pub out: Option<PathBuf>,
}

/// Hit rates of one set of samples.
#[derive(Debug, Serialize, PartialEq)]
pub struct Rates {
    /// Share of captions whose sample's nearest image carries the caption.
    pub top1: f64,
    /// Same, anywhere among the `top_k` nearest.
    pub top_k: f64,
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
    /// Guidance scale of the samples.
    pub guidance: f64,
    /// Samples drawn from their captions.
    pub prompted: Rates,
    /// The same noise sampled from the empty prompt (the text ignored).
    pub empty_prompt: Rates,
    /// Expected rates of a sample that lands on a random image.
    pub chance: Rates,
    /// Seconds in all.
    pub seconds: f64,
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
    carries: impl Fn(usize, usize) -> bool,
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
    if captions.iter().all(Vec::is_empty) {
        bail!("--data: {} has no captions", a.data.display());
    }
    let mut distinct: Vec<String> = captions.iter().flatten().cloned().collect();
    distinct.sort();
    distinct.dedup();
    let prompts = pick_captions(&distinct, a.n);
    let net = assets::inception::load::<B>("", device)?;
    let dim = 2048;

    // The bank: every readable image, preprocessed as the model's data.
    let transform = ld.cfg.data.transform();
    let mut loader = loader_of(source, transform, a.batch)?;
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
    let carries = |c: usize, i: usize| captions[bank_items[i]].contains(&prompts[c]);

    // One sample per caption, and the control from the empty prompt; sample
    // k uses the noise of id k in both.
    let ids: Vec<usize> = (0..prompts.len()).collect();
    let prompted_conds = Conditions::Prompts(prompts.clone());
    // Both sets are filed under the caption they were drawn for.
    let dirs = condition_dirs(Some(&prompted_conds), &[]).unwrap_or_default();
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
                    write_batch(&dir.join(tag), Some(&dirs), start, v, (h, w), |i| {
                        format!("{i:04}.png")
                    })?;
                }
                features_of(&net, v.to_vec(), n, h, w, device, &mut out);
                pb.inc(n as u64);
                Ok(())
            },
        )?;
        pb.finish_and_clear();
        Ok(normalised_rows(&out))
    };
    let prompted = sampled(prompted_conds.clone(), "prompted")?;
    let empty = sampled(
        Conditions::Prompts(vec![String::new(); prompts.len()]),
        "empty",
    )?;
    let k = a.top_k.min(bank_items.len());
    // Chance: a uniformly random image (top-1), or k distinct ones (top-k).
    let chance = {
        let total = bank_items.len() as f64;
        let (mut one, mut many) = (0.0, 0.0);
        for c in 0..prompts.len() {
            let m = (0..bank_items.len()).filter(|&i| carries(c, i)).count() as f64;
            one += m / total;
            // 1 − C(total − m, k) / C(total, k)
            let miss: f64 = (0..k)
                .map(|j| ((total - m - j as f64) / (total - j as f64)).max(0.0))
                .product();
            many += 1.0 - miss;
        }
        Rates {
            top1: one / prompts.len() as f64,
            top_k: many / prompts.len() as f64,
        }
    };
    Ok(RetrievalReport {
        captions: prompts.len(),
        images: bank_items.len(),
        k,
        guidance: a.spec.guidance,
        prompted: hit_rates(&bank, dim, &prompted, k, carries),
        empty_prompt: hit_rates(&bank, dim, &empty, k, carries),
        chance,
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
        let r = hit_rates(&bank, 3, &q, 2, |c, i| on[c] == i);
        assert_eq!(
            r,
            Rates {
                top1: 0.5,
                top_k: 0.5
            }
        );
        let r = hit_rates(&bank, 3, &q, 3, |c, i| on[c] == i);
        assert_eq!(r.top_k, 1.0);
    }

    #[test]
    fn captions_are_picked_evenly_and_deterministically() {
        let all: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        assert_eq!(pick_captions(&all, 0), all);
        assert_eq!(pick_captions(&all, 20), all);
        assert_eq!(pick_captions(&all, 3), vec!["c0", "c3", "c6"]);
    }
}
