//! Raw tensor payloads of weight files.

use burn::tensor::{bf16, f16};
use safetensors::Dtype;

/// Little-endian f32 bytes (a safetensors F32 payload) as values.
pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A safetensors float payload of `dtype` as f32 values: F32 as is, F16 and
/// BF16 widened exactly (every half value is an f32), F64 rounded to the
/// nearest f32. `None` for any other dtype (integers, bool, 8-bit floats),
/// which are not weights to convert silently.
pub fn float_values(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    let halves = |to_f32: fn(u16) -> f32| {
        bytes
            .chunks_exact(2)
            .map(|b| to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect()
    };
    Some(match dtype {
        Dtype::F32 => f32_values(bytes),
        Dtype::F16 => halves(|bits| f16::from_bits(bits).to_f32()),
        Dtype::BF16 => halves(|bits| bf16::from_bits(bits).to_f32()),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("chunks of 8 bytes")) as f32)
            .collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_and_double_payloads_widen_to_f32() {
        // 1.0, -2.0, 0.5 and 65504 (F16's largest) in F16; the same bit
        // patterns read as BF16 are other numbers.
        let f16_bits: [u16; 4] = [0x3C00, 0xC000, 0x3800, 0x7BFF];
        let bytes: Vec<u8> = f16_bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        assert_eq!(
            float_values(&bytes, Dtype::F16).unwrap(),
            [1.0, -2.0, 0.5, 65504.0]
        );
        // 1.0, -2.0, 0.5, and 1 + 2^-7 in BF16.
        let bf16_bits: [u16; 4] = [0x3F80, 0xC000, 0x3F00, 0x3F81];
        let bytes: Vec<u8> = bf16_bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        assert_eq!(
            float_values(&bytes, Dtype::BF16).unwrap(),
            [1.0, -2.0, 0.5, 1.0 + 2f32.powi(-7)]
        );
        let bytes: Vec<u8> = [0.25f64, -3.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(float_values(&bytes, Dtype::F64).unwrap(), [0.25, -3.0]);
        let bytes: Vec<u8> = [1.5f32, -0.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(
            float_values(&bytes, Dtype::F32).unwrap(),
            f32_values(&bytes)
        );
        for dtype in [Dtype::I64, Dtype::I32, Dtype::U8, Dtype::BOOL] {
            assert_eq!(float_values(&[0; 8], dtype), None, "{dtype:?}");
        }
    }
}
