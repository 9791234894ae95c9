//! The record format and region access: positions, masks, commit words, fillers, header writes.
//!
//! Owns nothing but arithmetic and the few raw accesses to ring bytes that every protocol needs.
//! Never sleeps, never names a channel, a transport or a process.

use crate::message::MessageHeader;
use crate::sync::{AccessTracker, CommitWords, Ordering};
use core::ptr::NonNull;

/// Size of a [`MessageHeader`] (32 bytes).
pub(crate) const HEADER: usize = MessageHeader::SIZE;
/// Records start at ring offsets that are multiples of this.
pub const RECORD_ALIGN: usize = 64;
/// The largest payload alignment a ring supports.
pub const MAX_ALIGN: usize = 4096;
/// The smallest ring region, in bytes: one 64-byte record and the one line a producer always
/// leaves free (see [`max_record`]).
pub const MIN_REGION: usize = 2 * RECORD_ALIGN;
/// The largest ring region, in bytes (filler lengths must fit the header's `u32`).
pub const MAX_REGION: usize = 1 << 32;

/// The top bit of a commit word: set, the word is a *pending mark*, `pending(s)` = `s | 1 << 63`,
/// which says "nothing published here yet; the next message will be number `s`". Sequence
/// numbers stay below `2^63` (at a billion messages a second, for 292 years).
pub(crate) const PENDING_BIT: u64 = 1 << 63;

/// The pending mark for sequence number `seq` (see [`PENDING_BIT`]).
#[inline(always)]
pub(crate) const fn pending(seq: u64) -> u64 {
    seq | PENDING_BIT
}

/// Bytes a message record with a payload of `payload_len` bytes occupies in the ring (header,
/// payload and padding up to the next record): `round_up(32 + payload_len, 64)`. `None` on
/// overflow.
pub const fn record_size(payload_len: usize) -> Option<usize> {
    match payload_len.checked_add(HEADER + RECORD_ALIGN - 1) {
        Some(n) => Some(n & !(RECORD_ALIGN - 1)),
        None => None,
    }
}

