//! Prepared images kept in memory across epochs, within a byte budget.
//!
//! Decoding a large JPEG and shrinking it to a training scale of 64 px costs
//! far more than the rest of a sample, and a small dataset is decoded again
//! every epoch. The cache keeps [`crate::Transform::prepare`]'s result (the
//! image at the largest scale a sample needs) per file index. Samples are the
//! same bytes with or without it; once the budget is spent, further images
//! are simply decoded each time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use image::RgbImage;

/// Prepared images by file index, at most `budget` bytes of pixels in all.
pub(crate) struct ImageCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    used: usize,
    images: HashMap<usize, Arc<RgbImage>>,
}

impl ImageCache {
    /// A cache holding up to `budget` bytes of pixels (0: holds nothing).
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            inner: Mutex::default(),
        }
    }

    /// The prepared image of `file`, if kept.
    pub(crate) fn get(&self, file: usize) -> Option<Arc<RgbImage>> {
        self.lock().images.get(&file).cloned()
    }

    /// Keeps `image` as `file`'s when the budget allows; returns it either way.
    pub(crate) fn offer(&self, file: usize, image: RgbImage) -> Arc<RgbImage> {
        let image = Arc::new(image);
        let bytes = image.as_raw().len();
        let mut inner = self.lock();
        if inner.used + bytes <= self.budget && !inner.images.contains_key(&file) {
            inner.used += bytes;
            inner.images.insert(file, image.clone());
        }
        image
    }

    /// Bytes of pixels held.
    #[cfg(test)]
    fn used(&self) -> usize {
        self.lock().used
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the map half-updated: recover it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_images_until_the_budget_is_spent() {
        let img = || RgbImage::new(4, 4); // 48 bytes
        let cache = ImageCache::new(100);
        cache.offer(0, img());
        cache.offer(1, img());
        cache.offer(2, img());
        assert!(cache.get(0).is_some() && cache.get(1).is_some());
        assert!(cache.get(2).is_none(), "past the budget");
        assert_eq!(cache.used(), 96);
        let off = ImageCache::new(0);
        assert_eq!(off.offer(0, img()).dimensions(), (4, 4));
        assert!(off.get(0).is_none());
    }
}
