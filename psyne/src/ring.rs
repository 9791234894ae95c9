//! The single-producer single-consumer byte ring: records of `[header | payload | pad]` in a
//! power-of-two region of a [`Slab`], with the control block in the same slab.
//!
//! This module owns the ring *protocol*: where records go, how positions move and which memory
//! orderings make a payload visible. It never blocks (waiting is [`crate::wait`]'s), never
//! allocates after construction, and holds offsets only, no pointers, inside the slab, so that the
//! same bytes can later be mapped into two processes.
//!
//! # Slab layout
//!
//! ```text
//! slab offset 0            CONTROL_BLOCK (ControlBlock, 128-byte lines)
//!   line 0  identity:      magic, protocol version, region offset and length, type id,
//!                          fingerprint, pid and liveness word of each end
//!   line 1  producer:      write position (written by the producer only)
//!   line 2  consumer:      read position (written by the consumer only)
//!   line 3  signals:       consumer parked word, producer parked word, closed flag of each end
//!   line 4  waiting:       where the consumer waits in a blocking receive (written by it only)
//! slab offset REGION_OFFSET (= 4096 - 32)
//!           ring region:   `len` bytes, a power of two >= 64
//! ```
//!
//! The region starts 32 bytes before a page boundary, so ring byte `q` lives at an address
//! congruent to `q - 32` modulo 4096. Every record starts at a ring offset that is a multiple of 64
//! (and of the payload's alignment when that is larger), its 32-byte [`MessageHeader`] fills the
//! second half of a cache line and the payload starts right after it, at a 64-byte (or
//! `align`-byte, up to [`MAX_ALIGN`]) aligned address. A message record takes
//! [`record_size`]`(len)` = `round_up(32 + len, 64)` bytes: the tail padding of one record and the
//! header of the next share a line, so no more than 63 bytes are wasted per record.
//!
//! A header with [`MessageHeader::FLAG_WRAP`] is a *filler*, not a message: the reader skips
//! `32 + len` bytes. The writer emits one when a record would cross the end of the region (the
//! filler runs to the end and the record goes to offset 0), and before a record whose payload
//! alignment exceeds 64 bytes when the write position is not aligned for it.
//!
//! # Positions and orderings
//!
//! Positions are monotonically increasing `u64` byte counts, masked on access; `write - read` is
//! the number of bytes in use, always in `0 ..= len`.
//!
//! **Publication goes through the header.** The `sequence` field of a record's header is its
//! *commit word*. The producer writes payload and every other header field with plain stores,
//! then publishes the record with one `Release` store of its commit word: the message's sequence
//! number (0, 1, 2, ...; a filler gets the sequence number of the message that follows it, and
//! consumes none). The consumer keeps the sequence number it expects next and, at its read
//! position, `Acquire`-loads the commit word: equal means published (the header and payload are
//! visible), anything else means not yet. So a message costs the consumer one cross-core line
//! transfer, the header's, before it can hand the message out; it does not load the write
//! position while messages flow.
//!
//! Why a commit word can never match early: the word at the consumer's read position `p` holds
//! either (a) [`UNCOMMITTED`] (`u64::MAX`, never a sequence number), (b) the real commit, or (c)
//! the header of the record at `p - len`, whose sequence number is lower than the expected one
//! (the consumer received that record, or the message after it if it is a filler, before coming
//! back to `p`: a filler's message starts less than `len` bytes after it). It never holds bytes
//! of an older payload (which could be anything) or the zero of a fresh ring: the creator stores
//! [`UNCOMMITTED`] at ring offset 0 before the ring exists for anyone, and when the producer
//! publishes a record ending at `e` it first stores [`UNCOMMITTED`] (`Relaxed`, ordered by the
//! commit's `Release`) into the word at `e`, if that word is free space by its cached read
//! position (`e - cached_read < len`); if it is not, `e - len` is the consumer's read position
//! when it was loaded, a record start, and its header (case c) stays there until the consumer
//! reaches `e`. An alignment filler is committed (with the same sequence number) after the
//! record that follows it, so the consumer that acquires it also sees that record's commit.
//!
//! The producer still stores the write position (`Release`) after the commit words: openers
//! validate it and the consumer, once every 64 consecutive empty polls (`VALIDATE_EVERY`) or once
//! the producer is gone, uses it to detect a corrupt commit word (write past the read position but
//! the word disagrees: `Corrupted`, not an endless `Empty`). It may lag behind the consumer's read
//! position (the consumer can take a record whose commit it saw before the store of the write
//! position); that only means "nothing more". A producer killed between a commit and its store of
//! the write position leaves it behind for good: once the producer is gone, the stream ends where
//! the commit words end (the consumer reloads the word at its read position after seeing the
//! closed flag, then reports `Disconnected`), whatever a lagging write position says.
//!
//! Symmetrically the consumer releases space with one `Release` store of the read position after
//! its last read of the record, and the producer `Acquire`-loads it before reusing the space. The
//! producer keeps a cached copy of the read position and rereads the shared one only when the
//! cache says full.
//!
//! Wake-ups: a parking consumer raises its parked word, issues a `SeqCst` fence and re-polls the
//! commit word; the producer stores the commit word (and the write position), issues a `SeqCst`
//! fence and reads the parked word. One of the two sees the other's store (see [`crate::wait`]).
//!
//! **Large records restart at the region's start.** A consumer that waits inside a blocking
//! receive (`recv`, `recv_timeout`) and polls says so: it stores its read position into the
//! `waiting` word (control-block line 4) before it waits, and `NOT_WAITING` (`u64::MAX`) after,
//! and before it parks on the futex (a parked consumer would need a wake-up to skip a filler). Before
//! it reserves a record of at least 16 KiB (`REWIND_MIN`) in a region more than 8 times as large
//! (`REWIND_RATIO`), a producer whose write position `w` is at ring offset `o >= size` (so not
//! at the region's start) compares that word with `w`; if they are equal it reloads the read
//! position, and if the ring is empty (read `== w`: the consumer released everything) it
//! publishes a wrap filler from `o` up to the end of the region, so the record goes to ring
//! offset 0, which the consumer can take once it skipped the filler.
//!
//! Why: without this, messages sent at a pace the consumer keeps up with walk through the
//! whole region (31 MiB for 31 one-MiB slots), every one into lines that left the caches long
//! ago, while a queue of `Box`es reuses the allocation just freed, still cached. Why only for a
//! polling consumer: until the consumer skips the filler, its bytes count as used, so the ring
//! holds only the `o` bytes before the filler (one record, when records are all alike); a
//! polling consumer skips it within a cache-line transfer, long before the producer has written
//! a 16 KiB record, while a parked one would need a futex wake-up and one busy elsewhere
//! (computing on the last message) would leave the producer with that one-record ring until its
//! next receive. One window remains: a consumer that stops polling (its `recv_timeout` expires,
//! or it parks) after the producer read the word and before the filler is published leaves the
//! producer those `o` bytes until it skips the filler (a parked one is woken by the filler's
//! publication). The word is a hint: the filler
//! is an ordinary wrap filler, published only when the positions say the space is free, so a
//! stale or corrupt word can cost time, never a message. The costs: one more header read for
//! the consumer (small next to a 16 KiB payload), two stores of the word per blocking wait,
//! and for large records one load of a line that stays cached while messages stream. Measured
//! effect in BENCHMARKS.md.
//!
//! # Invariants (`debug_assert!`ed where they are relied on)
//!
//! * `read <= write <= read + len`, both multiples of 64; each is written by one end only (the
//!   shared write position may lag behind the consumer's read position, see above).
//! * The producer's cached read position is never ahead of the real one, and is resynchronised
//!   (an `Acquire` load) before the producer concludes "full".
//! * The commit word at the consumer's read position equals the consumer's expected sequence
//!   number only once the record there is published (see "Why a commit word can never match
//!   early"); commit words are only accessed atomically while the other end may access them.
//! * No record or filler crosses the end of the region; every record starts at a multiple of 64
//!   (and of its payload alignment).
//! * Bytes `write .. read + len` belong to the producer, `read .. write` to the consumer; neither
//!   touches the other's bytes. Under loom this is checked per 64-byte chunk.
//!
//! Waiting (spin, yield, futex) lives in [`crate::wait`]; the parked words and closed flags sit on
//! the control block's signals line.
//!
//! # Shared between processes: what is trusted and what is checked
//!
//! A ring created with a name ([`crate::Channel`]'s `.shared(name)`) lives in a `/dev/shm` slab
//! that another process maps ([`crate::Channel::open_consumer`] and friends). That process is
//! treated as a peer that may crash at any instruction and whose memory may be corrupt, so:
//!
//! * The identity line is validated once when an end attaches (magic, version, region offset and
//!   length against the mapped size, type id, fingerprint, payload fit, PID namespace, both
//!   positions); the values used afterwards (region length, wait strategy) are copies taken then.
//! * Every position loaded from the other end is checked before it is used: the consumer checks
//!   that the write position is a multiple of 64 and at most `len` ahead of its own read position
//!   (once the producer is gone, a write position behind it only means the producer died between
//!   a commit and its store of the position: the stream ends where the commit words end); the
//!   producer checks that the read position is a multiple of 64, not behind its cached copy and
//!   not ahead of its own write position. An end never reloads its *own*
//!   position from shared memory.
//! * Every header's `len` and `flags` are read once (`read_volatile`) and only those copies are
//!   checked and used for bounds (the payload length handed out is the checked copy, never the
//!   header's own field, which the other process could rewrite), after its commit word matched:
//!   a filler must be a multiple of 64 bytes and end inside the region; a message record must end
//!   inside the region (a record crossing the end without a filler is rejected). A record is at
//!   most `len` bytes, so it never reaches past the consumer's own unreleased bytes. Typed consumers also check the type id (read once), length and payload
//!   alignment. These checks run for in-process rings too: a few compares per message.
//! * A failed check is reported as `Corrupted` (the end stays where it was and keeps reporting
//!   it); it never becomes an out-of-bounds access, a panic or a hang.
//!
//! What is trusted: that a peer does not write into records it has published (producer) or into
//! space it has not released (consumer) *while* the other end reads or writes them. A peer that
//! does so can change the bytes of a payload under a reader (`Pod` types accept any bytes, so the
//! reader sees a valid but meaningless value), never the bounds that were checked.
//!
//! Liveness: each end's pid word and liveness word (the start time of its process, from
//! `/proc/<pid>/stat`, in clock ticks since boot) let the other end detect its death while it
//! waits; the dead end is then marked closed in the control block, and the survivor gets
//! `Disconnected` after draining what was fully published. A message is published by one store
//! of its commit word, after everything else in it, so a producer killed mid-message published
//! nothing of it.
//!
//! # Fitting
//!
//! A record of size `S <= len` always fits eventually: if it does not fit before the end of the
//! region, the producer first publishes the filler on its own (which needs only the space up to the
//! end, at most `len`), and at offset 0 a record needs only `S <= len` free bytes. So the only
//! size limit is `record_size(payload) <= len`.

