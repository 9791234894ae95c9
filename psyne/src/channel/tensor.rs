//! Tensor ends: tensors whose shape and element type are known only at run time, written and
//! read in place. A tensor channel is a raw channel whose records are tensor payloads (see
//! [`crate::tensor`] for the format); these ends are thin layers over the raw ends
//! ([`RawProducer::allocate_bytes`], [`RawConsumer::recv`]), and raw ends send and receive
//! tensors too ([`RawProducer::allocate_tensor`], [`RawReceived::tensor`]).
//!
//! ```
//! use psyne::{Channel, PsyneMessage, TensorError};
//!
//! #[derive(Clone, Copy, PsyneMessage)]
//! #[repr(C)]
//! struct Batch {
//!     index: u64,
//!     layer: u32,
//!     step: u32,
//! }
//!
//! let (mut tx, mut rx) = Channel::tensors().capacity_bytes(8 << 20).build()?;
//! let mut t = tx.allocate_tensor::<f32>(&[32, 256])?; // in ring memory
//! t.as_mut_slice().fill(0.5);
//! t.send();
//! let batch = Batch { index: 7, layer: 2, step: 100 };
//! let mut t = tx.allocate_tensor_with::<Batch, i64>(batch, &[3, 0])?; // a header, no elements
//! t.send();
//!
//! let r = rx.recv()?;
//! let v = r.view::<f32>()?; // read in place
//! assert_eq!(v.shape(), &[32, 256]);
//! assert_eq!(v.as_slice().iter().sum::<f32>(), 4096.0);
//! assert_eq!(v.matrix().shape(), (256, 32)); // nalgebra's column-major view: the transpose
//! assert!(matches!(r.view::<f64>(), Err(TensorError::DType { .. })));
//! drop(r); // releases the record
//!
//! let r = rx.recv()?;
//! assert_eq!(r.header::<Batch>()?.index, 7);
//! assert!(r.view::<i64>()?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::end::Patience as RecvPatience;
use super::raw::{BytesLoan, RawConsumer, RawProducer, RawReceived};
use super::{
    Channel, ChannelError, ConsumerStats, CreateError, OpenError, ProducerStats, RawChannelBuilder,
    RecvError, SendError, SharedRawChannelBuilder,
};
use crate::message::{Message, MessageHeader};
use crate::tensor::{
    DESCRIPTION_SIZE, DType, DescriptionCache, HeaderSpec, MAX_RANK, TENSOR_TYPE_ID, TensorElement,
    TensorError, TensorInfo, TensorLayout, TensorRef, TensorView, row_major_dims,
};
use crate::transport::net::{Listener, NetError};
use core::fmt;
use core::marker::PhantomData;
use core::time::Duration;
use nalgebra::{DMatrixView, DMatrixViewMut};
use std::net::ToSocketAddrs;

/// The default ring size of [`Channel::tensors`]: 1 MiB.
const DEFAULT_CAPACITY_BYTES: usize = 1 << 20;

/// How an allocation waits for room.
#[derive(Clone, Copy)]
enum Patience {
    Forever,
    Never,
    Timeout(Duration),
}

/// Why a producer could not allocate a tensor: the channel's reason ([`SendError`]: `Full`,
/// `Timeout`, `Disconnected`, `TooLarge` for a tensor larger than the ring, ...) or the shape's
/// ([`TensorError`]: rank above 8, an element count or byte size that overflows, a header
/// aligned to more than 64 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TensorSendError {
    /// The channel refused the allocation.
    Send(SendError),
    /// The shape (or header) cannot be a tensor record.
    Tensor(TensorError),
}

impl fmt::Display for TensorSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorSendError::Send(e) => write!(f, "could not allocate the tensor: {e}"),
            TensorSendError::Tensor(e) => write!(f, "could not allocate the tensor: {e}"),
        }
    }
}

impl std::error::Error for TensorSendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TensorSendError::Send(e) => Some(e),
            TensorSendError::Tensor(e) => Some(e),
        }
    }
}

impl From<SendError> for TensorSendError {
    fn from(e: SendError) -> Self {
        TensorSendError::Send(e)
    }
}

impl From<TensorError> for TensorSendError {
    fn from(e: TensorError) -> Self {
        TensorSendError::Tensor(e)
    }
}

impl RawProducer {
    /// Plans the record, borrows it and writes the description (the caller writes a header).
    #[inline(always)]
    fn tensor_loan<E: TensorElement>(
        &mut self,
        layout: TensorLayout,
        patience: Patience,
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        let len = layout.payload_len();
        let bytes = match patience {
            Patience::Forever => self.allocate_bytes(len),
            Patience::Never => self.try_allocate_bytes(len),
            Patience::Timeout(t) => self.allocate_bytes_timeout(len, t),
        }?;
        Ok(TensorLoan::describe(bytes, layout))
    }