/// [`record_size`] for a payload length already known to fit a ring (at most `u32::MAX`).
#[inline(always)]
pub(crate) const fn record_size_of(payload_len: usize) -> usize {
    (payload_len + HEADER + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// The payload alignment a ring gives to values of alignment `align`: at least 64.
pub const fn payload_align(align: usize) -> usize {
    if align > RECORD_ALIGN {
        align
    } else {
        RECORD_ALIGN
    }
}

/// The largest record a region of `len` bytes takes: `len - 64`. A producer never fills the
/// region completely: the line after its last record is always free space, where it keeps the
/// pending mark of the next message (see the module docs of [`crate::ring`]).
#[inline(always)]
pub const fn max_record(len: usize) -> usize {
    len - RECORD_ALIGN
}

/// The ring bytes of one mapping: `len` bytes from `base`, plus loom's stand-ins.
///
/// Cheap to clone (two words outside loom): every cursor keeps its own copy, so that the hot
/// paths compute addresses from fields of the cursor itself, which the compiler keeps in
/// registers across the atomic operations, instead of reloading them through the shared ring.
/// Under loom the clones share one tracker and one set of commit-word stand-ins.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    /// Ring byte 0.
    base: NonNull<u8>,
    /// A power of two in `MIN_REGION ..= MAX_REGION` (a copy taken at set-up, never reread).
    len: usize,
    /// `len - 1`: positions are masked with it.
    mask: u64,
    /// Loom's data-race checker and commit-word stand-ins (empty outside loom).
    shadow: std::sync::Arc<Shadow>,
}

/// Loom's bookkeeping of a region: one per ring, shared by the cursors' copies.
#[derive(Debug)]
pub(crate) struct Shadow {
    /// Data-race checker for loom (empty otherwise).
    pub(crate) tracker: AccessTracker,
    /// Access to the commit words (loom stand-ins under loom, empty otherwise).
    commits: CommitWords,
}

// SAFETY: a `Region` is an address range inside a mapping that the ring keeps alive; every
// access through it follows the ring protocol (disjoint byte ranges per end, commit words only
// atomically), so sharing or sending the address is sound.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// The region of `len` bytes at `base`.
    ///
    /// # Safety
    ///
    /// `base .. base + len` must stay mapped, readable and writable while the region lives, and
    /// `base` must be 32 modulo 64 (so record headers sit in the second half of a line and
    /// their 8-byte words are aligned).
    #[cfg_attr(
        loom,
        allow(
            clippy::arc_with_non_send_sync,
            reason = "under loom the shadow holds loom's cells, which are not Sync; the Region \
                      that owns the Arc is Send + Sync by its own (unsafe) impls above"
        )
    )]
    pub(crate) unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        debug_assert!(len.is_power_of_two() && (MIN_REGION..=MAX_REGION).contains(&len));
        debug_assert_eq!(base.as_ptr() as usize % RECORD_ALIGN, HEADER);
        Region {
            base,
            len,
            mask: len as u64 - 1,
            shadow: std::sync::Arc::new(Shadow {
                tracker: AccessTracker::new(len),
                commits: CommitWords::new(len),
            }),
        }
    }

    /// Loom's data-race checker (a no-op outside loom).
    #[inline(always)]
    pub(crate) fn tracker(&self) -> &AccessTracker {
        &self.shadow.tracker
    }

    /// Region length in bytes.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Ring offset of position `pos`.
    #[inline(always)]
    pub(crate) fn mask(&self, pos: u64) -> usize {
        (pos & self.mask) as usize
    }

    /// Address of ring byte `offset` (`offset < len`).
    #[inline(always)]
    pub(crate) fn at(&self, offset: usize) -> NonNull<u8> {
        debug_assert!(offset < self.len);
        // SAFETY: `offset < len` and the region is `len` mapped bytes (see `new`).
        unsafe { self.base.add(offset) }
    }

    /// Address of the commit word (the `sequence` field) of the header at ring offset `offset`
    /// (a multiple of 64, below `len`).
    #[inline(always)]
    fn commit_word(&self, offset: usize) -> *mut u64 {
        debug_assert!(offset.is_multiple_of(RECORD_ALIGN));
        let header = self.at(offset).cast::<MessageHeader>().as_ptr();
        // SAFETY: the 32-byte header at a record start lies inside the region; this computes an
        // address and reads nothing.
        unsafe { core::ptr::addr_of_mut!((*header).sequence) }
    }

    /// Loads the commit word of the header at ring offset `offset` (a multiple of 64 below
    /// `len`, so the word is in the region and 8-aligned). Commit words are accessed atomically
    /// only, by every end, while another end may access them.
    #[inline(always)]
    pub(crate) fn load_commit(&self, offset: usize, order: Ordering) -> u64 {
        // SAFETY: in the region and aligned (`commit_word`); all concurrent accesses are atomic.
        unsafe {
            self.shadow
                .commits
                .load(offset, self.commit_word(offset), order)
        }
    }

    /// Stores `value` into the commit word of the header at ring offset `offset`.
    ///
    /// # Safety
    ///
    /// The caller (a producer, or the creator before any end exists) must own the word: it lies
    /// in free space, which consumers only load atomically.
    #[inline(always)]
    pub(crate) unsafe fn store_commit(&self, offset: usize, value: u64, order: Ordering) {
        // SAFETY: in the region and aligned; owned by the caller (see above).
        unsafe {
            self.shadow
                .commits
                .store(offset, self.commit_word(offset), value, order)
        }
    }

    /// Writes every field of the header at ring offset `offset` except its commit word, with
    /// plain stores.
    ///
    /// # Safety
    ///
    /// The caller must own the header's bytes (free space, reserved by it).
    #[inline(always)]
    pub(crate) unsafe fn write_header(
        &self,
        offset: usize,
        len: u32,
        flags: u32,
        type_id: u64,
        timestamp_ns: u64,
    ) {
        self.tracker().write(offset, HEADER);
        let h = self.at(offset).cast::<MessageHeader>().as_ptr();
        let mut first = [0u8; 8];
        first[..4].copy_from_slice(&len.to_ne_bytes());
        first[4..].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: in the region, 8-aligned (offset is a multiple of 64, the base 32 mod 64) and
        // owned by the caller; none of these fields is the commit word. `len` and `flags` are
        // the first 8 bytes of the header (`#[repr(C)]`), written as one word.
        unsafe {
            h.cast::<u64>().write(u64::from_ne_bytes(first));
            core::ptr::addr_of_mut!((*h).type_id).write(type_id);
            core::ptr::addr_of_mut!((*h).timestamp_ns).write(timestamp_ns);
        }
    }

    /// Writes a filler of `skip` bytes (a multiple of 64, at least 64) at ring offset `offset`:
    /// every header field but the commit word.
    ///
    /// # Safety
    ///
    /// The caller must own bytes `offset .. offset + skip` (free space), `offset + skip <= len`.
    #[inline]
    pub(crate) unsafe fn write_filler(&self, offset: usize, skip: usize) {
        debug_assert!(
            skip >= RECORD_ALIGN && skip.is_multiple_of(RECORD_ALIGN) && offset + skip <= self.len
        );
        // SAFETY: owned by the caller (see above).
        unsafe {
            self.write_header(
                offset,
                (skip - HEADER) as u32,
                MessageHeader::FLAG_WRAP,
                0,
                0,
            )
        };
    }

    /// Reads the `len` and `flags` fields of the header at ring offset `offset`, once each,
    /// volatile (another process may write them): only these copies may be checked and used.
    ///
    /// # Safety
    ///
    /// The header's commit word must have been acquired as published, and the record not
    /// released since.
    #[inline(always)]
    pub(crate) unsafe fn read_len_flags(&self, offset: usize) -> (u32, u32) {
        self.tracker().read(offset, HEADER);
        // `len` and `flags` are the header's first 8 bytes: one load (native byte order).
        let h = self.at(offset).cast::<u64>().as_ptr();
        // SAFETY: in the region and 8-aligned (a record start); published and acquired
        // (caller); any bytes are a valid `u64`.
        let word = unsafe { h.read_volatile() };
        let bytes = word.to_ne_bytes();
        (
            u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        )
    }

    /// Whether the first 16 bytes of the header at ring offset `offset`, address `h` (`len`,
    /// `flags`, `type_id`) are exactly `len`, no flags and `type_id`, read once (one 16-byte
    /// load on x86-64, two volatile 8-byte loads elsewhere and under loom). Only the answer is
    /// used, never the bytes read.
    ///
    /// # Safety
    ///
    /// As [`Self::read_len_flags`].
    #[inline(always)]
    pub(crate) unsafe fn header_is(
        &self,
        offset: usize,
        h: NonNull<u8>,
        len: u32,
        type_id: u64,
    ) -> bool {
        debug_assert_eq!(h, self.at(offset));
        self.tracker().read(offset, HEADER);
        let mut first = [0u8; 8];
        first[..4].copy_from_slice(&len.to_ne_bytes());
        let first = u64::from_ne_bytes(first);
        let h = h.as_ptr();
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        {
            use core::arch::x86_64::{
                __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set_epi64x,
            };
            // SAFETY: 16 bytes of a published header in the region (caller); SSE2 is part of
            // x86-64; an unaligned load of any bytes is valid.
            unsafe {
                let got = _mm_loadu_si128(h.cast::<__m128i>());
                let want = _mm_set_epi64x(type_id as i64, first as i64);
                _mm_movemask_epi8(_mm_cmpeq_epi8(got, want)) == 0xffff
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom))))]
        {
            let h = h.cast::<u64>();
            // SAFETY: as in `read_len_flags`; `type_id` is the header's second word.
            unsafe { h.read_volatile() == first && h.add(1).read_volatile() == type_id }
        }
    }

    /// Classifies the record at position `pos` for an end that expects sequence number `seq`
    /// there, reading its header only if it is published (`Acquire`): the bounds-checked
    /// length of a message or filler, or why not.
    #[inline(always)]
    pub(crate) fn classify(&self, pos: u64, seq: u64) -> Slot {
        let offset = self.mask(pos);
        let commit = self.load_commit(offset, Ordering::Acquire);
        if commit != seq {
            return if commit == pending(seq) {
                Slot::Pending
            } else {
                Slot::Corrupt("commit word (header sequence number)")
            };
        }
        // SAFETY: published (the commit word holds `seq`, acquired above).
        let (len, flags) = unsafe { self.read_len_flags(offset) };
        debug_assert!(offset.is_multiple_of(RECORD_ALIGN));
        let to_end = (self.len - offset) as u64;
        let size = (HEADER as u64 + u64::from(len)).next_multiple_of(RECORD_ALIGN as u64);
        if flags & MessageHeader::FLAG_WRAP != 0 {
            let skip = HEADER as u64 + u64::from(len);
            // A filler is a whole number of lines, ends inside the region and never spans all
            // of it (no producer ever writes one that long).
            if !skip.is_multiple_of(RECORD_ALIGN as u64) || skip > to_end || skip >= self.len as u64
            {
                return Slot::Corrupt("filler length");
            }
            return Slot::Filler { skip };
        }
        if size > to_end {
            return Slot::Corrupt("record crosses the end of the region");
        }
        self.tracker().read(offset, size as usize);
        Slot::Message { len, size }
    }
}

