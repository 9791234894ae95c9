//! TCP ends: the builder methods that put a channel's two ends on two machines (see
//! [`crate::transport::net`] for the protocol). The local side is an ordinary ring built from
//! the same builder; a sending pump thread writes its records to the socket, and a receiving
//! end reads the socket into its ring in the consumer's own calls.

use super::{
    ChannelBuilder, Consumer, Producer, RawChannelBuilder, RawConsumer, RawProducer, pair,
    region_for_bytes,
};
use crate::message::{ElemType, Message};
use crate::ring::{ChannelIdentity, Ring};
use crate::transport::net::{
    Compression, Identity, Listener, Local, NetError, NetOptions, RawSlots, Role, TypedSlots,
    attach_receiver, spawn_sender, wire,
};
use core::time::Duration;
use std::net::ToSocketAddrs;

/// For the sending pump, which waits for records as the end layer does, and the receiving
/// side, which fills its consumer's ring in the consumer's calls.
pub(crate) use super::end::{Patience, Pulled, Source};
/// The payload alignment of a ring of `T`s, for the receiving side's reservations.
pub(crate) use super::typed::align_of_payload;

/// A typed channel builder with network options; from [`ChannelBuilder::net`] or any of the
/// network setters on [`ChannelBuilder`] (`compression`, `auth_key`, timeouts).
///
/// ```no_run
/// use psyne::{Channel, PsyneMessage, net::{Compression, Listener}};
/// # #[derive(Clone, Copy, PsyneMessage)] #[repr(C)] struct Grad { g: [f32; 1024] }
/// let listener = Listener::bind("127.0.0.1:0")?;
/// let mut rx = Channel::<Grad>::builder()
///     .capacity(64)
///     .auth_key(b"a shared secret of 32 bytes or more")
///     .compression(Compression::Lz4)
///     .accept_consumer(&listener)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until a connect_/accept_ method is called"]
pub struct NetBuilder<T> {
    base: ChannelBuilder<T>,
    opts: NetOptions,
}

/// A raw channel builder with network options; from [`RawChannelBuilder::net`] or the network
/// setters on [`RawChannelBuilder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until a connect_/accept_ method is called"]
pub struct RawNetBuilder {
    base: RawChannelBuilder,
    opts: NetOptions,
}

macro_rules! net_setters {
    () => {
        /// Compression of payloads on the wire (default [`Compression::None`]); chosen by the
        /// sending side, checked by the receiving side (which decodes every codec it was built
        /// with). Ignored on a receiving end.
        pub fn compression(mut self, compression: Compression) -> Self {
            self.opts.compression = compression;
            self
        }

        /// Requires both sides to prove they hold `key` (HMAC-SHA256 over both sides' nonces)
        /// before anything else is accepted; the peer must use the same key. Use 32 random
        /// bytes or more. Authenticates the peers; does not encrypt messages.
        pub fn auth_key(mut self, key: &[u8]) -> Self {
            self.opts.auth_key = Some(key.to_vec());
            self
        }

        /// How long `connect_*` waits for the TCP connection (default 10 s).
        pub fn connect_timeout(mut self, timeout: Duration) -> Self {
            self.opts.connect_timeout = timeout;
            self
        }

        /// How long `accept_*` waits for a connection (default: forever).
        pub fn accept_timeout(mut self, timeout: Duration) -> Self {
            self.opts.accept_timeout = Some(timeout);
            self
        }

        /// How long the whole handshake may take once connected (default 5 s).
        pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
            self.opts.handshake_timeout = timeout;
            self
        }

        /// Dropping a sending end waits until the messages still in its local ring are written
        /// to the socket: after the drop returns they are in the kernel's hands and arrive
        /// even if the process exits. It waits as long as the peer keeps reading; a peer that
        /// reads nothing for `timeout` (default 10 s) has the connection cut, and the messages
        /// still in the ring are lost. Ignored on a receiving end.
        pub fn flush_timeout(mut self, timeout: Duration) -> Self {
            self.opts.flush_timeout = timeout;
            self
        }

        /// How long a receiving end waits for the rest of a frame that has begun to arrive
        /// before it closes the connection (default 30 s). Between frames an idle connection
        /// is not limited.
        pub fn stall_timeout(mut self, timeout: Duration) -> Self {
            self.opts.stall_timeout = timeout;
            self
        }
    };
}