    /// Like [`allocate_tensor`](Self::allocate_tensor), but awaits space instead of blocking
    /// the thread (see [`Producer::allocate_async`](crate::Producer::allocate_async)).
    /// Cancellation-safe.
    pub async fn allocate_tensor_async<E: TensorElement>(
        &mut self,
        shape: &[usize],
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        let layout = TensorLayout::new(E::DTYPE, shape, None)?;
        let bytes = self.allocate_bytes_async(layout.payload_len()).await?;
        Ok(TensorLoan::describe(bytes, layout))
    }
}

impl<'a, E: TensorElement> TensorLoan<'a, E> {
    /// The loan of `bytes` for a tensor of `layout`, with its description written.
    #[inline(always)]
    fn describe(mut bytes: BytesLoan<'a>, layout: TensorLayout) -> Self {
        // The payload is at least 64 bytes: a description, then elements at a multiple of 64
        // from its start.
        if let Some((d, _)) = bytes.split_first_chunk_mut::<DESCRIPTION_SIZE>() {
            layout.write_fields(d);
        }
        TensorLoan {
            bytes,
            element_offset: layout.element_offset(),
            len: layout.len(),
            shape: layout.padded_shape(),
            rank: layout.shape().len() as u8,
            _e: PhantomData,
        }
    }
}

impl RawProducer {
    /// A tensor loan with the user header `header` written.
    #[inline(always)]
    fn tensor_loan_with<H: Message, E: TensorElement>(
        &mut self,
        header: H,
        shape: &[usize],
        patience: Patience,
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        let layout = TensorLayout::new(E::DTYPE, shape, Some(HeaderSpec::of::<H>()))?;
        let mut loan = self.tensor_loan(layout, patience)?;
        layout.write_tag(&mut loan.bytes);
        if let Some(offset) = layout.header_offset() {
            // The layout put `size_of::<H>()` header bytes at `offset`, before the elements.
            loan.bytes[offset..offset + size_of::<H>()]
                .copy_from_slice(bytemuck::bytes_of(&header));
        }
        Ok(loan)
    }

    /// Borrows room for a tensor of `shape` (row-major, outermost dimension first) with elements
    /// of type `E`, waiting for space if needed. The description is written; the elements hold
    /// the bytes the slot last held: fill them ([`TensorLoan::as_mut_slice`]) and
    /// [`send`](TensorLoan::send). A tensor record is `64 + len * size_of::<E>()` bytes of
    /// payload (see [`crate::tensor`]), tagged [`TENSOR_TYPE_ID`].
    ///
    /// # Errors
    /// [`TensorSendError::Tensor`] for a shape that cannot be a tensor (rank above 8, count or
    /// byte size overflow); [`TensorSendError::Send`] with `TooLarge` for a tensor larger than
    /// the ring, `Disconnected`, or `Corrupted`.
    #[inline(always)]
    pub fn allocate_tensor<E: TensorElement>(
        &mut self,
        shape: &[usize],
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        let layout = TensorLayout::new(E::DTYPE, shape, None)?;
        self.tensor_loan(layout, Patience::Forever)
    }

    /// Like [`allocate_tensor`](Self::allocate_tensor), but fails with `Full` instead of
    /// waiting.
    #[inline]
    pub fn try_allocate_tensor<E: TensorElement>(
        &mut self,
        shape: &[usize],
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        let layout = TensorLayout::new(E::DTYPE, shape, None)?;
        self.tensor_loan(layout, Patience::Never)
    }

    /// Like [`allocate_tensor`](Self::allocate_tensor), but fails with `Timeout` after
    /// `timeout`.
    pub fn allocate_tensor_timeout<E: TensorElement>(
        &mut self,
        shape: &[usize],
        timeout: Duration,
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        let layout = TensorLayout::new(E::DTYPE, shape, None)?;
        self.tensor_loan(layout, Patience::Timeout(timeout))
    }

    /// Like [`allocate_tensor`](Self::allocate_tensor), with the user header `header` (any
    /// derived message: batch index, layer, step...) written after the description; the
    /// consumer reads it with `header::<H>()`, which checks its type id, fingerprint and size.
    ///
    /// # Errors
    /// As [`allocate_tensor`](Self::allocate_tensor), and
    /// [`TensorError::HeaderAlignment`] for an `H` aligned to more than 64 bytes.
    #[inline]
    pub fn allocate_tensor_with<H: Message, E: TensorElement>(
        &mut self,
        header: H,
        shape: &[usize],
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        self.tensor_loan_with(header, shape, Patience::Forever)
    }

    /// Like [`allocate_tensor_with`](Self::allocate_tensor_with), but fails with `Full`
    /// instead of waiting.
    #[inline]
    pub fn try_allocate_tensor_with<H: Message, E: TensorElement>(
        &mut self,
        header: H,
        shape: &[usize],
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        self.tensor_loan_with(header, shape, Patience::Never)
    }

    /// Like [`allocate_tensor_with`](Self::allocate_tensor_with), but fails with `Timeout`
    /// after `timeout`.
    pub fn allocate_tensor_with_timeout<H: Message, E: TensorElement>(
        &mut self,
        header: H,
        shape: &[usize],
        timeout: Duration,
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        self.tensor_loan_with(header, shape, Patience::Timeout(timeout))
    }
}

