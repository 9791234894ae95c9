#![doc = include_str!("PROTOCOL.md")]

#[doc(hidden)]
pub mod fuzz;
mod handshake;
mod inbound;
mod pump;
pub(crate) mod wire;

use crate::channel::ChannelError;
use core::fmt;
use core::time::Duration;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Instant;

pub(crate) use handshake::{Local, handshake};
pub(crate) use inbound::{RawSlots, TypedSlots, attach_receiver};
pub(crate) use pump::spawn_sender;
pub(crate) use wire::{Identity, Role};

/// Per-channel compression of payloads, negotiated in the handshake (the sender chooses, the
/// receiver refuses a codec it cannot decode).
///
/// Typed channels whose fields all have one element size of 2, 4 or 8 bytes (f16, f32, f64
/// tensors...) are byte-shuffled before the codec (byte 0 of every element, then byte 1, ...,
/// as Blosc does): measured on 1 MiB of f32 gradients and of f16 weights, zstd's ratio rose
/// from 1.08-1.09 to 1.17-1.19 and LZ4 went from not shrinking to 1.09 (on ReLU activations,
/// half zeros, the shuffle lowered LZ4's ratio from 1.49 to 1.20; the protocol document's
/// "Compression" table). A message that would not shrink is sent uncompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Payloads are sent as they are in the ring (the default).
    #[default]
    None,
    /// LZ4 block format (`lz4_flex`): fast, modest ratios.
    Lz4,
    /// Zstandard at `level` (1..=22; negative levels are faster). Needs psyne's `zstd` feature:
    /// without it, connecting fails with [`NetError::CompressionUnavailable`].
    Zstd {
        /// The zstd compression level.
        level: i32,
    },
}

impl Compression {
    /// The codec id on the wire.
    pub(crate) fn codec(self) -> u8 {
        match self {
            Compression::None => wire::CODEC_NONE,
            Compression::Lz4 => wire::CODEC_LZ4,
            Compression::Zstd { .. } => wire::CODEC_ZSTD,
        }
    }

    /// The codecs this build decodes, as the receiver's bit set.
    pub(crate) fn decodable() -> u8 {
        let mut set = 1 << wire::CODEC_NONE | 1 << wire::CODEC_LZ4;
        if cfg!(feature = "zstd") {
            set |= 1 << wire::CODEC_ZSTD;
        }
        set
    }
}

