//! The entry point of the fuzz target `net_decoder` (`psyne/fuzz`): a peer's bytes into the real
//! handshake and the real receiving side's reader, without sockets. Not part of the API.

use super::handshake::{Conn, Local, compatible, handshake};
use super::inbound::{Inbound, RawSlots, TypedSlots, Until, Wire};
use super::wire::{Identity, Role};
use super::{Compression, NetOptions};
use crate::channel::net::Source;
use crate::channel::{Channel, RecvError};
use crate::message::Message;
use core::time::Duration;
use std::io::{self, IoSliceMut, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The example type of `PROTOCOL.md` (16 bytes, align 8), so that its hex conversation is a
/// seed that reaches the frames.
#[derive(Clone, Copy, crate::PsyneMessage)]
#[repr(C)]
#[psyne(name = "demo.Pair")]
struct Pair {
    a: i64,
    b: i64,
}

/// The peer's bytes, read once; what this side writes is dropped.
struct Replay<'a>(&'a [u8]);

impl Read for Replay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Replay<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Conn for Replay<'_> {
    fn read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn write_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

/// Feeds `data` to the decoders as everything a peer sends, then the end of the connection.
///
/// Byte 0 chooses: bit 0 what is decoded (0: frames, as after an accepted handshake; 1: the
/// handshake), bit 1 the receiving end (0 typed `demo.Pair`, 1 raw), bits 2-3 the negotiated
/// codec (none, lz4, zstd where built, none), bit 4 the ring (4 KiB, 64 KiB); for the
/// handshake, bit 5 whether this side holds a key and bit 6 whether it is the sender; for
/// frames, bits 5-6 the most bytes one read hands out (any, 1, 7, 61) and bit 7 whether every
/// other read finds nothing (frames then arrive in pieces across the consumer's calls).
///
/// Returns the messages delivered (frames) or whether the handshake accepted (0 or 1), or what
/// went wrong: a message published that the checks should have refused, or an accepted
/// handshake with an incompatible peer. A panic, a hang or a sanitizer report is a bug too.
#[doc(hidden)]
pub fn decode(data: &[u8]) -> Result<u64, String> {
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(0);
    };
    let typed = mode & 2 == 0;
    let compression = match (mode >> 2) & 3 {
        1 => Compression::Lz4,
        2 if cfg!(feature = "zstd") => Compression::Zstd { level: 1 },
        _ => Compression::None,
    };
    if mode & 1 == 1 {
        let role = if mode & 64 != 0 {
            Role::Sender
        } else {
            Role::Receiver
        };
        let codec = match role {
            Role::Sender => compression.codec(),
            Role::Receiver => Compression::decodable(),
        };
        let identity = if typed {
            let size = core::mem::size_of::<Pair>() as u64;
            Identity::new(
                Pair::TYPE_ID,
                Pair::FINGERPRINT,
                size,
                size as u32,
                8,
                true,
                codec,
                0,
                Pair::NAME,
            )
        } else {
            Identity::new(0, 0, 4000, 0, 0, false, codec, 0, "raw")
        };
        let local = Local { role, identity };
        let opts = NetOptions {
            auth_key: (mode & 32 != 0).then(|| b"fuzz key".to_vec()),
            handshake_timeout: Duration::from_secs(1),
            ..NetOptions::default()
        };
        return match handshake(&mut Replay(rest), &local, &opts) {
            Ok(remote) => match compatible(&local, &remote) {
                Ok(()) => Ok(1),
                Err(_) => Err("accepted an incompatible peer".into()),
            },
            Err(_) => Ok(0),
        };
    }
    let cap = if mode & 16 == 0 { 4 << 10 } else { 64 << 10 };
    let (tx, mut rx) = Channel::raw()
        .capacity_bytes(cap)
        .build()
        .map_err(|e| e.to_string())?;
    let max = tx.max_payload();
    let feed = Feed::new(
        rest.to_vec(),
        [usize::MAX, 1, 7, 61][usize::from((mode >> 5) & 3)],
        mode & 128 != 0,
    );
    let stall = Duration::from_secs(1);
    let source: Box<dyn Source> = if typed {
        let slots = TypedSlots::<Pair>::new();
        Box::new(Inbound::new(feed, tx, slots, compression, stall).map_err(|e| e.to_string())?)
    } else {
        Box::new(Inbound::new(feed, tx, RawSlots, compression, stall).map_err(|e| e.to_string())?)
    };
    // The consumer's own calls read the bytes, as a TCP consumer's read its socket; the end of
    // the bytes ends the connection.
    rx.end.set_source(source);
    let mut n = 0u64;
    loop {
        match rx.recv() {
            Ok(m) => {
                let len = m.bytes().len();
                if len > max {
                    return Err(format!("a {len}-byte message in a ring taking {max}"));
                }
                if typed && (m.type_id() != Pair::TYPE_ID || m.downcast::<Pair>().is_none()) {
                    return Err("a typed ring got a message of another type".into());
                }
                n += 1;
            }
            Err(RecvError::Disconnected) => return Ok(n),
            Err(e) => return Err(format!("the consumer failed: {e}")),
        }
    }
}

/// A peer's bytes as the receiving side's wire: handed out at most `chunk` bytes per read, and
/// (`stutter`) with nothing to read every other call, so that frames arrive in pieces across
/// calls; then the end of the connection. Counts the reads that returned bytes (the reader's
/// unit tests use it too).
pub(crate) struct Feed {
    data: Vec<u8>,
    at: usize,
    chunk: usize,
    stutter: bool,
    stuttered: bool,
    reads: Arc<AtomicUsize>,
}

impl Feed {
    /// `data` as the peer's bytes, `chunk` bytes per read at most.
    pub(crate) fn new(data: Vec<u8>, chunk: usize, stutter: bool) -> Feed {
        Feed {
            data,
            at: 0,
            chunk,
            stutter,
            stuttered: false,
            reads: Arc::default(),
        }
    }

    /// The count of reads that returned bytes, readable after the feed moved into a reader.
    #[cfg(test)]
    pub(crate) fn reads(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.reads)
    }
}

impl Wire for Feed {
    fn read_until(&mut self, bufs: &mut [IoSliceMut<'_>], _until: Until) -> io::Result<usize> {
        if self.stutter {
            self.stuttered = !self.stuttered;
            if self.stuttered {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut left = self.chunk;
        let mut n = 0;
        for b in bufs.iter_mut() {
            let take = b.len().min(self.data.len() - self.at).min(left);
            b[..take].copy_from_slice(&self.data[self.at..self.at + take]);
            self.at += take;
            n += take;
            left -= take;
            if take < b.len() {
                break;
            }
        }
        Ok(n)
    }

    fn closed(&self) -> bool {
        self.at == self.data.len()
    }

    fn shutdown(&self) {}
}
