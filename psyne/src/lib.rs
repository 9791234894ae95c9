//! # Psyne: zero-copy tensor channels between neural-network layers
//!
//! A message is a `#[repr(C)]` struct of numbers and tensors annotated with
//! [`#[derive(PsyneMessage)]`](derive@PsyneMessage). The derive proves the layout at compile time
//! (no padding, only plain-old-data fields, shapes consistent with array lengths) and generates a
//! stable [`Message::TYPE_ID`], a layout [`Message::FINGERPRINT`] and nalgebra views of the tensor
//! fields that read and write the message memory in place.
//!
//! ```
//! use psyne::PsyneMessage;
//!
//! #[derive(Clone, Copy, PsyneMessage)]
//! #[repr(C)]
//! struct Dense {
//!     weights: [[f32; 3]; 2], // 2 columns of 3 rows: a 3x2 matrix, column-major
//!     input: [f32; 2],
//! }
//!
//! let mut m: Dense = bytemuck::Zeroable::zeroed();
//! m.weights_matrix_mut().fill(1.0);
//! m.input_vector_mut().copy_from_slice(&[2.0, 3.0]);
//! let y = m.weights_matrix() * m.input_vector(); // nalgebra product, no copy of the inputs
//! assert_eq!(y.as_slice(), &[5.0, 5.0, 5.0]);
//! ```
//!
//! Modules, from the bottom up; each uses only those before it:
//!
//! | module | owns | never names |
//! |---|---|---|
//! | [`message`] | what a message is: [`Message`], [`MessageHeader`], ids, fingerprints, schema | anything else |
//! | [`slab`] | the memory: huge pages, NUMA, `mlock`, CUDA registration, shared objects | anything above it |
//! | [`tensor`] | what a variable-size tensor is: `DType`, shapes, the description inside a payload, checked views | anything above it |
//! | `sync` (crate-private) | every atomic, fence and futex, swapped for loom's under `cfg(loom)` | anything above it |
//! | [`ring`] | ring protocols over a region, offsets only: record format, control block, SPSC cursors | `wait`, `transport`, `channel` |
//! | [`wait`] | spin, yield, park; the futex notifier | `transport`, `channel` |
//! | [`transport`] | how ends reach the same ring: shared memory (create, open, liveness, stale names), TCP (wire format, handshake, the sending pump, the receiving side's reader) | the end layer's internals, but for two crate-private hooks: the TCP reader reserves and commits records through the end layer (to keep a half-arrived frame across calls) and is attached to a consumer as its source (the consumer's calls read the socket); the sending pump drives an ordinary raw end, as a user would |
//! | [`channel`] | the public ends and builders, and the one end layer (blocking, timeouts, liveness checks, wake-ups, counters, errors) | |
//! | [`device`] | device channels: payloads in GPU memory ordered by events, across processes by CUDA IPC; descriptors through an ordinary ring | the ring's or the end layer's internals (it uses the public typed ends) |
//!
//! The tensor views use nalgebra, re-exported as [`psyne::nalgebra`] (0.35) so that
//! user code names the same version; [`bytemuck`] is re-exported too (`bytemuck::Zeroable::zeroed`
//! makes a zeroed message).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

// Lets the derive's `::psyne::...` paths resolve inside this crate's own tests and docs.
extern crate self as psyne;

pub mod channel;
#[cfg(not(loom))]
pub mod device;
pub mod message;
pub mod ring;
pub mod slab;
pub(crate) mod sync;
pub mod tensor;
pub mod transport;
pub mod wait;

/// TCP channels between machines: [`Listener`](net::Listener), the builders' `accept_*` /
/// `connect_*` methods, [`Compression`](net::Compression), [`NetError`](net::NetError). The wire
/// protocol is specified in [`transport::net`].
pub mod net {
    pub use crate::channel::net::{NetBuilder, RawNetBuilder};
    pub use crate::transport::net::{Compression, Listener, NetError, NetOptions};
}