/// Why a TCP channel could not be set up.
///
/// Once set up, a TCP channel's ends are ordinary [`Producer`](crate::Producer)s and
/// [`Consumer`](crate::Consumer)s: when the connection ends (the other side dropped its end,
/// the peer died, the socket failed, or the peer broke the protocol), they report
/// [`SendError::Disconnected`](crate::SendError::Disconnected) /
/// [`RecvError::Disconnected`](crate::RecvError::Disconnected) after every whole message that
/// arrived.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetError {
    /// A socket operation failed (connect refused, reset, ...).
    Io(io::Error),
    /// Connecting, accepting or the handshake did not finish in time.
    Timeout {
        /// What timed out: `"connect"`, `"accept"` or `"handshake"`.
        what: &'static str,
    },
    /// The peer is not a psyne endpoint, sent a malformed handshake message, has the same role
    /// (two senders, two receivers), or refused for a reason this version does not know.
    Handshake {
        /// What was wrong.
        what: &'static str,
    },
    /// The two sides speak different protocol versions.
    VersionMismatch {
        /// Our protocol version.
        local: u16,
        /// The peer's.
        remote: u16,
    },
    /// The two ends carry different message types (or one is raw and the receiver is typed).
    IncompatibleType {
        /// Our message type's name (`"raw"` for a raw end).
        local: String,
        /// The peer's.
        remote: String,
    },
    /// The two ends carry the same type id with different layouts (a changed schema).
    IncompatibleLayout {
        /// Our type's name.
        local: String,
        /// The peer's type name.
        remote: String,
        /// Our layout fingerprint.
        local_fingerprint: u64,
        /// The peer's.
        remote_fingerprint: u64,
    },
    /// The sender's largest message does not fit in the receiver's ring.
    MessageTooLarge {
        /// The sender's largest payload.
        sender_max: u64,
        /// The receiver's largest payload.
        receiver_max: u64,
    },
    /// The codec asked for is not compiled in on this side or the receiver's.
    CompressionUnavailable {
        /// The codec's name.
        codec: &'static str,
    },
    /// Authentication failed: a wrong key, a key on one side only, or an empty key.
    AuthFailed {
        /// Which of these.
        why: &'static str,
    },
    /// The listener is bound to a non-loopback address: [`Listener::bind`] refuses those; use
    /// [`Listener::bind_authenticated`] with a key, or [`Listener::bind_insecure_any`].
    NotLoopback {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The listener was made with [`Listener::bind_authenticated`] and the builder has no
    /// `.auth_key(..)`.
    AuthRequired,
    /// A frame from the peer failed a check (length beyond the ring, unknown flag, sequence
    /// gap, wrong type, undecodable payload). The connection was closed.
    Corrupted {
        /// What failed.
        what: &'static str,
    },
    /// The local ring could not be built.
    Channel(ChannelError),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Io(e) => write!(f, "network error: {e}"),
            NetError::Timeout { what } => write!(f, "the {what} timed out"),
            NetError::Handshake { what } => write!(f, "handshake failed: {what}"),
            NetError::VersionMismatch { local, remote } => write!(
                f,
                "protocol version mismatch: this side speaks {local}, the peer {remote}"
            ),
            NetError::IncompatibleType { local, remote } => write!(
                f,
                "incompatible message types: this side carries `{local}`, the peer `{remote}`"
            ),
            NetError::IncompatibleLayout {
                local,
                remote,
                local_fingerprint,
                remote_fingerprint,
            } => write!(
                f,
                "incompatible layouts: this side's `{local}` has fingerprint \
                 {local_fingerprint:#018x}, the peer's `{remote}` {remote_fingerprint:#018x}"
            ),
            NetError::MessageTooLarge {
                sender_max,
                receiver_max,
            } => write!(
                f,
                "the sender sends payloads up to {sender_max} bytes; the receiver's ring takes \
                 at most {receiver_max}"
            ),
            NetError::CompressionUnavailable { codec } => {
                write!(f, "{codec} compression is not available on both sides")
            }
            NetError::AuthFailed { why } => write!(f, "authentication failed: {why}"),
            NetError::NotLoopback { addr } => write!(
                f,
                "{addr} is not a loopback address: use Listener::bind_authenticated (with \
                 .auth_key) or Listener::bind_insecure_any"
            ),
            NetError::AuthRequired => {
                f.write_str("this listener requires an authentication key (.auth_key)")
            }
            NetError::Corrupted { what } => write!(f, "corrupted stream: {what}"),
            NetError::Channel(e) => write!(f, "the local ring could not be built: {e}"),
        }
    }
}

impl std::error::Error for NetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetError::Io(e) => Some(e),
            NetError::Channel(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for NetError {
    fn from(e: io::Error) -> Self {
        NetError::Io(e)
    }
}

impl From<ChannelError> for NetError {
    fn from(e: ChannelError) -> Self {
        NetError::Channel(e)
    }
}

/// Which connections a listener takes without a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// Bound to loopback only: keys optional.
    Loopback,
    /// Any address: every accept needs `.auth_key`.
    Authenticated,
    /// Any address, keys optional: the user opted out.
    Insecure,
}

/// A TCP listener for channels, like [`std::net::TcpListener`]: pass it to `accept_consumer` /
/// `accept_producer` on a channel builder. Each accept takes one connection; a bad client
/// (garbage, a wrong type, a failed handshake) fails that accept only, and the listener keeps
/// serving.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    policy: Policy,
}

impl Listener {
    /// Binds to `addr`, which must be a loopback address (`127.0.0.0/8`, `::1`): without a key,
    /// anyone who can reach a port can feed or drain the channel, so other addresses need
    /// [`bind_authenticated`](Self::bind_authenticated) or an explicit
    /// [`bind_insecure_any`](Self::bind_insecure_any).
    pub fn bind(addr: impl ToSocketAddrs) -> Result<Listener, NetError> {
        for a in addr.to_socket_addrs()? {
            if !a.ip().is_loopback() {
                return Err(NetError::NotLoopback { addr: a });
            }
        }
        Self::bind_with(addr, Policy::Loopback)
    }

