//! Multi-head scaled dot-product attention over already projected q, k, v:
//! the one core the UNet's cross-attention and both text encoders share.
//!
//! It runs on burn's fused `attention` op (Flex: one kernel per head with the
//! score matrix kept small; CUDA: flash attention where it applies), whose
//! default scale is the reference's `dim_head ** -0.5`.

use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};

/// Splits `[B, T, H·d]` into heads: `[B, H, T, d]`.
pub fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, t, inner] = x.dims();
    x.reshape([b, t, heads, inner / heads]).swap_dims(1, 2)
}

/// Joins heads back: `[B, H, T, d]` → `[B, T, H·d]`.
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, t, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, t, h * d])
}

/// `softmax(q·kᵀ·d^-½)·v` per head, heads joined again.
///
/// `q`: `[B, Tq, H·d]`; `k`, `v`: `[B, Tk, H·d]` (the projections, not yet
/// split); returns `[B, Tq, H·d]`. `key_mask` is `[B, Tk]` with `true` where
/// a key may be attended to: a `false` key gets exactly zero weight in every
/// query row, as with transformers' `attention_mask` (its additive
/// `finfo.min` underflows to the same zero). A row whose keys are all masked
/// comes out as zeros rather than NaN.
pub fn multi_head_attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
    key_mask: Option<Tensor<B, 2, Bool>>,
) -> Tensor<B, 3> {
    attend(q, k, v, heads, key_mask, false)
}

/// [`multi_head_attention`] where query `i` also sees only keys `0..=i`
/// (a decoder's self-attention, e.g. CLIP's text encoder): a later key gets
/// exactly zero weight, so no position depends on the tokens after it.
/// Meant for self-attention (`Tk = Tq`); with `Tk > Tq` burn aligns the
/// triangle at the last key.
pub fn causal_multi_head_attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
    key_mask: Option<Tensor<B, 2, Bool>>,
) -> Tensor<B, 3> {
    attend(q, k, v, heads, key_mask, true)
}

