//! The pumps: one thread per connection that moves records between a local ring and the
//! socket (see `PROTOCOL.md`, "Frames").
//!
//! * The sending pump receives each record from its ring and writes header and payload straight
//!   from ring memory with one `writev`, then releases the record. One record per system call:
//!   batching several ready records needs a multi-record peek in the end layer (a later change).
//! * The receiving pump reads a header, bounds its length by the ring's largest payload before
//!   anything else, loans that room in its ring (waiting while the ring is full: backpressure
//!   end to end) and reads the payload straight into the loan; it publishes only whole messages.
//!
//! A pump ends when its user's end is gone, the socket fails or closes, or the peer breaks the
//! protocol; dropping its ring end then shows the user's end `Disconnected`.

use super::wire::{self, CompressedPrefix, FrameHeader};
use super::{Compression, NetError};
use crate::channel::{RawConsumer, RawProducer, RecvError};
use crate::message::Message;
use core::time::Duration;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
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
struct Codec {
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
    fn new(compression: Compression, shuffle: usize, max_payload: usize) -> io::Result<Codec> {
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
    fn decompress(&mut self, clen: usize, p: &CompressedPrefix, dst: &mut [u8]) -> Result<(), End> {
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

/// Writes every byte of `bufs`.
fn write_all_vectored(stream: &mut TcpStream, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match stream.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
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

/// Starts the sending pump: records from `rx` to `stream`.
pub(crate) fn spawn_sender(
    mut stream: TcpStream,
    mut rx: RawConsumer,
    compression: Compression,
    shuffle: usize,
) -> Result<(), NetError> {
    let max = rx.capacity_bytes();
    let mut codec = Codec::new(compression, shuffle, max)?;
    std::thread::Builder::new()
        .name("psyne-net-tx".into())
        .spawn(move || {
            let _ = send_loop(&mut stream, &mut rx, &mut codec);
            let _ = stream.shutdown(Shutdown::Both);
        })?;
    Ok(())
}

fn send_loop(stream: &mut TcpStream, rx: &mut RawConsumer, codec: &mut Codec) -> Result<(), End> {
    let mut sequence = 0u64;
    loop {
        let msg = match rx.recv_timeout(POLL) {
            Ok(m) => m,
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
        let bytes = msg.bytes();
        let mut header = FrameHeader {
            len: bytes.len() as u32,
            flags: 0,
            type_id: msg.type_id(),
            sequence,
            timestamp_ns: msg.header().timestamp_ns,
        };
        match codec.compress(bytes) {
            Some((prefix, packed)) => {
                header.len = (wire::COMPRESSED_PREFIX + packed.len()) as u32;
                header.flags = wire::FLAG_COMPRESSED;
                let (h, p) = (header.encode(), prefix.encode());
                let mut bufs = [IoSlice::new(&h), IoSlice::new(&p), IoSlice::new(packed)];
                write_all_vectored(stream, &mut bufs).map_err(End::Io)?;
            }
            None => {
                let h = header.encode();
                let mut bufs = [IoSlice::new(&h), IoSlice::new(bytes)];
                write_all_vectored(stream, &mut bufs).map_err(End::Io)?;
            }
        }
        drop(msg); // released only once the kernel has the bytes
        sequence += 1;
    }
}

/// Where the receiving pump puts frames: checks and loans for one message type, or any.
pub(crate) trait Slots: Send + 'static {
    /// Checks a frame of `len` payload bytes tagged `type_id`, loans room for it in `tx`, lets
    /// `fill` write all `len` bytes and publishes the message; publishes nothing if `fill`
    /// fails.
    fn deliver(
        &mut self,
        tx: &mut RawProducer,
        type_id: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<(), End>,
    ) -> Result<(), End>;
}

/// Frames of any type, into a raw ring.
pub(crate) struct RawSlots;

impl Slots for RawSlots {
    fn deliver(
        &mut self,
        tx: &mut RawProducer,
        type_id: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<(), End>,
    ) -> Result<(), End> {
        let mut loan = tx.allocate_bytes(len).map_err(|_| End::Closed)?;
        fill(&mut loan)?;
        loan.send(type_id);
        Ok(())
    }
}

/// Frames of `T` only, into a ring of `T`s (aligned for `T`).
pub(crate) struct TypedSlots<T>(core::marker::PhantomData<fn() -> T>);

impl<T> TypedSlots<T> {
    /// The slots for `T`.
    pub(crate) fn new() -> Self {
        TypedSlots(core::marker::PhantomData)
    }
}

impl<T: Message> Slots for TypedSlots<T> {
    fn deliver(
        &mut self,
        tx: &mut RawProducer,
        type_id: u64,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<(), End>,
    ) -> Result<(), End> {
        if type_id != T::TYPE_ID || len != core::mem::size_of::<T>() {
            return Err(End::Corrupted(
                "a frame's type id or length is not the channel's message type",
            ));
        }
        let mut loan = tx.allocate::<T>().map_err(|_| End::Closed)?;
        fill(bytemuck::bytes_of_mut(&mut *loan))?;
        loan.send();
        Ok(())
    }
}

/// Fills `buf` from the socket (whose read timeout is [`POLL`]). Before the first byte, waits
/// as long as `gone()` says no (`at_boundary`: between frames, where a clean close is
/// `Closed`); once a byte arrived, fails with `Stalled` after `stall` without progress.
fn fill(
    stream: &mut TcpStream,
    buf: &mut [u8],
    stall: Duration,
    at_boundary: bool,
    gone: &mut dyn FnMut() -> bool,
) -> Result<(), End> {
    let mut off = 0;
    let mut progress = Instant::now();
    while off < buf.len() {
        match stream.read(&mut buf[off..]) {
            Ok(0) if off == 0 && at_boundary => return Err(End::Closed),
            Ok(0) => return Err(End::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => {
                off += n;
                progress = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if off == 0 && at_boundary {
                    if gone() {
                        return Err(End::Closed);
                    }
                } else if progress.elapsed() >= stall {
                    return Err(End::Stalled);
                }
            }
            Err(e) => return Err(End::Io(e)),
        }
    }
    Ok(())
}

/// Starts the receiving pump: frames from `stream` into `tx`.
pub(crate) fn spawn_receiver<S: Slots>(
    mut stream: TcpStream,
    mut tx: RawProducer,
    mut slots: S,
    compression: Compression,
    stall: Duration,
) -> Result<(), NetError> {
    let max = tx.max_payload();
    let mut codec = Codec::new(compression, 1, max)?;
    stream.set_read_timeout(Some(POLL))?;
    std::thread::Builder::new()
        .name("psyne-net-rx".into())
        .spawn(move || {
            let _ = receive_loop(&mut stream, &mut tx, &mut slots, &mut codec, stall);
            let _ = stream.shutdown(Shutdown::Both);
        })?;
    Ok(())
}

fn receive_loop<S: Slots>(
    stream: &mut TcpStream,
    tx: &mut RawProducer,
    slots: &mut S,
    codec: &mut Codec,
    stall: Duration,
) -> Result<(), End> {
    let max = tx.max_payload();
    let negotiated = codec.compression.codec();
    let mut sequence = 0u64;
    loop {
        let mut hb = [0u8; wire::FRAME_HEADER];
        fill(stream, &mut hb, stall, true, &mut || tx.is_disconnected())?;
        // Every field is checked, the length bounded by this ring, before anything else.
        let h = FrameHeader::decode(&hb, max, sequence)?;
        sequence += 1;
        let len = h.len as usize;
        if h.flags & wire::FLAG_COMPRESSED == 0 {
            slots.deliver(tx, h.type_id, len, &mut |dst| {
                fill(stream, dst, stall, false, &mut || false)
            })?;
            continue;
        }
        let mut pb = [0u8; wire::COMPRESSED_PREFIX];
        fill(stream, &mut pb, stall, false, &mut || false)?;
        let p = CompressedPrefix::decode(&pb, negotiated, max, len)?;
        let clen = len - wire::COMPRESSED_PREFIX;
        fill(stream, &mut codec.a[..clen], stall, false, &mut || false)?;
        slots.deliver(tx, h.type_id, p.original_len as usize, &mut |dst| {
            codec.decompress(clen, &p, dst)
        })?;
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