/// Shortcuts on the plain builders: each returns the network builder.
macro_rules! net_shortcuts {
    ($net:ident $(<$t:ident>)?) => {
        /// The network builder over this one, with default network options.
        pub fn net(self) -> $net $(<$t>)? {
            $net {
                base: self,
                opts: NetOptions::default(),
            }
        }

        /// See [`NetBuilder::compression`].
        pub fn compression(self, compression: Compression) -> $net $(<$t>)? {
            self.net().compression(compression)
        }

        /// See [`NetBuilder::auth_key`].
        pub fn auth_key(self, key: &[u8]) -> $net $(<$t>)? {
            self.net().auth_key(key)
        }

        /// See [`NetBuilder::connect_timeout`].
        pub fn connect_timeout(self, timeout: Duration) -> $net $(<$t>)? {
            self.net().connect_timeout(timeout)
        }

        /// See [`NetBuilder::accept_timeout`].
        pub fn accept_timeout(self, timeout: Duration) -> $net $(<$t>)? {
            self.net().accept_timeout(timeout)
        }
    };
}

/// Byte-shuffle width for `T`: the common element size of all its fields when it is 2, 4 or 8
/// (tensors of one number type), else 1.
fn shuffle_width<T: Message>() -> usize {
    let size = |e: &ElemType| match e {
        ElemType::F32 | ElemType::I32 | ElemType::U32 => 4,
        ElemType::F64 | ElemType::I64 | ElemType::U64 => 8,
        ElemType::F16 | ElemType::BF16 | ElemType::I16 | ElemType::U16 => 2,
        ElemType::I8 | ElemType::U8 => 1,
        ElemType::Message { .. } => 0,
    };
    let mut width = None;
    for f in T::FIELDS {
        let w = size(&f.elem);
        match width {
            None => width = Some(w),
            Some(x) if x == w => {}
            Some(_) => return 1,
        }
    }
    match width {
        Some(w) if matches!(w, 2 | 4 | 8) => w,
        _ => 1,
    }
}

/// Fails early when the sender asks for a codec this build lacks.
fn check_codec(c: Compression) -> Result<(), NetError> {
    if matches!(c, Compression::Zstd { .. }) && !cfg!(feature = "zstd") {
        return Err(NetError::CompressionUnavailable { codec: "zstd" });
    }
    Ok(())
}

/// The codec a sender announced, for the receiving side's reader.
fn announced(remote: &Identity) -> Compression {
    match remote.codec {
        wire::CODEC_LZ4 => Compression::Lz4,
        wire::CODEC_ZSTD => Compression::Zstd {
            level: i32::from(remote.level),
        },
        _ => Compression::None,
    }
}

/// A sender's codec fields.
fn codec_fields(c: Compression) -> (u8, i8) {
    match c {
        Compression::Zstd { level } => (c.codec(), level.clamp(-128, 127) as i8),
        _ => (c.codec(), 0),
    }
}

impl<T: Message> ChannelBuilder<T> {
    net_shortcuts!(NetBuilder<T>);

    /// Waits for a connection on `listener` from a `connect_producer` of the same message type
    /// and returns the consumer end, filled from the network. See [`NetBuilder::accept_consumer`].
    pub fn accept_consumer(self, listener: &Listener) -> Result<Consumer<T>, NetError> {
        self.net().accept_consumer(listener)
    }

    /// Connects to a listener where `accept_consumer` waits and returns the producer end.
    pub fn connect_producer(self, addr: impl ToSocketAddrs) -> Result<Producer<T>, NetError> {
        self.net().connect_producer(addr)
    }

    /// Waits for a connection on `listener` from a `connect_consumer` and returns the producer
    /// end.
    pub fn accept_producer(self, listener: &Listener) -> Result<Producer<T>, NetError> {
        self.net().accept_producer(listener)
    }

    /// Connects to a listener where `accept_producer` waits and returns the consumer end.
    pub fn connect_consumer(self, addr: impl ToSocketAddrs) -> Result<Consumer<T>, NetError> {
        self.net().connect_consumer(addr)
    }

    /// Both raw ends of a fresh ring sized as `build` would size it.
    fn ring_ends(&self) -> Result<(RawProducer, RawConsumer), NetError> {
        let region = self.region()?;
        let slab = self
            .opts
            .slab(region)
            .build()
            .map_err(super::ChannelError::from)?;
        let ring = Ring::create(
            slab,
            self.opts.config(region),
            &ChannelIdentity::of::<T>(),
            None,
        );
        Ok(pair(ring))
    }
}

