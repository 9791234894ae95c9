//! The sending pump: one thread per sending connection that moves records from a local ring
//! to the socket (see `PROTOCOL.md`, "Frames").
//!
//! * The sending pump waits for a record in its ring, peeks every record published after it
//!   (up to a batch limit) without releasing any, and writes all their headers and payloads
//!   straight from ring memory with one `sendmsg` (more only when the kernel takes part), then
//!   releases them. A compressing pump sends one record per call (its codec has one scratch
//!   buffer). When the user's producer drops, the pump writes what the ring still holds and
//!   ends; the producer's drop waits for that, with a deadline ([`Flush`]).
//!
//! The receiving side has no pump of its own: see `inbound.rs`.
//!
//! The pump ends when its user's end is gone, the socket fails or closes, or the peer breaks
//! the protocol; dropping its ring end then shows the user's end `Disconnected`.

use super::wire::{self, CompressedPrefix, FrameHeader};
use super::{Compression, NetError};
use crate::channel::net::Patience;
use crate::channel::{RawConsumer, RecvError};
use crate::ring::Peeked;
use core::time::Duration;
use std::io::{self, IoSlice};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// How often an idle pump checks whether its user's end or the peer is gone.
const POLL: Duration = Duration::from_millis(50);

/// Why a pump stopped. The user's ends see `Disconnected` whatever the reason; the reasons
/// are kept for `Debug` output when debugging a pump.
#[derive(Debug)]
#[allow(dead_code)] // the payloads are read only through `Debug`
pub(crate) enum End {
    /// The peer closed the connection between frames, or the user's end dropped.
    Closed,
    /// The peer sent nothing for the stall timeout in the middle of a frame.
    Stalled,
    /// A frame failed a check.
    Corrupted(&'static str),
    /// The socket failed.
    Io(io::Error),
}

impl From<NetError> for End {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Corrupted { what } => End::Corrupted(what),
            NetError::Io(e) => End::Io(e),
            _ => End::Corrupted("unexpected error"),
        }
    }
}

/// Byte-shuffles `src` by `width` into `dst` (same length): byte `j` of element `i` goes to
/// `j * count + i`; the `len % width` trailing bytes are copied as they are.
pub(crate) fn shuffle(src: &[u8], dst: &mut [u8], width: usize) {
    let count = src.len() / width;
    for (i, elem) in src.chunks_exact(width).enumerate() {
        for (j, &b) in elem.iter().enumerate() {
            dst[j * count + i] = b;
        }
    }
    let tail = count * width;
    dst[tail..src.len()].copy_from_slice(&src[tail..]);
}

/// The inverse of [`shuffle`].
pub(crate) fn unshuffle(src: &[u8], dst: &mut [u8], width: usize) {
    let count = src.len() / width;
    for (i, elem) in dst.chunks_exact_mut(width).enumerate() {
        for (j, b) in elem.iter_mut().enumerate() {
            *b = src[j * count + i];
        }
    }
    let tail = count * width;
    dst[tail..src.len()].copy_from_slice(&src[tail..]);
}

/// A codec's state and scratch buffers (allocated once, sized by this side's ring).
pub(crate) struct Codec {
    compression: Compression,
    /// Shuffle width for payloads (1: none).
    shuffle: usize,
    /// Shuffled payload (sender) or compressed payload (receiver).
    a: Vec<u8>,
    /// Compressed payload (sender) or decompressed, still shuffled payload (receiver).
    b: Vec<u8>,
    #[cfg(feature = "zstd")]
    zc: Option<zstd::bulk::Compressor<'static>>,
    #[cfg(feature = "zstd")]
    zd: Option<zstd::bulk::Decompressor<'static>>,
}

impl Codec {
    pub(crate) fn new(
        compression: Compression,
        shuffle: usize,
        max_payload: usize,
    ) -> io::Result<Codec> {
        let on = compression != Compression::None;
        let scratch = if on { max_payload } else { 0 };
        let bound = if on {
            lz4_flex::block::get_maximum_output_size(max_payload).max(max_payload)
        } else {
            0
        };
        Ok(Codec {
            compression,
            shuffle: shuffle.max(1),
            a: vec![0; scratch],
            b: vec![0; bound],
            #[cfg(feature = "zstd")]
            zc: match compression {
                Compression::Zstd { level } => Some(zstd::bulk::Compressor::new(level)?),
                _ => None,
            },
            #[cfg(feature = "zstd")]
            zd: match compression {
                Compression::Zstd { .. } => Some(zstd::bulk::Decompressor::new()?),
                _ => None,
            },
        })
    }

