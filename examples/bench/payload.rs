//! Payload types and the identical work every contender does on them: the producer writes every
//! 32-bit word of the payload (word 0 and 1 carry a 64-bit stamp: a sequence number or a send
//! timestamp), the consumer reads every word (a wrapping sum) and checks the sum against the
//! stamp, so a torn, lost or reordered message is counted as bad.

use bytemuck::Pod;
use std::mem::MaybeUninit;

/// A payload of `W` 32-bit words (`4 * W` bytes): a psyne message like any user's.
#[derive(Clone, Copy, psyne::PsyneMessage)]
#[repr(C)]
pub struct Words<const W: usize> {
    /// The payload.
    pub data: [u32; W],
}

/// The 1 KiB payload: the project's own `Embedding256` (`data: [f32; 256]`, `batch_idx`,
/// `layer_id`: 1032 bytes).
pub use psyne_schemas::Embedding256;

/// Number of 32-bit words in `P`.
pub const fn word_count<P>() -> usize {
    size_of::<P>() / 4
}

#[inline(always)]
fn fill(words: &mut [MaybeUninit<u32>], stamp: u64) {
    let lo = stamp as u32;
    for (i, w) in words.iter_mut().enumerate() {
        w.write(lo.wrapping_add(i as u32));
    }
    words[1].write((stamp >> 32) as u32);
}

/// Writes the whole payload in place, stamped with `stamp`.
#[inline(always)]
pub fn write<P: Pod>(p: &mut P, stamp: u64) {
    let words: &mut [u32] = bytemuck::cast_slice_mut(bytemuck::bytes_of_mut(p));
    // SAFETY: `MaybeUninit<u32>` has the layout of `u32`, and only initialised values are
    // written through the view, so `words` stays initialised.
    let words = unsafe {
        std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<MaybeUninit<u32>>(), words.len())
    };
    fill(words, stamp);
}

/// Writes the whole payload into uninitialised memory, stamped with `stamp`.
#[inline(always)]
pub fn write_uninit<P: Pod>(p: &mut MaybeUninit<P>, stamp: u64) -> &mut P {
    debug_assert!(size_of::<P>().is_multiple_of(4) && align_of::<P>() >= 4 && size_of::<P>() >= 8);
    // SAFETY: `P` is at least 4-aligned and a whole number of words (checked by `Payload` impls
    // and the debug assertion), so it is exactly `word_count::<P>()` possibly uninitialised words.
    let words = unsafe {
        std::slice::from_raw_parts_mut(p.as_mut_ptr().cast::<MaybeUninit<u32>>(), word_count::<P>())
    };
    fill(words, stamp);
    // SAFETY: every byte of `P` was just written, and any bytes are a valid `Pod` value.
    unsafe { p.assume_init_mut() }
}

/// Reads every word of the payload; returns the stamp and whether the sum matched it.
#[inline(always)]
pub fn read<P: Pod>(p: &P) -> (u64, bool) {
    let w: &[u32] = bytemuck::cast_slice(bytemuck::bytes_of(p));
    let sum = w.iter().fold(0u32, |a, &x| a.wrapping_add(x));
    let (lo, hi) = (w[0], w[1]);
    let n = w.len() as u64;
    // sum over i != 1 of (lo + i), plus hi
    let expect = lo
        .wrapping_mul((n - 1) as u32)
        .wrapping_add((n * (n - 1) / 2 - 1) as u32)
        .wrapping_add(hi);
    ((u64::from(hi) << 32) | u64::from(lo), sum == expect)
}

/// Heap-allocates a payload and writes it (used for payloads too large to move by value on a
/// thread's stack).
#[inline(always)]
pub fn boxed<P: Pod>(stamp: u64) -> Box<P> {
    let mut b = Box::<P>::new_uninit();
    write_uninit(&mut *b, stamp);
    // SAFETY: `write_uninit` initialised every byte.
    unsafe { b.assume_init() }
}