use crate::message::MessageHeader;
use crate::slab::{Slab, SlabBuilder, SlabError};
use crate::sync::{AccessTracker, AtomicU32, AtomicU64, CommitWords, Futex, Ordering};
use crate::wait::{self, AWAKE, Wait};
use core::ptr::NonNull;
use crossbeam_utils::CachePadded;
use std::sync::Arc;

/// `b"PSYNRING"` read as a little-endian `u64`: marks an initialised control block.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PSYNRING");
/// Version of the ring protocol and control-block layout described in this module (2:
/// publication through the header's commit word).
pub const PROTOCOL_VERSION: u32 = 3;
/// Offset in the slab of ring byte 0 (32 bytes before the first page boundary after the control
/// block, so that headers sit in the second half of a cache line).
pub const REGION_OFFSET: usize = 4096 - HEADER;
/// Records start at ring offsets that are multiples of this.
pub const RECORD_ALIGN: usize = 64;
/// The largest payload alignment a ring supports.
pub const MAX_ALIGN: usize = 4096;
/// The smallest ring region, in bytes.
pub const MIN_REGION: usize = RECORD_ALIGN;
/// The largest ring region, in bytes (filler lengths must fit the header's `u32`).
pub const MAX_REGION: usize = 1 << 32;
/// Size of a [`MessageHeader`].
const HEADER: usize = MessageHeader::SIZE;
/// The value of a commit word (a header's `sequence` field) that means "nothing committed here
/// yet": written at ring offset 0 when the ring is created and after each publication at the
/// position that follows it (see the module docs). No message ever has this sequence number.
pub const UNCOMMITTED: u64 = u64::MAX;
/// How many consecutive empty polls of the commit word the consumer makes between two loads of
/// the write position (which detect a corrupt header that would otherwise look empty forever).
const VALIDATE_EVERY: u32 = 64;
/// Records of at least this many bytes go back to the start of the region when the ring is
/// empty, if the region holds more than [`REWIND_RATIO`] of them (see "Large records restart at
/// the region's start" in the module docs). Smaller under loom, so that the models' small
/// records in small rings take that path too.
const REWIND_MIN: usize = if cfg!(loom) { 128 } else { 16 * 1024 };
/// See [`REWIND_MIN`].
const REWIND_RATIO: usize = if cfg!(loom) { 2 } else { 8 };

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
#[inline]
const fn record_size_of(payload_len: usize) -> usize {
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

/// Line 0 of the control block: what the ring is. Written once before the ends exist, except the
/// pid and liveness words, which each end sets when it attaches and clears when it detaches.
///
/// Offsets are part of the cross-process protocol: see [`layout`].
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Identity {
    /// [`MAGIC`] once the control block is initialised (stored last, `Release`).
    magic: AtomicU64,
    /// [`PROTOCOL_VERSION`].
    version: u32,
    /// [`FLAG_TIMESTAMPS`], [`FLAG_PARK`].
    flags: u32,
    /// Slab offset of ring byte 0: [`REGION_OFFSET`].
    region_offset: u64,
    /// Ring region length in bytes: a power of two in `MIN_REGION ..= MAX_REGION`.
    region_len: u64,
    /// `Message::TYPE_ID` of a typed channel, 0 for a raw one.
    type_id: u64,
    /// `Message::FINGERPRINT` of a typed channel, 0 for a raw one.
    fingerprint: u64,
    /// Process id of the producer (0: none attached).
    producer_pid: AtomicU32,
    /// Process id of the consumer (0: none attached).
    consumer_pid: AtomicU32,
    /// Start time of the producer's process (clock ticks since boot, from `/proc/<pid>/stat`),
    /// or 0 (unknown, or an in-process ring): tells a live producer from a reused pid.
    producer_liveness: AtomicU64,
    /// Start time of the consumer's process, as for the producer.
    consumer_liveness: AtomicU64,
    /// Process id of the process that created the ring (and owns its name).
    creator_pid: u32,
    /// `spins` of the wait strategy (see [`FLAG_PARK`]).
    wait_spins: u32,
    /// Start time of the creator's process (as the liveness words), 0 if unknown.
    creator_start: u64,
    /// Inode of the creator's PID namespace (`/proc/self/ns/pid`), 0 if unknown.
    pid_namespace: u64,
    /// `yields` of the wait strategy.
    wait_yields: u32,
    /// Reserved, zero.
    reserved: u32,
}

/// Control-block flag ([`layout::FLAGS`]): the producer stamps each header with its send time.
pub const FLAG_TIMESTAMPS: u32 = 1 << 0;
/// Control-block flag ([`layout::FLAGS`]): the wait strategy is [`Wait::SpinThenPark`] (else
/// [`Wait::BusySpin`]).
pub const FLAG_PARK: u32 = 1 << 1;

/// Byte offsets of the control block's words in the slab: the cross-process protocol of
/// [`PROTOCOL_VERSION`] 3 (all little-endian). Tools and tests may read them; only psyne writes
/// them.
pub mod layout {
    /// `u64` [`MAGIC`](super::MAGIC).
    pub const MAGIC: usize = 0;
    /// `u32` protocol version.
    pub const VERSION: usize = 8;
    /// `u32` flags ([`FLAG_TIMESTAMPS`](super::FLAG_TIMESTAMPS), [`FLAG_PARK`](super::FLAG_PARK)).
    pub const FLAGS: usize = 12;
    /// `u64` slab offset of ring byte 0.
    pub const REGION_OFFSET: usize = 16;
    /// `u64` ring region length.
    pub const REGION_LEN: usize = 24;
    /// `u64` type id (0: raw).
    pub const TYPE_ID: usize = 32;
    /// `u64` layout fingerprint (0: raw).
    pub const FINGERPRINT: usize = 40;
    /// `u32` pid of the producer (0: none).
    pub const PRODUCER_PID: usize = 48;
    /// `u32` pid of the consumer (0: none).
    pub const CONSUMER_PID: usize = 52;
    /// `u64` start time of the producer's process.
    pub const PRODUCER_LIVENESS: usize = 56;
    /// `u64` start time of the consumer's process.
    pub const CONSUMER_LIVENESS: usize = 64;
    /// `u32` pid of the creator.
    pub const CREATOR_PID: usize = 72;
    /// `u64` start time of the creator's process.
    pub const CREATOR_START: usize = 80;
    /// `u64` PID namespace inode of the creator.
    pub const PID_NAMESPACE: usize = 88;
    /// `u64` write position (line 1).
    pub const WRITE: usize = 128;
    /// `u64` read position (line 2).
    pub const READ: usize = 256;
    /// `u32` consumer parked word (line 3).
    pub const CONSUMER_PARKED: usize = 384;
    /// `u32` producer parked word.
    pub const PRODUCER_PARKED: usize = 388;
    /// `u32` producer closed flag.
    pub const PRODUCER_CLOSED: usize = 392;
    /// `u32` consumer closed flag.
    pub const CONSUMER_CLOSED: usize = 396;
    /// `u64` the read position at which the consumer waits in a blocking receive, else any
    /// other value (`u64::MAX` once it stopped waiting); a hint (line 4, since version 3).
    pub const CONSUMER_WAITING: usize = 512;
    /// Bytes of the control block that carry meaning (the rest up to the region is zero).
    pub const END: usize = 640;
}

#[cfg(all(not(loom), target_arch = "x86_64"))]
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(Identity, magic) == layout::MAGIC);
    assert!(offset_of!(Identity, version) == layout::VERSION);
    assert!(offset_of!(Identity, flags) == layout::FLAGS);
    assert!(offset_of!(Identity, region_offset) == layout::REGION_OFFSET);
    assert!(offset_of!(Identity, region_len) == layout::REGION_LEN);
    assert!(offset_of!(Identity, type_id) == layout::TYPE_ID);
    assert!(offset_of!(Identity, fingerprint) == layout::FINGERPRINT);
    assert!(offset_of!(Identity, producer_pid) == layout::PRODUCER_PID);
    assert!(offset_of!(Identity, consumer_pid) == layout::CONSUMER_PID);
    assert!(offset_of!(Identity, producer_liveness) == layout::PRODUCER_LIVENESS);
    assert!(offset_of!(Identity, consumer_liveness) == layout::CONSUMER_LIVENESS);
    assert!(offset_of!(Identity, creator_pid) == layout::CREATOR_PID);
    assert!(offset_of!(Identity, creator_start) == layout::CREATOR_START);
    assert!(offset_of!(Identity, pid_namespace) == layout::PID_NAMESPACE);
    assert!(core::mem::size_of::<Identity>() <= 128);
    assert!(offset_of!(ControlBlock, write) == layout::WRITE);
    assert!(offset_of!(ControlBlock, read) == layout::READ);
    assert!(offset_of!(ControlBlock, signals) == layout::CONSUMER_PARKED);
    assert!(
        offset_of!(Signals, producer_parked) == layout::PRODUCER_PARKED - layout::CONSUMER_PARKED
    );
    assert!(
        offset_of!(Signals, producer_closed) == layout::PRODUCER_CLOSED - layout::CONSUMER_PARKED
    );
    assert!(
        offset_of!(Signals, consumer_closed) == layout::CONSUMER_CLOSED - layout::CONSUMER_PARKED
    );
    assert!(offset_of!(ControlBlock, waiting) == layout::CONSUMER_WAITING);
    assert!(core::mem::size_of::<ControlBlock>() == layout::END);
};