/// What [`Region::classify`] found at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A published message: payload `len` bytes, record `size` bytes (both checked).
    Message {
        /// Payload length, as read once and checked.
        len: u32,
        /// Record size in bytes.
        size: u64,
    },
    /// A published filler of `skip` bytes (checked).
    Filler {
        /// Bytes to skip.
        skip: u64,
    },
    /// Nothing published: the word holds the pending mark of the expected sequence number.
    Pending,
    /// The commit word or the header is impossible for an honest producer.
    Corrupt(&'static str),
}

/// A published message a consumer can read in place, until it releases it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peeked {
    /// Its header, in the ring; the payload (`len` bytes, aligned as it was written) follows it.
    header: NonNull<MessageHeader>,
    /// The payload length as read (once) and checked: the record lies inside the region. Use
    /// this, never the header's own (shared, rewritable) `len`, for bounds.
    len: u32,
    /// The lane it came from (0 for an SPSC ring; the producer's index for a multi-producer
    /// ring).
    lane: u32,
    /// Position after the record: pass it back to release the record.
    pub end: u64,
}

impl Peeked {
    /// A peeked message whose header is at `header`.
    #[inline(always)]
    pub(crate) fn new(header: NonNull<u8>, len: u32, end: u64) -> Self {
        Peeked {
            header: header.cast(),
            len,
            lane: 0,
            end,
        }
    }