    /// Binds to any address; every channel accepted on it must have `.auth_key(..)` (else
    /// [`NetError::AuthRequired`]), so only peers holding the key get in. The key authenticates
    /// the peers; it does not encrypt or protect the messages against someone on the path who
    /// can modify TCP traffic (use a VPN, WireGuard or an SSH tunnel for that).
    pub fn bind_authenticated(addr: impl ToSocketAddrs) -> Result<Listener, NetError> {
        Self::bind_with(addr, Policy::Authenticated)
    }

    /// Binds to any address without requiring a key. **Exposes the channel to every host that
    /// can reach the port**: anyone may connect with the right message type and inject messages
    /// into a consumer or drain a producer (the handshake checks types, not who connects).
    /// Malformed traffic still cannot crash or hang the process. Meant for isolated networks.
    pub fn bind_insecure_any(addr: impl ToSocketAddrs) -> Result<Listener, NetError> {
        Self::bind_with(addr, Policy::Insecure)
    }

    fn bind_with(addr: impl ToSocketAddrs, policy: Policy) -> Result<Listener, NetError> {
        Ok(Listener {
            inner: TcpListener::bind(addr)?,
            policy,
        })
    }

    /// The address the listener is bound to (with the port the system chose for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// One connection, waiting at most `timeout` (forever: `None`).
    fn accept(&self, timeout: Option<Duration>, has_key: bool) -> Result<TcpStream, NetError> {
        if self.policy == Policy::Authenticated && !has_key {
            return Err(NetError::AuthRequired);
        }
        if let Some(t) = timeout {
            let deadline = Instant::now() + t;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(NetError::Timeout { what: "accept" });
                }
                let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                let mut pfd = libc::pollfd {
                    fd: self.inner.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: `pfd` is one valid pollfd for the listener's open descriptor.
                let r = unsafe { libc::poll(&mut pfd, 1, ms) };
                if r > 0 {
                    break;
                }
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e.into());
                    }
                }
            }
        }
        let (stream, _) = self.inner.accept()?;
        Ok(stream)
    }
}

/// How a TCP channel connects, authenticates and compresses; held by the builders that
/// `ChannelBuilder::net()` and `RawChannelBuilder::net()` return.
#[derive(Clone)]
pub struct NetOptions {
    pub(crate) compression: Compression,
    pub(crate) auth_key: Option<Vec<u8>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) accept_timeout: Option<Duration>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) stall_timeout: Duration,
    pub(crate) flush_timeout: Duration,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            compression: Compression::None,
            auth_key: None,
            connect_timeout: Duration::from_secs(10),
            accept_timeout: None,
            handshake_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(30),
            flush_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for NetOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetOptions")
            .field("compression", &self.compression)
            .field("auth_key", &self.auth_key.as_ref().map(|_| "<set>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("accept_timeout", &self.accept_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .field("flush_timeout", &self.flush_timeout)
            .finish()
    }
}

impl Drop for NetOptions {
    fn drop(&mut self) {
        if let Some(k) = self.auth_key.as_mut() {
            // Best effort: do not leave the key in freed memory.
            for b in k.iter_mut() {
                // SAFETY: `b` is a valid, exclusive reference to a byte of the key.
                unsafe { core::ptr::write_volatile(b, 0) };
            }
        }
    }
}

impl NetOptions {
    /// Accepts one connection on `listener` and runs the handshake.
    /// Returns the stream and the peer's identity.
    pub(crate) fn accept(
        &self,
        listener: &Listener,
        local: &Local,
    ) -> Result<(TcpStream, Identity), NetError> {
        let mut stream = listener.accept(self.accept_timeout, self.auth_key.is_some())?;
        stream.set_nodelay(true)?;
        let remote = handshake(&mut stream, local, self)?;
        Ok((stream, remote))
    }

    /// Connects to `addr` (each resolved address in turn) and runs the handshake; returns the
    /// stream and the peer's identity.
    pub(crate) fn connect(
        &self,
        addr: impl ToSocketAddrs,
        local: &Local,
    ) -> Result<(TcpStream, Identity), NetError> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, self.connect_timeout) {
                Ok(mut stream) => {
                    stream.set_nodelay(true)?;
                    let remote = handshake(&mut stream, local, self)?;
                    return Ok((stream, remote));
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    last = Some(NetError::Timeout { what: "connect" })
                }
                Err(e) => last = Some(NetError::Io(e)),
            }
        }
        Err(last.unwrap_or_else(|| {
            NetError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the address resolved to nothing",
            ))
        }))
    }
}