impl RawReceived<'_> {
    /// The message as a tensor, validated (see [`crate::tensor`] for every check): the
    /// elements are read in place with [`TensorRef::view`], the user header with
    /// [`TensorRef::header`].
    ///
    /// # Errors
    /// [`TensorError::NotATensor`] if the type id is not [`TENSOR_TYPE_ID`]; any of the
    /// description errors otherwise.
    #[inline]
    pub fn tensor(&self) -> Result<TensorRef<'_>, TensorError> {
        let type_id = self.type_id();
        if type_id != TENSOR_TYPE_ID {
            return Err(TensorError::NotATensor { type_id });
        }
        TensorRef::parse(self.bytes())
    }
}

/// Room for a tensor in the ring, from `allocate_tensor` ([`TensorProducer`] or
/// [`RawProducer`]): its description (and header) is written, its elements are what the slot
/// last held. Fill them in place and [`send`](TensorLoan::send); dropping the loan publishes
/// nothing.
#[must_use = "dropping a loan publishes nothing; call `send`"]
pub struct TensorLoan<'a, E> {
    /// The whole payload: `element_offset + len * size_of::<E>()` bytes, 64-byte aligned.
    bytes: BytesLoan<'a>,
    /// A multiple of 64.
    element_offset: usize,
    /// Number of elements.
    len: usize,
    shape: [usize; MAX_RANK],
    rank: u8,
    _e: PhantomData<E>,
}