pub use bytemuck;
pub use channel::{
    Backpressure, BroadcastBuilder, BroadcastConsumer, BroadcastIter, BroadcastLoan,
    BroadcastProducer, BroadcastTryIter, RawBroadcastBuilder, RawBroadcastBytesLoan,
    RawBroadcastConsumer, RawBroadcastProducer, SharedBroadcastBuilder,
};
pub use channel::{
    BytesLoan, Channel, ChannelBuilder, ChannelError, Consumer, ConsumerStats, CreateError, Iter,
    Loan, MpscBuilder, MpscConsumer, MpscIter, MpscProducer, MpscTryIter, OpenError, Producer,
    ProducerStats, RawChannelBuilder, RawConsumer, RawMpscBuilder, RawMpscConsumer,
    RawMpscProducer, RawProducer, RawReceived, Received, RecvError, SendError,
    SharedChannelBuilder, SharedMpscBuilder, SharedRawChannelBuilder, TryIter,
};
pub use channel::{
    SharedTensorChannelBuilder, TensorChannelBuilder, TensorConsumer, TensorLoan, TensorProducer,
    TensorReceived, TensorSendError,
};
pub use message::{
    ElemType, Field, FieldSchema, LengthMismatch, Message, MessageHeader, MessageSchema, Shape,
    fnv1a64,
};
pub use nalgebra;
/// Derives [`Message`] for a `#[repr(C)]` struct of numbers and tensors.
///
/// The derive checks the layout at compile time and reports each mistake at the offending field:
/// a missing `#[repr(C)]` (or `packed`/`transparent`), padding between fields or at the end,
/// fields that are not plain old data (references, pointers, `Vec`, `String`, `bool`, `char`,
/// `Option`, `usize`, tuples, ...), enums, unions, tuple structs, type or lifetime parameters,
/// and unknown, duplicated or malformed `#[psyne(...)]` attributes. It generates:
///
/// * `unsafe impl Message` (`TYPE_ID`, `NAME`, `FINGERPRINT`, `FIELDS`), plus
///   `bytemuck::Pod`, `bytemuck::Zeroable` and [`Field`] (so messages nest): write only
///   `#[derive(Clone, Copy, PsyneMessage)]` and `#[repr(C)]`;
/// * for a `[T; N]` field `x` of numbers: `x_vector()` / `x_vector_mut()`, nalgebra column
///   vector views over the message memory;
/// * for a `[[T; R]; C]` field (C columns of R rows), or a `[T; N]` field annotated
///   `#[psyne(matrix(rows = R, cols = C))]`: `x_matrix()` / `x_matrix_mut()` (column-major
///   views: element `(i, j)` is `x[j][i]`, or `x[i + j * R]` when flat) and
///   `x_from_row_major(&[T])` / `x_to_row_major(&mut [T])` copies for row-major data.
///   Strided row-major views are deliberately not offered (nalgebra 0.35's products are
///   unsound on them, dimforge/nalgebra#1616).
///
/// Attributes: `#[psyne(name = "...")]` (stable name, default: the struct's name),
/// `#[psyne(type_id = N)]` (explicit id; not on const-generic structs),
/// `#[psyne(matrix(rows = R, cols = C))]` on a field. Element types: `f32 f64 i8 i16 i32 i64
/// u8 u16 u32 u64`, and `half::f16`/`half::bf16` with the `half` feature; fields may also be
/// other messages or arrays of them. Const-generic structs are supported: their layout checks
/// run when an instantiation is first used through psyne (its constants or accessors), and
/// each instantiation gets its own `TYPE_ID`.
///
/// ```
/// use psyne::{Message, PsyneMessage};
///
/// #[derive(Clone, Copy, PsyneMessage)]
/// #[repr(C)]
/// #[psyne(name = "example.Dense")]
/// struct Dense<const IN: usize, const OUT: usize> {
///     weights: [[f32; OUT]; IN], // OUT x IN matrix, column-major
///     input: [f32; IN],
///     layer: u32,
/// }
///
/// let mut d: Dense<3, 2> = bytemuck::Zeroable::zeroed();
/// d.weights_from_row_major(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0])?; // picks x0 and x1
/// d.input_vector_mut().copy_from_slice(&[7.0, 8.0, 9.0]);
/// let y = d.weights_matrix() * d.input_vector();
/// assert_eq!(y.as_slice(), &[7.0, 8.0]);
/// assert_ne!(Dense::<3, 2>::TYPE_ID, Dense::<2, 3>::TYPE_ID);
/// assert_eq!(Dense::<3, 2>::NAME, "example.Dense");
/// # Ok::<(), psyne::LengthMismatch>(())
/// ```
///
/// A mistake is a compile error at its span, for example:
///
/// ```compile_fail
/// #[derive(Clone, Copy, psyne::PsyneMessage)]
/// #[repr(C)]
/// struct Bad {
///     ready: bool, // error: field `ready` is `bool` ...; use `u8` (0 or 1)
///     data: [f32; 4],
/// }
/// ```
pub use psyne_derive::PsyneMessage;
pub use slab::{HugePageSize, HugePages, Lock, Slab, SlabBuilder, SlabError};
pub use tensor::{
    DType, TENSOR_TYPE_ID, TensorElement, TensorError, TensorInfo, TensorRef, TensorView,
};
pub use wait::Wait;

/// The `cudarc` crate psyne's `cuda` feature is built on (the same version, with the same
/// features), for GPU work on CUDA-registered channels: [`Slab::cuda_context`] returns its
/// context type, and a message's [`Received::cuda_device_ptr`] is a
/// `cudarc::driver::sys::CUdeviceptr`.
#[cfg(feature = "cuda")]
pub use cudarc;

/// Items used by the code that `#[derive(PsyneMessage)]` generates. Not a public API: names and
/// signatures change between versions without notice.
#[doc(hidden)]
pub mod __private;
