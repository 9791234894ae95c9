//! Ring protocols over a region of a [`Slab`](crate::Slab): records of `[header | payload | pad]`
//! in a power-of-two byte region, with the control block in the same slab.
//!
//! # Layering
//!
//! | file | owns | never |
//! |---|---|---|
//! | `format.rs` | record sizes, positions and masks, commit words and pending marks, fillers, header writes and checked header reads | knows of ends, slots or processes |
//! | `control.rs` | the control block (version 4): identity, topology, end slots, owner words; create, attach (validate) and claim a slot | sleeps, wakes, reads `/proc` (liveness is a function it is given) |
//! | `spsc.rs` | the single-producer single-consumer cursors over one *lane* (a region and its slots), and the large-record restart (`Rewind`) | sleeps or wakes (it reports `Full`/`Empty`; the end layer waits and wakes) |
//! | `mpsc.rs` | many producers, one consumer: a lane per producer, the consumer's round-robin over the lanes (why lanes: its module docs) | anything `spsc.rs` never does |
//! | `broadcast.rs` | one producer, many consumers of one region: the gating minimum, joins, cutting off a lagging consumer (its module docs) | anything `spsc.rs` never does |
//!
//! Nothing in `ring/` names `channel`, `transport` or `wait`, allocates after set-up, or holds
//! a pointer inside the slab in the slab: positions are offsets, so the same bytes work mapped
//! at different addresses in two processes. Every atomic comes from `crate::sync` (loom's
//! under `cfg(loom)`).
//!
//! # Region
//!
//! Ring byte 0 sits 32 bytes before a page boundary after the control block, so ring byte `q`
//! lives at an address congruent to `q - 32` modulo 4096. Every record starts at a ring offset
//! that is a multiple of 64 (and of the payload's alignment when that is larger), its 32-byte
//! [`MessageHeader`](crate::MessageHeader) fills the second half of a cache line and the
//! payload starts right after it, 64-byte (or `align`-byte, up to [`MAX_ALIGN`]) aligned. A
//! message record takes [`record_size`]`(len)` = `round_up(32 + len, 64)` bytes. Headers are
//! stored in the machine's native byte order (a ring is only ever mapped on one machine).
//!
//! A header with `FLAG_WRAP` is a *filler*, not a message: the reader skips `32 + len` bytes.
//! The writer emits one when a record would cross the end of the region (the filler runs to
//! the end and the record goes to offset 0), and before a record whose payload alignment
//! exceeds 64 bytes when the write position is not aligned for it. An honest producer never
//! publishes two fillers in a row (after a wrap the next record is at offset 0, where no
//! alignment filler is needed), and never one spanning the whole region.
//!
//! # Positions, commit words and pending marks
//!
//! Positions are monotonically increasing `u64` byte counts, masked on access.
//!
//! **Publication goes through the header.** The `sequence` field of a record's header is its
//! *commit word*. The producer writes payload and every other header field with plain stores,
//! then publishes the record with one `Release` store of its commit word: the message's sequence
//! number (0, 1, 2, ...; a filler gets the sequence number of the message that follows it, and
//! consumes none). Before that store, it writes into the commit word at the record's *end* the
//! **pending mark** of the next message, `pending(s) = s | 1 << 63` (`Relaxed`, ordered by the
//! `Release` that follows). So at every moment the commit word at the producer's write position
//! holds `pending(next sequence number)`, and the consumer, at its read position `r` expecting
//! message `s`, finds exactly one of: `s` (published: the header and payload are visible after
//! its `Acquire` load), `pending(s)` (nothing yet), or anything else, which an honest producer
//! never leaves there: `Corrupted`, detected at once. The consumer never loads a producer's
//! position.
//!
//! This needs the word at a record's end to be free space when the record is published: a
//! producer **never fills the region completely**. The line after its last record is always
//! free, so a record is at most [`max_record`]`(len) = len - 64` bytes, and a typed channel's
//! region is sized for its capacity plus that line.
//!
//! The consumer releases space with one `Release` store of its read position (its end slot's
//! position word) after its last read of the record; the producer keeps a cached copy, rereads
//! the shared one (`Acquire`) only when the cache says full, and checks it (a multiple of 64,
//! not behind the cached copy, not ahead of its own write position).
//!
//! # Ends attach, leave and come back
//!
//! Each end has a slot in the control block (see `control.rs`): an owner word (pid, generation,
//! closed), its process's start time, a parked word and its position. An end that drops marks
//! itself closed; a liveness check that finds its process dead does the same. A closed (or dead)
//! end's slot can be claimed by a new process, and the survivor never has to be rebuilt:
//!
//! * a new **producer** finds where the published records end by following commit words from
//!   the consumer's read position (each header checked, at most one region), and continues with
//!   the next sequence number: every message the old producer published stays, in order, and a
//!   half-written one (its commit word still the pending mark) is overwritten;
//! * a new **consumer** continues at the read position the old one stored, expecting the
//!   sequence number the commit word there gives; a message the old one was reading when it died
//!   (not yet released) is delivered again.
//!
//! A consumer reports `Disconnected` when the ring is empty and the producer's slot is closed:
//! for a shared ring that means "no producer attached now".
//!
//! # Large records restart at the region's start
//!
//! A consumer that waits inside a blocking receive and polls stores its read position into its
//! slot's waiting word before it waits, and `u64::MAX` after (and before it parks). Before it
//! reserves a record of at least 16 KiB in a region more than 8 times as large, a producer
//! whose write position is not at the region's start compares that word with its write
//! position; if they are equal and the ring is empty (read position reloaded) it publishes a
//! wrap filler up to the end of the region, so the record goes to ring offset 0, into lines the
//! caches still hold. The word is a hint: the filler is an ordinary wrap filler, published only
//! when the positions say the space is free, so a stale or corrupt word can cost time, never a
//! message. Measured effect in BENCHMARKS.md. All of it is one type, `spsc::Rewind`.
//!
//! # Invariants (`debug_assert!`ed where they are relied on)
//!
//! * `read <= write <= read + len - 64`, both multiples of 64; each written by one end only.
//! * The commit word at the producer's write position is the pending mark of its next
//!   sequence number; the commit word at the consumer's read position is its expected sequence
//!   number (published) or that number's pending mark.
//! * No record or filler crosses the end of the region; every record starts at a multiple of 64
//!   (and of its payload alignment).
//! * Bytes `write .. read + len` belong to the producer, `read .. write` to the consumer; neither
//!   touches the other's bytes. Under loom this is checked per 64-byte chunk.
//!
//! # Shared between processes: what is checked and what is trusted
//!
//! A ring created with a name lives in a `/dev/shm` slab that another process maps. That process
//! is treated as a peer that may crash at any instruction and write anything anywhere:
//!
//! * The identity lines are validated once when a ring is attached (magic, version, topology,
//!   slot count, region offset and length against the mapped size, type id, fingerprint, payload
//!   layout, PID namespace); the values used afterwards (region length, wait counts, cut to
//!   bounded maxima) are copies taken then. Every control-block word is an atomic.
//! * Every position loaded from the other end is checked before it is used, every commit word
//!   is classified exactly (see above), every header's `len` and `flags` are read once
//!   (volatile) and only the copies are checked and used for bounds: a filler must be a whole
//!   number of lines, end inside the region and not span it; a message record must end inside
//!   the region and be at most `len - 64` bytes. Typed consumers also check the type id (read
//!   once), length and payload alignment. These checks run for in-process rings too: a few
//!   compares per message. A typed consumer first tries a fast peek
//!   (`SpscConsumer::try_peek_fast`): it accepts only a published record whose `len`, `flags`
//!   and type id, read once as one 16-byte block, are exactly the expected constants and which
//!   ends inside the region; any other record (or an earlier failed check) goes through the
//!   full classification, which reads the header again and checks its own copies.
//! * Every loop over peer data is bounded: a peek skips at most one filler, a recovering
//!   producer follows at most one region of records.
//! * A failed check is reported as `Corrupted`, and the consumer keeps reporting it; it never
//!   becomes an out-of-bounds access, a panic or a hang.
//!
//! What is trusted: that a peer does not write into records it has published (producer) or into
//! space it has not released (consumer) *while* the other end reads or writes them. The typed
//! views (`&T` of a received message, `&mut T` of a loan) are ordinary references to that
//! memory; a peer that breaks the rule races with them at the language level. For the `Pod`
//! payloads psyne carries this can change the bytes a reader sees (any bytes are a valid value),
//! never the bounds that were checked, and headers and control words are never read through such
//! references (atomics, or single volatile reads whose copies are checked).
//!
//! # Fitting
//!
//! A record of size `S <= len - 64` always fits eventually: if it does not fit before the end of
//! the region, the producer first publishes the filler on its own (at most `len - 64` bytes,
//! since the write position is then not at offset 0), and at offset 0 a record needs only
//! `S + 64 <= len` free bytes.

pub(crate) mod broadcast;
mod control;
mod format;
pub(crate) mod mpsc;
pub(crate) mod spsc;

pub(crate) use control::{
    ChannelIdentity, Claimed, Creator, OpenFailure, ProcessStamp, Ring, RingConfig, Topology,
    WaitWords, slab_size,
};
#[doc(hidden)]
pub use control::{MAGIC, layout};
pub use control::{MAX_CONSUMERS, MAX_PRODUCERS, PROTOCOL_VERSION};
pub(crate) use format::{HEADER, Peeked, record_size_of};
pub use format::{
    MAX_ALIGN, MAX_REGION, MIN_REGION, RECORD_ALIGN, max_record, payload_align, record_size,
};