impl<E: TensorElement> TensorLoan<'_, E> {
    /// The dimensions, outermost first.
    #[inline]
    pub fn shape(&self) -> &[usize] {
        &self.shape[..self.rank as usize]
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// Number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        E::DTYPE
    }

    /// The elements, in row-major order.
    #[inline]
    pub fn as_slice(&self) -> &[E] {
        let bytes: &[u8] = &self.bytes;
        debug_assert_eq!(bytes.len(), self.element_offset + self.len * size_of::<E>());
        debug_assert!((bytes.as_ptr() as usize + self.element_offset).is_multiple_of(64));
        // SAFETY: the payload is `element_offset + len * size_of::<E>()` bytes (planned by
        // `TensorLayout`, allocated with that length), starts 64-byte aligned in the ring, and
        // `element_offset` is a multiple of 64, so the `len` elements lie inside it and are
        // aligned for `E` (at most 8); ring bytes are initialised and any bytes are a valid
        // `E` (`Pod`). The record is reserved for this loan: the consumer does not read it.
        unsafe {
            core::slice::from_raw_parts(
                bytes.as_ptr().add(self.element_offset).cast::<E>(),
                self.len,
            )
        }
    }

    /// The elements, in row-major order, to write in place.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [E] {
        let (offset, len) = (self.element_offset, self.len);
        let bytes: &mut [u8] = &mut self.bytes;
        debug_assert_eq!(bytes.len(), offset + len * size_of::<E>());
        // SAFETY: as in `as_slice`; `&mut self` makes the access exclusive, and any bytes
        // written through an `E: Pod` keep the memory initialised.
        unsafe { core::slice::from_raw_parts_mut(bytes.as_mut_ptr().add(offset).cast::<E>(), len) }
    }

    /// The elements to write in fixed-width chunks of `N` and the remainder (fewer than `N`):
    /// `<[E]>::as_chunks_mut` on [`as_mut_slice`](Self::as_mut_slice). A loop over one
    /// `[E; N]` chunk has a compile-time trip count, which the compiler unrolls and
    /// vectorises as it does a fixed-size message's loops (see
    /// [`crate::tensor`](crate::tensor#writing-the-element-loops)). `N` must not be 0 (a
    /// compile-time error).
    ///
    /// ```
    /// # let (mut tx, _rx) = psyne::Channel::tensors().capacity_bytes(1 << 16).build()?;
    /// let mut t = tx.allocate_tensor::<u32>(&[258])?;
    /// let (chunks, rest) = t.as_chunks_mut::<32>();
    /// let mut next = 0u32;
    /// for chunk in chunks {
    ///     for (k, x) in chunk.iter_mut().enumerate() {
    ///         *x = next + k as u32;
    ///     }
    ///     next += 32;
    /// }
    /// for (k, x) in rest.iter_mut().enumerate() {
    ///     *x = next + k as u32;
    /// }
    /// assert_eq!(t.as_slice()[257], 257);
    /// t.send();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn as_chunks_mut<const N: usize>(&mut self) -> (&mut [[E; N]], &mut [E]) {
        const { assert!(N > 0, "chunks of 0 elements") };
        self.as_mut_slice().as_chunks_mut::<N>()
    }

    /// The elements to write as rows of a compile-time width `N` (the last dimension must be
    /// `N`): [`TensorView::rows`] for writing. Loops over one `[E; N]` row compile as a
    /// fixed-size message's do. `N` must not be 0 (a compile-time error).
    ///
    /// # Errors
    /// [`TensorError::RowWidth`] if the last dimension is not `N` (or the tensor is a scalar);
    /// the loan is unchanged and can still be written another way or sent.
    ///
    /// ```
    /// # let (mut tx, mut rx) = psyne::Channel::tensors().capacity_bytes(1 << 16).build()?;
    /// let mut t = tx.allocate_tensor::<f32>(&[2, 256])?; // a batch of 2 rows of 256
    /// for (r, row) in t.rows_mut::<256>()?.iter_mut().enumerate() {
    ///     row.fill(r as f32);
    /// }
    /// t.send();
    /// let m = rx.recv()?;
    /// let v = m.view::<f32>()?;
    /// assert_eq!(v.rows::<256>()?[1][255], 1.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn rows_mut<const N: usize>(&mut self) -> Result<&mut [[E; N]], TensorError> {
        const { assert!(N > 0, "rows of 0 elements") };
        crate::tensor::check_row_width::<N>(self.shape())?;
        // The element count is the product of the shape, a multiple of its last dimension.
        Ok(self.as_mut_slice().as_chunks_mut::<N>().0)
    }

    /// All the elements as one array of a compile-time length `N`, to write in place:
    /// [`TensorView::as_array`] for writing (the tensor must have exactly `N` elements,
    /// whatever its shape). Loops over the array compile as a fixed-size message's do.
    ///
    /// # Errors
    /// [`TensorError::ElementCount`] if the tensor has another number of elements; the loan
    /// is unchanged and can still be written another way or sent.
    ///
    /// ```
    /// # let (mut tx, mut rx) = psyne::Channel::tensors().capacity_bytes(1 << 16).build()?;
    /// let mut t = tx.allocate_tensor::<f32>(&[256])?; // one embedding of 256
    /// t.as_array_mut::<256>()?.fill(0.5);
    /// t.send();
    /// let m = rx.recv()?;
    /// assert_eq!(m.view::<f32>()?.as_array::<256>()?[255], 0.5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn as_array_mut<const N: usize>(&mut self) -> Result<&mut [E; N], TensorError> {
        let len = self.len;
        match <&mut [E; N]>::try_from(self.as_mut_slice()) {
            Ok(array) => Ok(array),
            Err(_) => Err(crate::tensor::element_count_error::<N>(len)),
        }
    }

    /// The elements as nalgebra's column-major view of the row-major matrix `[rows, cols]`:
    /// a `cols x rows` matrix, the transpose (see [`TensorView::matrix`]).
    pub fn matrix(&self) -> DMatrixView<'_, E> {
        let (rows, cols) = row_major_dims(self.shape());
        // `rows * cols == len` (or both sides 0): never panics.
        DMatrixView::from_slice(self.as_slice(), cols, rows)
    }

    /// Like [`matrix`](Self::matrix), to write: tensor element `[i, j]` is `m[(j, i)]`. To
    /// store a column-major `R x C` nalgebra matrix `a` as the row-major `[R, C]` tensor, write
    /// its transpose: `m.copy_from(&a.transpose())` (or `m.tr_copy_from(&a)`).
    pub fn matrix_mut(&mut self) -> DMatrixViewMut<'_, E> {
        let (rows, cols) = row_major_dims(self.shape());
        DMatrixViewMut::from_slice(self.as_mut_slice(), cols, rows)
    }

    /// The elements as an `ndarray` view with the tensor's shape and row-major indices, to
    /// write in place (feature `ndarray`; ranks above 4 allocate ndarray's shape and strides).
    #[cfg(feature = "ndarray")]
    pub fn array_mut(&mut self) -> ndarray::ArrayViewMutD<'_, E> {
        let mut dims = [0usize; MAX_RANK];
        dims[..self.rank as usize].copy_from_slice(self.shape());
        let shape = ndarray::IxDyn(&dims[..self.rank as usize]);
        let data = self.as_mut_slice();
        // SAFETY: `data` holds exactly the product of the shape (planned by `TensorLayout`)
        // initialised, aligned `E`s, borrowed mutably (exclusively) for the view's lifetime;
        // default (C-order) strides are non-negative and reach only elements inside `data`; the
        // product of the non-zero dimensions is at most `isize::MAX` (checked by the layout).
        unsafe { ndarray::ArrayViewMut::from_shape_ptr(shape, data.as_mut_ptr()) }
    }

    /// Publishes the tensor (tagged [`TENSOR_TYPE_ID`], with the next sequence number and, if
    /// the channel has timestamps, the send time).
    #[inline]
    pub fn send(self) {
        self.bytes.send(TENSOR_TYPE_ID);
    }
}

impl<E: TensorElement> fmt::Debug for TensorLoan<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorLoan")
            .field("dtype", &E::DTYPE)
            .field("shape", &self.shape())
            .finish()
    }
}

impl Channel<()> {
    /// A builder for a tensor channel: tensors of any shape and element type, written and read
    /// in place ([`TensorProducer`], [`TensorConsumer`]; see [`crate::tensor`] for the format).
    pub fn tensors() -> TensorChannelBuilder {
        TensorChannelBuilder {
            raw: Channel::raw().capacity_bytes(DEFAULT_CAPACITY_BYTES),
        }
    }