fn attend<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
    key_mask: Option<Tensor<B, 2, Bool>>,
    is_causal: bool,
) -> Tensor<B, 3> {
    let [b, tq, _] = q.dims();
    let tk = k.dims()[1];
    // burn's mask is the opposite convention (`true` = masked out) and, on
    // the autodiff path, a plain `mask_fill` that needs the full score shape.
    let mask = key_mask.map(|m| {
        m.bool_not()
            .reshape([b, 1, 1, tk])
            .expand([b, heads, tq, tk])
    });
    // burn's own causal flag rather than a triangle in `mask`: the fused
    // kernels skip the masked blocks instead of computing and discarding them.
    let options = AttentionModuleOptions {
        is_causal,
        ..Default::default()
    };
    let out = attention(
        split_heads(q, heads),
        split_heads(k, heads),
        split_heads(v, heads),
        mask,
        None,
        options,
    );
    merge_heads(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, TensorData};

    type B = Flex;

    /// The textbook formula with explicit loops over heads, masking by
    /// leaving keys out of the softmax altogether: query `i` sees key `j`
    /// when `keep[j]` and, if `causal`, `j <= i`.
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dims: [usize; 4],
        keep: &[bool],
        causal: bool,
    ) -> Vec<f32> {
        let [tq, tk, heads, d] = dims;
        let inner = heads * d;
        let mut out = vec![0.0f32; tq * inner];
        for h in 0..heads {
            for i in 0..tq {
                let sees = |j: usize| keep[j] && (!causal || j <= i);
                let scores: Vec<f64> = (0..tk)
                    .map(|j| {
                        let dot: f64 = (0..d)
                            .map(|c| (q[i * inner + h * d + c] * k[j * inner + h * d + c]) as f64)
                            .sum();
                        dot / (d as f64).sqrt()
                    })
                    .collect();
                let max = (0..tk)
                    .filter(|&j| sees(j))
                    .map(|j| scores[j])
                    .fold(f64::MIN, f64::max);
                let w: Vec<f64> = (0..tk)
                    .map(|j| {
                        if sees(j) {
                            (scores[j] - max).exp()
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let sum: f64 = w.iter().sum();
                for c in 0..d {
                    let acc: f64 = (0..tk)
                        .map(|j| w[j] * v[j * inner + h * d + c] as f64)
                        .sum();
                    out[i * inner + h * d + c] = (acc / sum) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_formula_and_ignores_masked_keys() {
        let dev = Default::default();
        let (tq, tk, heads, d) = (3, 5, 2, 4);
        let rnd = |t: usize| {
            Tensor::<B, 3>::random([1, t, heads * d], Distribution::Normal(0.0, 1.0), &dev)
        };
        let (q, k, v) = (rnd(tq), rnd(tk), rnd(tk));
        let keep = [true, false, true, true, false];
        let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(keep.to_vec(), [1, tk]), &dev);
        let got: Vec<f32> =
            multi_head_attention(q.clone(), k.clone(), v.clone(), heads, Some(mask))
                .into_data()
                .to_vec()
                .unwrap();
        let vals = |t: &Tensor<B, 3>| t.to_data().to_vec::<f32>().unwrap();
        let want = naive(
            &vals(&q),
            &vals(&k),
            &vals(&v),
            [tq, tk, heads, d],
            &keep,
            false,
        );
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // The autodiff backend takes burn's unfused fallback (mask_fill on the
        // expanded mask): same numbers.
        type Ad = burn::backend::Autodiff<Flex>;
        let ad = |t: &Tensor<B, 3>| Tensor::<Ad, 3>::from_data(t.to_data(), &dev);
        let mask = Tensor::<Ad, 2, Bool>::from_data(TensorData::new(keep.to_vec(), [1, tk]), &dev);
        let got: Vec<f32> = multi_head_attention(ad(&q), ad(&k), ad(&v), heads, Some(mask))
            .into_data()
            .to_vec()
            .unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "autodiff: {a} vs {b}");
        }
        let all = [true; 5];
        let got: Vec<f32> = multi_head_attention(q.clone(), k.clone(), v.clone(), heads, None)
            .into_data()
            .to_vec()
            .unwrap();
        let want = naive(
            &vals(&q),
            &vals(&k),
            &vals(&v),
            [tq, tk, heads, d],
            &all,
            false,
        );
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn causal_rows_see_only_earlier_keys() {
        let dev = Default::default();
        let (t, heads, d) = (5, 2, 4);
        let rnd =
            || Tensor::<B, 3>::random([1, t, heads * d], Distribution::Normal(0.0, 1.0), &dev);
        let (q, k, v) = (rnd(), rnd(), rnd());
        let vals = |t: &Tensor<B, 3>| t.to_data().to_vec::<f32>().unwrap();
        let keep = [true, true, false, true, true];
        let reference = |causal| {
            naive(
                &vals(&q),
                &vals(&k),
                &vals(&v),
                [t, t, heads, d],
                &keep,
                causal,
            )
        };
        let want = reference(true);
        assert!(
            max_diff(&want, &reference(false)) > 1e-2,
            "the triangle must matter here"
        );
        let mask = || TensorData::new(keep.to_vec(), [1, t]);
        let got: Vec<f32> = causal_multi_head_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            heads,
            Some(Tensor::from_data(mask(), &dev)),
        )
        .into_data()
        .to_vec()
        .unwrap();
        assert!(max_diff(&got, &want) < 1e-5, "{got:?} vs {want:?}");
        // The autodiff backend builds the triangle itself (burn's fallback).
        type Ad = burn::backend::Autodiff<Flex>;
        let ad = |t: &Tensor<B, 3>| Tensor::<Ad, 3>::from_data(t.to_data(), &dev);
        let got: Vec<f32> = causal_multi_head_attention(
            ad(&q),
            ad(&k),
            ad(&v),
            heads,
            Some(Tensor::from_data(mask(), &dev)),
        )
        .into_data()
        .to_vec()
        .unwrap();
        assert!(
            max_diff(&got, &want) < 1e-5,
            "autodiff: {got:?} vs {want:?}"
        );
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }
}
