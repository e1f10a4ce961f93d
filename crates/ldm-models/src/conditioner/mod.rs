//! Conditioning encoders: what turns a condition (a class label today; text
//! and layouts later) into the context the UNet's cross-attention reads.

pub mod class_embedder;

pub use class_embedder::ClassEmbedder;
