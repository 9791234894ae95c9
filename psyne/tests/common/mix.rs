//! Deterministic mixing for test payloads, shared by the test binaries (`#[path]`-included).

/// SplitMix64's output function: a well-spread 64-bit value for each input.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a over 64-bit words: an order-sensitive checksum of a stream.
#[allow(dead_code)] // not every binary that includes this file checksums streams
pub fn fnv(words: impl IntoIterator<Item = u64>) -> u64 {
    words.into_iter().fold(0xCBF2_9CE4_8422_2325, |h, w| {
        (h ^ w).wrapping_mul(0x100_0000_01B3)
    })
}
