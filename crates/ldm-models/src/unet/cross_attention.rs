//! Multi-head attention of the spatial transformer (ldm `CrossAttention`):
//! self-attention when no context is given, cross-attention otherwise.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::multi_head::multi_head_attention;
use crate::sequential::{run, Layer};

/// q from the tokens, k and v from the context (or the tokens), all three
/// bias-free; softmax(q·kᵀ·d^-½)·v per head; `to_out.0` projects back.
#[derive(Module, Debug)]
pub struct CrossAttention<B: Backend> {
    /// Query projection (query_dim → heads·d).
    pub to_q: Linear<B>,
    /// Key projection (context_dim → heads·d).
    pub to_k: Linear<B>,
    /// Value projection (context_dim → heads·d).
    pub to_v: Linear<B>,
    /// `[Linear(heads·d → query_dim), Dropout]`.
    pub to_out: Vec<Layer<B>>,
    /// Number of heads.
    pub heads: usize,
}

impl<B: Backend> CrossAttention<B> {
    /// Attention of `query_dim`-wide tokens over `context_dim`-wide context
    /// tokens (`None` = self-attention), with `heads` heads of `dim_head`.
    pub fn new(
        query_dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        dim_head: usize,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        let inner = heads * dim_head;
        let ctx = context_dim.unwrap_or(query_dim);
        let proj = |i: usize| LinearConfig::new(i, inner).with_bias(false).init(device);
        let out_drop: Dropout = DropoutConfig::new(dropout).init();
        Self {
            to_q: proj(query_dim),
            to_k: proj(ctx),
            to_v: proj(ctx),
            to_out: vec![
                Layer::Linear(LinearConfig::new(inner, query_dim).init(device)),
                Layer::Dropout(out_drop),
            ],
            heads,
        }
    }

    /// `x`: `[B, T, query_dim]`; `context`: `[B, S, context_dim]` or `None`.
    pub fn forward(&self, x: Tensor<B, 3>, context: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let ctx = context.unwrap_or_else(|| x.clone());
        let q = self.to_q.forward(x);
        let k = self.to_k.forward(ctx.clone());
        let v = self.to_v.forward(ctx);
        // No key mask: the reference attends to every context token, text padding included.
        let out = multi_head_attention(q, k, v, self.heads, None);
        run(&self.to_out, out)
    }
}
