//! Encoding a dataset into the latent cache with the frozen autoencoder, and
//! the in-memory latent set the trainer draws batches from.
//!
//! The cache is reused only where it is provably current: the manifest's
//! autoencoder and preprocessing fingerprints must match, and each shard's
//! item fingerprints must equal those of the images now on disk. A changed
//! image re-encodes its shard, a changed autoencoder or preprocessing the
//! whole set; a truncated or corrupt shard is named and re-encoded. Nothing
//! stale is ever used silently.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ldm_data::latent_cache::{
    read_manifest, read_shard, stray_shards, write_manifest, write_shard, CacheManifest, ShardData,
    ShardEntry, CACHE_VERSION,
};
use ldm_data::{ImageSource, Transform};
use ldm_models::Autoencoder;

use crate::shared::progress;

/// Items per shard: small enough that one changed image re-encodes little,
/// large enough that a big dataset is not thousands of files.
pub const SHARD_SIZE: usize = 4096;

/// Everything that decides what a cached latent is besides the image itself.
pub struct CacheSpec<'a> {
    /// The directory of the cache.
    pub dir: &'a Path,
    /// Fingerprint of the frozen autoencoder (kind + weights digest).
    pub autoencoder: String,
    /// How images become autoencoder inputs (no random crop or flip: the
    /// cache holds the deterministic centre view).
    pub transform: Transform,
    /// Also cache the mirrored image's latent.
    pub flip: bool,
    /// Images per encoder batch.
    pub encode_batch: usize,
}

impl CacheSpec<'_> {
    /// Fingerprint of the preprocessing, stored in the manifest.
    pub fn preprocessing(&self) -> String {
        let t = &self.transform;
        format!(
            "size={} resize={:?} fit={:?} pad={} flip={} v{CACHE_VERSION}",
            t.size, t.resize, t.fit, t.pad_value, self.flip
        )
    }
}

/// Every cached latent in memory: `moments` of each item (KL: mean and
/// log-variance stacked on channels; VQ: the pre-quantization latent).
pub struct LatentSet {
    /// `n · C · h · w` values.
    pub moments: Vec<f32>,
    /// The mirrored images' moments, when cached.
    pub moments_flip: Option<Vec<f32>>,
    /// Class of each item.
    pub labels: Vec<usize>,
    /// `[C, h, w]` of one item.
    pub shape: [usize; 3],
}

impl LatentSet {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values of one item's moments (`flip`: the mirrored image's).
    pub fn item(&self, i: usize, flip: bool) -> &[f32] {
        let per = self.shape.iter().product::<usize>();
        let src = match (&self.moments_flip, flip) {
            (Some(f), true) => f,
            _ => &self.moments,
        };
        &src[i * per..(i + 1) * per]
    }
}

/// Per-item fingerprints of `source`, in item order (hex).
pub type ItemPrints = Vec<String>;

/// Mirrors a CHW sample left-right.
fn mirror(chw: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0.0; chw.len()];
    for ch in 0..c {
        for y in 0..h {
            let row = (ch * h + y) * w;
            for x in 0..w {
                out[row + x] = chw[row + w - 1 - x];
            }
        }
    }
    out
}

/// Encodes items `range` of `source`; NaN or Inf latents are an error naming the image.
fn encode_range<B: Backend>(
    ae: &Autoencoder<B>,
    source: &dyn ImageSource,
    spec: &CacheSpec,
    range: std::ops::Range<usize>,
    device: &B::Device,
    pb: &indicatif::ProgressBar,
) -> Result<(ShardData, [usize; 3])> {
    let size = spec.transform.size as usize;
    let per_img = 3 * size * size;
    let mut moments = Vec::new();
    let mut flipped = Vec::new();
    let mut labels = Vec::new();
    let mut shape = [0; 3];
    let items: Vec<usize> = range.collect();
    for chunk in items.chunks(spec.encode_batch) {
        let mut pixels = Vec::with_capacity(chunk.len() * per_img);
        for &i in chunk {
            let img = source
                .load_rgb(i)
                .with_context(|| format!("cannot cache {}", source.name(i).display()))?;
            pixels.extend(spec.transform.apply(&img, 0));
            labels.push(source.class_of(i).unwrap_or(0) as u32);
        }
        let encode = |pixels: Vec<f32>| -> Result<(Vec<f32>, [usize; 3])> {
            let x = Tensor::<B, 4>::from_data(
                TensorData::new(pixels, [chunk.len(), 3, size, size]),
                device,
            );
            let m = ae.moments(x);
            let [_, c, h, w] = m.dims();
            let v: Vec<f32> = m.into_data().convert::<f32>().to_vec().unwrap_or_default();
            if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
                let item = chunk[bad / (c * h * w)];
                bail!(
                    "the autoencoder gives a non-finite latent for {} (check the image and the autoencoder checkpoint)",
                    source.name(item).display()
                );
            }
            Ok((v, [c, h, w]))
        };
        if spec.flip {
            let mirrored: Vec<f32> = pixels
                .chunks(per_img)
                .flat_map(|p| mirror(p, 3, size, size))
                .collect();
            flipped.extend(encode(mirrored)?.0);
        }
        let (v, s) = encode(pixels)?;
        moments.extend(v);
        shape = s;
        pb.inc(chunk.len() as u64);
    }
    let data = ShardData {
        moments,
        moments_flip: spec.flip.then_some(flipped),
        labels,
    };
    Ok((data, shape))
}

