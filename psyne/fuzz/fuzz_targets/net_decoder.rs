//! A hostile TCP peer against psyne's handshake and frame decoders.
//!
//! Each input is everything the peer sends (then it closes); byte 0 chooses what this side is
//! (see `psyne::transport::net::fuzz::decode`): the handshake of a typed or raw receiver or
//! sender, with or without a key, or the frames after an accepted handshake into a typed or
//! raw ring of 4 or 64 KiB, with no codec, lz4 or zstd negotiated. The real decoders and the
//! real receiving pump run on the bytes, without sockets.
//!
//! What must hold (a violation aborts the run, which libFuzzer reports as a crash; a call that
//! never returns is a libFuzzer timeout, `-timeout=5`): no panic, no out-of-bounds access
//! (AddressSanitizer), no allocation sized by the input beyond libFuzzer's `-rss_limit_mb`;
//! a handshake accepts only a compatible peer; every message published into the ring is at most
//! the ring's largest payload and, for a typed ring, of the ring's type and size.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(what) = psyne::transport::net::fuzz::decode(data) {
        panic!("{what}");
    }
});