/// Line 3 of the control block: rarely written words, read after every fenced publication.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Signals {
    /// [`wait::PARKED`] while the consumer sleeps (or is about to), else [`wait::AWAKE`].
    consumer_parked: Futex,
    /// [`wait::PARKED`] while the producer sleeps (or is about to), else [`wait::AWAKE`].
    producer_parked: Futex,
    /// 1 once the producer is gone (stored `Release` after its last publication), else 0.
    producer_closed: AtomicU32,
    /// 1 once the consumer is gone, else 0.
    consumer_closed: AtomicU32,
}

/// [`ControlBlock::waiting`] of a consumer that is not waiting.
const NOT_WAITING: u64 = u64::MAX;

/// The control block at slab offset 0. Holds offsets only, no pointers.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ControlBlock {
    identity: CachePadded<Identity>,
    /// Write position: bytes ever published; written by the producer only (`Release`).
    write: CachePadded<AtomicU64>,
    /// Read position: bytes ever released; written by the consumer only (`Release`); always
    /// `<= write` and `>= write - region_len`.
    read: CachePadded<AtomicU64>,
    signals: CachePadded<Signals>,
    /// The read position at which the consumer waits inside a blocking receive; [`NOT_WAITING`]
    /// (or any other value) when it does not. On a line of its own, read by the producer only
    /// before large records: the consumer's stores around its waits disturb no other word. A
    /// hint: the producer acts on it only after checking the positions.
    waiting: CachePadded<AtomicU64>,
}

impl ControlBlock {
    /// The pid word, liveness word and closed flag of `end`.
    fn end_words(&self, end: End) -> (&AtomicU32, &AtomicU64, &AtomicU32) {
        match end {
            End::Producer => (
                &self.identity.producer_pid,
                &self.identity.producer_liveness,
                &self.signals.producer_closed,
            ),
            End::Consumer => (
                &self.identity.consumer_pid,
                &self.identity.consumer_liveness,
                &self.signals.consumer_closed,
            ),
        }
    }
}

/// A volatile copy of a plain control-block field (which another process may have written).
#[inline]
fn vol<T: Copy>(field: &T) -> T {
    // SAFETY: `field` is a valid, aligned reference to an initialised integer.
    unsafe { core::ptr::read_volatile(field) }
}

// The layout documented above, outside loom (whose atomics are larger): one `CachePadded` line
// each (128 bytes on x86_64 and aarch64, where the offsets are exactly 0, 128, 256 and 384).
#[cfg(not(loom))]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    let line = align_of::<CachePadded<u8>>();
    assert!(size_of::<Identity>() <= 128 && size_of::<Signals>() == 16);
    assert!(offset_of!(ControlBlock, identity) == 0);
    assert!(offset_of!(ControlBlock, write) == size_of::<Identity>().next_multiple_of(line));
    assert!(offset_of!(ControlBlock, read) == offset_of!(ControlBlock, write) + line);
    assert!(offset_of!(ControlBlock, signals) == offset_of!(ControlBlock, read) + line);
    assert!(size_of::<ControlBlock>() <= REGION_OFFSET);
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    assert!(offset_of!(ControlBlock, signals) == 384 && size_of::<ControlBlock>() == 640);
};
const _: () = assert!(core::mem::align_of::<ControlBlock>() <= 4096);

/// One end of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The producer.
    Producer,
    /// The consumer.
    Consumer,
}

impl End {
    /// The other end.
    pub(crate) fn other(self) -> End {
        match self {
            End::Producer => End::Consumer,
            End::Consumer => End::Producer,
        }
    }
}

/// A process as the liveness words record it: its pid and start time (0: unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessStamp {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22), 0 if unknown.
    pub start: u64,
}

/// The read and write positions an end starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Positions {
    /// Read position.
    pub read: u64,
    /// Write position.
    pub write: u64,
}

/// How a ring is shared with another process, for [`Ring::create_shared`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SharedInit {
    /// The end this process takes.
    pub local: End,
    /// This process.
    pub me: ProcessStamp,
    /// This process's PID namespace inode (0: unknown).
    pub pid_namespace: u64,
    /// Whether the producer stamps headers with send times.
    pub timestamps: bool,
}

/// What an opener expects of a shared ring, for [`Ring::open_shared`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect {
    /// The type id (0: raw).
    pub type_id: u64,
    /// The fingerprint (0: raw).
    pub fingerprint: u64,
    /// Payload size and ring alignment of the message type, for typed ends.
    pub payload: Option<(usize, usize)>,
}

