//! The entry point of the fuzz target `net_decoder` (`psyne/fuzz`): a peer's bytes into the real
//! handshake and the real receiving pump, without sockets. Not part of the API.

use super::handshake::{Conn, Local, compatible, handshake};
use super::pump::{Codec, End, RawSlots, Slots, TypedSlots, receive_loop};
use super::wire::{Identity, Role};
use super::{Compression, NetOptions};
use crate::channel::{Channel, RecvError};
use crate::message::Message;
use core::time::Duration;
use std::io::{self, Read, Write};

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
/// handshake, bit 5 whether this side holds a key and bit 6 whether it is the sender.
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
    let (mut tx, mut rx) = Channel::raw()
        .capacity_bytes(cap)
        .build()
        .map_err(|e| e.to_string())?;
    let max = tx.max_payload();
    let mut codec = Codec::new(compression, 1, max).map_err(|e| e.to_string())?;
    // The consumer drains concurrently (a full ring makes the pump wait for room, as it does
    // for a slow consumer); the pump ends at the end of the bytes, and drops its producer.
    let drain = std::thread::spawn(move || -> Result<u64, String> {
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
    });
    let mut replay = Replay(rest);
    let stall = Duration::from_secs(1);
    let ended: Result<(), End> = if typed {
        run(
            &mut replay,
            &mut tx,
            TypedSlots::<Pair>::new(),
            &mut codec,
            stall,
        )
    } else {
        run(&mut replay, &mut tx, RawSlots, &mut codec, stall)
    };
    drop(tx);
    let _ = ended;
    drain
        .join()
        .map_err(|_| "the consumer panicked".to_string())?
}

fn run<S: Slots>(
    replay: &mut Replay<'_>,
    tx: &mut crate::RawProducer,
    mut slots: S,
    codec: &mut Codec,
    stall: Duration,
) -> Result<(), End> {
    receive_loop(replay, tx, &mut slots, codec, stall)
}