    /// Opens the consumer end of the shared tensor channel `name`, created with
    /// `Channel::tensors().shared(name).create_producer()`. A tensor channel is a raw channel:
    /// this opens any raw channel (and [`Channel::raw_open_consumer`] opens a tensor channel);
    /// records that are not tensors are reported by [`TensorReceived::view`] as
    /// [`TensorError::NotATensor`].
    ///
    /// # Errors
    /// As [`Channel::open_consumer`].
    pub fn tensors_open_consumer(name: &str) -> Result<TensorConsumer, OpenError> {
        Channel::raw_open_consumer(name).map(TensorConsumer::from_raw)
    }

    /// Opens the producer end of the shared tensor channel `name`, created with
    /// `Channel::tensors().shared(name).create_consumer()`. As
    /// [`tensors_open_consumer`](Self::tensors_open_consumer).
    ///
    /// # Errors
    /// As [`Channel::open_consumer`].
    pub fn tensors_open_producer(name: &str) -> Result<TensorProducer, OpenError> {
        Channel::raw_open_producer(name).map(TensorProducer::from_raw)
    }
}

/// Builder of a tensor channel; see [`Channel::tensors`].
///
/// Defaults: a 1 MiB ring, normal pages, populated, no NUMA binding, no `mlock`,
/// [`Wait::default()`](crate::Wait::default), no timestamps.
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct TensorChannelBuilder {
    raw: RawChannelBuilder,
}

impl TensorChannelBuilder {
    /// A ring of at least `bytes` bytes (rounded up to a power of two). The largest tensor
    /// payload is the ring size minus 96 bytes ([`TensorProducer::max_payload`]); a tensor
    /// payload is its elements plus 64 bytes (more with a user header).
    pub fn capacity_bytes(mut self, bytes: usize) -> Self {
        self.raw = self.raw.capacity_bytes(bytes);
        self
    }

    super::slab_options!(raw.opts);
    super::cuda_option!(raw.opts);

    /// Maps the slab, initialises the ring and returns both ends.
    pub fn build(self) -> Result<(TensorProducer, TensorConsumer), ChannelError> {
        let (tx, rx) = self.raw.build()?;
        Ok((TensorProducer::from_raw(tx), TensorConsumer::from_raw(rx)))
    }

    /// Listens on `listener` for a producer on another machine (TCP, see [`crate::net`]) and
    /// returns the consumer end: a tensor channel over TCP is a raw one
    /// ([`RawChannelBuilder::accept_consumer`]); tensor records cross it unchanged.
    ///
    /// # Errors
    /// As [`RawChannelBuilder::accept_consumer`].
    pub fn accept_consumer(self, listener: &Listener) -> Result<TensorConsumer, NetError> {
        self.raw
            .accept_consumer(listener)
            .map(TensorConsumer::from_raw)
    }

    /// Connects to a consumer listening at `addr` and returns the producer end (see
    /// [`RawChannelBuilder::connect_producer`]).
    ///
    /// # Errors
    /// As [`RawChannelBuilder::connect_producer`].
    pub fn connect_producer(self, addr: impl ToSocketAddrs) -> Result<TensorProducer, NetError> {
        self.raw
            .connect_producer(addr)
            .map(TensorProducer::from_raw)
    }

    /// Listens on `listener` for a consumer and returns the producer end (see
    /// [`RawChannelBuilder::accept_producer`]).
    ///
    /// # Errors
    /// As [`RawChannelBuilder::accept_producer`].
    pub fn accept_producer(self, listener: &Listener) -> Result<TensorProducer, NetError> {
        self.raw
            .accept_producer(listener)
            .map(TensorProducer::from_raw)
    }

    /// Connects to a producer listening at `addr` and returns the consumer end (see
    /// [`RawChannelBuilder::connect_consumer`]).
    ///
    /// # Errors
    /// As [`RawChannelBuilder::connect_consumer`].
    pub fn connect_consumer(self, addr: impl ToSocketAddrs) -> Result<TensorConsumer, NetError> {
        self.raw
            .connect_consumer(addr)
            .map(TensorConsumer::from_raw)
    }

    /// Makes the channel a named shared channel, `/dev/shm/<name>` (see
    /// [`ChannelBuilder::shared`](super::ChannelBuilder::shared)); finish with
    /// [`create_producer`](SharedTensorChannelBuilder::create_producer) or
    /// [`create_consumer`](SharedTensorChannelBuilder::create_consumer). Another process opens
    /// the other end with [`Channel::tensors_open_consumer`] /
    /// [`Channel::tensors_open_producer`].
    pub fn shared(self, name: &str) -> SharedTensorChannelBuilder {
        SharedTensorChannelBuilder {
            raw: self.raw.shared(name),
        }
    }
}

/// Builder of a shared tensor channel: [`TensorChannelBuilder::shared`] with a name. As
/// [`SharedRawChannelBuilder`] (a tensor channel is a raw channel).
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `create_producer` or `create_consumer` is called"]
pub struct SharedTensorChannelBuilder {
    raw: SharedRawChannelBuilder,
}