/// Why [`Ring::open_shared`] refused a slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenFailure {
    /// The magic word is 0: the creator has not finished initialising (or died doing so).
    NotReady,
    /// Another protocol version.
    VersionMismatch { expected: u32, found: u32 },
    /// Another message type.
    IncompatibleType { expected: u64, found: u64 },
    /// Same type id, another layout.
    IncompatibleLayout { expected: u64, found: u64 },
    /// The end is attached to a live process.
    AlreadyConnected { pid: u32 },
    /// The end was attached before and is gone.
    EndClosed,
    /// The creator lives in another PID namespace.
    ForeignPidNamespace { expected: u64, found: u64 },
    /// A check of the control block failed.
    Corrupted(&'static str),
}

/// A ring: its slab and where things are in it. Shared (through an `Arc`) by both ends.
#[derive(Debug)]
pub(crate) struct Ring {
    /// The control block, at slab offset 0; valid while `slab` lives.
    control: NonNull<ControlBlock>,
    /// Ring byte 0, at slab offset [`REGION_OFFSET`].
    region: NonNull<u8>,
    /// Region length: a power of two in `MIN_REGION ..= MAX_REGION` (a copy: never reread from
    /// the control block after the ring is set up).
    len: usize,
    /// How both ends wait.
    wait: Wait,
    /// The end that lives in another process, for a shared ring whose other end is (or will be)
    /// attached by another mapping; `None` when both ends are in this `Ring`.
    remote: Option<End>,
    /// Data-race checker for loom (empty otherwise).
    tracker: AccessTracker,
    /// Access to the commit words (loom stand-ins under loom, empty otherwise).
    commits: CommitWords,
    /// The slab's device address, asked of the driver once when the ring is set up (`None`:
    /// not CUDA-registered).
    #[cfg(feature = "cuda")]
    cuda_base: Option<u64>,
    /// Owns the memory (the pointers above point into it); dropped after the control block
    /// (see `Drop`).
    #[cfg_attr(
        not(feature = "cuda"),
        expect(dead_code, reason = "read only for CUDA device addresses")
    )]
    slab: Slab,
}

// SAFETY: a `Ring` is shared by exactly one producer and one consumer, which access the region
// only as the protocol allows (disjoint byte ranges, ordered by the positions' release/acquire)
// and the control block only through atomics and write-once fields.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

/// Identity of a ring's contents, recorded in the control block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingSpec {
    /// Region length in bytes: a power of two in `MIN_REGION ..= MAX_REGION`.
    pub len: usize,
    /// Type id (0 for raw).
    pub type_id: u64,
    /// Fingerprint (0 for raw).
    pub fingerprint: u64,
    /// How both ends wait.
    pub wait: Wait,
}

impl Ring {
    /// Maps a slab through `slab` (a builder of the right size, see [`Ring::slab_size`]) and
    /// initialises the control block for two ends in this process.
    pub(crate) fn new(slab: SlabBuilder, spec: RingSpec) -> Result<Arc<Ring>, SlabError> {
        Ok(Self::init(slab.build()?, spec, None))
    }

    /// Initialises the control block of a freshly created shared slab (zero-filled, not yet
    /// visible as a ring to anyone: the magic word is stored last). The local end is attached to
    /// this process; the other end is left for another process to attach.
    pub(crate) fn create_shared(slab: Slab, spec: RingSpec, shared: SharedInit) -> Arc<Ring> {
        Self::init(slab, spec, Some(shared))
    }

    fn init(slab: Slab, spec: RingSpec, shared: Option<SharedInit>) -> Arc<Ring> {
        debug_assert!(spec.len.is_power_of_two() && (MIN_REGION..=MAX_REGION).contains(&spec.len));
        assert!(
            slab.len() >= Self::slab_size(spec.len),
            "slab smaller than requested"
        );
        let base = slab.as_ptr();
        let control = base.cast::<ControlBlock>();
        let own = std::process::id();
        let (producer, consumer, creator, pid_namespace, timestamps) = match shared {
            None => (
                ProcessStamp { pid: own, start: 0 },
                ProcessStamp { pid: own, start: 0 },
                ProcessStamp { pid: own, start: 0 },
                0,
                false,
            ),
            Some(s) => {
                let none = ProcessStamp { pid: 0, start: 0 };
                match s.local {
                    End::Producer => (s.me, none, s.me, s.pid_namespace, s.timestamps),
                    End::Consumer => (none, s.me, s.me, s.pid_namespace, s.timestamps),
                }
            }
        };
        let (park, spins, yields) = match spec.wait {
            Wait::BusySpin => (0, 0, 0),
            Wait::SpinThenPark { spins, yields } => (FLAG_PARK, spins, yields),
        };
        let cb = ControlBlock {
            identity: CachePadded::new(Identity {
                magic: AtomicU64::new(0),
                version: PROTOCOL_VERSION,
                flags: park | if timestamps { FLAG_TIMESTAMPS } else { 0 },
                region_offset: REGION_OFFSET as u64,
                region_len: spec.len as u64,
                type_id: spec.type_id,
                fingerprint: spec.fingerprint,
                producer_pid: AtomicU32::new(producer.pid),
                consumer_pid: AtomicU32::new(consumer.pid),
                producer_liveness: AtomicU64::new(producer.start),
                consumer_liveness: AtomicU64::new(consumer.start),
                creator_pid: creator.pid,
                wait_spins: spins,
                creator_start: creator.start,
                pid_namespace,
                wait_yields: yields,
                reserved: 0,
            }),
            write: CachePadded::new(AtomicU64::new(0)),
            read: CachePadded::new(AtomicU64::new(0)),
            signals: CachePadded::new(Signals {
                consumer_parked: Futex::new(AWAKE),
                producer_parked: Futex::new(AWAKE),
                producer_closed: AtomicU32::new(0),
                consumer_closed: AtomicU32::new(0),
            }),
            waiting: CachePadded::new(AtomicU64::new(NOT_WAITING)),
        };
        // Checked at compile time outside loom; loom's atomics are larger, so check here too.
        assert!(core::mem::size_of::<ControlBlock>() <= REGION_OFFSET);
        // SAFETY: the slab is page-aligned (>= align_of::<ControlBlock>()), at least
        // `slab_size(len)` bytes, zero-filled and not yet shared (a shared slab's name exists,
        // but openers wait for the magic word, stored below); the control block ends before
        // REGION_OFFSET (asserted above), so writing it at offset 0 stays inside the slab and
        // outside the ring region.
        unsafe { control.as_ptr().write(cb) };
        // SAFETY: REGION_OFFSET + len <= slab.len(), so the offset stays inside the mapping.
        let region = unsafe { base.add(REGION_OFFSET) };
        let ring = Ring {
            control,
            region,
            len: spec.len,
            wait: spec.wait,
            remote: shared.map(|s| s.local.other()),
            tracker: AccessTracker::new(spec.len),
            commits: CommitWords::new(spec.len),
            #[cfg(feature = "cuda")]
            cuda_base: slab.cuda_device_ptr().ok(),
            slab,
        };
        // The zero-filled header at offset 0 must not read as message 0: mark it uncommitted
        // before anyone can see the ring (the magic word below publishes it to openers).
        // SAFETY: offset 0 is a record start inside the region; no end exists yet.
        unsafe { ring.store_commit(0, UNCOMMITTED, Ordering::Relaxed) };
        // SAFETY: just initialised; shared access only from now on.
        unsafe { control.as_ref() }
            .identity
            .magic
            .store(MAGIC, Ordering::Release);
        Arc::new(ring)
    }

