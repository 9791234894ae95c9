//! The receiving side of a connection: frames from the socket into the local ring, read in the
//! consumer's own calls (see `PROTOCOL.md`, "Frames").
//!
//! A TCP consumer's ring is filled by an [`Inbound`], the ring's [`Source`]: when the consumer
//! finds its ring empty, its `recv` reads the socket itself, waiting in the kernel as a blocking
//! socket read does, so that a message crosses no thread between the kernel and the user (a
//! receiving pump thread cost a hand-off and a wake-up per message and, on a machine with few
//! cores, a core the consumer needed). Flow control stays end to end: a consumer that does not
//! call `recv` reads nothing, the socket's buffers fill, and TCP's backpressure fills the
//! sending ring.
//!
//! The reader is a state machine that keeps a frame begun in one call for the next, so every
//! call keeps its own deadline (`try_recv` reads what has arrived and never waits;
//! `recv_timeout` waits at most its timeout, a frame in progress included); a frame that has
//! begun must go on arriving, or after the stall timeout the connection is closed. Per frame:
//! it reads a header, checks every field and bounds the length by the ring's largest payload
//! before anything else, reserves that room in the ring and reads the payload straight into it,
//! each `readv` also reading what has arrived of the next frame's header (so back-to-back frames
//! cost one system call each); it publishes only whole messages. A compressed frame is read
//! into the codec's buffer, then decoded into the reserved room.
//!
//! A channel of one message type without compression knows every frame's length before its
//! header arrives, so at a frame boundary the reader reserves room for a run of records back to
//! back (up to 64 frames, 64 KiB and a quarter of the ring, never across the region's end) and
//! reads the run's headers into a local array and its payloads straight into the records with
//! one `readv`; each header is then checked as above and each whole frame published in order.
//! A stream of small messages that has backed up in the socket costs one system call per run
//! instead of one per message.
//!
//! An async consumer waits through the reactor, whose wake-ups come from the ring's producer;
//! its first wait moves the reader to a thread of its own (the receiving pump), which from then
//! on fills the ring as the consumer's calls did.

use super::pump::{Codec, End};
use super::wire::{self, CompressedPrefix, FrameHeader};
use super::{Compression, NetError};
use crate::channel::RawProducer;
use crate::channel::net::{Patience, Pulled, Source, align_of_payload};
use crate::message::Message;
use core::time::Duration;
use std::io::{self, IoSliceMut};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

/// How often the receiving pump checks whether its consumer is gone while nothing arrives.
const POLL: Duration = Duration::from_millis(50);

/// A payload rest at least this long is read blocking with `MSG_WAITALL` (see
/// [`Wire::read_all`]).
const WAIT_ALL: usize = 64 << 10;
/// Frames one run reads at most (see [`Inbound::read_run`]).
const MAX_RUN: usize = 64;
/// Ring bytes one run reserves at most.
const RUN_BYTES: usize = 64 << 10;

/// What one [`Inbound::read_run`] did.
enum Run {
    /// Nothing: no room for a run now (the one-frame path goes on).
    NotNow,
    /// It published at least one message.
    Published,
    /// It read part of a frame (the one-frame path finishes it).
    Progress,
    /// Nothing arrived in time.
    Waited,
}

/// Until when a read may wait for its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// Not at all.
    Now,
    /// Until this instant.
    At(Instant),
    /// Until something arrives or the connection ends.
    Forever,
}

impl Until {
    fn of(patience: Patience) -> Until {
        match patience {
            Patience::Never => Until::Now,
            Patience::Until(t) => Until::At(t),
            Patience::Forever => Until::Forever,
        }
    }

    /// A wait inside a frame, whose stall deadline is `t` (`None`: beyond any instant, a stall
    /// timeout too large to add): the earlier of this and `t`, but `Forever` stays a blocking
    /// read, which the wire itself ends after the stall timeout without a byte (see
    /// [`Wire::read_until`]).
    fn inside(self, t: Option<Instant>) -> Until {
        match (self, t) {
            (Until::At(u), Some(t)) => Until::At(u.min(t)),
            (other, _) => other,
        }
    }
}