impl<T: Message> NetBuilder<T> {
    net_setters!();

    /// Room for at least `messages` messages in the local ring (see
    /// [`ChannelBuilder::capacity`]).
    pub fn capacity(mut self, messages: usize) -> Self {
        self.base = self.base.capacity(messages);
        self
    }

    fn identity(&self, role: Role) -> Identity {
        let size = core::mem::size_of::<T>();
        let (codec, level) = match role {
            Role::Sender => codec_fields(self.opts.compression),
            Role::Receiver => (Compression::decodable(), 0),
        };
        Identity::new(
            T::TYPE_ID,
            T::FINGERPRINT,
            size as u64,
            size as u32,
            core::mem::align_of::<T>() as u32,
            true,
            codec,
            level,
            T::NAME,
        )
    }

    fn receiver(
        &self,
        raw: (RawProducer, RawConsumer),
        stream_remote: (std::net::TcpStream, Identity),
    ) -> Result<Consumer<T>, NetError> {
        let (tx, mut rx) = raw;
        let (stream, remote) = stream_remote;
        attach_receiver(
            stream,
            &mut rx,
            tx,
            TypedSlots::<T>::new(),
            announced(&remote),
            self.opts.stall_timeout,
        )?;
        Ok(Consumer::new(rx))
    }

    fn sender(
        &self,
        raw: (RawProducer, RawConsumer),
        stream: std::net::TcpStream,
    ) -> Result<Producer<T>, NetError> {
        let (mut tx, rx) = raw;
        let flush = spawn_sender(
            stream,
            rx,
            self.opts.compression,
            shuffle_width::<T>(),
            self.opts.flush_timeout,
        )?;
        tx.after_close = Some(Box::new(flush));
        Ok(Producer::new(tx))
    }

    /// Builds the local ring, waits for one connection on `listener` (at most the accept
    /// timeout), runs the handshake (type, layout, version, key) and returns the consumer end;
    /// its `recv` calls read the socket into its ring. A bad client fails this call only: call
    /// it again to serve the next one.
    pub fn accept_consumer(self, listener: &Listener) -> Result<Consumer<T>, NetError> {
        let raw = self.base.ring_ends()?;
        let local = Local {
            role: Role::Receiver,
            identity: self.identity(Role::Receiver),
        };
        let conn = self.opts.accept(listener, &local)?;
        self.receiver(raw, conn)
    }

    /// Builds the local ring, connects to `addr` (at most the connect timeout per address),
    /// runs the handshake and returns the producer end; a pump thread writes its records to the
    /// socket.
    pub fn connect_producer(self, addr: impl ToSocketAddrs) -> Result<Producer<T>, NetError> {
        check_codec(self.opts.compression)?;
        let raw = self.base.ring_ends()?;
        let local = Local {
            role: Role::Sender,
            identity: self.identity(Role::Sender),
        };
        let (stream, _) = self.opts.connect(addr, &local)?;
        self.sender(raw, stream)
    }

    /// Like [`connect_producer`](Self::connect_producer), with the roles of connecting and
    /// listening swapped: waits on `listener` for a `connect_consumer`.
    pub fn accept_producer(self, listener: &Listener) -> Result<Producer<T>, NetError> {
        check_codec(self.opts.compression)?;
        let raw = self.base.ring_ends()?;
        let local = Local {
            role: Role::Sender,
            identity: self.identity(Role::Sender),
        };
        let (stream, _) = self.opts.accept(listener, &local)?;
        self.sender(raw, stream)
    }

    /// Like [`accept_consumer`](Self::accept_consumer), connecting to an `accept_producer`.
    pub fn connect_consumer(self, addr: impl ToSocketAddrs) -> Result<Consumer<T>, NetError> {
        let raw = self.base.ring_ends()?;
        let local = Local {
            role: Role::Receiver,
            identity: self.identity(Role::Receiver),
        };
        let conn = self.opts.connect(addr, &local)?;
        self.receiver(raw, conn)
    }
}

impl RawChannelBuilder {
    net_shortcuts!(RawNetBuilder);

    /// Raw variant of [`ChannelBuilder::accept_consumer`]: messages of any type.
    pub fn accept_consumer(self, listener: &Listener) -> Result<RawConsumer, NetError> {
        self.net().accept_consumer(listener)
    }

    /// Raw variant of [`ChannelBuilder::connect_producer`].
    pub fn connect_producer(self, addr: impl ToSocketAddrs) -> Result<RawProducer, NetError> {
        self.net().connect_producer(addr)
    }