    /// The negotiated codec.
    pub(crate) fn compression(&self) -> Compression {
        self.compression
    }

    /// The receiver's buffer for a compressed payload (the ring's largest payload).
    pub(crate) fn packed(&mut self) -> &mut [u8] {
        &mut self.a
    }

    /// Compresses `src`; `None` when the codec is off or the payload would not shrink.
    fn compress(&mut self, src: &[u8]) -> Option<(CompressedPrefix, &[u8])> {
        if self.compression == Compression::None || src.len() < 64 {
            return None;
        }
        let width = if self.shuffle > 1 && src.len() >= self.shuffle {
            self.shuffle
        } else {
            1
        };
        let input: &[u8] = if width > 1 {
            shuffle(src, &mut self.a[..src.len()], width);
            &self.a[..src.len()]
        } else {
            src
        };
        let n = match self.compression {
            Compression::None => return None,
            Compression::Lz4 => lz4_flex::block::compress_into(input, &mut self.b).ok()?,
            #[cfg(feature = "zstd")]
            Compression::Zstd { .. } => {
                let limit = src.len() - 1;
                let zc = self.zc.as_mut()?;
                zc.compress_to_buffer(input, &mut self.b[..limit]).ok()?
            }
            #[cfg(not(feature = "zstd"))]
            Compression::Zstd { .. } => return None,
        };
        if n >= src.len() {
            return None;
        }
        let prefix = CompressedPrefix {
            original_len: src.len() as u32,
            codec: self.compression.codec(),
            shuffle: width as u8,
        };
        Some((prefix, &self.b[..n]))
    }

    /// Decompresses `self.a[..clen]` into `dst` (exactly `dst.len()` bytes, the prefix's
    /// original length), unshuffling by the prefix's width.
    pub(crate) fn decompress(
        &mut self,
        clen: usize,
        p: &CompressedPrefix,
        dst: &mut [u8],
    ) -> Result<(), End> {
        let width = usize::from(p.shuffle);
        let bad = End::Corrupted("a compressed payload does not decode to its announced length");
        let (src, out) = (&self.a[..clen], &mut self.b);
        let target: &mut [u8] = if width > 1 {
            &mut out[..dst.len()]
        } else {
            &mut *dst
        };
        let n = match p.codec {
            wire::CODEC_LZ4 => lz4_flex::block::decompress_into(src, target).map_err(|_| bad)?,
            #[cfg(feature = "zstd")]
            wire::CODEC_ZSTD => {
                let zd = self
                    .zd
                    .as_mut()
                    .ok_or(End::Corrupted("zstd was not negotiated"))?;
                zd.decompress_to_buffer(src, target).map_err(|_| bad)?
            }
            _ => {
                return Err(End::Corrupted(
                    "a frame names a codec that was not negotiated",
                ));
            }
        };
        if n != dst.len() {
            return Err(End::Corrupted(
                "a compressed payload does not decode to its announced length",
            ));
        }
        if width > 1 {
            unshuffle(&self.b[..n], dst, width);
        }
        Ok(())
    }
}

/// Records one `sendmsg` carries at most (two iovecs each: header and payload; Linux takes
/// 1024).
const MAX_BATCH: usize = 128;
/// Payload bytes one batch gathers at most, beyond its first record: an eighth of the ring
/// within these bounds, so that the producer refills the rest of the ring while the batch
/// goes out (the records of a batch are released when all of it is written). At most 512 KiB:
/// over a veth pair, 64 KiB messages streamed at 1.9-2.1 GB/s with 1 MiB batches (rings of 8
/// MiB or more) against 5.3-5.9 GB/s with 512 KiB ones, and over loopback at 5.6-5.9 against
/// 6.0-6.6 GB/s (`net_bench`, 2026-12-04).
const BATCH_BYTES: core::ops::RangeInclusive<usize> = (64 << 10)..=(512 << 10);