    /// Validates the control block of a shared slab mapped by [`Slab::open_shared`] and attaches
    /// `local` to this process (`me`). `alive` tells whether a recorded process still runs.
    ///
    /// Nothing in the slab is trusted: every identity word is checked (see the module docs), and
    /// the end is attached by a compare-and-swap of its pid word from 0, so that of two racing
    /// openers exactly one wins. Returns the ring, the (validated) positions to start from and
    /// whether the producer stamps times.
    pub(crate) fn open_shared(
        slab: Slab,
        local: End,
        expect: Expect,
        me: ProcessStamp,
        pid_namespace: u64,
        alive: fn(ProcessStamp) -> bool,
    ) -> Result<(Arc<Ring>, Positions, bool), OpenFailure> {
        if slab.len() < REGION_OFFSET + MIN_REGION {
            return Err(OpenFailure::Corrupted(
                "segment smaller than a control block and a ring",
            ));
        }
        let control = slab.as_ptr().cast::<ControlBlock>();
        // SAFETY: the slab is page-aligned and longer than the control block (checked above);
        // every field of the control block is an integer or an atomic integer, valid for any
        // bytes; the creator initialised it before storing the magic word, which we check first
        // (`Acquire`). Plain fields are read with volatile reads and only their copies are used.
        let cb = unsafe { control.as_ref() };
        let id = &*cb.identity;
        let magic = id.magic.load(Ordering::Acquire);
        if magic == 0 {
            return Err(OpenFailure::NotReady);
        }
        if magic != MAGIC {
            return Err(OpenFailure::Corrupted("magic word (not a psyne channel)"));
        }
        let version = vol(&id.version);
        if version != PROTOCOL_VERSION {
            return Err(OpenFailure::VersionMismatch {
                expected: PROTOCOL_VERSION,
                found: version,
            });
        }
        if vol(&id.region_offset) != REGION_OFFSET as u64 {
            return Err(OpenFailure::Corrupted("region offset"));
        }
        let region_len = vol(&id.region_len);
        if !region_len.is_power_of_two()
            || !(MIN_REGION as u64..=MAX_REGION as u64).contains(&region_len)
            || region_len > (slab.len() - REGION_OFFSET) as u64
        {
            return Err(OpenFailure::Corrupted("region length"));
        }
        let len = region_len as usize;
        let type_id = vol(&id.type_id);
        if type_id != expect.type_id {
            return Err(OpenFailure::IncompatibleType {
                expected: expect.type_id,
                found: type_id,
            });
        }
        let fingerprint = vol(&id.fingerprint);
        if fingerprint != expect.fingerprint {
            return Err(OpenFailure::IncompatibleLayout {
                expected: expect.fingerprint,
                found: fingerprint,
            });
        }
        if let Some((size, align)) = expect.payload
            && (record_size(size).is_none_or(|r| r > len) || align > len.min(MAX_ALIGN))
        {
            return Err(OpenFailure::Corrupted("region too small for one message"));
        }
        let ns = vol(&id.pid_namespace);
        if ns != 0 && pid_namespace != 0 && ns != pid_namespace {
            return Err(OpenFailure::ForeignPidNamespace {
                expected: pid_namespace,
                found: ns,
            });
        }
        let flags = vol(&id.flags);
        let wait = if flags & FLAG_PARK != 0 {
            Wait::SpinThenPark {
                spins: vol(&id.wait_spins),
                yields: vol(&id.wait_yields),
            }
        } else {
            Wait::BusySpin
        };
        let read = cb.read.load(Ordering::Acquire);
        let write = cb.write.load(Ordering::Acquire);
        if read > write
            || write - read > region_len
            || !read.is_multiple_of(RECORD_ALIGN as u64)
            || !write.is_multiple_of(RECORD_ALIGN as u64)
        {
            return Err(OpenFailure::Corrupted("positions"));
        }
        // Attach: a compare-and-swap of our pid word from 0.
        let (pid_word, liveness, closed) = cb.end_words(local);
        if closed.load(Ordering::Acquire) != 0 {
            return Err(OpenFailure::EndClosed);
        }
        if let Err(pid) = pid_word.compare_exchange(0, me.pid, Ordering::AcqRel, Ordering::Acquire)
        {
            let holder = ProcessStamp {
                pid,
                start: liveness.load(Ordering::Acquire),
            };
            if alive(holder) {
                return Err(OpenFailure::AlreadyConnected { pid });
            }
            // Its holder died without detaching: record that for the other end too.
            closed.store(1, Ordering::Release);
            return Err(OpenFailure::EndClosed);
        }
        liveness.store(me.start, Ordering::Release);
        // A detaching end stores its closed flag before clearing its pid word: if we won the
        // slot of an end that just left, we see the flag now.
        if closed.load(Ordering::Acquire) != 0 {
            pid_word.store(0, Ordering::Release);
            return Err(OpenFailure::EndClosed);
        }
        // SAFETY: REGION_OFFSET + len <= slab.len() (checked above).
        let region = unsafe { slab.as_ptr().add(REGION_OFFSET) };
        let timestamps = flags & FLAG_TIMESTAMPS != 0;
        Ok((
            Arc::new(Ring {
                control,
                region,
                len,
                wait,
                remote: Some(local.other()),
                tracker: AccessTracker::new(len),
                commits: CommitWords::new(len),
                #[cfg(feature = "cuda")]
                cuda_base: slab.cuda_device_ptr().ok(),
                slab,
            }),
            Positions { read, write },
            timestamps,
        ))
    }

    /// The end in another process, for a shared ring (`None`: both ends are in this process).
    #[inline]
    pub(crate) fn remote(&self) -> Option<End> {
        self.remote
    }

    /// The pid, liveness word and closed flag of `end`.
    pub(crate) fn end_state(&self, end: End) -> (ProcessStamp, bool) {
        let (pid, liveness, closed) = self.control().end_words(end);
        let closed = closed.load(Ordering::Acquire) != 0;
        let pid = pid.load(Ordering::Acquire);
        let start = liveness.load(Ordering::Acquire);
        (ProcessStamp { pid, start }, closed)
    }

    /// Marks `end` closed on behalf of its process, which died without detaching: the other end
    /// then reports `Disconnected` (after draining what was published) as if it had dropped.
    pub(crate) fn mark_closed(&self, end: End) {
        let (_, _, closed) = self.control().end_words(end);
        closed.store(1, Ordering::Release);
    }

    /// Slab bytes needed for a region of `len` bytes.
    pub(crate) fn slab_size(len: usize) -> usize {
        REGION_OFFSET + len
    }

    #[inline]
    fn control(&self) -> &ControlBlock {
        // SAFETY: initialised in `new`, lives as long as `self.slab`, accessed only through
        // atomics and fields never written after initialisation.
        unsafe { self.control.as_ref() }
    }

    /// Region length in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The consumer stopped waiting, or is about to park (then it no longer polls): large
    /// records must not restart at the region's start for it (see the module docs).
    #[inline]
    pub(crate) fn stop_waiting(&self) {
        self.control().waiting.store(NOT_WAITING, Ordering::Relaxed);
    }

    /// The device address of `ptr`, a byte of this ring's slab, when the slab is CUDA-registered
    /// (see [`Slab::cuda_device_ptr`]): arithmetic on the address the driver gave when the ring
    /// was set up, no driver call (the error, when not registered, comes from the slab).
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_device_ptr(&self, ptr: NonNull<u8>) -> Result<u64, SlabError> {
        let base = self.slab.as_ptr().as_ptr() as usize;
        let offset = (ptr.as_ptr() as usize).wrapping_sub(base);
        debug_assert!(offset < self.slab.len());
        match self.cuda_base {
            Some(device) => Ok(device + offset as u64),
            None => Ok(self.slab.cuda_device_ptr()? + offset as u64),
        }
    }

    /// How both ends wait.
    #[inline]
    pub(crate) fn wait(&self) -> Wait {
        self.wait
    }

    /// The producer's parked word.
    #[inline]
    pub(crate) fn producer_parked(&self) -> &Futex {
        &self.control().signals.producer_parked
    }

    /// The consumer's parked word.
    #[inline]
    pub(crate) fn consumer_parked(&self) -> &Futex {
        &self.control().signals.consumer_parked
    }

    /// Address of ring byte `offset` (`offset < len`).
    #[inline]
    fn at(&self, offset: usize) -> NonNull<u8> {
        debug_assert!(offset < self.len);
        // SAFETY: `offset < len` and the region is `len` bytes inside the slab.
        unsafe { self.region.add(offset) }
    }

    #[inline]
    fn mask(&self, pos: u64) -> usize {
        (pos & (self.len as u64 - 1)) as usize
    }

    /// Address of the commit word (the `sequence` field) of the header at ring offset `offset`
    /// (a multiple of 64, below `len`).
    #[inline(always)]
    fn commit_word(&self, offset: usize) -> *mut u64 {
        debug_assert!(offset.is_multiple_of(RECORD_ALIGN));
        let header = self.at(offset).cast::<MessageHeader>().as_ptr();
        // SAFETY: `offset` is a multiple of 64 below `len`, so the 32-byte header at it lies
        // inside the region; this computes an address and reads nothing.
        unsafe { core::ptr::addr_of_mut!((*header).sequence) }
    }