    /// Raw variant of [`ChannelBuilder::accept_producer`].
    pub fn accept_producer(self, listener: &Listener) -> Result<RawProducer, NetError> {
        self.net().accept_producer(listener)
    }

    /// Raw variant of [`ChannelBuilder::connect_consumer`].
    pub fn connect_consumer(self, addr: impl ToSocketAddrs) -> Result<RawConsumer, NetError> {
        self.net().connect_consumer(addr)
    }

    fn ring_ends(&self) -> Result<(RawProducer, RawConsumer), NetError> {
        let region = region_for_bytes(self.capacity_bytes)?;
        let slab = self
            .opts
            .slab(region)
            .build()
            .map_err(super::ChannelError::from)?;
        let ring = Ring::create(slab, self.opts.config(region), &ChannelIdentity::RAW, None);
        Ok(pair(ring))
    }
}

impl RawNetBuilder {
    net_setters!();

    /// A local ring of at least `bytes` bytes (see [`RawChannelBuilder::capacity_bytes`]).
    pub fn capacity_bytes(mut self, bytes: usize) -> Self {
        self.base = self.base.capacity_bytes(bytes);
        self
    }

    fn identity(&self, role: Role, max_payload: usize) -> Identity {
        let (codec, level) = match role {
            Role::Sender => codec_fields(self.opts.compression),
            Role::Receiver => (Compression::decodable(), 0),
        };
        Identity::new(0, 0, max_payload as u64, 0, 0, false, codec, level, "raw")
    }

    fn sender(
        &self,
        mut tx: RawProducer,
        rx: RawConsumer,
        stream: std::net::TcpStream,
    ) -> Result<RawProducer, NetError> {
        let flush = spawn_sender(
            stream,
            rx,
            self.opts.compression,
            1,
            self.opts.flush_timeout,
        )?;
        tx.after_close = Some(Box::new(flush));
        Ok(tx)
    }

    /// Raw variant of [`NetBuilder::accept_consumer`]. A raw receiver takes frames of any
    /// type from a raw or typed sender whose largest message fits its ring.
    pub fn accept_consumer(self, listener: &Listener) -> Result<RawConsumer, NetError> {
        let (tx, mut rx) = self.base.ring_ends()?;
        let local = Local {
            role: Role::Receiver,
            identity: self.identity(Role::Receiver, tx.max_payload()),
        };
        let (stream, remote) = self.opts.accept(listener, &local)?;
        attach_receiver(
            stream,
            &mut rx,
            tx,
            RawSlots,
            announced(&remote),
            self.opts.stall_timeout,
        )?;
        Ok(rx)
    }

    /// Raw variant of [`NetBuilder::connect_producer`]. The receiver's ring must take this
    /// ring's largest payload ([`RawProducer::max_payload`]).
    pub fn connect_producer(self, addr: impl ToSocketAddrs) -> Result<RawProducer, NetError> {
        check_codec(self.opts.compression)?;
        let (tx, rx) = self.base.ring_ends()?;
        let local = Local {
            role: Role::Sender,
            identity: self.identity(Role::Sender, tx.max_payload()),
        };
        let (stream, _) = self.opts.connect(addr, &local)?;
        self.sender(tx, rx, stream)
    }

    /// Raw variant of [`NetBuilder::accept_producer`].
    pub fn accept_producer(self, listener: &Listener) -> Result<RawProducer, NetError> {
        check_codec(self.opts.compression)?;
        let (tx, rx) = self.base.ring_ends()?;
        let local = Local {
            role: Role::Sender,
            identity: self.identity(Role::Sender, tx.max_payload()),
        };
        let (stream, _) = self.opts.accept(listener, &local)?;
        self.sender(tx, rx, stream)
    }

    /// Raw variant of [`NetBuilder::connect_consumer`].
    pub fn connect_consumer(self, addr: impl ToSocketAddrs) -> Result<RawConsumer, NetError> {
        let (tx, mut rx) = self.base.ring_ends()?;
        let local = Local {
            role: Role::Receiver,
            identity: self.identity(Role::Receiver, tx.max_payload()),
        };
        let (stream, remote) = self.opts.connect(addr, &local)?;
        attach_receiver(
            stream,
            &mut rx,
            tx,
            RawSlots,
            announced(&remote),
            self.opts.stall_timeout,
        )?;
        Ok(rx)
    }
}
