//! The one hash of this crate's fingerprints: 64-bit FNV-1a.
//!
//! Spelled out here rather than taken from `std`, whose hasher output may
//! change between Rust releases: fingerprints are stored in checkpoints and
//! latent caches and must mean the same thing on every machine and build.
//! FNV-1a is not collision resistant against an adversary, but accidental
//! collisions between distinct inputs happen with probability about 2^-64,
//! which is what detecting a changed dataset needs.

/// Incremental 64-bit FNV-1a (offset basis `0xcbf29ce484222325`, prime
/// `0x100000001b3`), fed bytes in order.
#[derive(Clone, Debug)]
pub(crate) struct Fnv1a(u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Fnv1a {
    pub(crate) fn new() -> Self {
        Self(FNV_OFFSET)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> &mut Self {
        let mut hash = self.0;
        for &b in bytes {
            hash = (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
        self.0 = hash;
        self
    }

    /// Writes `text` followed by a 0 byte, so "a"+"bc" and "ab"+"c" differ.
    pub(crate) fn write_str0(&mut self, text: &str) -> &mut Self {
        self.write(text.as_bytes()).write(&[0])
    }

    pub(crate) fn write_u64(&mut self, value: u64) -> &mut Self {
        self.write(&value.to_le_bytes())
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }

    /// The hash as 16 lower-case hex digits.
    pub(crate) fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_published_fnv1a_vectors() {
        assert_eq!(Fnv1a::new().finish(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(Fnv1a::new().write(b"a").finish(), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            Fnv1a::new().write(b"foobar").finish(),
            0x8594_4171_f739_67e8
        );
        let mut split = Fnv1a::new();
        split.write(b"foo").write(b"bar");
        assert_eq!(split.finish(), 0x8594_4171_f739_67e8);
    }
}