    /// `Acquire`/`Relaxed`-loads the commit word of the header at ring offset `offset`.
    ///
    /// # Safety
    ///
    /// `offset` must be a multiple of 64 below `len` (so the word is in the region and
    /// 8-aligned: the region base is 32 mod 64). Commit words are only ever accessed atomically
    /// while another end may access them.
    #[inline(always)]
    unsafe fn load_commit(&self, offset: usize, order: Ordering) -> u64 {
        // SAFETY: in the region and aligned (caller); all concurrent accesses are atomic.
        unsafe { self.commits.load(offset, self.commit_word(offset), order) }
    }

    /// Stores `value` into the commit word of the header at ring offset `offset`.
    ///
    /// # Safety
    ///
    /// As [`Self::load_commit`], and the caller (the producer, or the creator before any end
    /// exists) must own the word: it lies in free space, which the consumer only loads
    /// atomically, at its read position.
    #[inline(always)]
    unsafe fn store_commit(&self, offset: usize, value: u64, order: Ordering) {
        // SAFETY: in the region and aligned, owned by the caller (see above).
        unsafe {
            self.commits
                .store(offset, self.commit_word(offset), value, order)
        }
    }

    /// Writes a filler of `skip` bytes (a multiple of 64, at least 64) at ring offset `offset`:
    /// every header field but the commit word (`sequence`), which the producer stores when it
    /// publishes the filler.
    ///
    /// # Safety
    ///
    /// The caller (the producer) must own bytes `offset .. offset + skip` (free space), and
    /// `offset + skip <= len`.
    unsafe fn write_filler(&self, offset: usize, skip: usize) {
        debug_assert!(
            skip >= RECORD_ALIGN && skip.is_multiple_of(RECORD_ALIGN) && offset + skip <= self.len
        );
        self.tracker.write(offset, HEADER);
        // SAFETY: the caller owns these bytes; the address is 8-aligned (offset is a multiple
        // of 64, the region base is 32 mod 64).
        unsafe {
            write_header_fields(
                self.at(offset).cast(),
                (skip - HEADER) as u32,
                MessageHeader::FLAG_WRAP,
                0,
                0,
            )
        };
    }
}

/// Writes every field of the header at `header` except its commit word (`sequence`), with plain
/// stores.
///
/// # Safety
///
/// `header` must be valid for writes and 8-aligned, and the caller must own the header (the
/// consumer only loads its commit word, atomically, until it is published).
#[inline(always)]
unsafe fn write_header_fields(
    header: NonNull<MessageHeader>,
    len: u32,
    flags: u32,
    type_id: u64,
    timestamp_ns: u64,
) {
    let h = header.as_ptr();
    // SAFETY: valid, aligned and owned (caller); none of these fields is the commit word.
    unsafe {
        core::ptr::addr_of_mut!((*h).len).write(len);
        core::ptr::addr_of_mut!((*h).flags).write(flags);
        core::ptr::addr_of_mut!((*h).type_id).write(type_id);
        core::ptr::addr_of_mut!((*h).timestamp_ns).write(timestamp_ns);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the control block was written in `new` and nobody else holds the ring any more;
        // dropping it in place releases loom's bookkeeping (a no-op for std atomics). `slab` is
        // dropped after this, unmapping the memory.
        unsafe { core::ptr::drop_in_place(self.control.as_ptr()) };
    }
}

/// Why a reservation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReserveError {
    /// Not enough free space now.
    Full,
    /// The consumer is gone.
    Disconnected,
    /// The consumer's read position failed a check (see the module docs).
    Corrupted(&'static str),
}

/// Why a peek failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeekError {
    /// Nothing published.
    Empty,
    /// Nothing published and the producer is gone.
    Disconnected,
    /// The write position or a header failed a check (see the module docs).
    Corrupted(&'static str),
}

/// A published message the consumer can read in place, until it releases it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peeked {
    /// Its header, in the ring; the payload (`len` bytes, aligned as it was written) follows it.
    header: NonNull<MessageHeader>,
    /// The payload length as read (once) and checked by [`RingConsumer::try_peek`]: the record
    /// `32 + len` bytes from the header lies inside the region. Use this,
    /// never the header's own (shared, rewritable) `len`, for bounds.
    len: u32,
    /// Read position after the record: pass to [`RingConsumer::release`].
    pub end: u64,
}

impl Peeked {
    /// The header.
    ///
    /// # Safety
    ///
    /// The record must not have been released yet (the producer may reuse it after that).
    #[inline]
    pub(crate) unsafe fn header<'a>(&self) -> &'a MessageHeader {
        // SAFETY: the header was published (and acquired) before this `Peeked` was made, it is
        // 8-aligned, and the producer leaves it alone until the caller releases the record.
        unsafe { self.header.as_ref() }
    }

    /// The payload length in bytes, as checked when the record was peeked.
    #[inline]
    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    /// The payload's first byte (32 bytes after the header).
    #[inline]
    pub(crate) fn payload(&self) -> NonNull<u8> {
        // SAFETY: a record's payload follows its header inside the region.
        unsafe { self.header.cast::<u8>().add(HEADER) }
    }
}

/// Counters of a producer end ([`crate::Producer::stats`], [`crate::RawProducer::stats`]).
///
/// Plain fields owned by the end: reading them costs nothing and synchronises nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerStats {
    /// Messages published.
    pub messages: u64,
    /// Payload bytes published (headers and padding not counted).
    pub bytes: u64,
    /// Times an allocation found the ring full (once per blocking call that had to wait, once per
    /// failed `try_` call).
    pub full: u64,
    /// Times this end went to sleep on its futex waiting for space.
    pub parked: u64,
    /// Wake-up system calls this end issued to a sleeping consumer.
    pub wakeups: u64,
}

/// Counters of a consumer end ([`crate::Consumer::stats`], [`crate::RawConsumer::stats`]).
///
/// Plain fields owned by the end: reading them costs nothing and synchronises nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Messages received (and released).
    pub messages: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Times a receive found the ring empty (once per blocking call that had to wait, once per
    /// failed `try_` call).
    pub empty: u64,
    /// Times this end went to sleep on its futex waiting for a message.
    pub parked: u64,
    /// Wake-up system calls this end issued to a sleeping producer.
    pub wakeups: u64,
}

/// The producer's view of a ring. Exactly one exists per ring.
#[derive(Debug)]
pub(crate) struct RingProducer {
    ring: Arc<Ring>,
    /// Our write position: equal to the shared one between operations (we are its only writer).
    write: u64,
    /// The consumer's read position as last loaded: `<=` the real one; may be stale and is
    /// resynchronised when the free space it implies is too small.
    cached_read: u64,
    /// Sequence number of the next message.
    sequence: u64,
    /// Counters (messages, bytes and wake-ups are kept here; the channel keeps the others).
    pub(crate) stats: ProducerStats,
}

impl RingProducer {
    /// The producer end of a ring at `positions`: zero for a freshly built ring, those
    /// [`Ring::open_shared`] validated for one just attached.
    pub(crate) fn new(ring: Arc<Ring>, positions: Positions) -> Self {
        RingProducer {
            ring,
            write: positions.write,
            cached_read: positions.read,
            sequence: 0,
            stats: ProducerStats::default(),
        }
    }