/// Where the reader's bytes come from: the socket, or (fuzzing) bytes in memory.
pub(crate) trait Wire: Send + 'static {
    /// Reads into `bufs` what has arrived, waiting for the first byte as `until` allows:
    /// `Ok(0)` when the peer closed the connection, `WouldBlock` when nothing came in time.
    /// `Until::Forever` waits at most the wire's idle timeout (`set_idle_timeout`: the stall
    /// timeout in the consumer's calls, the poll interval in the pump), then `WouldBlock`.
    fn read_until(&mut self, bufs: &mut [IoSliceMut<'_>], until: Until) -> io::Result<usize>;
    /// Fills as much of `buf` as arrives before the idle timeout, in one call where the wire
    /// can (the rest of a large payload, read blocking): as `read_until(.., Forever)`.
    fn read_all(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_until(&mut [IoSliceMut::new(buf)], Until::Forever)
    }
    /// Sets how long an `Until::Forever` read waits without a byte.
    fn set_idle_timeout(&mut self, _timeout: Duration) -> io::Result<()> {
        Ok(())
    }
    /// Whether the peer closed the connection or it failed (does not wait).
    fn closed(&self) -> bool;
    /// Ends the connection.
    fn shutdown(&self);
}

/// One `recvmsg` into `bufs` with `flags`.
fn recv_vectored(stream: &TcpStream, bufs: &mut [IoSliceMut<'_>], flags: i32) -> io::Result<usize> {
    // SAFETY: all-zero is a valid `msghdr` (null name, no control data).
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    // `IoSliceMut` is ABI-compatible with `iovec` on Unix (std's documented guarantee).
    msg.msg_iov = bufs.as_mut_ptr().cast::<libc::iovec>();
    msg.msg_iovlen = bufs.len() as _;
    loop {
        // SAFETY: `msg` describes `bufs.len()` valid iovecs over live, writable memory (the
        // exclusive borrows in `bufs`) for the duration of the call; the descriptor is open.
        let r = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, flags) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Waits until `stream` is readable (or closed) or `until` passes; `false` on time-out.
fn readable_by(stream: &TcpStream, until: Instant) -> io::Result<bool> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let ts = libc::timespec {
            tv_sec: left.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut pfd = libc::pollfd {
            fd: stream.as_raw_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the stream's open descriptor, a valid timespec, no
        // signal mask.
        let r = unsafe { libc::ppoll(&mut pfd, 1, &ts, core::ptr::null()) };
        match r {
            0 => {}
            r if r > 0 => return Ok(true),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

impl Wire for TcpStream {
    fn read_until(&mut self, bufs: &mut [IoSliceMut<'_>], until: Until) -> io::Result<usize> {
        match until {
            // A blocking socket whose read timeout is the idle timeout: the kernel wakes this
            // thread when bytes arrive, as a plain blocking read.
            Until::Forever => recv_vectored(self, bufs, 0),
            Until::Now => recv_vectored(self, bufs, libc::MSG_DONTWAIT),
            Until::At(t) => loop {
                match recv_vectored(self, bufs, libc::MSG_DONTWAIT) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if !readable_by(self, t)? {
                            return Err(e);
                        }
                    }
                    r => return r,
                }
            },
        }
    }

    fn read_all(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // `MSG_WAITALL`: the kernel returns once all of `buf` is there (or at the read timeout,
        // a signal or the end, with what came), waking this thread once per large read rather
        // than once per arriving segment.
        recv_vectored(self, &mut [IoSliceMut::new(buf)], libc::MSG_WAITALL)
    }

    fn set_idle_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
    }

    fn closed(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the stream's open descriptor; timeout 0.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        r != 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }

    fn shutdown(&self) {
        let _ = TcpStream::shutdown(self, Shutdown::Both);
    }
}

/// What the reader accepts: frames of one message type, or of any.
pub(crate) trait Slots: Send + 'static {
    /// The alignment to reserve a message of `len` bytes tagged `type_id` with, or why such a
    /// frame is refused.
    fn check(&self, type_id: u64, len: usize) -> Result<usize, End>;
    /// The one payload length and alignment of every frame, for a channel of one type.
    fn fixed(&self) -> Option<(usize, usize)> {
        None
    }
}

/// Frames of any type, into a raw ring (64-byte aligned, as `allocate_bytes`).
pub(crate) struct RawSlots;

impl Slots for RawSlots {
    fn check(&self, _type_id: u64, _len: usize) -> Result<usize, End> {
        Ok(crate::ring::RECORD_ALIGN)
    }
}

/// Frames of `T` only, into a ring of `T`s (aligned for `T`, as `allocate::<T>`).
pub(crate) struct TypedSlots<T>(core::marker::PhantomData<fn() -> T>);

impl<T> TypedSlots<T> {
    /// The slots for `T`.
    pub(crate) fn new() -> Self {
        TypedSlots(core::marker::PhantomData)
    }
}

impl<T: Message> Slots for TypedSlots<T> {
    fn check(&self, type_id: u64, len: usize) -> Result<usize, End> {
        if type_id != T::TYPE_ID || len != core::mem::size_of::<T>() {
            return Err(End::Corrupted(
                "a frame's type id or length is not the channel's message type",
            ));
        }
        Ok(align_of_payload::<T>())
    }

    fn fixed(&self) -> Option<(usize, usize)> {
        Some((core::mem::size_of::<T>(), align_of_payload::<T>()))
    }
}

/// Where the reader is within the current frame.
#[derive(Debug, Clone, Copy)]
enum Frame {
    /// Reading a header (the bytes in `Inbound::next`).
    Head,
    /// Reading an uncompressed payload into the record reserved at `pos` (`None`: not yet
    /// reserved), `off` bytes of `len` read.
    Body {
        type_id: u64,
        len: usize,
        align: usize,
        pos: Option<u64>,
        off: usize,
    },
    /// Reading a compressed frame's prefix, `have` bytes of it read.
    Prefix {
        type_id: u64,
        len: usize,
        bytes: [u8; wire::COMPRESSED_PREFIX],
        have: usize,
    },
    /// Reading a compressed payload of `clen` bytes into the codec's buffer, `off` read.
    Packed {
        type_id: u64,
        prefix: CompressedPrefix,
        align: usize,
        clen: usize,
        off: usize,
    },
}

/// The reader of one connection; the [`Source`] of its consumer's ring.
pub(crate) struct Inbound<S, W> {
    wire: W,
    /// The ring's producer; `None` once the connection is over.
    tx: Option<RawProducer>,
    slots: S,
    codec: Codec,
    stall: Duration,
    /// The ring's largest payload: every announced length is bounded by it first.
    max: usize,
    /// The next frame's number.
    sequence: u64,
    /// The next frame's header, of which `have` bytes were read.
    next: [u8; wire::FRAME_HEADER],
    have: usize,
    frame: Frame,
    /// For a channel of one message type without compression: its payload length and the
    /// frames one run reads at most (see [`Inbound::read_run`]).
    run: Option<(usize, usize)>,
    /// How long a reservation waits for room: not at all in the consumer's calls (the ring is
    /// empty then, or holds a wrap filler that the consumer skips next: waiting for the
    /// consumer would wait for this very thread); a little at a time in the pump.
    room: Patience,
    /// When the current frame last made progress.
    progress: Instant,
    /// Why the reader stopped (kept for `Debug` output).
    why: Option<End>,
}

impl<S: Slots, W: Wire> Inbound<S, W> {
    /// The reader of frames from `wire` into `tx`'s ring, decoding `compression` (what the
    /// sender announced).
    pub(crate) fn new(
        wire: W,
        tx: RawProducer,
        slots: S,
        compression: Compression,
        stall: Duration,
    ) -> io::Result<Self> {
        let max = tx.max_payload();
        let run = slots.fixed().and_then(|(len, align)| {
            if compression != Compression::None || align != crate::ring::RECORD_ALIGN {
                return None;
            }
            let record = crate::ring::record_size_of(len);
            // At most a quarter of the ring, so that the rest stays for the messages already
            // received and not yet released (an async consumer's pump reads meanwhile).
            let count = (RUN_BYTES / record)
                .min(MAX_RUN)
                .min(tx.capacity_bytes() / 4 / record)
                .min((max + crate::ring::HEADER) / record);
            (count >= 2).then_some((len, count))
        });
        Ok(Inbound {
            wire,
            codec: Codec::new(compression, 1, max)?,
            tx: Some(tx),
            slots,
            stall,
            max,
            sequence: 0,
            next: [0; wire::FRAME_HEADER],
            have: 0,
            frame: Frame::Head,
            run,
            room: Patience::Never,
            progress: Instant::now(),
            why: None,
        })
    }

    /// Reads into `bufs` inside a frame, waiting as `until` allows but not past the stall
    /// deadline; `None` when nothing came in time (`Stalled` once the stall timeout has passed).
    fn read_inside(
        wire: &mut W,
        bufs: &mut [IoSliceMut<'_>],
        until: Until,
        progress: &mut Instant,
        stall: Duration,
    ) -> Result<Option<usize>, End> {
        let wait = until.inside(progress.checked_add(stall));
        Self::settle(wire.read_until(bufs, wait), progress, stall)
    }

    /// Reserves a record in `tx`'s ring, waiting as `room` allows: `None` when there is no room
    /// now.
    fn reserve(
        tx: &mut RawProducer,
        len: usize,
        align: usize,
        room: Patience,
    ) -> Result<Option<u64>, End> {
        match tx.end.reserve(len, align, room) {
            Ok(pos) => Ok(Some(pos)),
            Err(crate::SendError::Full | crate::SendError::Timeout) => Ok(None),
            Err(crate::SendError::Disconnected) => Err(End::Closed),
            Err(_) => Err(End::Corrupted("the local ring refused a reservation")),
        }
    }

    /// What a read inside a frame returned, as [`Self::read_inside`] reports it.
    fn settle(
        read: io::Result<usize>,
        progress: &mut Instant,
        stall: Duration,
    ) -> Result<Option<usize>, End> {
        match read {
            Ok(0) => Err(End::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => {
                *progress = Instant::now();
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if progress.elapsed() >= stall {
                    Err(End::Stalled)
                } else {
                    Ok(None)
                }
            }
            Err(e) => Err(End::Io(e)),
        }
    }

    /// Reads until one message is published (`Ok(true)`) or the wait ends (`Ok(false)`).
    fn step(&mut self, until: Until) -> Result<bool, End> {
        loop {
            if matches!(self.frame, Frame::Head) && self.run.is_some() {
                match self.read_run(until)? {
                    Run::Published => return Ok(true),
                    Run::Waited => return Ok(false),
                    Run::Progress => continue,
                    Run::NotNow => {}
                }
            }
            let Some(tx) = self.tx.as_mut() else {
                return Err(End::Closed);
            };
            match self.frame {
                Frame::Head if self.have < wire::FRAME_HEADER => {
                    let first = self.have == 0;
                    let wait = if first {
                        until
                    } else {
                        until.inside(self.progress.checked_add(self.stall))
                    };
                    let mut iov = [IoSliceMut::new(&mut self.next[self.have..])];
                    match self.wire.read_until(&mut iov, wait) {
                        // A close between frames is the clean end of the connection.
                        Ok(0) if first => return Err(End::Closed),
                        Ok(0) => return Err(End::Io(io::ErrorKind::UnexpectedEof.into())),
                        Ok(n) => {
                            self.have += n;
                            self.progress = Instant::now();
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if !first && self.progress.elapsed() >= self.stall {
                                return Err(End::Stalled);
                            }
                            return Ok(false);
                        }
                        Err(e) => return Err(End::Io(e)),
                    }
                }
                Frame::Head => {
                    // Every field is checked, the length bounded by this ring, before anything
                    // else.
                    let h = FrameHeader::decode(&self.next, self.max, self.sequence)?;
                    self.sequence += 1;
                    self.have = 0;
                    let (type_id, len) = (h.type_id, h.len as usize);
                    self.frame = if h.flags & wire::FLAG_COMPRESSED == 0 {
                        Frame::Body {
                            type_id,
                            len,
                            align: self.slots.check(type_id, len)?,
                            pos: None,
                            off: 0,
                        }
                    } else {
                        Frame::Prefix {
                            type_id,
                            len,
                            bytes: [0; wire::COMPRESSED_PREFIX],
                            have: 0,
                        }
                    };
                }
                Frame::Body {
                    type_id,
                    len,
                    align,
                    pos: None,
                    off,
                } => {
                    // No room: in the consumer's calls, a wrap filler the consumer skips next
                    // (see `room`); in the pump, messages not yet received.
                    let Some(pos) = Self::reserve(tx, len, align, self.room)? else {
                        return Ok(false);
                    };
                    self.frame = Frame::Body {
                        type_id,
                        len,
                        align,
                        pos: Some(pos),
                        off,
                    };
                }
                Frame::Body {
                    type_id,
                    len,
                    align,
                    pos: Some(pos),
                    off,
                } => {
                    if off == len {
                        tx.end.commit(pos, len, align, type_id);
                        self.frame = Frame::Head;
                        return Ok(true);
                    }
                    // SAFETY: `pos` is this producer's reserved, unpublished record of `len`
                    // payload bytes: nobody else reads or writes them until `commit`.
                    let dst = unsafe {
                        core::slice::from_raw_parts_mut(tx.end.payload(pos).as_ptr(), len)
                    };
                    let n = if until == Until::Forever && len - off >= WAIT_ALL {
                        // A large rest, read blocking: all of it in one call (the next header
                        // follows with the next frame's first read).
                        let r = self.wire.read_all(&mut dst[off..]);
                        Self::settle(r, &mut self.progress, self.stall)?
                    } else {
                        let mut iov = [
                            IoSliceMut::new(&mut dst[off..]),
                            IoSliceMut::new(&mut self.next),
                        ];
                        Self::read_inside(
                            &mut self.wire,
                            &mut iov,
                            until,
                            &mut self.progress,
                            self.stall,
                        )?
                    };
                    let Some(n) = n else {
                        return Ok(false);
                    };
                    let into = n.min(len - off);
                    self.have = n - into;
                    self.frame = Frame::Body {
                        type_id,
                        len,
                        align,
                        pos: Some(pos),
                        off: off + into,
                    };
                }
                Frame::Prefix {
                    type_id,
                    len,
                    mut bytes,
                    have,
                } => {
                    if have < bytes.len() {
                        let mut iov = [IoSliceMut::new(&mut bytes[have..])];
                        let Some(n) = Self::read_inside(
                            &mut self.wire,
                            &mut iov,
                            until,
                            &mut self.progress,
                            self.stall,
                        )?
                        else {
                            return Ok(false);
                        };
                        self.frame = Frame::Prefix {
                            type_id,
                            len,
                            bytes,
                            have: have + n,
                        };
                        continue;
                    }
                    let negotiated = self.codec.compression().codec();
                    let prefix = CompressedPrefix::decode(&bytes, negotiated, self.max, len)?;
                    let original = prefix.original_len as usize;
                    self.frame = Frame::Packed {
                        type_id,
                        prefix,
                        align: self.slots.check(type_id, original)?,
                        clen: len - wire::COMPRESSED_PREFIX,
                        off: 0,
                    };
                }
                Frame::Packed {
                    type_id,
                    prefix,
                    align,
                    clen,
                    off,
                } => {
                    if off < clen {
                        let (packed, next) = (&mut self.codec.packed()[off..clen], &mut self.next);
                        let mut iov = [IoSliceMut::new(packed), IoSliceMut::new(next)];
                        let Some(n) = Self::read_inside(
                            &mut self.wire,
                            &mut iov,
                            until,
                            &mut self.progress,
                            self.stall,
                        )?
                        else {
                            return Ok(false);
                        };
                        let into = n.min(clen - off);
                        self.have = n - into;
                        self.frame = Frame::Packed {
                            type_id,
                            prefix,
                            align,
                            clen,
                            off: off + into,
                        };
                        continue;
                    }
                    let len = prefix.original_len as usize;
                    let Some(pos) = Self::reserve(tx, len, align, self.room)? else {
                        return Ok(false);
                    };
                    // SAFETY: as for an uncompressed payload: reserved, unpublished, ours.
                    let dst = unsafe {
                        core::slice::from_raw_parts_mut(tx.end.payload(pos).as_ptr(), len)
                    };
                    // A payload that does not decode is never published.
                    self.codec.decompress(clen, &prefix, dst)?;
                    tx.end.commit(pos, len, align, type_id);
                    self.frame = Frame::Head;
                    return Ok(true);
                }
            }
        }
    }

    /// Frames of the channel's one length, several per system call: at a frame boundary,
    /// reserves room for up to a run of records back to back and reads their headers (into a
    /// local array) and payloads (straight into the records), and the header after them, with
    /// one `readv`; then checks and publishes every whole frame in order, as the one-frame
    /// path would, and leaves a frame cut short to it. A stream of small messages that has
    /// backed up in the socket thus costs one system call per run, not per message.
    fn read_run(&mut self, until: Until) -> Result<Run, End> {
        let Some((len, count)) = self.run else {
            return Ok(Run::NotNow);
        };
        let Some(tx) = self.tx.as_mut() else {
            return Err(End::Closed);
        };
        let Some((first, count)) = tx.end.try_reserve_run(len, count) else {
            return Ok(Run::NotNow);
        };
        let record = crate::ring::record_size_of(len) as u64;
        let have = self.have;
        let mut heads = [[0u8; wire::FRAME_HEADER]; MAX_RUN];
        heads[0][..have].copy_from_slice(&self.next[..have]);
        let wait = if have == 0 {
            until
        } else {
            until.inside(self.progress.checked_add(self.stall))
        };
        let read = {
            let mut iov: [IoSliceMut<'_>; 2 * MAX_RUN + 1] =
                core::array::from_fn(|_| IoSliceMut::new(&mut []));
            let mut k = 0;
            for (i, head) in heads.iter_mut().take(count).enumerate() {
                let start = if i == 0 { have } else { 0 };
                iov[k] = IoSliceMut::new(&mut head[start..]);
                let pos = first + i as u64 * record;
                // SAFETY: the run reserved `count` records back to back from `first`, all free
                // and invisible to the consumer until committed; record `i`'s payload is its
                // `len` bytes at `payload(pos)`, disjoint from every other slice here.
                iov[k + 1] = IoSliceMut::new(unsafe {
                    core::slice::from_raw_parts_mut(tx.end.payload(pos).as_ptr(), len)
                });
                k += 2;
            }
            iov[k] = IoSliceMut::new(&mut self.next);
            self.wire.read_until(&mut iov[..k + 1], wait)
        };
        let mut left = match read {
            Ok(0) if have == 0 => return Err(End::Closed),
            Ok(0) => return Err(End::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => {
                self.progress = Instant::now();
                n
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if have != 0 && self.progress.elapsed() >= self.stall {
                    return Err(End::Stalled);
                }
                return Ok(Run::Waited);
            }
            Err(e) => return Err(End::Io(e)),
        };
        // What was read, frame by frame: the first header's rest, then payload, header, ...
        let rest = wire::FRAME_HEADER - have;
        if left < rest {
            self.next[have..have + left].copy_from_slice(&heads[0][have..have + left]);
            self.have += left;
            return Ok(Run::Progress);
        }
        left -= rest;
        let mut published = false;
        for i in 0..count {
            let h = FrameHeader::decode(&heads[i], self.max, self.sequence)?;
            self.sequence += 1;
            if h.flags & wire::FLAG_COMPRESSED != 0 {
                return Err(End::Corrupted(
                    "a compressed frame on a channel that negotiated no codec",
                ));
            }
            let align = self.slots.check(h.type_id, h.len as usize)?;
            let pos = first + i as u64 * record;
            let got = left.min(len);
            left -= got;
            if got < len {
                // The one-frame path reads the rest into the same record.
                self.have = 0;
                self.frame = Frame::Body {
                    type_id: h.type_id,
                    len,
                    align,
                    pos: Some(pos),
                    off: got,
                };
                return Ok(if published {
                    Run::Published
                } else {
                    Run::Progress
                });
            }
            tx.end.commit(pos, len, align, h.type_id);
            published = true;
            let next = left.min(wire::FRAME_HEADER);
            left -= next;
            if i + 1 == count {
                // The header after the run was read into `next` itself.
                self.have = next;
            } else if next < wire::FRAME_HEADER {
                self.next[..next].copy_from_slice(&heads[i + 1][..next]);
                self.have = next;
            } else {
                continue;
            }
            break;
        }
        Ok(Run::Published)
    }

    /// Ends the connection: the ring's producer is dropped, the socket shut down.
    fn finish(&mut self, why: End) {
        self.why = Some(why);
        self.tx = None;
        self.wire.shutdown();
    }

    /// The receiving pump: fills the ring until the connection or the consumer is gone.
    fn pump(mut self) {
        if let Err(e) = self.wire.set_idle_timeout(POLL) {
            self.finish(End::Io(e));
            return;
        }
        loop {
            self.room = Patience::timeout(POLL);
            match self.step(Until::Forever) {
                Ok(true) => {}
                Ok(false) => {
                    if self.tx.as_ref().is_none_or(RawProducer::is_disconnected) {
                        self.finish(End::Closed);
                        return;
                    }
                }
                Err(e) => {
                    self.finish(e);
                    return;
                }
            }
        }
    }
}

impl<S: Slots, W: Wire> Source for Inbound<S, W> {
    fn pull(&mut self, patience: Patience) -> Pulled {
        if self.tx.is_none() {
            return Pulled::Ended;
        }
        match self.step(Until::of(patience)) {
            Ok(true) => Pulled::Published,
            Ok(false) => Pulled::Nothing,
            Err(e) => {
                self.finish(e);
                Pulled::Ended
            }
        }
    }

    fn peer_gone(&self) -> bool {
        self.tx.is_none() || self.wire.closed()
    }

    fn detach(self: Box<Self>) {
        let this = *self;
        // If the thread cannot start, the closure (and the ring's producer in it) is dropped:
        // the consumer sees `Disconnected`.
        let _ = std::thread::Builder::new()
            .name("psyne-net-rx".into())
            .spawn(move || this.pump());
    }
}

impl<S, W> core::fmt::Debug for Inbound<S, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Inbound")
            .field("sequence", &self.sequence)
            .field("frame", &self.frame)
            .field("why", &self.why)
            .finish_non_exhaustive()
    }
}

/// Makes `stream` fill `rx`'s ring (whose producer is `tx`) in the consumer's calls.
pub(crate) fn attach_receiver<S: Slots>(
    stream: TcpStream,
    rx: &mut crate::channel::RawConsumer,
    tx: RawProducer,
    slots: S,
    compression: Compression,
    stall: Duration,
) -> Result<(), NetError> {
    // Blocking, with the stall timeout as the idle timeout of `Until::Forever` reads.
    let mut stream = stream;
    stream.set_nonblocking(false)?;
    stream.set_idle_timeout(stall)?;
    let inbound = Inbound::new(stream, tx, slots, compression, stall)?;
    rx.end.set_source(Box::new(inbound));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{Channel, RecvError};
    use crate::transport::net::fuzz::Feed;
    use std::sync::atomic::Ordering;

    /// A 200-byte message (a 264-byte record: several per run).
    #[derive(Clone, Copy, crate::PsyneMessage)]
    #[repr(C)]
    #[psyne(name = "test.Chunk")]
    struct Chunk {
        seq: u64,
        body: [u32; 48],
    }

    fn chunk(seq: u64) -> Chunk {
        let mut body = [0u32; 48];
        for (i, b) in body.iter_mut().enumerate() {
            *b = (seq as u32).wrapping_mul(2_654_435_761) ^ i as u32;
        }
        Chunk { seq, body }
    }

    fn frames(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for s in 0..n {
            let h = FrameHeader {
                len: core::mem::size_of::<Chunk>() as u32,
                flags: 0,
                type_id: Chunk::TYPE_ID,
                sequence: s,
                timestamp_ns: 0,
            };
            out.extend_from_slice(&h.encode());
            out.extend_from_slice(bytemuck::bytes_of(&chunk(s)));
        }
        out
    }

    /// Every frame arrives whole and in order whatever the reads cut them into, across runs
    /// and the one-frame path alike; a whole stream backed up in the socket takes about one
    /// read per run.
    #[test]
    fn frames_cut_anywhere_arrive_whole_and_in_order() {
        const N: u64 = 300;
        for (chunk_len, stutter) in [
            (usize::MAX, false),
            (1, false),
            (7, true),
            (61, false),
            (264 * 3 + 5, true),
            (4096, false),
        ] {
            let (tx, mut rx) = Channel::raw().capacity_bytes(32 << 10).build().unwrap();
            let wire = Feed::new(frames(N), chunk_len, stutter);
            let reads = wire.reads();
            let inbound = Inbound::new(
                wire,
                tx,
                TypedSlots::<Chunk>::new(),
                Compression::None,
                // A stall timeout too large to add to an instant means none.
                if chunk_len == 7 {
                    Duration::MAX
                } else {
                    Duration::from_secs(5)
                },
            )
            .unwrap();
            let (len, count) = inbound.run.expect("a run for a small fixed-size type");
            assert_eq!(len, core::mem::size_of::<Chunk>());
            assert!(count >= 2);
            rx.end.set_source(Box::new(inbound));
            for s in 0..N {
                let m = rx.recv().unwrap();
                let c = m.downcast::<Chunk>().expect("a Chunk");
                assert_eq!(c.seq, s, "chunks of {chunk_len}");
                assert_eq!(c.body, chunk(s).body);
            }
            assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
            if chunk_len == usize::MAX {
                // About one read per run of `count` frames (11 here, against 300 one frame at a
                // time; where the region ends, a shorter run or one frame alone).
                let reads = reads.load(Ordering::Relaxed);
                assert!(
                    reads <= 2 * (N as usize / count) + 3,
                    "{reads} reads, runs of {count}"
                );
            }
        }
    }

    /// `try_recv` delivers every frame that has arrived, also where a frame does not fit before
    /// the region's end (1 MiB frames in a 2 MiB ring: the wrap filler is skipped within the
    /// call, not reported as `Empty`).
    #[test]
    fn try_recv_takes_what_has_arrived_across_wraps() {
        const N: u64 = 6;
        let len = 1 << 20;
        let mut data = Vec::new();
        for s in 0..N {
            let h = FrameHeader {
                len: len as u32,
                flags: 0,
                type_id: 9,
                sequence: s,
                timestamp_ns: 0,
            };
            data.extend_from_slice(&h.encode());
            data.extend((0..len).map(|i| (i as u64 ^ s) as u8));
        }
        let (tx, mut rx) = Channel::raw().capacity_bytes(2 << 20).build().unwrap();
        let wire = Feed::new(data, usize::MAX, false);
        let inbound = Inbound::new(
            wire,
            tx,
            RawSlots,
            Compression::None,
            Duration::from_secs(5),
        )
        .unwrap();
        rx.end.set_source(Box::new(inbound));
        for s in 0..N {
            let m = rx.try_recv().unwrap_or_else(|e| panic!("message {s}: {e}"));
            assert_eq!(m.bytes().len(), len);
            assert_eq!(m.bytes()[1], (1 ^ s) as u8);
        }
        assert!(matches!(rx.try_recv(), Err(RecvError::Disconnected)));
    }
}
