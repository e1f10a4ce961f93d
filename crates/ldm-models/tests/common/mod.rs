//! Helpers shared by the parity tests of this crate.

/// An f32 tensor of a safetensors fixture with its shape.
pub fn read(st: &safetensors::SafeTensors, key: &str) -> (Vec<f32>, Vec<usize>) {
    let v = st
        .tensor(key)
        .unwrap_or_else(|e| panic!("fixture tensor `{key}`: {e}"));
    let data = v
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (data, v.shape().to_vec())
}