    /// The ring.
    #[inline]
    pub(crate) fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The shared handle of the ring.
    #[inline]
    pub(crate) fn ring_arc(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// Whether `need` bytes are free after our write position, reloading the read position if the
    /// cached one says no.
    #[inline]
    fn has_space(&mut self, need: usize) -> Result<bool, ReserveError> {
        let len = self.ring.len as u64;
        debug_assert!(self.write - self.cached_read <= len);
        if len - (self.write - self.cached_read) >= need as u64 {
            return Ok(true);
        }
        self.has_space_reloaded(need)
    }

    /// [`Self::has_space`] after reloading the read position.
    #[inline(never)]
    fn has_space_reloaded(&mut self, need: usize) -> Result<bool, ReserveError> {
        self.reload_read()?;
        let len = self.ring.len as u64;
        Ok(len - (self.write - self.cached_read) >= need as u64)
    }

    /// Reloads the read position (`Acquire`) into our cached copy, after checking it: a multiple
    /// of 64, not behind the cached one, not ahead of our write position.
    #[inline]
    fn reload_read(&mut self) -> Result<(), ReserveError> {
        let read = self.ring.control().read.load(Ordering::Acquire);
        if read < self.cached_read || read > self.write || !read.is_multiple_of(RECORD_ALIGN as u64)
        {
            return Err(ReserveError::Corrupted("read position"));
        }
        self.cached_read = read;
        Ok(())
    }

    /// For a record of at least [`REWIND_MIN`] bytes, when our write position is not at the
    /// start of the region, the consumer says it waits there and the ring is empty (the
    /// consumer released everything we published; checked here): publishes a filler up to the
    /// end of the region, so that the record goes to ring offset 0, whose lines the last large
    /// messages used and the caches still hold.
    #[cold]
    #[inline(never)]
    fn rewind_if_empty(&mut self, offset: usize) -> Result<(), ReserveError> {
        self.reload_read()?;
        if self.cached_read == self.write {
            self.wrap(offset, self.ring.len - offset)?;
        }
        Ok(())
    }

    /// Whether the consumer end is gone.
    #[inline]
    pub(crate) fn is_disconnected(&self) -> bool {
        self.ring
            .control()
            .signals
            .consumer_closed
            .load(Ordering::Relaxed)
            != 0
    }

    /// Reserves a record for a payload of `len` bytes aligned to `align`, returning the position
    /// of its header. Nothing is published, except a filler before a wrap, which is published on
    /// its own (so that a record that fits only at offset 0 eventually does).
    ///
    /// Requires `record_size(len) <= ring len`, `align` a power of two in `64 ..= min(len,
    /// MAX_ALIGN)` (checked by the channel before calling).
    #[inline]
    pub(crate) fn try_reserve(&mut self, len: usize, align: usize) -> Result<u64, ReserveError> {
        let ring_len = self.ring.len;
        debug_assert!(len <= u32::MAX as usize);
        let size = record_size_of(len);
        debug_assert!(size <= ring_len, "record larger than the ring");
        debug_assert!(align.is_power_of_two() && (RECORD_ALIGN..=MAX_ALIGN).contains(&align));
        debug_assert!(align <= ring_len);
        if self.is_disconnected() {
            return Err(ReserveError::Disconnected);
        }
        if size >= REWIND_MIN && ring_len > REWIND_RATIO * size {
            let offset = self.ring.mask(self.write);
            // Only when the consumer waits for exactly our next record (a hint, on a line that
            // stays cached while messages stream), and the record fits before the consumer's
            // read position once the filler is published (`offset >= size`).
            if offset >= size && self.ring.control().waiting.load(Ordering::Relaxed) == self.write {
                self.rewind_if_empty(offset)?;
            }
        }
        loop {
            let offset = self.ring.mask(self.write);
            let to_end = ring_len - offset;
            let pad = offset.next_multiple_of(align) - offset;
            if pad + size <= to_end {
                if !self.has_space(pad + size)? {
                    return Err(ReserveError::Full);
                }
                if pad > 0 {
                    // SAFETY: `pad + size` bytes from `offset` are free (checked above) and
                    // end before the region does.
                    unsafe { self.ring.write_filler(offset, pad) };
                }
                self.ring.tracker.write(offset + pad, size);
                return Ok(self.write + pad as u64);
            }
            // Does not fit before the end: publish a filler up to the end on its own.
            self.wrap(offset, to_end)?;
        }
    }

    /// Publishes a filler from ring offset `offset` (our write position) to the end of the
    /// region, or reports `Full`.
    #[cold]
    #[inline(never)]
    fn wrap(&mut self, offset: usize, to_end: usize) -> Result<(), ReserveError> {
        debug_assert_eq!(offset + to_end, self.ring.len);
        if !self.has_space(to_end)? {
            return Err(ReserveError::Full);
        }
        // SAFETY: `to_end` bytes from `offset` are free (checked above): exactly up to the end
        // of the region.
        unsafe { self.ring.write_filler(offset, to_end) };
        self.publish(self.write, self.write + to_end as u64);
        Ok(())
    }

    /// Address of the payload of the record whose header is at `pos`.
    #[inline]
    pub(crate) fn payload(&self, pos: u64) -> NonNull<u8> {
        self.ring.at(self.ring.mask(pos) + HEADER)
    }

    /// Writes the header of the record reserved at `pos` (payload `len` bytes) and publishes it
    /// (with any alignment filler before it). Returns the header written.
    ///
    /// `pos` must come from the last `try_reserve` (with the same `len`), with nothing published
    /// since.
    #[inline]
    pub(crate) fn commit(&mut self, pos: u64, len: usize, type_id: u64, timestamp_ns: u64) {
        debug_assert!(pos >= self.write && pos - self.write < MAX_ALIGN as u64);
        let offset = self.ring.mask(pos);
        let size = record_size_of(len);
        debug_assert!(offset + size <= self.ring.len);
        self.ring.tracker.write(offset, size);
        // SAFETY: the record at `offset` was reserved for us by `try_reserve` (free space, not
        // visible to the consumer until its commit word is stored in `publish`); the header
        // address is 8-aligned.
        unsafe {
            write_header_fields(
                self.ring.at(offset).cast(),
                len as u32,
                0,
                type_id,
                timestamp_ns,
            )
        };
        self.publish(pos, pos + size as u64);
        self.sequence += 1;
        self.stats.messages += 1;
        self.stats.bytes += len as u64;
    }

    /// Publishes the record (message or wrap filler) whose header is at `record`, ending at
    /// `end`, together with an alignment filler at our write position if `record` is past it;
    /// then stores the write position and wakes the consumer if it sleeps.
    ///
    /// Every header field but the commit words must be written already. Order: the commit word
    /// at `end` is cleared (if we own it), then the record's commit word and the filler's are
    /// stored (`Release`): a consumer that acquires either sees the header, the payload and the
    /// cleared word after the record.
    #[inline(always)]
    fn publish(&mut self, record: u64, end: u64) {
        let len = self.ring.len as u64;
        debug_assert!(end > self.write && end - self.cached_read <= len);
        debug_assert!(record >= self.write && record < end);
        debug_assert!(end.is_multiple_of(RECORD_ALIGN as u64));
        let seq = self.sequence;
        if end - self.cached_read < len {
            // The word after the record is ours (free space): clear it, so that whatever an
            // earlier lap left there (payload bytes, say) never reads as committed. When it is
            // not ours, it holds the header of the record at `end - len`, committed with a lower
            // sequence number.
            let next = self.ring.mask(end);
            self.ring.tracker.write(next, 8);
            // SAFETY: `next` is a multiple of 64 in the region and is free space (above).
            unsafe { self.ring.store_commit(next, UNCOMMITTED, Ordering::Relaxed) };
        }
        // SAFETY: `record` (and our write position, when an alignment filler starts there) is a
        // record start in space reserved by `try_reserve`/`wrap`, still ours until published.
        unsafe {
            self.ring
                .store_commit(self.ring.mask(record), seq, Ordering::Release);
            if record != self.write {
                self.ring
                    .store_commit(self.ring.mask(self.write), seq, Ordering::Release);
            }
        }
        self.write = end;
        let cb = self.ring.control();
        cb.write.store(end, Ordering::Release);
        if self.ring.wait.may_park() && wait::wake_if_parked(&cb.signals.consumer_parked) {
            self.stats.wakeups += 1;
        }
    }
}

impl Drop for RingProducer {
    fn drop(&mut self) {
        let cb = self.ring.control();
        // Closed first, then the pid word: an opener that wins the cleared pid word sees the
        // flag (see `Ring::open_shared`).
        cb.signals.producer_closed.store(1, Ordering::Release);
        cb.identity.producer_pid.store(0, Ordering::Release);
        wait::wake_if_parked(&cb.signals.consumer_parked);
    }
}

/// The consumer's view of a ring. Exactly one exists per ring.
#[derive(Debug)]
pub(crate) struct RingConsumer {
    ring: Arc<Ring>,
    /// Our read position: equal to the shared one between operations (we are its only writer).
    read: u64,
    /// Sequence number of the next message: the commit word the header at our read position
    /// holds once it is published (message or filler).
    sequence: u64,
    /// Consecutive polls that found the commit word at our read position unpublished (see
    /// [`Self::not_committed`]).
    idle_polls: u32,
    /// Whether we store our read position into [`ControlBlock::waiting`] around blocking waits:
    /// only where records large enough to restart at the region's start can arrive.
    announce_waits: bool,
    /// Counters (wake-ups are kept here; the channel keeps the others).
    pub(crate) stats: ConsumerStats,
}

impl RingConsumer {
    /// The consumer end of a ring at `positions` (see [`RingProducer::new`]). An end attaches
    /// only once to a ring, so the next message is message 0.
    pub(crate) fn new(ring: Arc<Ring>, positions: Positions) -> Self {
        // No record in this ring can restart at the region's start: no need to say we wait.
        let announce_waits = ring.len > REWIND_RATIO * REWIND_MIN;
        RingConsumer {
            ring,
            read: positions.read,
            sequence: 0,
            idle_polls: 0,
            announce_waits,
            stats: ConsumerStats::default(),
        }
    }

