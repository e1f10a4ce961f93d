//! Raw tensor payloads of weight files.

/// Little-endian f32 bytes (a safetensors F32 payload) as values.
pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}
