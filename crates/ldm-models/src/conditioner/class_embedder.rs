//! The class-label conditioner of the LDM `cin` models (ldm `ClassEmbedder`),
//! with one extra row for the "no class" condition of classifier-free
//! guidance.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// A learned embedding per class, given to the UNet as a one-token context
/// `[B, 1, embed_dim]`.
///
/// The reference has `n_classes` rows and guides without ever training an
/// unconditional model. Here row `n_classes` is the null class that
/// condition dropout trains, as DiT does, so guidance has a real
/// unconditional prediction to extrapolate from; a reference checkpoint
/// imports into the first `n_classes` rows.
#[derive(Module, Debug)]
pub struct ClassEmbedder<B: Backend> {
    /// `[n_classes + 1, embed_dim]`, key `embedding.weight`.
    pub embedding: Embedding<B>,
    /// Number of real classes (the null class is this index).
    pub n_classes: usize,
}

impl<B: Backend> ClassEmbedder<B> {
    /// An embedder for `n_classes` classes plus the null class.
    pub fn new(n_classes: usize, embed_dim: usize, device: &B::Device) -> Self {
        Self {
            embedding: EmbeddingConfig::new(n_classes + 1, embed_dim).init(device),
            n_classes,
        }
    }

    /// The index that means "no class".
    pub fn null_class(&self) -> usize {
        self.n_classes
    }

    /// `[B]` labels (a real class or [`ClassEmbedder::null_class`]) → `[B, 1, embed_dim]`.
    pub fn forward(&self, labels: Tensor<B, 1, Int>) -> Tensor<B, 3> {
        let [b] = labels.dims();
        self.embedding.forward(labels.reshape([b, 1]))
    }
}