/// Brings the cache in `spec.dir` up to date with `source` and returns all
/// its latents. `prints` are the current item fingerprints.
pub fn ensure_cache<B: Backend>(
    ae: &Autoencoder<B>,
    source: &dyn ImageSource,
    prints: &ItemPrints,
    spec: &CacheSpec,
    device: &B::Device,
) -> Result<LatentSet> {
    let dir = spec.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let n = source.len();
    if n == 0 {
        bail!("{}: no images to cache", source.root().display());
    }
    let prep = spec.preprocessing();
    let (old, note) = read_manifest(dir);
    if let Some(note) = note {
        eprintln!("warning: latent cache {note}; re-encoding everything");
    }
    let old = old.filter(|m| {
        let same_ae = m.autoencoder == spec.autoencoder;
        let same_prep = m.preprocessing == prep;
        if !same_ae {
            eprintln!(
                "latent cache {}: made with another autoencoder ({} → {}); re-encoding all {n} images",
                dir.display(),
                m.autoencoder,
                spec.autoencoder
            );
        } else if !same_prep {
            eprintln!(
                "latent cache {}: made with other preprocessing ({} → {prep}); re-encoding all {n} images",
                dir.display(),
                m.preprocessing
            );
        }
        same_ae && same_prep && m.shard_size == SHARD_SIZE
    });
    let starts: Vec<usize> = (0..n).step_by(SHARD_SIZE).collect();
    // Decide per shard first, so the progress bar knows the total to encode.
    let mut plan: Vec<(usize, Option<(ShardEntry, ShardData)>)> = Vec::new();
    let mut to_encode = 0u64;
    for (k, &start) in starts.iter().enumerate() {
        let end = (start + SHARD_SIZE).min(n);
        let want = &prints[start..end];
        let reuse = old.as_ref().and_then(|m| {
            let e = m.shards.iter().find(|e| e.start == start)?;
            if e.items.as_slice() != want {
                let changed = e.items.iter().zip(want).filter(|(a, b)| a != b).count()
                    + e.items.len().abs_diff(want.len());
                eprintln!(
                    "latent cache: {changed} image(s) of items {start}..{end} changed; re-encoding {}",
                    e.file
                );
                return None;
            }
            match read_shard(dir, e, m.shape, m.flip) {
                Ok(d) => Some((e.clone(), d)),
                Err(bad) => {
                    eprintln!("warning: latent cache shard {}; re-encoding it", bad.0);
                    None
                }
            }
        });
        if reuse.is_none() {
            to_encode += (end - start) as u64;
        }
        plan.push((k, reuse));
    }
    let pb = progress::bar(to_encode, 0, "images encoded");
    let mut shards = Vec::with_capacity(plan.len());
    let mut datas = Vec::with_capacity(plan.len());
    let mut shape = old.as_ref().map(|m| m.shape);
    for (k, reuse) in plan {
        let start = starts[k];
        let end = (start + SHARD_SIZE).min(n);
        let (entry, data) = match reuse {
            Some(r) => r,
            None => {
                let (data, s) = encode_range(ae, source, spec, start..end, device, &pb)?;
                if shape.is_some_and(|old| old != s) {
                    bail!(
                        "latent cache {}: shards disagree on the latent shape",
                        dir.display()
                    );
                }
                shape = Some(s);
                let entry = write_shard(dir, k, start, prints[start..end].to_vec(), s, &data)?;
                (entry, data)
            }
        };
        shards.push(entry);
        datas.push(data);
    }
    pb.finish_and_clear();
    let shape = shape.expect("at least one shard");
    let manifest = CacheManifest {
        version: CACHE_VERSION,
        autoencoder: spec.autoencoder.clone(),
        preprocessing: prep,
        shape,
        flip: spec.flip,
        shard_size: SHARD_SIZE,
        shards,
    };
    write_manifest(dir, &manifest)?;
    for stray in stray_shards(dir, &manifest) {
        let _ = std::fs::remove_file(stray);
    }
    let mut set = LatentSet {
        moments: Vec::new(),
        moments_flip: spec.flip.then(Vec::new),
        labels: Vec::new(),
        shape,
    };
    for d in datas {
        set.moments.extend(d.moments);
        if let (Some(all), Some(f)) = (&mut set.moments_flip, d.moments_flip) {
            all.extend(f);
        }
        set.labels.extend(d.labels.iter().map(|&l| l as usize));
    }
    Ok(set)
}