impl SharedTensorChannelBuilder {
    /// Creates the channel `/dev/shm/<name>` and returns its producer end; another process
    /// opens the consumer with [`Channel::tensors_open_consumer`].
    ///
    /// # Errors
    /// As [`SharedRawChannelBuilder::create_producer`].
    pub fn create_producer(self) -> Result<TensorProducer, CreateError> {
        self.raw.create_producer().map(TensorProducer::from_raw)
    }

    /// Creates the channel `/dev/shm/<name>` and returns its consumer end; another process
    /// opens the producer with [`Channel::tensors_open_producer`].
    ///
    /// # Errors
    /// As [`SharedRawChannelBuilder::create_producer`].
    pub fn create_consumer(self) -> Result<TensorConsumer, CreateError> {
        self.raw.create_consumer().map(TensorConsumer::from_raw)
    }
}

/// The sending end of a tensor channel; see [`Channel::tensors`].
pub struct TensorProducer {
    raw: RawProducer,
}

impl TensorProducer {
    /// A tensor producer over a raw producer (the records it sends are tensor records, which
    /// any raw consumer can read with [`RawReceived::tensor`]).
    pub fn from_raw(raw: RawProducer) -> Self {
        TensorProducer { raw }
    }

    /// The raw end underneath (to send other messages on the same channel).
    pub fn into_raw(self) -> RawProducer {
        self.raw
    }

    /// Borrows room for a tensor of `shape` with elements of type `E`, waiting for space if
    /// needed; see [`RawProducer::allocate_tensor`].
    #[inline]
    pub fn allocate_tensor<E: TensorElement>(
        &mut self,
        shape: &[usize],
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        self.raw.allocate_tensor(shape)
    }

    /// Like [`allocate_tensor`](Self::allocate_tensor), but awaits space instead of blocking
    /// the thread. Cancellation-safe.
    pub async fn allocate_tensor_async<E: TensorElement>(
        &mut self,
        shape: &[usize],
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        self.raw.allocate_tensor_async(shape).await
    }

    /// The same as [`allocate_tensor_async`](Self::allocate_tensor_async) (the name every
    /// producer kind shares).
    pub async fn allocate_async<E: TensorElement>(
        &mut self,
        shape: &[usize],
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        self.raw.allocate_tensor_async(shape).await
    }

    /// Like [`allocate_tensor`](Self::allocate_tensor), but fails with `Full` instead of
    /// waiting.
    #[inline]
    pub fn try_allocate_tensor<E: TensorElement>(
        &mut self,
        shape: &[usize],
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        self.raw.try_allocate_tensor(shape)
    }

    /// Like [`allocate_tensor`](Self::allocate_tensor), but fails with `Timeout` after
    /// `timeout`.
    pub fn allocate_tensor_timeout<E: TensorElement>(
        &mut self,
        shape: &[usize],
        timeout: Duration,
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        self.raw.allocate_tensor_timeout(shape, timeout)
    }

    /// Like [`allocate_tensor`](Self::allocate_tensor), with a user header; see
    /// [`RawProducer::allocate_tensor_with`].
    #[inline]
    pub fn allocate_tensor_with<H: Message, E: TensorElement>(
        &mut self,
        header: H,
        shape: &[usize],
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        self.raw.allocate_tensor_with(header, shape)
    }

    /// Like [`allocate_tensor_with`](Self::allocate_tensor_with), but fails with `Full`
    /// instead of waiting.
    #[inline]
    pub fn try_allocate_tensor_with<H: Message, E: TensorElement>(
        &mut self,
        header: H,
        shape: &[usize],
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        self.raw.try_allocate_tensor_with(header, shape)
    }

    /// Like [`allocate_tensor_with`](Self::allocate_tensor_with), but fails with `Timeout`
    /// after `timeout`.
    pub fn allocate_tensor_with_timeout<H: Message, E: TensorElement>(
        &mut self,
        header: H,
        shape: &[usize],
        timeout: Duration,
    ) -> Result<TensorLoan<'_, E>, TensorSendError> {
        self.raw
            .allocate_tensor_with_timeout(header, shape, timeout)
    }

    /// The largest payload this channel takes, in bytes (a tensor needs its elements plus 64,
    /// more with a header); see [`RawProducer::max_payload`].
    pub fn max_payload(&self) -> usize {
        self.raw.max_payload()
    }

    /// Size of the ring in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.raw.capacity_bytes()
    }

    /// Whether the consumer is gone (see [`RawProducer::is_disconnected`]).
    pub fn is_disconnected(&self) -> bool {
        self.raw.is_disconnected()
    }

    /// This end's counters (bytes count whole tensor payloads).
    pub fn stats(&self) -> ProducerStats {
        self.raw.stats()
    }
}

impl fmt::Debug for TensorProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TensorProducer").field(&self.raw).finish()
    }
}