/// Sends what `bufs` describe with one `sendmsg` (`MSG_NOSIGNAL`: a closed peer is `EPIPE`,
/// never `SIGPIPE`); returns the bytes the kernel took.
fn send_vectored(stream: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: all-zero is a valid `msghdr` (null name, no control data).
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix (std's documented guarantee), and
    // `sendmsg` only reads the array.
    msg.msg_iov = bufs.as_ptr().cast_mut().cast::<libc::iovec>();
    msg.msg_iovlen = bufs.len() as _;
    loop {
        // SAFETY: `msg` describes `bufs.len()` valid iovecs over live, readable memory (the
        // borrows in `bufs`) for the duration of the call; the descriptor is open.
        let r = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes every byte of `bufs`, counting each system call that wrote something in `written`.
fn write_all_vectored(
    stream: &TcpStream,
    mut bufs: &mut [IoSlice<'_>],
    written: &AtomicU64,
) -> io::Result<()> {
    while !bufs.is_empty() {
        match send_vectored(stream, bufs)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => IoSlice::advance_slices(&mut bufs, n),
        }
        written.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Whether the peer closed the connection or sent anything (a receiver never sends after the
/// handshake, so either means the connection is over).
fn peer_done(stream: &TcpStream) -> bool {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the stream's open descriptor; timeout 0.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    r != 0
}

/// What the sending pump tells the producer's [`Flush`]: that it has ended (everything its
/// producer sent is written to the socket, or the connection is over), and how far it got.
#[derive(Default)]
struct Progress {
    ended: Mutex<bool>,
    cv: Condvar,
    /// System calls that wrote something so far.
    written: AtomicU64,
}

/// Sets [`Progress::ended`] when dropped, however the pump ends (a panic included).
struct SignalEnd(Arc<Progress>);

impl Drop for SignalEnd {
    fn drop(&mut self) {
        *self.0.ended.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.0.cv.notify_all();
    }
}

/// Held by a network producer and dropped right after its end closed: waits until the sending
/// pump has written every message still in the ring to the socket. It waits as long as the
/// pump makes progress; once the pump wrote nothing for `timeout` (a peer that stopped reading
/// or vanished), it cuts the connection, so that the pump ends too, and returns.
pub(crate) struct Flush {
    progress: Arc<Progress>,
    /// A handle to the pump's socket, to cut it.
    stream: TcpStream,
    timeout: Duration,
}

impl Drop for Flush {
    fn drop(&mut self) {
        let p = &*self.progress;
        let mut seen = p.written.load(Ordering::Relaxed);
        let mut since = Instant::now();
        let mut ended = p.ended.lock().unwrap_or_else(|e| e.into_inner());
        while !*ended {
            let now = p.written.load(Ordering::Relaxed);
            if now != seen {
                (seen, since) = (now, Instant::now());
            }
            let left = self.timeout.saturating_sub(since.elapsed());
            if left.is_zero() {
                // What the ring still holds is lost: the peer took nothing for `timeout`.
                let _ = self.stream.shutdown(Shutdown::Both);
                return;
            }
            // Woken at once when the pump ends; looks at its progress every 50 ms.
            ended = match p.cv.wait_timeout(ended, left.min(POLL)) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// Starts the sending pump: records from `rx` to `stream`. The returned guard, dropped after
/// the user's producer closed, waits for the ring to drain into the socket (see [`Flush`]).
pub(crate) fn spawn_sender(
    stream: TcpStream,
    mut rx: RawConsumer,
    compression: Compression,
    shuffle: usize,
    flush: Duration,
) -> Result<Flush, NetError> {
    let max = rx.capacity_bytes();
    let mut codec = Codec::new(compression, shuffle, max)?;
    let progress = Arc::new(Progress::default());
    let guard = Flush {
        progress: Arc::clone(&progress),
        stream: stream.try_clone()?,
        timeout: flush,
    };
    std::thread::Builder::new()
        .name("psyne-net-tx".into())
        .spawn(move || {
            let _signal = SignalEnd(Arc::clone(&progress));
            let _ = send_loop(&stream, &mut rx, &mut codec, &progress.written);
            let _ = stream.shutdown(Shutdown::Both);
        })?;
    Ok(guard)
}

fn send_loop(
    stream: &TcpStream,
    rx: &mut RawConsumer,
    codec: &mut Codec,
    written: &AtomicU64,
) -> Result<(), End> {
    let mut sequence = 0u64;
    let batch_bytes = (rx.capacity_bytes() / 8).clamp(*BATCH_BYTES.start(), *BATCH_BYTES.end());
    let batching = codec.compression == Compression::None;
    let mut batch = [None::<Peeked>; MAX_BATCH];
    let mut heads = [[0u8; wire::FRAME_HEADER]; MAX_BATCH];
    loop {
        let first = match rx.end.peek(Patience::timeout(POLL), None) {
            Ok(p) => p,
            Err(RecvError::Timeout | RecvError::Empty) => {
                if peer_done(stream) {
                    return Ok(());
                }
                continue;
            }
            // The user's producer is gone and everything it sent is written.
            Err(RecvError::Disconnected) => return Ok(()),
            Err(RecvError::Corrupted { what }) => return Err(End::Corrupted(what)),
            // Only broadcast consumers are cut off; this one is an SPSC consumer.
            Err(RecvError::Lagged) => continue,
        };
        // The records ready now, up to the batch limits (one when compressing: the codec has
        // one scratch buffer).
        batch[0] = Some(first);
        let mut n = 1;
        let mut bytes = first.len() as usize;
        while batching && n < MAX_BATCH && bytes < batch_bytes {
            let Some(prev) = batch[n - 1] else { break };
            match rx.end.cursor_mut().try_peek_ahead(&prev, n as u64) {
                Some(p) => {
                    bytes += p.len() as usize;
                    batch[n] = Some(p);
                    n += 1;
                }
                None => break,
            }
        }
        let result = if batching {
            write_batch(stream, &batch[..n], &mut heads[..n], sequence, written)
        } else {
            write_compressed(stream, &first, codec, sequence, written)
        };
        // Released only once the kernel has all their bytes (or the connection failed).
        for p in batch[..n].iter_mut().filter_map(Option::take) {
            rx.end.release_handle(&p).release(&p);
        }
        result.map_err(End::Io)?;
        sequence += n as u64;
    }
}

/// The frame header of the record `p`, frame number `sequence`, with payload length `len`.
fn frame_header(p: &Peeked, sequence: u64, len: usize, flags: u32) -> FrameHeader {
    FrameHeader {
        len: len as u32,
        flags,
        type_id: p.type_id(),
        sequence,
        timestamp_ns: p.header_copy().timestamp_ns,
    }
}

/// The payload of a peeked, unreleased record.
///
/// # Safety
/// `p` must be published and not yet released for as long as the slice is used.
unsafe fn payload<'a>(p: &Peeked) -> &'a [u8] {
    // SAFETY: the caller keeps the record published and unreleased, so the producer does not
    // write it; the peek checked that its `len()` bytes lie inside the region.
    unsafe { core::slice::from_raw_parts(p.payload().as_ptr(), p.len() as usize) }
}

/// Writes the records of `batch` (all `Some`), frame numbers from `sequence`, straight from
/// the ring with as few `sendmsg` calls as the kernel allows.
fn write_batch(
    stream: &TcpStream,
    batch: &[Option<Peeked>],
    heads: &mut [[u8; wire::FRAME_HEADER]],
    sequence: u64,
    written: &AtomicU64,
) -> io::Result<()> {
    for (i, (p, h)) in batch.iter().zip(heads.iter_mut()).enumerate() {
        if let Some(p) = p {
            *h = frame_header(p, sequence + i as u64, p.len() as usize, 0).encode();
        }
    }
    let empty: &[u8] = &[];
    let mut iov = [IoSlice::new(empty); 2 * MAX_BATCH];
    let mut k = 0;
    for (p, h) in batch.iter().zip(heads.iter()) {
        if let Some(p) = p {
            iov[k] = IoSlice::new(h);
            // SAFETY: the caller releases the batch's records only after this call returns.
            iov[k + 1] = IoSlice::new(unsafe { payload(p) });
            k += 2;
        }
    }
    write_all_vectored(stream, &mut iov[..k], written)
}

/// Writes the record `p` as frame `sequence`, compressed when that makes it shorter.
fn write_compressed(
    stream: &TcpStream,
    p: &Peeked,
    codec: &mut Codec,
    sequence: u64,
    written: &AtomicU64,
) -> io::Result<()> {
    // SAFETY: the caller releases `p` only after this call returns.
    let bytes = unsafe { payload(p) };
    match codec.compress(bytes) {
        Some((prefix, packed)) => {
            let len = wire::COMPRESSED_PREFIX + packed.len();
            let h = frame_header(p, sequence, len, wire::FLAG_COMPRESSED).encode();
            let pre = prefix.encode();
            let mut bufs = [IoSlice::new(&h), IoSlice::new(&pre), IoSlice::new(packed)];
            write_all_vectored(stream, &mut bufs, written)
        }
        None => {
            let h = frame_header(p, sequence, bytes.len(), 0).encode();
            let mut bufs = [IoSlice::new(&h), IoSlice::new(bytes)];
            write_all_vectored(stream, &mut bufs, written)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A xorshift generator and an approximately normal sample (sum of uniforms).
    fn normal(state: &mut u64) -> f32 {
        let mut sum = 0.0f32;
        for _ in 0..4 {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            sum += (*state >> 40) as f32 / (1u64 << 24) as f32;
        }
        (sum - 2.0) * 1.7
    }

    /// f32 to f16 bits (truncating; subnormals flushed): enough for test data.
    fn f16_bits(x: f32) -> u16 {
        let b = x.to_bits();
        let sign = ((b >> 16) & 0x8000) as u16;
        let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
        if exp <= 0 {
            return sign;
        }
        sign | ((exp.min(30) as u16) << 10) | ((b >> 13) & 0x3ff) as u16
    }

    /// ReLU activations (about half zeros), f32 gradients (N(0, 1e-3)), f16 weights
    /// (N(0, 0.02)): 1 MiB each, as (name, bytes, shuffle width).
    fn tensors() -> Vec<(&'static str, Vec<u8>, usize)> {
        let n = 1 << 18;
        let mut st = 0x1234_5678_9abc_def1u64;
        let relu: Vec<f32> = (0..n).map(|_| normal(&mut st).max(0.0)).collect();
        let grad: Vec<f32> = (0..n).map(|_| normal(&mut st) * 1e-3).collect();
        let w16: Vec<u16> = (0..2 * n)
            .map(|_| f16_bits(normal(&mut st) * 0.02))
            .collect();
        vec![
            ("relu f32", bytemuck::cast_slice(&relu).to_vec(), 4),
            ("grad f32", bytemuck::cast_slice(&grad).to_vec(), 4),
            ("weights f16", bytemuck::cast_slice(&w16).to_vec(), 2),
        ]
    }

    #[test]
    fn codecs_round_trip_realistic_tensors_and_report_ratio_and_speed() {
        let mut codecs = vec![Compression::Lz4];
        if cfg!(feature = "zstd") {
            codecs.push(Compression::Zstd { level: 1 });
            codecs.push(Compression::Zstd { level: 3 });
        }
        for c in codecs {
            for (name, data, width) in tensors() {
                for w in [1, width] {
                    let mut tx = Codec::new(c, w, data.len()).unwrap();
                    let mut rx = Codec::new(c, 1, data.len()).unwrap();
                    let t = Instant::now();
                    let Some((p, packed)) = tx.compress(&data) else {
                        println!("{c:?} {name} shuffle {w}: does not shrink, sent as it is");
                        continue;
                    };
                    let ct = t.elapsed();
                    let clen = packed.len();
                    rx.a[..clen].copy_from_slice(packed);
                    let mut back = vec![0u8; data.len()];
                    let t = Instant::now();
                    rx.decompress(clen, &p, &mut back).unwrap();
                    let dt = t.elapsed();
                    assert_eq!(back, data);
                    let mb = data.len() as f64 / 1e6;
                    println!(
                        "{c:?} {name} shuffle {w}: ratio {:.2}, compress {:.0} MB/s, \
                         decompress {:.0} MB/s",
                        data.len() as f64 / clen as f64,
                        mb / ct.as_secs_f64(),
                        mb / dt.as_secs_f64()
                    );
                }
            }
        }
        // Incompressible bytes are not compressed.
        let mut st = 99u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| (normal(&mut st).to_bits() >> 3) as u8)
            .collect();
        let mut tx = Codec::new(Compression::Lz4, 1, 4096).unwrap();
        assert!(tx.compress(&noise).is_none());
    }

    #[test]
    fn shuffle_round_trips_with_a_tail() {
        let src: Vec<u8> = (0..23u8).collect();
        let mut s = vec![0; 23];
        let mut back = vec![0; 23];
        shuffle(&src, &mut s, 4);
        assert_eq!(&s[..5], &[0, 4, 8, 12, 16]);
        unshuffle(&s, &mut back, 4);
        assert_eq!(back, src);
    }
}
