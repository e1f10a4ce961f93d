//! A stable digest of a vocabulary file, so a checkpoint trained with one
//! vocabulary can refuse to run with another.

/// 64-bit FNV-1a of `bytes` as 16 lowercase hex digits. Spelled out (offset
/// basis `0xcbf29ce484222325`, prime `0x100000001b3`) rather than `std`'s
/// hasher, whose output may change between Rust releases; the same hash the
/// data crate uses for dataset fingerprints. Not cryptographic: it guards
/// against mix-ups, not against forgery.
pub(crate) fn fnv1a_hex(bytes: &[u8]) -> String {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = bytes.iter().fold(FNV_OFFSET, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_fnv1a_vectors() {
        // Test vectors from the FNV reference (draft-eastlake-fnv).
        assert_eq!(fnv1a_hex(b""), "cbf29ce484222325");
        assert_eq!(fnv1a_hex(b"a"), "af63dc4c8601ec8c");
        assert_eq!(fnv1a_hex(b"foobar"), "85944171f73967e8");
    }
}