/// [`TensorReceived::view`] through the full checks, for its error (or a description that was
/// not remembered): out of line, so that the received record stays in registers on the path
/// that returns the remembered view.
#[cold]
#[inline(never)]
fn view_checked<E: TensorElement>(
    payload: &[u8],
    type_id: u64,
) -> Result<TensorView<'_, E>, TensorError> {
    TensorInfo::view_in(tensor_payload(payload, type_id)?)
}

/// `payload`, if its record's `type_id` is [`TENSOR_TYPE_ID`].
#[inline(always)]
fn tensor_payload(payload: &[u8], type_id: u64) -> Result<&[u8], TensorError> {
    if type_id != TENSOR_TYPE_ID {
        return Err(TensorError::NotATensor { type_id });
    }
    Ok(payload)
}

/// The receiving end of a tensor channel; see [`Channel::tensors`].
///
/// It remembers the last tensor description it validated: a tensor whose description (and
/// payload length) is byte for byte the same, as when a shape repeats, is accepted by that
/// comparison; any other is checked in full (see [`crate::tensor`]) and remembered if valid.
/// A record with the remembered payload length is also found in the ring by the typed ends'
/// fast header check; any other by the general one.
pub struct TensorConsumer {
    raw: RawConsumer,
    last: DescriptionCache,
}

/// A received record as a tensor: its description validated now (the record's type id, then
/// the consumer's last description or the full checks).
#[inline(always)]
fn received<'a>(raw: RawReceived<'a>, last: &'a mut DescriptionCache) -> TensorReceived<'a> {
    received_likely(raw, false, last)
}

/// [`received`] for a record from `recv_likely`: `true` with it says that its header was
/// checked to hold the last description's payload length and [`TENSOR_TYPE_ID`], so the type
/// id is not read again.
#[inline(always)]
fn received_likely<'a>(
    raw: RawReceived<'a>,
    likely: bool,
    last: &'a mut DescriptionCache,
) -> TensorReceived<'a> {
    let known = if likely || raw.type_id() == TENSOR_TYPE_ID {
        last.validate(raw.bytes())
    } else {
        None
    };
    TensorReceived { raw, known }
}

impl TensorConsumer {
    /// A tensor consumer over a raw consumer.
    pub fn from_raw(raw: RawConsumer) -> Self {
        TensorConsumer {
            raw,
            last: DescriptionCache::default(),
        }
    }

    /// The raw end underneath.
    pub fn into_raw(self) -> RawConsumer {
        self.raw
    }

    /// The next tensor, waiting for one if needed. A record that fails validation (or is not a
    /// tensor) is still returned, and its accessors report the [`TensorError`]. Fails only
    /// with `Disconnected` or `Corrupted` (see [`RawConsumer::recv`]).
    #[inline(always)]
    pub fn recv(&mut self) -> Result<TensorReceived<'_>, RecvError> {
        let TensorConsumer { raw, last } = self;
        raw.recv_likely(RecvPatience::Forever, last.likely_len(), TENSOR_TYPE_ID)
            .map(|(raw, likely)| received_likely(raw, likely, last))
    }

    /// Like [`recv`](Self::recv), but awaits the tensor instead of blocking the thread (see
    /// [`Consumer::recv_async`](crate::Consumer::recv_async)). Cancellation-safe.
    pub async fn recv_async(&mut self) -> Result<TensorReceived<'_>, RecvError> {
        let TensorConsumer { raw, last } = self;
        raw.recv_async().await.map(|raw| received(raw, last))
    }

    /// The next tensor, or `Empty` (or `Disconnected`) at once.
    #[inline]
    pub fn try_recv(&mut self) -> Result<TensorReceived<'_>, RecvError> {
        let TensorConsumer { raw, last } = self;
        raw.recv_likely(RecvPatience::Never, last.likely_len(), TENSOR_TYPE_ID)
            .map(|(raw, likely)| received_likely(raw, likely, last))
    }

    /// The next tensor, waiting at most `timeout` (`Timeout`).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<TensorReceived<'_>, RecvError> {
        let TensorConsumer { raw, last } = self;
        raw.recv_likely(
            RecvPatience::timeout(timeout),
            last.likely_len(),
            TENSOR_TYPE_ID,
        )
        .map(|(raw, likely)| received_likely(raw, likely, last))
    }

    /// Size of the ring in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.raw.capacity_bytes()
    }

    /// Whether the producer is gone (see [`RawConsumer::is_disconnected`]).
    pub fn is_disconnected(&self) -> bool {
        self.raw.is_disconnected()
    }

    /// This end's counters.
    pub fn stats(&self) -> ConsumerStats {
        self.raw.stats()
    }
}

impl fmt::Debug for TensorConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TensorConsumer").field(&self.raw).finish()
    }
}