    /// The lane it came from.
    #[inline(always)]
    pub(crate) fn lane(&self) -> u32 {
        self.lane
    }

    /// Records the lane it came from.
    #[inline(always)]
    pub(crate) fn set_lane(&mut self, lane: u32) {
        self.lane = lane;
    }

    /// A copy of the header, each field read once (volatile: another process may write them).
    #[inline]
    pub(crate) fn header_copy(&self) -> MessageHeader {
        // SAFETY: the header was published and acquired before this `Peeked` was made, is
        // 8-aligned and stays mapped; a volatile read of plain integers is valid for any bytes.
        unsafe { self.header.as_ptr().read_volatile() }
    }

    /// The header's type id, read once (volatile).
    #[inline(always)]
    pub(crate) fn type_id(&self) -> u64 {
        // SAFETY: as in `header_copy`.
        unsafe { core::ptr::addr_of!((*self.header.as_ptr()).type_id).read_volatile() }
    }

    /// The payload length in bytes, as checked when the record was peeked.
    #[inline(always)]
    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    /// The payload's first byte (32 bytes after the header).
    #[inline(always)]
    pub(crate) fn payload(&self) -> NonNull<u8> {
        // SAFETY: a record's payload follows its header inside the region.
        unsafe { self.header.cast::<u8>().add(HEADER) }
    }
}