/// The default cache directory of a run.
pub fn default_dir(run_root: &Path) -> PathBuf {
    run_root.join("latents")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::module::{Module, ModuleMapper, Param};
    use image::RgbImage;
    use ldm_data::{DataError, Fit};

    /// Three gray images, in memory.
    struct Three(PathBuf);

    impl ImageSource for Three {
        fn len(&self) -> usize {
            3
        }
        fn root(&self) -> &Path {
            &self.0
        }
        fn name(&self, index: usize) -> PathBuf {
            self.0.join(format!("img{index}.png"))
        }
        fn load_rgb(&self, index: usize) -> Result<RgbImage, DataError> {
            Ok(RgbImage::from_pixel(
                8,
                8,
                image::Rgb([index as u8 * 60; 3]),
            ))
        }
        fn item_fingerprint(&self, index: usize) -> Result<u64, DataError> {
            Ok(index as u64)
        }
        fn fingerprint(&self) -> String {
            "three".into()
        }
    }

    /// Replaces every weight by NaN.
    struct Poison;
    impl<B: Backend> ModuleMapper<B> for Poison {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, t, m) = p.consume();
            Param::from_mapped_value(id, t.mul_scalar(f32::NAN), m)
        }
    }

    fn spec(dir: &Path) -> CacheSpec<'_> {
        CacheSpec {
            dir,
            autoencoder: "test".into(),
            transform: Transform::fixed(8, Fit::Crop, 0),
            flip: true,
            encode_batch: 2,
        }
    }

    fn ae() -> Autoencoder<Flex> {
        let (cfg, _) =
            crate::autoencoder::config::load_run_config("tiny/kl-f4-fashion.toml", &[]).unwrap();
        Autoencoder::new(&cfg.model, &Default::default())
    }

    #[test]
    fn a_non_finite_latent_names_the_image() {
        let dir = std::env::temp_dir().join(format!("ldm-cache-nan-{}", std::process::id()));
        let src = Three(dir.clone());
        let prints: ItemPrints = (0..3).map(|i| format!("{i:016x}")).collect();
        let bad = ae().map(&mut Poison);
        let err = match ensure_cache(&bad, &src, &prints, &spec(&dir), &Default::default()) {
            Ok(_) => panic!("NaN weights cached without complaint"),
            Err(e) => e,
        };
        let msg = format!("{err:#}");
        assert!(
            msg.contains("img0.png") && msg.contains("non-finite"),
            "{msg}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn flipped_latents_are_the_mirrored_images_and_reuse_is_exact() {
        let dir = std::env::temp_dir().join(format!("ldm-cache-flip-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let src = Three(dir.clone());
        let prints: ItemPrints = (0..3).map(|i| format!("{i:016x}")).collect();
        let model = ae();
        let set = ensure_cache(&model, &src, &prints, &spec(&dir), &Default::default()).unwrap();
        assert_eq!((set.len(), set.shape), (3, [8, 2, 2]));
        // Uniform images: mirroring changes nothing, so neither may the latent.
        assert_eq!(set.item(1, true), set.item(1, false));
        let again = ensure_cache(&model, &src, &prints, &spec(&dir), &Default::default()).unwrap();
        assert_eq!(again.moments, set.moments);
        assert_eq!(again.labels, vec![0, 0, 0]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