/// A tensor received from a tensor channel, read in place; its space goes back to the producer
/// when it drops.
///
/// The description is validated when the record is received: compared with the last
/// description the consumer validated (equal bytes and payload length: accepted), else checked
/// in full on a copy and remembered (see [`TensorConsumer`]). The accessors
/// ([`view`](Self::view), [`header`](Self::header), [`info`](Self::info),
/// [`tensor`](Self::tensor)) then use that validated copy. A record that fails validation (or
/// is not a tensor) is still received: every accessor runs the checks again and reports its
/// [`TensorError`], and dropping it releases it.
pub struct TensorReceived<'a> {
    raw: RawReceived<'a>,
    /// The description as validated when the record was received, for this payload (its
    /// length: `DescriptionCache::validate`'s promise); `None`: not a tensor, or it failed the
    /// checks, and every accessor runs the full checks for the error.
    known: Option<&'a TensorInfo>,
}

impl TensorReceived<'_> {
    /// The validated tensor: [`TensorRef::view`], [`TensorRef::header`], the shape.
    ///
    /// # Errors
    /// [`TensorError::NotATensor`] for a record of another type id; the description's error
    /// if it fails validation (see [`crate::tensor`]).
    #[inline]
    pub fn tensor(&self) -> Result<TensorRef<'_>, TensorError> {
        match self.known {
            Some(info) => Ok(TensorRef::validated(self.raw.bytes(), *info)),
            None => self.raw.tensor(),
        }
    }

    /// The elements as `E`s with the tensor's shape, in place.
    ///
    /// # Errors
    /// [`TensorError::DType`] if the elements are of another type; as
    /// [`tensor`](Self::tensor) otherwise.
    #[inline(always)]
    pub fn view<E: TensorElement>(&self) -> Result<TensorView<'_, E>, TensorError> {
        if let Some(info) = self.known {
            // SAFETY: `known` is `DescriptionCache::validate`'s result for this record's
            // payload (`received`), whose length does not change; the payload is a ring
            // payload, which starts 64-byte aligned (`RawReceived::bytes`), so aligned for `E`.
            if let Some(view) = unsafe { info.view_validated(self.raw.bytes()) } {
                return Ok(view);
            }
        }
        view_checked(self.raw.bytes(), self.raw.type_id())
    }

    /// The elements as rows of a compile-time width `N`, in place:
    /// `view::<E>()?.rows::<N>()` ([`TensorView::rows`]) in one call, without making the view.
    ///
    /// # Errors
    /// [`TensorError::RowWidth`] if the last dimension is not `N` (or the tensor is a
    /// scalar); as [`view`](Self::view) otherwise.
    #[inline(always)]
    pub fn rows<E: TensorElement, const N: usize>(&self) -> Result<&[[E; N]], TensorError> {
        const { assert!(N > 0, "rows of 0 elements") };
        if let Some(info) = self.known {
            // SAFETY: as in `view`.
            if let Some(rows) = unsafe { info.rows_validated::<E, N>(self.raw.bytes()) } {
                return Ok(rows);
            }
        }
        self.rows_checked()
    }

    /// [`rows`](Self::rows) through the full checks, for its error (or a description that
    /// was not remembered).
    #[cold]
    #[inline(never)]
    fn rows_checked<E: TensorElement, const N: usize>(&self) -> Result<&[[E; N]], TensorError> {
        TensorInfo::view_in::<E>(self.payload()?)?.rows::<N>()
    }

    /// The user header as an `H`, in place (see [`TensorRef::header`]).
    ///
    /// # Errors
    /// [`TensorError::NoHeader`], [`TensorError::HeaderType`], [`TensorError::HeaderLayout`],
    /// [`TensorError::HeaderLength`], or as [`tensor`](Self::tensor).
    pub fn header<H: Message>(&self) -> Result<&H, TensorError> {
        match self.known {
            Some(info) => info.header_of(self.raw.bytes()),
            None => {
                let payload = self.payload()?;
                TensorInfo::parse(payload)?.header_of(payload)
            }
        }
    }

    /// The validated description: element type, shape, header presence
    /// (`r.info()?.shape()`).
    ///
    /// # Errors
    /// As [`tensor`](Self::tensor).
    pub fn info(&self) -> Result<TensorInfo, TensorError> {
        match self.known {
            Some(info) => Ok(*info),
            None => TensorInfo::parse(self.payload()?),
        }
    }

    /// The element type (to dispatch on before [`view`](Self::view)).
    ///
    /// # Errors
    /// As [`tensor`](Self::tensor).
    pub fn dtype(&self) -> Result<DType, TensorError> {
        self.info().map(|i| i.dtype())
    }

    /// A copy of the record's [`MessageHeader`]: sequence number, send timestamp, type id,
    /// payload length (see [`RawReceived::header`]).
    pub fn message_header(&self) -> MessageHeader {
        self.raw.header()
    }

    /// The whole payload's bytes, as received (description, header, elements).
    pub fn bytes(&self) -> &[u8] {
        self.raw.bytes()
    }

    /// The payload, if the record is tagged as a tensor.
    #[inline(always)]
    fn payload(&self) -> Result<&[u8], TensorError> {
        tensor_payload(self.raw.bytes(), self.raw.type_id())
    }
}

impl fmt::Debug for TensorReceived<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorReceived")
            .field("header", &self.raw.header())
            .field("info", &self.info())
            .finish()
    }
}