    /// Records of `record_size` bytes at most arrive here (a typed consumer): if they are too
    /// small to restart at the region's start, we need not say when we wait.
    pub(crate) fn expect_records_of(&mut self, record_size: usize) {
        if record_size < REWIND_MIN {
            self.announce_waits = false;
        }
    }

    /// The ring.
    #[inline]
    pub(crate) fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The shared handle of the ring.
    #[inline]
    pub(crate) fn ring_arc(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// The next published message, skipping (and releasing) fillers. Does not release it.
    ///
    /// A record is published when the commit word of its header (at our read position) holds
    /// our expected sequence number; the write position is loaded only when it does not (see
    /// [`Self::not_committed`]). Checks every header it reads (see the module docs); a failed
    /// check returns `Corrupted` and leaves the read position where it was.
    #[inline]
    pub(crate) fn try_peek(&mut self) -> Result<Peeked, PeekError> {
        loop {
            let offset = self.ring.mask(self.read);
            debug_assert!(offset.is_multiple_of(RECORD_ALIGN));
            // SAFETY: `offset` is a multiple of 64 in the region; commit words are accessed
            // atomically only.
            let commit = unsafe { self.ring.load_commit(offset, Ordering::Acquire) };
            if commit != self.sequence {
                self.not_committed(offset)?;
            }
            self.idle_polls = 0;
            // Bytes left before the end of the region bound the record (checked before anything
            // past the header is touched).
            let to_end = (self.ring.len - offset) as u64;
            self.ring.tracker.read(offset, HEADER);
            let header = self.ring.at(offset).cast::<MessageHeader>();
            // SAFETY: the commit word at `offset` holds our expected sequence number, stored
            // (`Release`) by the producer after it wrote the header (and payload) of the record
            // there, and loaded `Acquire` above; the producer does not touch the record until we
            // release it. The address is 8-aligned and the 32-byte header lies in the region.
            // `len` and `flags` are each read once (volatile: another process may write them);
            // only these copies are checked and used for bounds.
            let (len, flags) = unsafe {
                (
                    core::ptr::addr_of!((*header.as_ptr()).len).read_volatile(),
                    core::ptr::addr_of!((*header.as_ptr()).flags).read_volatile(),
                )
            };
            if flags & MessageHeader::FLAG_WRAP != 0 {
                self.skip_filler(len, to_end)?;
                continue;
            }
            // `len` is a u32, so this cannot overflow.
            let size = (HEADER as u64 + u64::from(len)).next_multiple_of(RECORD_ALIGN as u64);
            if size > to_end {
                return Err(PeekError::Corrupted("record crosses the end of the region"));
            }
            self.ring.tracker.read(offset, size as usize);
            return Ok(Peeked {
                header,
                len,
                end: self.read + size,
            });
        }
    }

    /// The commit word at our read position (ring offset `offset`) did not hold our expected
    /// sequence number. `Ok` if it does after all (reloaded after an `Acquire` load of the
    /// producer's closed flag or write position), else `Empty`, `Disconnected` or `Corrupted`.
    ///
    /// The write position is loaded only if the producer is gone, or once every
    /// [`VALIDATE_EVERY`] consecutive empty polls: if it says the record at our read position
    /// was published (it is stored after the record's commit word) and the commit word still
    /// disagrees, the header is corrupt; without this a corrupt commit word would look empty
    /// forever. It is checked: a multiple of 64 and at most `len` ahead of our read position.
    /// It may lag behind our read position (the producer stores it after the commit words we
    /// already consumed), which means nothing more was published.
    #[inline(never)]
    fn not_committed(&mut self, offset: usize) -> Result<(), PeekError> {
        let closed = self
            .ring
            .control()
            .signals
            .producer_closed
            .load(Ordering::Acquire)
            != 0;
        self.idle_polls = self.idle_polls.wrapping_add(1);
        if !closed && !self.idle_polls.is_multiple_of(VALIDATE_EVERY) {
            return Err(PeekError::Empty);
        }
        let write = self.ring.control().write.load(Ordering::Acquire);
        if !write.is_multiple_of(RECORD_ALIGN as u64)
            || (write > self.read && write - self.read > self.ring.len as u64)
        {
            return Err(PeekError::Corrupted("write position"));
        }
        // SAFETY: as in `try_peek`.
        let committed =
            || unsafe { self.ring.load_commit(offset, Ordering::Acquire) } == self.sequence;
        if write <= self.read {
            if !closed {
                return Err(PeekError::Empty);
            }
            // The producer is gone. A producer killed between a commit and its store of the
            // write position leaves the write position behind our read position for good, and
            // may have committed the record at our read position after our first load of its
            // commit word: reload it (after the `Acquire` load of the closed flag) before
            // reporting the end of the stream.
            return if committed() {
                Ok(())
            } else {
                Err(PeekError::Disconnected)
            };
        }
        if committed() {
            return Ok(());
        }
        Err(PeekError::Corrupted("commit word (header sequence number)"))
    }

    /// Skips (releases) the filler at our read position, `32 + len` bytes long, after checking
    /// that it is a whole number of records and ends inside the region (`to_end` bytes left). A
    /// filler takes no sequence number.
    #[cold]
    #[inline(never)]
    fn skip_filler(&mut self, len: u32, to_end: u64) -> Result<(), PeekError> {
        let skip = HEADER as u64 + u64::from(len);
        if !skip.is_multiple_of(RECORD_ALIGN as u64) || skip > to_end {
            return Err(PeekError::Corrupted("filler length"));
        }
        self.advance(self.read + skip);
        Ok(())
    }

    /// Tells the producer whether we wait, inside a blocking receive and polling (not parked), at
    /// our read position (see "Large records restart at the region's start" in the module docs).
    #[inline]
    pub(crate) fn set_waiting(&self, waiting: bool) {
        if !self.announce_waits {
            return;
        }
        if waiting {
            self.ring
                .control()
                .waiting
                .store(self.read, Ordering::Relaxed);
        } else {
            self.ring.stop_waiting();
        }
    }

    /// Releases the message [`Self::try_peek`] returned (everything before `end`, its end) to
    /// the producer, and wakes the producer if it sleeps waiting for space.
    #[inline]
    pub(crate) fn release(&mut self, end: u64) {
        self.sequence = self.sequence.wrapping_add(1);
        self.advance(end);
    }

    /// Moves our read position to `end` and publishes it (`Release`), waking the producer if it
    /// sleeps.
    #[inline]
    fn advance(&mut self, end: u64) {
        debug_assert!(end > self.read && end - self.read <= self.ring.len as u64);
        debug_assert!(end.is_multiple_of(RECORD_ALIGN as u64));
        self.read = end;
        let cb = self.ring.control();
        cb.read.store(end, Ordering::Release);
        if self.ring.wait.may_park() && wait::wake_if_parked(&cb.signals.producer_parked) {
            self.stats.wakeups += 1;
        }
    }
}

impl Drop for RingConsumer {
    fn drop(&mut self) {
        let cb = self.ring.control();
        cb.signals.consumer_closed.store(1, Ordering::Release);
        cb.identity.consumer_pid.store(0, Ordering::Release);
        wait::wake_if_parked(&cb.signals.producer_parked);
    }
}
