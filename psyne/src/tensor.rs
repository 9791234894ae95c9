//! Tensors whose shape is known only at run time: element types ([`DType`], [`TensorElement`]),
//! the description a tensor payload starts with ([`TensorDescription`]), the producer's plan of
//! a payload ([`TensorLayout`]), the consumer's validation ([`TensorRef::parse`]) and the
//! in-place views ([`TensorView`]).
//!
//! This module owns the *format* of a tensor payload. It never names channels, rings or
//! transports (the ends that carry tensors, `Channel::tensors()` and the raw ends'
//! `allocate_tensor` / `tensor()`, are in [`crate::channel`]), never allocates, and never panics
//! on the bytes it is given: a description read from another process, or later from the
//! network, is untrusted. It is copied out of the payload once, every field of the copy is
//! checked, and only the copy is used for bounds; each failure is a [`TensorError`].
//!
//! # Payload format (version 2)
//!
//! A tensor travels as one record's payload, tagged with [`TENSOR_TYPE_ID`] (the FNV-1a hash of
//! `"psyne.Tensor"`; raw channels tell tensors from other messages by it):
//!
//! ```text
//! 0                    64            80                                element_offset (multiple of 64)
//! | TensorDescription  | header tag  | user header | padding | elements, row-major, to the end |
//!                        (only with a user header)
//! ```
//!
//! * The [`TensorDescription`] (64 bytes: one cache line, `#[repr(C)]`, every field
//!   little-endian) gives the magic `b"PSYT"`, the format version (2), the [`DType`] code, the
//!   rank (0 to [`MAX_RANK`]), the element offset, the user header's offset and length, the
//!   element count and the shape (`[u32; 8]`, unused entries 0; see "Limits" below), then a
//!   reserved word that is 0.
//! * With a user header (any derived [`Message`]: batch index, layer id, step...), the 16
//!   bytes at [`HEADER_TAG_OFFSET`] (64) hold its [`Message::TYPE_ID`] and
//!   [`Message::FINGERPRINT`] (`u64`s, little-endian), and the header itself follows at an
//!   offset aligned for it, at or after byte 80. Without one, those bytes do not exist.
//! * The elements start at `element_offset`, a multiple of [`ELEMENT_ALIGN`] (64) bytes from the
//!   payload's start (payloads are 64-byte aligned in every ring, so the elements are too), and
//!   fill the rest of the payload exactly: `payload length = element_offset + count *
//!   size_of(element)`. They are stored contiguously in row-major (C) order, as PyTorch and
//!   NumPy store tensors: the last index varies fastest. Element bytes are in the producer's
//!   byte order (psyne's targets are little-endian).
//!
//! With no user header the elements start at byte 64: a tensor record costs one cache line
//! more than the same elements in a fixed-size message (with a header of up to 48 bytes, two).
//! The format is the same in one process, in shared memory and on the wire.
//!
//! **Limits.** A record's payload is at most `u32::MAX` bytes, so a tensor's element count and
//! every dimension of a non-empty tensor fit a `u32`, which is how the description stores
//! them. A dimension above `u32::MAX` is only possible beside a zero-sized one (`[0, 1 << 40]`);
//! [`TensorLayout::new`] refuses it ([`TensorError::DimensionTooLarge`]).
//!
//! Version 1 (the first release) had a 112-byte description with `u64` dimensions and count
//! and the header's ids inside it, so its elements started at byte 128; version 2 keeps its
//! fields and checks and moves the ids into the header tag, which halves what the description
//! costs a small tensor: one cache line written and read instead of two, and a consumer's
//! comparison with the description it remembers of four 16-byte blocks instead of seven. A
//! version 1 payload is refused with [`UnsupportedVersion`].
//!
//! # What a valid description satisfies
//!
//! [`TensorRef::parse`] checks, in this order (the error each failure gives):
//! the payload holds a description ([`TensorError::Truncated`]); magic ([`BadMagic`]), version
//! ([`UnsupportedVersion`]), dtype code ([`UnknownDType`]), rank `<= 8` ([`RankTooLarge`]);
//! the reserved word and unused shape entries are 0, and a description without a header has
//! header length 0 ([`Malformed`]); the product of the non-zero dimensions is at most
//! `isize::MAX` ([`CountOverflow`]); the element count equals the product of the shape
//! ([`CountMismatch`]); count times element size does not overflow ([`ByteSizeOverflow`]);
//! the element offset is a multiple of 64 and not inside the description
//! ([`BadElementOffset`]); a header lies between its tag (which ends at byte 80) and the
//! elements ([`BadHeader`]); and the payload length is exactly `element_offset + bytes`
//! ([`LengthMismatch`]). A view checks the element type ([`TensorError::DType`]) and the memory
//! alignment ([`Misaligned`], only possible for bytes that did not come from a ring).
//! The checks first run as a few combined comparisons; a description that fails them is
//! checked again in the order above to name the error, and if another process changed it in
//! between so that it now passes, the error is [`Malformed`] ("the description changed while
//! it was read").
//!
//! A tensor channel's consumer (`TensorConsumer`) also remembers the last description it
//! validated, when it receives the record: a description whose 64 bytes and payload length
//! are equal to that one's is accepted by the comparison (four 16-byte compares; the common
//! case of a repeated shape), any other goes through the checks above, on a copy taken first,
//! and is remembered only if it passes. So it accepts exactly what the checks accept.
//!
//! [`BadMagic`]: TensorError::BadMagic
//! [`UnsupportedVersion`]: TensorError::UnsupportedVersion
//! [`UnknownDType`]: TensorError::UnknownDType
//! [`RankTooLarge`]: TensorError::RankTooLarge
//! [`Malformed`]: TensorError::Malformed
//! [`CountOverflow`]: TensorError::CountOverflow
//! [`CountMismatch`]: TensorError::CountMismatch
//! [`ByteSizeOverflow`]: TensorError::ByteSizeOverflow
//! [`BadElementOffset`]: TensorError::BadElementOffset
//! [`BadHeader`]: TensorError::BadHeader
//! [`LengthMismatch`]: TensorError::LengthMismatch
//! [`Misaligned`]: TensorError::Misaligned
//!
//! # Writing the element loops
//!
//! A fixed-size message's length is a constant, so the compiler unrolls its loops fully: in
//! the `emb256` benchmark (`psyne/benches/tensor.rs`, 258 `u32` words), writing and summing
//! every word of the typed message costs about 1.25 instructions per word, against about 2.1
//! for the same loops over a slice whose length is known only at run time, as a tensor's is
//! (a vector step of 8 words there costs its loop control too, and the remainder is scalar).
//! To get the typed path's cost, loop over fixed-width chunks:
//! [`TensorLoan::as_chunks_mut`](crate::TensorLoan::as_chunks_mut) /
//! [`TensorView::as_chunks`] give `[E; N]` chunks and the remainder, and a loop over one
//! chunk has a compile-time trip count that is unrolled and vectorised. Sum into `N`
//! lane-wise accumulators rather than one scalar, so the reduction stays in vector registers
//! across chunks:
//!
//! ```
//! # use psyne::tensor::{DType, TensorLayout, TensorRef};
//! # let layout = TensorLayout::new(DType::F32, &[1000], None)?;
//! # let mut storage = vec![0u64; layout.payload_len().div_ceil(8)];
//! # let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut storage)[..layout.payload_len()];
//! # layout.write_description(bytes)?;
//! # let v = TensorRef::parse(bytes)?.view::<f32>()?;
//! let (chunks, rest) = v.as_chunks::<32>();
//! let mut lanes = [0f32; 32];
//! for chunk in chunks {
//!     for (l, x) in lanes.iter_mut().zip(chunk) {
//!         *l += x;
//!     }
//! }
//! let sum: f32 = lanes.iter().chain(rest).sum();
//! # assert_eq!(sum, 0.0);
//! # Ok::<(), psyne::TensorError>(())
//! ```
//!
//! When the innermost dimension is a constant of the model (a hidden size of 256, with the
//! batch varying), read and write whole rows instead: `TensorReceived::rows::<E, N>()`,
//! [`TensorView::rows`] and `TensorLoan::rows_mut` give `&[[E; N]]` (a
//! [`TensorError::RowWidth`] if the last dimension is not `N`), and a loop over one row
//! compiles exactly as a fixed-size message's loop does, fully unrolled with no remainder.
//! When the whole element count is a constant (one `[256]` embedding), take the elements as
//! one array: [`TensorView::as_array`] and `TensorLoan::as_array_mut` give `&[E; N]` (a
//! [`TensorError::ElementCount`] for another count), and the loops over it are a fixed-size
//! message's own; in the `emb256` benchmark the whole round trip then costs 1.17x the typed
//! message's instructions, the description's checks and stores being the difference.
//!
//! Choose the width so that the accumulators fit the vector registers: 16 or 32 lanes of 4
//! bytes are 4 or 8 SSE registers; 64 spill (in the benchmark, 16-wide chunks cost the fewest
//! instructions: about 1.5 per word, remainder and chunk loop included). The chunk width is a
//! choice of the loop, not of the format: the elements are contiguous whatever the shape.
//!
//! # Row-major tensors and nalgebra's column-major views
//!
//! nalgebra stores matrices column-major, so the memory of a row-major `[R, C]` tensor *is*
//! nalgebra's `C x R` matrix: the transpose. [`TensorView::matrix`] returns exactly that view,
//! without a copy: a `C x R` [`DMatrixView`] `m` with tensor element `[i, j]` at `m[(j, i)]`.
//! For a row-major weight matrix `W` (`[out, in]`) and an input vector `x`, `W x` is
//! `m.tr_mul(&x)`; `m.transpose()` makes an owned `R x C` copy. A tensor of another rank is
//! read as the row-major matrix `[product of all dimensions but the last, last dimension]`
//! (`[batch, seq, hidden]` as `(batch * seq) x hidden`, a vector `[n]` as `1 x n`, a scalar as
//! `1 x 1`), so `matrix()` always has `len()` elements. Strided views with the row-major
//! semantics are deliberately not offered: nalgebra 0.35's products are unsound on views whose
//! row stride is not 1 (dimforge/nalgebra#1616). With the `ndarray` feature,
//! `TensorView::array` (feature `ndarray`) gives an n-dimensional view with the tensor's own shape and indices.

use crate::message::{Message, fnv1a64};
use core::fmt;
use nalgebra::DMatrixView;

/// The type id every tensor record is tagged with: FNV-1a of `"psyne.Tensor"`. Reserved: a
/// message named `psyne.Tensor` would collide with it.
pub const TENSOR_TYPE_ID: u64 = fnv1a64(b"psyne.Tensor");

/// The largest rank (number of dimensions) a tensor may have.
pub const MAX_RANK: usize = 8;

/// Size of the [`TensorDescription`] at the start of every tensor payload, in bytes.
pub const DESCRIPTION_SIZE: usize = core::mem::size_of::<TensorDescription>();

/// Alignment of the elements inside the payload, in bytes (the offset is a multiple of it).
pub const ELEMENT_ALIGN: usize = 64;

/// [`TensorDescription::magic`]: the bytes `PSYT` (`0x5459_5350` little-endian).
pub const MAGIC: u32 = u32::from_le_bytes(*b"PSYT");

/// The format version this build writes and reads ([`TensorDescription::version`]).
pub const FORMAT_VERSION: u16 = 2;

/// Offset of the header tag in a payload with a user header: its [`Message::TYPE_ID`] (a
/// little-endian `u64`) at 64, its [`Message::FINGERPRINT`] at 72; the header follows at or
/// after [`HEADER_MIN_OFFSET`].
pub const HEADER_TAG_OFFSET: usize = DESCRIPTION_SIZE;

/// The smallest offset a user header may have: past the description and the header tag (80).
pub const HEADER_MIN_OFFSET: usize = HEADER_TAG_OFFSET + 16;

/// The element type of a tensor, as stored in [`TensorDescription::dtype`].
///
/// `F16` and `BF16` exist without the `half` feature (a peer may send them and
/// [`TensorRef::dtype`] reports them); viewing them as `half::f16` / `half::bf16` needs the
/// feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DType {
    /// `f32` (code 1)
    F32 = 1,
    /// `f64` (code 2)
    F64 = 2,
    /// `half::f16`, IEEE 754 binary16 (code 3)
    F16 = 3,
    /// `half::bf16`, bfloat16 (code 4)
    BF16 = 4,
    /// `i8` (code 5)
    I8 = 5,
    /// `u8` (code 6)
    U8 = 6,
    /// `i16` (code 7)
    I16 = 7,
    /// `u16` (code 8)
    U16 = 8,
    /// `i32` (code 9)
    I32 = 9,
    /// `u32` (code 10)
    U32 = 10,
    /// `i64` (code 11)
    I64 = 11,
    /// `u64` (code 12)
    U64 = 12,
}

impl DType {
    /// Every element type, in code order.
    pub const ALL: [DType; 12] = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::U16,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::U64,
    ];

    /// The code stored in a description.
    #[inline(always)]
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The element type with code `code`, or `None` for an unknown code.
    #[inline(always)]
    pub const fn from_code(code: u8) -> Option<DType> {
        match code {
            1 => Some(DType::F32),
            2 => Some(DType::F64),
            3 => Some(DType::F16),
            4 => Some(DType::BF16),
            5 => Some(DType::I8),
            6 => Some(DType::U8),
            7 => Some(DType::I16),
            8 => Some(DType::U16),
            9 => Some(DType::I32),
            10 => Some(DType::U32),
            11 => Some(DType::I64),
            12 => Some(DType::U64),
            _ => None,
        }
    }

    /// Size of one element in bytes.
    #[inline(always)]
    pub const fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 => 1,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }

    /// The Rust spelling (`"f32"`, `"bf16"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I16 => "i16",
            DType::U16 => "u16",
            DType::I32 => "i32",
            DType::U32 => "u32",
            DType::I64 => "i64",
            DType::U64 => "u64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    /// Only this crate implements [`TensorElement`](super::TensorElement).
    pub trait Sealed {}
}

/// A Rust type a tensor's elements can be read and written as: the ten number types, and
/// `half::f16` / `half::bf16` with the `half` feature. Sealed: implemented only here.
pub trait TensorElement:
    bytemuck::Pod + fmt::Debug + PartialEq + Send + Sync + sealed::Sealed
{
    /// The element type code written for and expected of this type.
    const DTYPE: DType;
}

macro_rules! tensor_elements {
    ($($t:ty => $d:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl TensorElement for $t {
            const DTYPE: DType = DType::$d;
        }
        const _: () = assert!(core::mem::size_of::<$t>() == DType::$d.size());
    )*};
}

tensor_elements!(
    f32 => F32, f64 => F64, i8 => I8, u8 => U8, i16 => I16, u16 => U16,
    i32 => I32, u32 => U32, i64 => I64, u64 => U64,
);

#[cfg(feature = "half")]
tensor_elements!(half::f16 => F16, half::bf16 => BF16);

/// The fixed description at the start of every tensor payload (see the
/// [module docs](self#payload-format-version-2)). 64 bytes, no padding.
///
/// Every field holds its value in **little-endian** byte order (on the little-endian machines
/// psyne runs on, the plain value); [`TensorDescription::to_le`] and
/// [`TensorDescription::from_le`] convert. This is the format's specification for other
/// writers (tests, other languages); psyne's own producers write it through [`TensorLayout`].
/// A user header's type id and fingerprint are not in it but in the header tag that follows
/// it ([`HEADER_TAG_OFFSET`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TensorDescription {
    /// [`MAGIC`].
    pub magic: u32,
    /// [`FORMAT_VERSION`].
    pub version: u16,
    /// [`DType::code`] of the elements.
    pub dtype: u8,
    /// Number of dimensions, 0 to [`MAX_RANK`].
    pub rank: u8,
    /// Offset of the first element from the payload's start: a multiple of [`ELEMENT_ALIGN`],
    /// at least [`DESCRIPTION_SIZE`] and past the user header.
    pub element_offset: u32,
    /// Offset of the user header from the payload's start (at least [`HEADER_MIN_OFFSET`]), or
    /// 0 when there is none.
    pub header_offset: u32,
    /// Length of the user header in bytes (`size_of::<H>()`), 0 when there is none.
    pub header_len: u32,
    /// Number of elements: the product of the shape (1 for rank 0).
    pub element_count: u32,
    /// The dimensions, outermost first (`shape[rank - 1]` varies fastest); entries from `rank`
    /// on are 0.
    pub shape: [u32; MAX_RANK],
    /// Must be 0.
    pub reserved: u64,
}

// SAFETY: `TensorDescription` is `#[repr(C)]` with fields u32 (0), u16 (4), u8 (6), u8 (7),
// u32 (8), u32 (12), u32 (16), u32 (20), [u32; 8] (24), u64 (56): size 64, no padding
// (asserted below); every bit pattern is a valid value of each field.
unsafe impl bytemuck::Zeroable for TensorDescription {}
// SAFETY: as above (no padding, all fields `Pod`, `Copy`, `'static`).
unsafe impl bytemuck::Pod for TensorDescription {}

const _: () = assert!(core::mem::size_of::<TensorDescription>() == 64);
const _: () = assert!(core::mem::align_of::<TensorDescription>() == 8);

/// Byte offsets of the description's fields (the hot paths read and write the fields one by
/// one, little-endian, instead of copying whole structs).
mod at {
    use super::TensorDescription as D;
    use core::mem::offset_of;
    pub(super) const MAGIC: usize = offset_of!(D, magic);
    pub(super) const VERSION: usize = offset_of!(D, version);
    pub(super) const DTYPE: usize = offset_of!(D, dtype);
    pub(super) const RANK: usize = offset_of!(D, rank);
    pub(super) const ELEMENT_OFFSET: usize = offset_of!(D, element_offset);
    pub(super) const HEADER_OFFSET: usize = offset_of!(D, header_offset);
    pub(super) const HEADER_LEN: usize = offset_of!(D, header_len);
    pub(super) const ELEMENT_COUNT: usize = offset_of!(D, element_count);
    pub(super) const SHAPE: usize = offset_of!(D, shape);
    pub(super) const RESERVED: usize = offset_of!(D, reserved);
}

/// The `N` bytes at `at` of a description (one read of them).
#[inline(always)]
fn bytes_at<const N: usize>(d: &[u8; DESCRIPTION_SIZE], at: usize) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&d[at..at + N]);
    b
}

#[inline(always)]
fn u32_at(d: &[u8; DESCRIPTION_SIZE], at: usize) -> u32 {
    u32::from_le_bytes(bytes_at(d, at))
}

#[inline(always)]
fn u64_at(d: &[u8; DESCRIPTION_SIZE], at: usize) -> u64 {
    u64::from_le_bytes(bytes_at(d, at))
}

#[inline(always)]
fn put(d: &mut [u8; DESCRIPTION_SIZE], at: usize, bytes: &[u8]) {
    d[at..at + bytes.len()].copy_from_slice(bytes);
}

impl TensorDescription {
    /// Converts every field from this machine's byte order to little-endian (no-op on a
    /// little-endian machine).
    #[inline(always)]
    pub fn to_le(self) -> Self {
        TensorDescription {
            magic: self.magic.to_le(),
            version: self.version.to_le(),
            dtype: self.dtype,
            rank: self.rank,
            element_offset: self.element_offset.to_le(),
            header_offset: self.header_offset.to_le(),
            header_len: self.header_len.to_le(),
            element_count: self.element_count.to_le(),
            shape: self.shape.map(u32::to_le),
            reserved: self.reserved.to_le(),
        }
    }

    /// Converts every field from little-endian to this machine's byte order (no-op on a
    /// little-endian machine).
    #[inline(always)]
    pub fn from_le(self) -> Self {
        // Byte swapping is its own inverse.
        self.to_le()
    }
}

/// What a user header is, for [`TensorLayout::new`]: [`HeaderSpec::of::<H>()`](Self::of).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderSpec {
    /// [`Message::TYPE_ID`].
    pub type_id: u64,
    /// [`Message::FINGERPRINT`].
    pub fingerprint: u64,
    /// `size_of::<H>()`.
    pub size: usize,
    /// `align_of::<H>()`.
    pub align: usize,
}

impl HeaderSpec {
    /// The spec of message type `H`.
    #[inline(always)]
    pub const fn of<H: Message>() -> Self {
        HeaderSpec {
            type_id: H::TYPE_ID,
            fingerprint: H::FINGERPRINT,
            size: core::mem::size_of::<H>(),
            align: core::mem::align_of::<H>(),
        }
    }
}

/// The largest payload a tensor may have: record lengths are `u32`.
const MAX_PAYLOAD: usize = u32::MAX as usize;

/// The element count of `shape`: its product (1 for rank 0), with the product of the non-zero
/// dimensions at most `isize::MAX` (so every partial product fits too, as slices and ndarray
/// require), else [`TensorError::CountOverflow`]. Does not check the rank.
#[inline]
pub fn element_count(shape: &[usize]) -> Result<usize, TensorError> {
    let mut nonzero: usize = 1;
    let mut empty = false;
    for &d in shape {
        if d == 0 {
            empty = true;
        } else {
            nonzero = nonzero.checked_mul(d).ok_or(TensorError::CountOverflow)?;
        }
    }
    if nonzero > isize::MAX as usize {
        return Err(TensorError::CountOverflow);
    }
    Ok(if empty { 0 } else { nonzero })
}

/// [`element_count`] of dimensions read from a description (its `u32`s, widened to `u64`s, so
/// that no product of two overflows).
#[inline]
fn element_count_u64(shape: &[u64]) -> Result<usize, TensorError> {
    let mut nonzero: u64 = 1;
    let mut empty = false;
    for &d in shape {
        if d == 0 {
            empty = true;
        } else {
            nonzero = nonzero.checked_mul(d).ok_or(TensorError::CountOverflow)?;
        }
    }
    if nonzero > isize::MAX as u64 {
        return Err(TensorError::CountOverflow);
    }
    Ok(if empty { 0 } else { nonzero as usize })
}

/// Rows and columns of the row-major matrix a tensor of `shape` is read as: the last
/// dimension is the columns (1 for a scalar), the product of the others the rows.
#[inline]
pub(crate) fn row_major_dims(shape: &[usize]) -> (usize, usize) {
    match shape.split_last() {
        None => (1, 1),
        // Cannot overflow: every partial product of a validated shape fits (`element_count`);
        // saturating keeps this total anyway.
        Some((&cols, rest)) => (rest.iter().fold(1usize, |a, &d| a.saturating_mul(d)), cols),
    }
}

/// Checks that a tensor of `shape` is made of rows of `N` elements (its last dimension), for
/// `rows` / `rows_mut`: the error names the last dimension found (`None` for a scalar).
#[inline]
pub(crate) fn check_row_width<const N: usize>(shape: &[usize]) -> Result<(), TensorError> {
    match shape.last() {
        Some(&d) if d == N => Ok(()),
        found => Err(row_width_error::<N>(found.copied())),
    }
}

/// The [`TensorError::RowWidth`] of `rows::<N>()` on a tensor whose last dimension is `found`
/// (`None` for a scalar).
#[cold]
fn row_width_error<const N: usize>(found: Option<usize>) -> TensorError {
    TensorError::RowWidth { expected: N, found }
}

/// The [`TensorError::ElementCount`] of `as_array::<N>()` on a tensor of `found` elements.
#[cold]
pub(crate) fn element_count_error<const N: usize>(found: usize) -> TensorError {
    TensorError::ElementCount { expected: N, found }
}

/// The layout of one tensor payload, planned by a producer before it borrows the bytes:
/// [`payload_len`](Self::payload_len) to allocate, then
/// [`write_description`](Self::write_description) into them.
///
/// ```
/// use psyne::tensor::{DType, TensorLayout, TensorRef};
///
/// let layout = TensorLayout::new(DType::F32, &[2, 3], None)?;
/// assert_eq!(layout.element_offset(), 64);
/// assert_eq!(layout.payload_len(), 64 + 6 * 4);
/// let mut payload = vec![0u64; layout.payload_len().div_ceil(8)]; // 8-aligned storage
/// let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut payload)[..layout.payload_len()];
/// layout.write_description(bytes)?;
/// let t = TensorRef::parse(bytes)?;
/// assert_eq!(t.view::<f32>()?.shape(), &[2, 3]);
/// # Ok::<(), psyne::TensorError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorLayout {
    shape: [usize; MAX_RANK],
    count: usize,
    header_type_id: u64,
    header_fingerprint: u64,
    /// A multiple of 64; the payload is at most `u32::MAX` bytes, so every offset fits a u32.
    element_offset: u32,
    payload_len: u32,
    /// 0 when there is no header.
    header_offset: u32,
    header_len: u32,
    dtype: DType,
    rank: u8,
}

impl TensorLayout {
    /// Plans a payload of `shape` elements of `dtype`, with an optional user header.
    ///
    /// # Errors
    /// [`TensorError::RankTooLarge`] (more than [`MAX_RANK`] dimensions),
    /// [`TensorError::CountOverflow`], [`TensorError::ByteSizeOverflow`],
    /// [`TensorError::DimensionTooLarge`] (a dimension above `u32::MAX`, only possible beside
    /// a zero-sized one), [`TensorError::HeaderAlignment`] (a header aligned to more than 64
    /// bytes), and
    /// [`TensorError::TooLarge`] for a payload over `u32::MAX` bytes (a channel's own limit,
    /// its largest payload, is checked when it allocates).
    #[inline(always)]
    pub fn new(
        dtype: DType,
        shape: &[usize],
        header: Option<HeaderSpec>,
    ) -> Result<TensorLayout, TensorError> {
        if shape.len() > MAX_RANK {
            return Err(TensorError::RankTooLarge { rank: shape.len() });
        }
        let mut dims = [0usize; MAX_RANK];
        let mut high = 0;
        for (out, &d) in dims.iter_mut().zip(shape) {
            *out = d;
            high |= d as u64 >> 32;
        }
        let count = element_count(shape)?;
        // The description stores dimensions as u32s. A non-empty tensor's fit (each is at
        // most the element count, and the payload is at most u32::MAX bytes: checked below);
        // an empty one's need not.
        if high != 0 && count == 0 {
            return Err(Self::dimension_too_large(shape));
        }
        let (after_description, header_offset, h) = match header {
            None => (DESCRIPTION_SIZE, 0, None),
            Some(h) => {
                if h.align > ELEMENT_ALIGN || !h.align.is_power_of_two() {
                    return Err(TensorError::HeaderAlignment { align: h.align });
                }
                let offset = HEADER_MIN_OFFSET.next_multiple_of(h.align);
                match offset.checked_add(h.size).filter(|&e| e <= MAX_PAYLOAD) {
                    Some(end) => (end, offset, Some(h)),
                    None => return Err(TensorError::TooLarge { bytes: h.size }),
                }
            }
        };
        // `after_description <= u32::MAX`, so rounding up to 64 cannot overflow a usize.
        let element_offset = after_description.next_multiple_of(ELEMENT_ALIGN);
        // One comparison for the three limits: `count * size` does not overflow, nor does
        // `element_offset` plus that, and the sum is at most `MAX_PAYLOAD`. Element sizes are
        // powers of two, so the bound is a shift, not a division.
        let shift = dtype.size().trailing_zeros();
        if element_offset > MAX_PAYLOAD || count > (MAX_PAYLOAD - element_offset) >> shift {
            return Err(Self::size_error(count, dtype, element_offset));
        }
        // Neither overflows, and `payload_len <= MAX_PAYLOAD` (the bound above).
        let payload_len = element_offset + (count << shift);
        // Every cast below is exact: the offsets and lengths lie inside the payload, which is at
        // most u32::MAX bytes.
        Ok(TensorLayout {
            shape: dims,
            count,
            header_type_id: h.map_or(0, |h| h.type_id),
            header_fingerprint: h.map_or(0, |h| h.fingerprint),
            element_offset: element_offset as u32,
            payload_len: payload_len as u32,
            header_offset: header_offset as u32,
            header_len: h.map_or(0, |h| h.size as u32),
            dtype,
            rank: shape.len() as u8,
        })
    }

    /// The error of a layout whose element bytes, or payload, exceed the limits:
    /// [`TensorError::ByteSizeOverflow`] if `count * size` or `element_offset` plus that
    /// overflows, else [`TensorError::TooLarge`].
    #[cold]
    fn size_error(count: usize, dtype: DType, element_offset: usize) -> TensorError {
        match count
            .checked_mul(dtype.size())
            .and_then(|bytes| bytes.checked_add(element_offset))
        {
            Some(bytes) => TensorError::TooLarge { bytes },
            None => TensorError::ByteSizeOverflow {
                elements: count as u64,
                element_size: dtype.size(),
            },
        }
    }

    /// The [`TensorError::DimensionTooLarge`] of an empty `shape` with a dimension above
    /// `u32::MAX`.
    #[cold]
    fn dimension_too_large(shape: &[usize]) -> TensorError {
        let dimension = shape.iter().copied().max().unwrap_or(0);
        TensorError::DimensionTooLarge { dimension }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The dimensions, outermost first.
    #[inline]
    pub fn shape(&self) -> &[usize] {
        &self.shape[..self.rank as usize]
    }

    /// The dimensions padded with zeros to [`MAX_RANK`] entries.
    #[inline]
    pub(crate) fn padded_shape(&self) -> [usize; MAX_RANK] {
        self.shape
    }

    /// Number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the tensor has no elements (a zero-sized dimension).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Length of the whole payload in bytes: description, header, padding and elements.
    #[inline]
    pub fn payload_len(&self) -> usize {
        self.payload_len as usize
    }

    /// Offset of the first element from the payload's start (a multiple of 64).
    #[inline]
    pub fn element_offset(&self) -> usize {
        self.element_offset as usize
    }

    /// Offset of the user header from the payload's start, if there is one.
    #[inline]
    pub fn header_offset(&self) -> Option<usize> {
        (self.header_offset != 0).then_some(self.header_offset as usize)
    }

    /// The description this layout writes (fields little-endian).
    #[inline(always)]
    pub fn description(&self) -> TensorDescription {
        TensorDescription {
            magic: MAGIC,
            version: FORMAT_VERSION,
            dtype: self.dtype.code(),
            rank: self.rank,
            element_offset: self.element_offset,
            header_offset: self.header_offset,
            header_len: self.header_len,
            // Exact: see `write_fields`.
            element_count: self.count as u32,
            shape: self.shape.map(|d| d as u32),
            reserved: 0,
        }
        .to_le()
    }

    /// The header tag this layout writes at [`HEADER_TAG_OFFSET`]: the user header's type id
    /// and fingerprint, little-endian (`None` without a header).
    #[inline]
    pub fn header_tag(&self) -> Option<[u8; 16]> {
        self.header_offset().map(|_| {
            let mut tag = [0u8; 16];
            tag[..8].copy_from_slice(&self.header_type_id.to_le_bytes());
            tag[8..].copy_from_slice(&self.header_fingerprint.to_le_bytes());
            tag
        })
    }

    /// Writes the description at the start of `payload`, which must be exactly
    /// [`payload_len`](Self::payload_len) bytes ([`TensorError::LengthMismatch`] otherwise),
    /// and with a user header its [tag](Self::header_tag). The header and the elements are
    /// left as they are.
    #[inline]
    pub fn write_description(&self, payload: &mut [u8]) -> Result<(), TensorError> {
        if payload.len() != self.payload_len() {
            return Err(TensorError::LengthMismatch {
                len: payload.len(),
                expected: self.payload_len(),
            });
        }
        if let Some((d, _)) = payload.split_first_chunk_mut::<DESCRIPTION_SIZE>() {
            self.write_fields(d);
        }
        self.write_tag(payload);
        Ok(())
    }

    /// Writes the header tag (if the layout has a header) into `payload`, a payload of this
    /// layout (so at least [`HEADER_MIN_OFFSET`] bytes long when there is a header).
    #[inline(always)]
    pub(crate) fn write_tag(&self, payload: &mut [u8]) {
        if let (Some(tag), Some(at)) = (
            self.header_tag(),
            payload.get_mut(HEADER_TAG_OFFSET..HEADER_MIN_OFFSET),
        ) {
            at.copy_from_slice(&tag);
        }
    }

    /// Writes the description's fields into `d`, one store each (the same bytes as
    /// [`description`](Self::description)).
    #[inline(always)]
    pub(crate) fn write_fields(&self, d: &mut [u8; DESCRIPTION_SIZE]) {
        put(d, at::MAGIC, &MAGIC.to_le_bytes());
        put(d, at::VERSION, &FORMAT_VERSION.to_le_bytes());
        put(d, at::DTYPE, &[self.dtype.code()]);
        put(d, at::RANK, &[self.rank]);
        put(d, at::ELEMENT_OFFSET, &self.element_offset.to_le_bytes());
        put(d, at::HEADER_OFFSET, &self.header_offset.to_le_bytes());
        put(d, at::HEADER_LEN, &self.header_len.to_le_bytes());
        // The casts are exact: the count and each dimension of a non-empty tensor are at most
        // its payload length, at most u32::MAX; an empty tensor's dimensions were checked to
        // fit (`new`).
        put(d, at::ELEMENT_COUNT, &(self.count as u32).to_le_bytes());
        for (i, &dim) in self.shape.iter().enumerate() {
            put(d, at::SHAPE + 4 * i, &(dim as u32).to_le_bytes());
        }
        put(d, at::RESERVED, &0u64.to_le_bytes());
    }
}

/// A validated copy of a tensor description: what [`TensorRef::parse`] checked, kept in local
/// memory (the payload's bytes may be another process's, and are not read again for bounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    shape: [usize; MAX_RANK],
    count: usize,
    /// A multiple of 64, at least 64; `element_offset + count * size == payload length`.
    element_offset: u32,
    /// 0 when there is no header; else the header lies in `HEADER_MIN_OFFSET..element_offset`.
    header_offset: u32,
    header_len: u32,
    /// The last dimension (0 for a scalar): what `rows::<N>()` compares with `N` (never 0), so
    /// that the shape is not indexed by the rank on the receive path.
    last: usize,
    /// `count / last` (0 when `last` is 0): the number of rows of `last` elements.
    rows: usize,
    dtype: DType,
    rank: u8,
}

/// The last dimension of a shape of `rank` dimensions padded to [`MAX_RANK`] (0 for a scalar)
/// and the number of rows of that many elements in `count` elements (0 when it is 0).
#[inline(always)]
fn last_dim(dims: &[u64; MAX_RANK], rank: usize, count: usize) -> [usize; 2] {
    let last = match rank {
        0 => 0,
        // Each dimension of a validated shape fits a usize (see the callers).
        r => dims[(r - 1) % MAX_RANK] as usize,
    };
    [last, count.checked_div(last).unwrap_or(0)]
}

impl TensorInfo {
    /// The element type.
    #[inline]
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of dimensions.
    #[inline]
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// The dimensions, outermost first.
    #[inline]
    pub fn shape(&self) -> &[usize] {
        &self.shape[..self.rank as usize]
    }

    /// Number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of element data (`len() * dtype().size()`).
    #[inline]
    pub fn byte_len(&self) -> usize {
        // Checked in `parse`.
        self.count * self.dtype.size()
    }

    /// Offset of the first element from the payload's start.
    pub fn element_offset(&self) -> usize {
        self.element_offset as usize
    }

    /// Whether the tensor has a user header.
    pub fn has_header(&self) -> bool {
        self.header_offset != 0
    }

    /// Validates the description at the start of `payload` against `payload.len()`; see the
    /// [module docs](self#what-a-valid-description-satisfies) for every check and its error.
    ///
    /// The checks run as a few combined comparisons; only a description that fails them is
    /// checked again, field by field in the documented order, to name the first check that
    /// fails. Both accept exactly the same descriptions (`tests/tensor.rs` compares them on
    /// random and corrupted descriptions).
    #[inline(always)]
    pub fn parse(payload: &[u8]) -> Result<TensorInfo, TensorError> {
        match Self::parse_fast(payload, None) {
            Some(info) => Ok(info),
            None => Err(Self::diagnose(Self::parse_checked(payload).map(|_| ()))),
        }
    }

    /// The error of a payload [`parse_fast`](Self::parse_fast) refused, given the verdict of
    /// the full checks: theirs, or, if they accept it (only possible when another process
    /// changed the description between the two reads), [`TensorError::Malformed`].
    #[cold]
    #[inline(never)]
    fn diagnose(verdict: Result<(), TensorError>) -> TensorError {
        match verdict {
            Err(e) => e,
            Ok(()) => TensorError::Malformed {
                what: "the description changed while it was read",
            },
        }
    }

    /// [`parse_checked`](Self::parse_checked)'s checks in fewer, combined comparisons (and,
    /// if `dtype` is given, that the elements are of that type): `Some` exactly when
    /// `parse_checked` accepts the payload (with the same result), `None` otherwise, and the
    /// caller asks `parse_checked` for the precise error. Every value is read from the payload
    /// once, and only the copies are checked and used.
    ///
    /// The checks: magic and version match (one 48-bit compare), the dtype code is known (or
    /// is `dtype`'s), rank `<= 8`; without a header, the header length is 0, with one, the
    /// header lies in `80..element_offset`; the element offset is a multiple of 64 and at
    /// least 64; the shape entries past the rank and the reserved word are 0 (one OR); the
    /// product of the non-zero dimensions does not overflow and is at most `isize::MAX`; the
    /// element count is that product (0 if a dimension is 0); and `element_offset + count *
    /// size` equals the payload length.
    #[inline(always)]
    fn parse_fast(payload: &[u8], dtype: Option<DType>) -> Option<TensorInfo> {
        let (d, _) = payload.split_first_chunk::<DESCRIPTION_SIZE>()?;
        Self::parse_fields(d, payload.len(), dtype)
    }

    /// [`parse_fast`](Self::parse_fast) of the description `d` of a payload of `len` bytes.
    #[inline(always)]
    fn parse_fields(
        d: &[u8; DESCRIPTION_SIZE],
        len: usize,
        dtype: Option<DType>,
    ) -> Option<TensorInfo> {
        // magic (bytes 0..4), version (4..6), dtype (6), rank (7).
        let head = u64_at(d, at::MAGIC);
        const _: () = assert!(at::VERSION == 4 && at::DTYPE == 6 && at::RANK == 7);
        if head & 0xffff_ffff_ffff != MAGIC as u64 | (FORMAT_VERSION as u64) << 32 {
            return None;
        }
        let code = (head >> 48) as u8;
        let dtype = match dtype {
            Some(want) if code == want.code() => want,
            Some(_) => return None,
            None => DType::from_code(code)?,
        };
        let rank8 = (head >> 56) as u8;
        let rank = rank8 as usize;
        if rank > MAX_RANK {
            return None;
        }
        // element_offset (8..12), header_offset (12..16); header_len (16..20), count (20..24).
        const _: () = assert!(at::HEADER_OFFSET == 12 && at::HEADER_LEN == 16);
        const _: () = assert!(at::ELEMENT_COUNT == 20 && at::SHAPE == 24 && at::RESERVED == 56);
        let offsets = u64_at(d, at::ELEMENT_OFFSET);
        let lengths = u64_at(d, at::HEADER_LEN);
        let element_offset = offsets as u32;
        let header_offset = (offsets >> 32) as u32;
        let header_len = lengths as u32;
        let declared = lengths >> 32;
        if header_offset == 0 {
            if header_len != 0 {
                return None;
            }
        } else if (header_offset as usize) < HEADER_MIN_OFFSET
            || header_offset as u64 + header_len as u64 > element_offset as u64
        {
            return None;
        }
        if element_offset < ELEMENT_ALIGN as u32
            || !element_offset.is_multiple_of(ELEMENT_ALIGN as u32)
        {
            return None;
        }
        let mut dims = [0u64; MAX_RANK];
        for (i, dim) in dims.iter_mut().enumerate() {
            *dim = u32_at(d, at::SHAPE + 4 * i) as u64;
        }
        // The OR of the entries past the rank and the reserved word (which must be 0), the
        // product of the non-zero dimensions, whether it overflowed, whether a dimension is 0.
        // Ranks 0 to 2 (scalars, vectors, matrices) by fixed indices, so the dimensions stay
        // in registers; the others by one fixed-length pass that selects by index.
        let reserved = u64_at(d, at::RESERVED);
        let or_from = |k: usize| dims[k..].iter().fold(reserved, |a, &x| a | x);
        let (unused, nonzero, overflow, empty) = match rank {
            0 => (or_from(0), 1, false, false),
            1 => (or_from(1), dims[0].max(1), false, dims[0] == 0),
            2 => {
                // Two u32s: the product fits a u64.
                let p = dims[0].max(1) * dims[1].max(1);
                (or_from(2), p, false, dims[0] == 0 || dims[1] == 0)
            }
            _ => dims.iter().enumerate().fold(
                (reserved, 1u64, false, false),
                |(u, p, o, z), (i, &x)| {
                    if i < rank {
                        let (q, o2) = p.overflowing_mul(x.max(1));
                        (u, q, o | o2, z | (x == 0))
                    } else {
                        (u | x, p, o, z)
                    }
                },
            ),
        };
        let count = if empty { 0 } else { nonzero };
        if unused != 0 || overflow || nonzero > isize::MAX as u64 || declared != count {
            return None;
        }
        // `count` is a u32 (it equals `declared`) and the size at most 8: no overflow.
        let end = count * dtype.size() as u64 + element_offset as u64;
        if end != len as u64 {
            return None;
        }
        let [last, rows] = last_dim(&dims, rank, count as usize);
        Some(TensorInfo {
            // Each dimension is a u32: it fits a usize.
            shape: dims.map(|x| x as usize),
            count: count as usize,
            element_offset,
            header_offset,
            header_len,
            last,
            rows,
            dtype,
            rank: rank8,
        })
    }

    /// The elements of `payload` as `E`s: [`parse`](Self::parse) and
    /// [`view_of`](Self::view_of) in one, with the element type known to the checks.
    #[inline(always)]
    pub(crate) fn view_in<E: TensorElement>(
        payload: &[u8],
    ) -> Result<TensorView<'_, E>, TensorError> {
        if let Some(info) = Self::parse_fast(payload, Some(E::DTYPE)) {
            let start = info.element_offset as usize;
            let ptr = payload.as_ptr().wrapping_add(start);
            if ptr.cast::<E>().is_aligned() {
                // SAFETY: `parse_fast` checked `start + count * size_of::<E>() ==
                // payload.len()` (its dtype is `E::DTYPE`, whose size is `size_of::<E>()`), so
                // the `count` elements from `start` lie inside `payload` and `ptr` is in
                // bounds; it is aligned for `E` (checked above); the bytes are initialised
                // (they are a `&[u8]`) and any bytes are a valid `E` (`Pod`); the slice
                // borrows `payload` (shared, for its lifetime) and is at most `payload.len()
                // <= isize::MAX` bytes.
                let data = unsafe { core::slice::from_raw_parts(ptr.cast::<E>(), info.count) };
                return Ok(TensorView {
                    data,
                    shape: info.shape,
                    last: info.last,
                    rows: info.rows,
                    rank: info.rank,
                });
            }
        }
        Err(Self::view_error::<E>(payload))
    }

    /// The error of a payload [`view_in`](Self::view_in) refused, from the full checks.
    #[cold]
    #[inline(never)]
    fn view_error<E: TensorElement>(payload: &[u8]) -> TensorError {
        let verdict =
            Self::parse_checked(payload).and_then(|i| i.view_of::<E>(payload).map(|_| ()));
        Self::diagnose(verdict)
    }

    /// [`parse`](Self::parse) by every check in the order the
    /// [module docs](self#what-a-valid-description-satisfies) give, each with its error: for
    /// the payloads [`parse_fast`](Self::parse_fast) refuses.
    #[cold]
    #[inline(never)]
    pub(crate) fn parse_checked(payload: &[u8]) -> Result<TensorInfo, TensorError> {
        let Some((d, _)) = payload.split_first_chunk::<DESCRIPTION_SIZE>() else {
            return Err(TensorError::Truncated { len: payload.len() });
        };
        // Each field is read once: another process may still write the payload, so only these
        // copies are checked and used.
        let magic = u32_at(d, at::MAGIC);
        if magic != MAGIC {
            return Err(TensorError::BadMagic { found: magic });
        }
        let version = u16::from_le_bytes(bytes_at(d, at::VERSION));
        if version != FORMAT_VERSION {
            return Err(TensorError::UnsupportedVersion { found: version });
        }
        let [code] = bytes_at(d, at::DTYPE);
        let dtype = DType::from_code(code).ok_or(TensorError::UnknownDType { code })?;
        let [rank8] = bytes_at(d, at::RANK);
        let rank = rank8 as usize;
        if rank > MAX_RANK {
            return Err(TensorError::RankTooLarge { rank });
        }
        if u64_at(d, at::RESERVED) != 0 {
            return Err(TensorError::Malformed {
                what: "reserved word is not 0",
            });
        }
        let mut dims = [0u64; MAX_RANK];
        for (i, dim) in dims.iter_mut().enumerate() {
            *dim = u32_at(d, at::SHAPE + 4 * i) as u64;
        }
        let (used, unused) = dims.split_at(rank);
        if unused.iter().fold(0, |a, &x| a | x) != 0 {
            return Err(TensorError::Malformed {
                what: "shape entries past the rank are not 0",
            });
        }
        let header_offset = u32_at(d, at::HEADER_OFFSET);
        let header_len = u32_at(d, at::HEADER_LEN);
        if header_offset == 0 && header_len != 0 {
            return Err(TensorError::Malformed {
                what: "a description without a header has a header length that is not 0",
            });
        }
        let count = element_count_u64(used)?;
        let declared = u32_at(d, at::ELEMENT_COUNT) as u64;
        if declared != count as u64 {
            return Err(TensorError::CountMismatch {
                declared,
                computed: count as u64,
            });
        }
        let overflow = TensorError::ByteSizeOverflow {
            elements: count as u64,
            element_size: dtype.size(),
        };
        let bytes = count.checked_mul(dtype.size()).ok_or(overflow)?;
        let element_offset = u32_at(d, at::ELEMENT_OFFSET);
        let start = element_offset as usize;
        if start < DESCRIPTION_SIZE || !start.is_multiple_of(ELEMENT_ALIGN) {
            return Err(TensorError::BadElementOffset {
                offset: element_offset,
            });
        }
        if header_offset != 0
            && ((header_offset as usize) < HEADER_MIN_OFFSET
                || header_offset as u64 + header_len as u64 > element_offset as u64)
        {
            return Err(TensorError::BadHeader {
                offset: header_offset,
                len: header_len,
            });
        }
        let expected = start.checked_add(bytes).ok_or(overflow)?;
        if payload.len() != expected {
            return Err(TensorError::LengthMismatch {
                len: payload.len(),
                expected,
            });
        }
        let [last, rows] = last_dim(&dims, rank8 as usize, count);
        Ok(TensorInfo {
            // Entries past the rank are 0 (checked), and the used ones fit a usize: each is at
            // most the product of the non-zero dimensions, at most `isize::MAX` (checked).
            shape: dims.map(|x| x as usize),
            count,
            element_offset,
            header_offset,
            header_len,
            last,
            rows,
            dtype,
            rank: rank8,
        })
    }

    /// The elements of `payload` (the bytes this info was parsed from) as `E`s.
    #[inline(always)]
    pub(crate) fn view_of<'a, E: TensorElement>(
        &self,
        payload: &'a [u8],
    ) -> Result<TensorView<'a, E>, TensorError> {
        if E::DTYPE != self.dtype {
            return Err(TensorError::DType {
                expected: E::DTYPE,
                found: self.dtype,
            });
        }
        let start = self.element_offset as usize;
        // In bounds by `parse` (`element_offset + bytes == len`); `get` keeps it total.
        let bytes = payload
            .get(start..start + self.count * size_of::<E>())
            .ok_or(TensorError::LengthMismatch {
                len: payload.len(),
                expected: start + self.count * size_of::<E>(),
            })?;
        let data: &'a [E] =
            bytemuck::try_cast_slice(bytes).map_err(|_| TensorError::Misaligned {
                align: core::mem::align_of::<E>(),
            })?;
        Ok(TensorView {
            data,
            shape: self.shape,
            last: self.last,
            rows: self.rows,
            rank: self.rank,
        })
    }

    /// The user header's type id and fingerprint, read from `payload` (the bytes this info was
    /// parsed from; they are compared, never used for bounds, so they are read when asked for),
    /// or `None` without a header.
    #[inline]
    pub(crate) fn header_ids(&self, payload: &[u8]) -> Option<(u64, u64)> {
        if self.header_offset == 0 {
            return None;
        }
        // A payload with a header holds its tag (`parse`: the header starts at or after byte
        // 80 and ends inside the payload); `get` keeps it total.
        let (type_id, rest) = payload.get(HEADER_TAG_OFFSET..)?.split_first_chunk::<8>()?;
        let (fingerprint, _) = rest.split_first_chunk::<8>()?;
        Some((
            u64::from_le_bytes(*type_id),
            u64::from_le_bytes(*fingerprint),
        ))
    }

    /// The user header of `payload` (the bytes this info was parsed from) as an `H`.
    #[inline]
    pub(crate) fn header_of<'a, H: Message>(
        &self,
        payload: &'a [u8],
    ) -> Result<&'a H, TensorError> {
        let (type_id, fingerprint) = self.header_ids(payload).ok_or(TensorError::NoHeader)?;
        if type_id != H::TYPE_ID {
            return Err(TensorError::HeaderType {
                expected: H::TYPE_ID,
                found: type_id,
            });
        }
        if fingerprint != H::FINGERPRINT {
            return Err(TensorError::HeaderLayout {
                expected: H::FINGERPRINT,
                found: fingerprint,
            });
        }
        let (offset, len) = (self.header_offset as usize, self.header_len as usize);
        if len != size_of::<H>() {
            return Err(TensorError::HeaderLength {
                expected: size_of::<H>(),
                found: len,
            });
        }
        // In bounds by `parse` (the header ends before the elements); `get` keeps it total.
        let bytes = payload
            .get(offset..offset + len)
            .ok_or(TensorError::BadHeader {
                offset: self.header_offset,
                len: self.header_len,
            })?;
        bytemuck::try_from_bytes(bytes).map_err(|_| TensorError::Misaligned {
            align: core::mem::align_of::<H>(),
        })
    }
}

impl TensorInfo {
    /// The elements of `payload` as `E`s, for an info validated for `payload`: `None` if they
    /// are not `E`s (the caller then asks the full checks for the error).
    ///
    /// # Safety
    /// `self` passed the checks of [`parse`](Self::parse) for a payload of exactly
    /// `payload.len()` bytes (as [`DescriptionCache::validate`]'s result does for the payload
    /// it was given), so that `element_offset + len() * dtype().size() == payload.len()`; and
    /// `payload` starts aligned for `E` (a ring payload starts 64-byte aligned; the elements
    /// are a multiple of 64 bytes past the start, so they are aligned too).
    #[inline(always)]
    pub(crate) unsafe fn view_validated<'a, E: TensorElement>(
        &self,
        payload: &'a [u8],
    ) -> Option<TensorView<'a, E>> {
        // SAFETY: the caller's promise, passed on.
        let data = unsafe { self.elements_validated::<E>(payload) }?;
        Some(TensorView {
            data,
            shape: self.shape,
            last: self.last,
            rows: self.rows,
            rank: self.rank,
        })
    }

    /// The elements of [`view_validated`](Self::view_validated), without the view (its
    /// shape is not copied): `None` if the element type differs.
    ///
    /// # Safety
    /// As [`view_validated`](Self::view_validated).
    #[inline(always)]
    unsafe fn elements_validated<'a, E: TensorElement>(
        &self,
        payload: &'a [u8],
    ) -> Option<&'a [E]> {
        if E::DTYPE != self.dtype {
            return None;
        }
        let start = self.element_offset as usize;
        debug_assert_eq!(
            Some(payload.len()),
            self.count
                .checked_mul(size_of::<E>())
                .and_then(|b| b.checked_add(start))
        );
        // SAFETY: `start <= payload.len()` by the caller's promise, so `ptr` is inside the
        // payload or one past its end.
        let ptr = unsafe { payload.as_ptr().add(start) };
        debug_assert!(start.is_multiple_of(ELEMENT_ALIGN) && ptr.cast::<E>().is_aligned());
        // SAFETY: by the caller's promise `start + count * size_of::<E>() == payload.len()`
        // (the dtype is `E::DTYPE`, checked above, whose size is `size_of::<E>()`), so the
        // `count` elements from `ptr` lie inside `payload`; `ptr` is aligned for `E` (the
        // payload starts aligned for `E`, by the caller's promise, and `start` is a multiple
        // of 64, checked by `parse`, and so of `align_of::<E>()`, at most 8); the bytes are
        // initialised (a `&[u8]`) and any bytes are a valid `E` (`Pod`); the slice borrows
        // `payload` (shared, for its lifetime) and is at most `payload.len() <= isize::MAX`
        // bytes.
        Some(unsafe { core::slice::from_raw_parts(ptr.cast::<E>(), self.count) })
    }

    /// [`view_validated`](Self::view_validated) as rows of `N` (`TensorView::rows`), without
    /// making the view: `None` if the element type or the last dimension differ (the caller
    /// then takes the checked path for the error).
    ///
    /// # Safety
    /// As [`view_validated`](Self::view_validated).
    #[inline(always)]
    pub(crate) unsafe fn rows_validated<'a, E: TensorElement, const N: usize>(
        &self,
        payload: &'a [u8],
    ) -> Option<&'a [[E; N]]> {
        // `last` is 0 for a scalar, and `N` is not 0.
        if self.last != N {
            return None;
        }
        // SAFETY: the caller's promise, passed on.
        let data = unsafe { self.elements_validated::<E>(payload) }?;
        debug_assert_eq!(self.rows * N, data.len());
        // SAFETY: as in `TensorView::rows`: `data` holds `count == rows * N` elements.
        Some(unsafe { core::slice::from_raw_parts(data.as_ptr().cast::<[E; N]>(), self.rows) })
    }
}

/// The last tensor description a consumer validated, so that the next one, if it is the same
/// (a repeated shape: the common case), is accepted by comparing its bytes with these instead
/// of checking every field again.
///
/// Exactly as strict as [`TensorInfo::parse`]: a description is accepted either because its
/// 64 bytes and the payload length are equal to the ones remembered, which passed the checks,
/// or because it passes them itself ([`TensorInfo::parse`]'s combined checks, on a copy taken
/// first, so that the bytes remembered are the bytes checked even if another process changes
/// the payload meanwhile). Each byte of the payload's description is read once by the
/// comparison; on a match only the remembered copy and its info are used.
#[derive(Clone, Debug)]
#[repr(C, align(16))]
pub(crate) struct DescriptionCache {
    /// The description's bytes as validated (16-byte aligned: the first field).
    bytes: [u8; DESCRIPTION_SIZE],
    /// The payload length they were validated with; `u64::MAX` (longer than any slice) while
    /// nothing is remembered.
    len: u64,
    /// `len`, or `u32::MAX` (longer than any ring allows) if it does not fit: what the next
    /// tensor's payload length is likely to be.
    likely: u32,
    /// What the checks found for them.
    info: TensorInfo,
}

const _: () = assert!(DESCRIPTION_SIZE.is_multiple_of(16));
const _: () = assert!(DESCRIPTION_SIZE <= ELEMENT_ALIGN);
const _: () = assert!(core::mem::offset_of!(DescriptionCache, bytes) == 0);

impl Default for DescriptionCache {
    fn default() -> Self {
        DescriptionCache {
            bytes: [0; DESCRIPTION_SIZE],
            len: u64::MAX,
            likely: u32::MAX,
            info: TensorInfo {
                shape: [0; MAX_RANK],
                count: 0,
                element_offset: 0,
                header_offset: 0,
                header_len: 0,
                last: 0,
                rows: 0,
                dtype: DType::U8,
                rank: 0,
            },
        }
    }
}

/// Whether the description `d` has the bytes `cache` (each byte of `d` read once, no early
/// exit): four 16-byte compares.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn same_bytes(d: &[u8; DESCRIPTION_SIZE], cache: &DescriptionCache) -> bool {
    use core::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_load_si128, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_setzero_si128, _mm_xor_si128,
    };
    let (ours, theirs) = (cache.bytes.as_ptr(), d.as_ptr());
    // SAFETY: the SSE2 intrinsics need SSE2, which this is compiled with (the `cfg`; it is
    // part of the x86_64 baseline). The loads read the 16 bytes at `16 * i < DESCRIPTION_SIZE`
    // of two `DESCRIPTION_SIZE`-byte arrays: `d` with an unaligned load, `cache.bytes` with an
    // aligned one (the array is the first field of the 16-byte aligned cache, asserted above,
    // and `16 * i` is a multiple of 16).
    unsafe {
        let mut diff = _mm_setzero_si128();
        for i in 0..DESCRIPTION_SIZE / 16 {
            let a = _mm_load_si128(ours.add(16 * i).cast::<__m128i>());
            let b = _mm_loadu_si128(theirs.add(16 * i).cast::<__m128i>());
            diff = _mm_or_si128(diff, _mm_xor_si128(a, b));
        }
        _mm_movemask_epi8(_mm_cmpeq_epi8(diff, _mm_setzero_si128())) == 0xffff
    }
}

/// Whether the description `d` has the bytes `cache` (each byte of `d` read once).
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn same_bytes(d: &[u8; DESCRIPTION_SIZE], cache: &DescriptionCache) -> bool {
    let mut diff = 0;
    for i in 0..DESCRIPTION_SIZE / 8 {
        diff |= u64_at(d, 8 * i) ^ u64_at(&cache.bytes, 8 * i);
    }
    diff == 0
}

impl DescriptionCache {
    /// The validated description of `payload`, or `None` if it fails the checks (the caller
    /// then asks [`TensorInfo::parse`] or a view for the error): by comparison with the one
    /// remembered, else by the checks, remembering it if it passes. A returned info passed
    /// [`TensorInfo::parse`]'s checks for a payload of `payload.len()` bytes.
    #[inline(always)]
    pub(crate) fn validate(&mut self, payload: &[u8]) -> Option<&TensorInfo> {
        if payload.len() as u64 == self.len {
            debug_assert!(payload.len() >= DESCRIPTION_SIZE);
            // SAFETY: `self.len` is `u64::MAX` (which no slice length equals: they are at most
            // `isize::MAX`) or the length of a payload whose description passed the checks,
            // so at least `ELEMENT_ALIGN >= DESCRIPTION_SIZE` bytes (the elements start at or
            // after 64): `payload` holds `DESCRIPTION_SIZE` bytes, and a `[u8; N]` has
            // alignment 1. The reference borrows `payload` (shared) for as long as `d` lives.
            let d = unsafe { &*payload.as_ptr().cast::<[u8; DESCRIPTION_SIZE]>() };
            if same_bytes(d, self) {
                return Some(&self.info);
            }
        }
        if self.refill(payload.as_ptr(), payload.len()) {
            Some(&self.info)
        } else {
            None
        }
    }

    /// The payload length of the description remembered (`u32::MAX`, longer than any ring
    /// allows, while none is): what the next tensor's is likely to be.
    #[inline(always)]
    pub(crate) fn likely_len(&self) -> u32 {
        self.likely
    }

    /// [`validate`](Self::validate) of a description other than the one remembered, for the
    /// `len` bytes at `payload` (a `&[u8]` of the caller's): copied, checked, and remembered if
    /// it passes (`true`; else nothing is remembered). Out of line, and `extern "C"`: such a
    /// function cannot unwind (a panic inside would abort, and nothing in it panics), so the
    /// compiler needs no clean-up path for the received record the caller holds around the
    /// call, and keeps that record in registers.
    #[inline(never)]
    extern "C" fn refill(&mut self, payload: *const u8, len: usize) -> bool {
        // SAFETY: `payload` and `len` are the pointer and length of a `&[u8]` the caller holds
        // for the whole call (`validate`), so they describe initialised bytes borrowed shared.
        let payload = unsafe { core::slice::from_raw_parts(payload, len) };
        self.len = u64::MAX;
        self.likely = u32::MAX;
        let Some((d, _)) = payload.split_first_chunk::<DESCRIPTION_SIZE>() else {
            return false;
        };
        // The checks read only this copy: the bytes remembered are the bytes checked.
        self.bytes = *d;
        let Some(info) = TensorInfo::parse_fields(&self.bytes, payload.len(), None) else {
            return false;
        };
        self.len = payload.len() as u64;
        self.likely = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        self.info = info;
        true
    }
}

/// A tensor payload whose description was validated, borrowed from the payload's bytes (a
/// received message, or any buffer): [`view`](Self::view) reads the elements in place,
/// [`header`](Self::header) the user header.
#[derive(Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    payload: &'a [u8],
    info: TensorInfo,
}

impl<'a> TensorRef<'a> {
    /// The tensor of `payload` with `info`, validated for it ([`DescriptionCache`]).
    #[inline]
    pub(crate) fn validated(payload: &'a [u8], info: TensorInfo) -> Self {
        TensorRef { payload, info }
    }

    /// Validates the description at the start of `payload` (see [`TensorInfo::parse`]).
    #[inline]
    pub fn parse(payload: &'a [u8]) -> Result<TensorRef<'a>, TensorError> {
        Ok(TensorRef {
            payload,
            info: TensorInfo::parse(payload)?,
        })
    }

    /// The validated description.
    #[inline]
    pub fn info(&self) -> &TensorInfo {
        &self.info
    }

    /// The element type.
    #[inline]
    pub fn dtype(&self) -> DType {
        self.info.dtype
    }

    /// The dimensions, outermost first.
    #[inline]
    pub fn shape(&self) -> &[usize] {
        self.info.shape()
    }

    /// The user header's type id ([`Message::TYPE_ID`]), if the tensor has a header.
    pub fn header_type_id(&self) -> Option<u64> {
        self.info.header_ids(self.payload).map(|(id, _)| id)
    }

    /// The whole payload: description, header, padding, elements.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The element bytes.
    #[inline]
    pub fn element_bytes(&self) -> &'a [u8] {
        // In bounds by `parse` (`element_offset + bytes == len`); `get` keeps it total.
        self.payload
            .get(self.info.element_offset()..)
            .unwrap_or_default()
    }

    /// The elements as `E`s, in place.
    ///
    /// # Errors
    /// [`TensorError::DType`] if the tensor's elements are not `E`s; [`TensorError::Misaligned`]
    /// if the payload's memory is not aligned for `E` (never for a payload in a ring).
    #[inline]
    pub fn view<E: TensorElement>(&self) -> Result<TensorView<'a, E>, TensorError> {
        self.info.view_of(self.payload)
    }

    /// The user header as an `H`, in place.
    ///
    /// # Errors
    /// [`TensorError::NoHeader`], [`TensorError::HeaderType`] (another type id),
    /// [`TensorError::HeaderLayout`] (same type id, another fingerprint: the peer was built with
    /// another definition of `H`), [`TensorError::HeaderLength`], [`TensorError::Misaligned`].
    pub fn header<H: Message>(&self) -> Result<&'a H, TensorError> {
        self.info.header_of(self.payload)
    }
}

/// A tensor's elements read in place as `E`s, with its shape: from
/// [`TensorRef::view`] (and `TensorReceived::view` on a channel).
#[derive(Clone, Copy)]
pub struct TensorView<'a, E> {
    data: &'a [E],
    shape: [usize; MAX_RANK],
    /// The last dimension, 0 for a scalar (see `TensorInfo::last`).
    last: usize,
    /// `len() / last` (0 when `last` is 0).
    rows: usize,
    rank: u8,
}

impl<'a, E: TensorElement> TensorView<'a, E> {
    /// The dimensions, outermost first (`[]` for a scalar).
    #[inline]
    pub fn shape(&self) -> &[usize] {
        &self.shape[..self.rank as usize]
    }

    /// Number of dimensions.
    #[inline]
    pub fn rank(&self) -> usize {
        self.rank as usize
    }

    /// Number of elements (the product of the shape).
    #[inline]
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements (a zero-sized dimension).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        E::DTYPE
    }

    /// The elements in row-major order, in place.
    #[inline]
    pub fn as_slice(&self) -> &'a [E] {
        self.data
    }

    /// The elements in fixed-width chunks of `N` and the remainder (fewer than `N`), in place:
    /// `<[E]>::as_chunks` on [`as_slice`](Self::as_slice). A loop over `[E; N]` chunks has a
    /// compile-time trip count inside, which the compiler unrolls and vectorises as it does
    /// the loops of a fixed-size message, while a loop over a slice whose length is known only
    /// at run time pays its loop control per vector step; see the
    /// [module docs](self#writing-the-element-loops). `N` must not be 0 (a compile-time
    /// error).
    #[inline]
    pub fn as_chunks<const N: usize>(&self) -> (&'a [[E; N]], &'a [E]) {
        const { assert!(N > 0, "chunks of 0 elements") };
        self.data.as_chunks::<N>()
    }

    /// The elements as rows of a compile-time width `N`, in place: the tensor's last dimension
    /// must be `N` (a `[batch, N]` activation, a `[batch, seq, N]` sequence: the model's
    /// hidden size is usually a constant while the batch is not). Each row is an `[E; N]`, so
    /// loops over one row compile as a fixed-size message's do (unrolled and vectorised, no
    /// remainder); see the [module docs](self#writing-the-element-loops). There are
    /// `len() / N` rows. `N` must not be 0 (a compile-time error).
    ///
    /// # Errors
    /// [`TensorError::RowWidth`] if the last dimension is not `N` (or the tensor is a scalar).
    ///
    /// ```
    /// # use psyne::tensor::{DType, TensorLayout, TensorRef};
    /// # let layout = TensorLayout::new(DType::F32, &[3, 4], None)?;
    /// # let mut storage = vec![0u64; layout.payload_len().div_ceil(8)];
    /// # let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut storage)[..layout.payload_len()];
    /// # layout.write_description(bytes)?;
    /// let v = TensorRef::parse(bytes)?.view::<f32>()?; // shape [3, 4]
    /// let rows: &[[f32; 4]] = v.rows::<4>()?;
    /// assert_eq!(rows.len(), 3);
    /// assert!(v.rows::<8>().is_err()); // TensorError::RowWidth { expected: 8, found: Some(4) }
    /// # Ok::<(), psyne::TensorError>(())
    /// ```
    #[inline]
    pub fn rows<const N: usize>(&self) -> Result<&'a [[E; N]], TensorError> {
        const { assert!(N > 0, "rows of 0 elements") };
        // `last` is the last dimension (0, never `N`, for a scalar): the shape is not indexed
        // by the rank, so a view that is only read by rows need not be kept in memory.
        if self.last != N {
            return Err(row_width_error::<N>((self.rank != 0).then_some(self.last)));
        }
        debug_assert_eq!(self.rows * N, self.data.len());
        // SAFETY: the element count is the product of the shape, whose last dimension is
        // `last == N`, so `data` holds exactly `rows * N` elements (`rows` is `len / last`):
        // the `rows` arrays of `N` lie inside it, and `[E; N]` has `E`'s alignment; the slice
        // borrows the same memory as `data`, shared, for `'a`.
        Ok(unsafe { core::slice::from_raw_parts(self.data.as_ptr().cast::<[E; N]>(), self.rows) })
    }

    /// All the elements as one array of a compile-time length `N`, in place: the tensor must
    /// have exactly `N` elements, whatever its shape (a `[256]` embedding, a `[16, 16]` tile).
    /// Loops over the array compile as a fixed-size message's do (see the
    /// [module docs](self#writing-the-element-loops)).
    ///
    /// # Errors
    /// [`TensorError::ElementCount`] if the tensor has another number of elements.
    ///
    /// ```
    /// # use psyne::tensor::{DType, TensorLayout, TensorRef};
    /// # let layout = TensorLayout::new(DType::F32, &[3, 4], None)?;
    /// # let mut storage = vec![0u64; layout.payload_len().div_ceil(8)];
    /// # let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut storage)[..layout.payload_len()];
    /// # layout.write_description(bytes)?;
    /// let v = TensorRef::parse(bytes)?.view::<f32>()?; // shape [3, 4]
    /// let all: &[f32; 12] = v.as_array::<12>()?;
    /// assert_eq!(all.len(), 12);
    /// assert!(v.as_array::<4>().is_err()); // TensorError::ElementCount { expected: 4, found: 12 }
    /// # Ok::<(), psyne::TensorError>(())
    /// ```
    #[inline]
    pub fn as_array<const N: usize>(&self) -> Result<&'a [E; N], TensorError> {
        match <&[E; N]>::try_from(self.data) {
            Ok(array) => Ok(array),
            Err(_) => Err(element_count_error::<N>(self.data.len())),
        }
    }

    /// The element at row-major `index` (one entry per dimension), or `None` if the index has
    /// the wrong rank or lies outside the shape.
    #[inline]
    pub fn get(&self, index: &[usize]) -> Option<&'a E> {
        row_major_offset(self.shape(), index).and_then(|i| self.data.get(i))
    }

    /// The elements as nalgebra's column-major view of the row-major matrix `[rows, cols]`
    /// (`cols` = the last dimension, `rows` = the product of the others): a **`cols x rows`**
    /// matrix `m`, the transpose, with tensor element `[i, j]` at `m[(j, i)]`. No copy. See the
    /// [module docs](self#row-major-tensors-and-nalgebras-column-major-views).
    ///
    /// ```
    /// # use psyne::tensor::{DType, TensorLayout, TensorRef};
    /// # let layout = TensorLayout::new(DType::F32, &[2, 3], None)?;
    /// # let mut storage = vec![0u64; layout.payload_len().div_ceil(8)];
    /// # let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut storage)[..layout.payload_len()];
    /// # layout.write_description(bytes)?;
    /// # let off = layout.element_offset();
    /// # bytemuck::cast_slice_mut::<u8, f32>(&mut bytes[off..]).copy_from_slice(&[1., 2., 3., 4., 5., 6.]);
    /// // A row-major [2, 3] tensor [[1, 2, 3], [4, 5, 6]]:
    /// let t = TensorRef::parse(bytes)?;
    /// let v = t.view::<f32>()?;
    /// let m = v.matrix();
    /// assert_eq!(m.shape(), (3, 2)); // the transpose
    /// assert_eq!(m[(2, 0)], 3.0); // tensor element [0, 2]
    /// let x = nalgebra::DVector::from_vec(vec![1.0f32, 0.0, 1.0]);
    /// assert_eq!(m.tr_mul(&x).as_slice(), &[4.0, 10.0]); // [2, 3] tensor times x
    /// # Ok::<(), psyne::TensorError>(())
    /// ```
    #[inline]
    pub fn matrix(&self) -> DMatrixView<'a, E> {
        let (rows, cols) = row_major_dims(self.shape());
        // `rows * cols == data.len()` (or both sides 0), so this never panics.
        DMatrixView::from_slice(self.data, cols, rows)
    }

    /// The elements as an `ndarray` view with the tensor's shape and row-major indices, no
    /// copy (feature `ndarray`). ndarray keeps up to 4 dimensions inline; a view of rank 5 to
    /// 8 allocates its shape and strides on the heap.
    #[cfg(feature = "ndarray")]
    pub fn array(&self) -> ndarray::ArrayViewD<'a, E> {
        let shape = ndarray::IxDyn(self.shape());
        // SAFETY: `data` holds exactly the product of the shape (checked when the view was
        // made) initialised `E`s, aligned, borrowed for `'a` and not mutably aliased (it is a
        // shared slice); default (C-order) strides are non-negative and every element they
        // reach is inside `data`; the product of the non-zero dimensions is at most
        // `isize::MAX` elements, and the slice itself is at most `isize::MAX` bytes.
        unsafe { ndarray::ArrayView::from_shape_ptr(shape, self.data.as_ptr()) }
    }
}

impl<E: TensorElement> fmt::Debug for TensorView<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorView")
            .field("dtype", &E::DTYPE)
            .field("shape", &self.shape())
            .finish()
    }
}

/// Offset of row-major `index` in a tensor of `shape`, or `None` if out of bounds.
#[inline]
pub(crate) fn row_major_offset(shape: &[usize], index: &[usize]) -> Option<usize> {
    if index.len() != shape.len() {
        return None;
    }
    let mut offset = 0usize;
    for (&i, &d) in index.iter().zip(shape) {
        if i >= d {
            return None;
        }
        // `offset * d + i < product of the shape`, which fits: no overflow.
        offset = offset * d + i;
    }
    Some(offset)
}

/// What is wrong with a tensor: a shape a producer cannot send, a description read from
/// another process (or the network) that fails a check, or a view of the wrong type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TensorError {
    /// More dimensions than [`MAX_RANK`].
    RankTooLarge {
        /// The rank given or read.
        rank: usize,
    },
    /// The product of the non-zero dimensions exceeds `isize::MAX`.
    CountOverflow,
    /// A dimension above `u32::MAX` in a tensor with no elements (beside a zero-sized
    /// dimension): the description stores dimensions as `u32`s, and a non-empty tensor's
    /// dimensions always fit one (see [the format's limits](crate::tensor#payload-format-version-2)).
    DimensionTooLarge {
        /// The largest dimension given.
        dimension: usize,
    },
    /// The element bytes (`count * element size`), or the payload length, overflow a `usize`.
    ByteSizeOverflow {
        /// Number of elements.
        elements: u64,
        /// Bytes per element.
        element_size: usize,
    },
    /// A payload of more than `u32::MAX` bytes (records cannot be longer).
    TooLarge {
        /// Bytes the payload (or its header) needs.
        bytes: usize,
    },
    /// A user header type aligned to more than 64 bytes.
    HeaderAlignment {
        /// The header type's alignment.
        align: usize,
    },
    /// The message is not a tensor: its type id is not [`TENSOR_TYPE_ID`].
    NotATensor {
        /// The message's type id.
        type_id: u64,
    },
    /// The payload is shorter than a description ([`DESCRIPTION_SIZE`] bytes).
    Truncated {
        /// The payload's length.
        len: usize,
    },
    /// The description does not start with [`MAGIC`].
    BadMagic {
        /// The word found.
        found: u32,
    },
    /// The description's format version is not [`FORMAT_VERSION`].
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// The description's element type code is not a [`DType`].
    UnknownDType {
        /// The code found.
        code: u8,
    },
    /// The description's element count is not the product of its shape.
    CountMismatch {
        /// The count in the description.
        declared: u64,
        /// The product of the shape.
        computed: u64,
    },
    /// The element offset is not a multiple of 64, or lies inside the description.
    BadElementOffset {
        /// The offset found.
        offset: u32,
    },
    /// The user header does not lie between the description and the elements.
    BadHeader {
        /// The header offset found.
        offset: u32,
        /// The header length found.
        len: u32,
    },
    /// A field that must be 0 is not (what is named).
    Malformed {
        /// Which field.
        what: &'static str,
    },
    /// The payload length is not `element_offset + count * element size`.
    LengthMismatch {
        /// The payload's length in bytes.
        len: usize,
        /// The length the description implies.
        expected: usize,
    },
    /// The elements (or header) are not aligned in memory for the requested type; only bytes
    /// that did not come from a ring can be.
    Misaligned {
        /// The alignment the type needs.
        align: usize,
    },
    /// The tensor's elements are of another type than the one asked for.
    DType {
        /// The type asked for.
        expected: DType,
        /// The tensor's element type.
        found: DType,
    },
    /// A user header was asked for, and the tensor has none.
    NoHeader,
    /// The user header is another message type.
    HeaderType {
        /// `H::TYPE_ID` of the type asked for.
        expected: u64,
        /// The type id in the description.
        found: u64,
    },
    /// The user header has the requested type id but another layout fingerprint (the sender
    /// was built with another definition of the type).
    HeaderLayout {
        /// `H::FINGERPRINT` of the type asked for.
        expected: u64,
        /// The fingerprint in the description.
        found: u64,
    },
    /// The user header's length is not the requested type's size.
    HeaderLength {
        /// `size_of::<H>()`.
        expected: usize,
        /// The length in the description.
        found: usize,
    },
    /// Rows of `expected` elements were asked for (`rows::<N>()`), and the tensor's last
    /// dimension is another.
    RowWidth {
        /// `N`.
        expected: usize,
        /// The tensor's last dimension (`None`: the tensor is a scalar, of rank 0).
        found: Option<usize>,
    },
    /// An array of `expected` elements was asked for (`as_array::<N>()`), and the tensor has
    /// another number of elements.
    ElementCount {
        /// `N`.
        expected: usize,
        /// The tensor's number of elements.
        found: usize,
    },
}

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorError::RankTooLarge { rank } => {
                write!(f, "a tensor of rank {rank}; at most {MAX_RANK} dimensions")
            }
            TensorError::CountOverflow => {
                f.write_str("the tensor's element count overflows (product of its shape)")
            }
            TensorError::DimensionTooLarge { dimension } => write!(
                f,
                "a dimension of {dimension} in an empty tensor; a tensor description stores \
                 dimensions up to u32::MAX"
            ),
            TensorError::ByteSizeOverflow {
                elements,
                element_size,
            } => write!(
                f,
                "{elements} elements of {element_size} bytes overflow the payload length"
            ),
            TensorError::TooLarge { bytes } => write!(
                f,
                "a tensor payload of {bytes} bytes; records hold at most {MAX_PAYLOAD}"
            ),
            TensorError::HeaderAlignment { align } => write!(
                f,
                "a tensor header aligned to {align} bytes; at most {ELEMENT_ALIGN}"
            ),
            TensorError::NotATensor { type_id } => {
                write!(f, "the message (type id {type_id:#018x}) is not a tensor")
            }
            TensorError::Truncated { len } => write!(
                f,
                "a tensor payload of {len} bytes is shorter than its {DESCRIPTION_SIZE}-byte description"
            ),
            TensorError::BadMagic { found } => {
                write!(
                    f,
                    "the tensor description's magic is {found:#010x}, not {MAGIC:#010x}"
                )
            }
            TensorError::UnsupportedVersion { found } => write!(
                f,
                "tensor format version {found}; this build reads version {FORMAT_VERSION}"
            ),
            TensorError::UnknownDType { code } => {
                write!(f, "unknown tensor element type code {code}")
            }
            TensorError::CountMismatch { declared, computed } => write!(
                f,
                "the tensor description declares {declared} elements but its shape has {computed}"
            ),
            TensorError::BadElementOffset { offset } => write!(
                f,
                "tensor element offset {offset} is not a multiple of {ELEMENT_ALIGN} past the description"
            ),
            TensorError::BadHeader { offset, len } => write!(
                f,
                "the tensor header ({len} bytes at {offset}) is not between the description and the elements"
            ),
            TensorError::Malformed { what } => {
                write!(f, "malformed tensor description: {what}")
            }
            TensorError::LengthMismatch { len, expected } => write!(
                f,
                "a tensor payload of {len} bytes; its description implies {expected}"
            ),
            TensorError::Misaligned { align } => write!(
                f,
                "the tensor's memory is not aligned to {align} bytes for the requested type"
            ),
            TensorError::DType { expected, found } => {
                write!(f, "the tensor holds {found} elements, not {expected}")
            }
            TensorError::NoHeader => f.write_str("the tensor has no user header"),
            TensorError::HeaderType { expected, found } => write!(
                f,
                "the tensor's header has type id {found:#018x}, not {expected:#018x}"
            ),
            TensorError::HeaderLayout { expected, found } => write!(
                f,
                "the tensor's header has the requested type but fingerprint {found:#018x}, not {expected:#018x} (another definition of the type)"
            ),
            TensorError::HeaderLength { expected, found } => write!(
                f,
                "the tensor's header is {found} bytes, the requested type {expected}"
            ),
            TensorError::RowWidth {
                expected,
                found: Some(found),
            } => write!(
                f,
                "rows of {expected} elements asked for; the tensor's last dimension is {found}"
            ),
            TensorError::RowWidth {
                expected,
                found: None,
            } => write!(
                f,
                "rows of {expected} elements asked for; the tensor is a scalar (rank 0)"
            ),
            TensorError::ElementCount { expected, found } => write!(
                f,
                "an array of {expected} elements asked for; the tensor has {found} elements"
            ),
        }
    }
}

impl std::error::Error for TensorError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_layout() {
        assert_eq!(DESCRIPTION_SIZE, 64);
        assert_eq!(core::mem::offset_of!(TensorDescription, element_count), 20);
        assert_eq!(core::mem::offset_of!(TensorDescription, shape), 24);
        assert_eq!(core::mem::offset_of!(TensorDescription, reserved), 56);
        assert_eq!((HEADER_TAG_OFFSET, HEADER_MIN_OFFSET), (64, 80));
        assert_eq!(MAGIC.to_le_bytes(), *b"PSYT");
        assert_eq!(TENSOR_TYPE_ID, fnv1a64(b"psyne.Tensor"));
    }

    #[test]
    fn dtype_codes_round_trip() {
        for (i, d) in DType::ALL.into_iter().enumerate() {
            assert_eq!(d.code() as usize, i + 1);
            assert_eq!(DType::from_code(d.code()), Some(d));
        }
        assert_eq!(DType::from_code(0), None);
        assert_eq!(DType::from_code(13), None);
        assert_eq!(DType::BF16.size(), 2);
        assert_eq!(DType::U64.to_string(), "u64");
    }

    #[test]
    fn element_counts() {
        assert_eq!(element_count(&[]), Ok(1));
        assert_eq!(element_count(&[3, 0, 5]), Ok(0));
        assert_eq!(element_count(&[2, 3, 4]), Ok(24));
        assert_eq!(
            element_count(&[usize::MAX, 2]),
            Err(TensorError::CountOverflow)
        );
        // Zero elements, but the other dimensions' product is still bounded.
        assert_eq!(
            element_count(&[1 << 40, 1 << 40, 0]),
            Err(TensorError::CountOverflow)
        );
        assert_eq!(
            element_count(&[isize::MAX as usize + 1]),
            Err(TensorError::CountOverflow)
        );
    }

    #[test]
    fn row_major_indexing() {
        assert_eq!(row_major_offset(&[2, 3], &[1, 2]), Some(5));
        assert_eq!(row_major_offset(&[2, 3], &[2, 0]), None);
        assert_eq!(row_major_offset(&[2, 3], &[1]), None);
        assert_eq!(row_major_offset(&[], &[]), Some(0));
        assert_eq!(row_major_dims(&[]), (1, 1));
        assert_eq!(row_major_dims(&[7]), (1, 7));
        assert_eq!(row_major_dims(&[2, 3, 4]), (6, 4));
    }

    /// `parse` (combined checks, then the full ones for the error), `view_in` and a consumer's
    /// `DescriptionCache` (remembering the valid description, or nothing) agree with the full
    /// checks alone on valid descriptions of many shapes (zero-sized dimensions, headers) and
    /// on every single-byte corruption of them, random field overwrites, and truncations.
    #[test]
    fn fast_checks_agree_with_the_full_checks() {
        let header = HeaderSpec {
            type_id: 7,
            fingerprint: 9,
            size: 24,
            align: 8,
        };
        let shapes: &[&[usize]] = &[
            &[],
            &[0],
            &[5],
            &[258],
            &[3, 4],
            &[0, 7],
            &[2, 3, 4],
            &[2, 0, 4, 1],
            &[1, 1, 1, 1, 1, 1, 1, 2],
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut checked = 0;
        for dtype in [DType::U8, DType::U32, DType::F64] {
            for &shape in shapes {
                for h in [None, Some(header)] {
                    let layout = TensorLayout::new(dtype, shape, h).unwrap();
                    let mut storage = vec![0u64; layout.payload_len().div_ceil(8) + 1];
                    let all = bytemuck::cast_slice_mut::<u64, u8>(&mut storage);
                    let bytes = &mut all[..layout.payload_len()];
                    layout.write_description(bytes).unwrap();
                    // A consumer's cache that remembers this valid description.
                    let mut valid_storage = vec![0u64; layout.payload_len().div_ceil(8) + 1];
                    let valid = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut valid_storage)
                        [..layout.payload_len()];
                    valid.copy_from_slice(bytes);
                    let valid = &*valid;
                    let mut primed = DescriptionCache::default();
                    let valid_info = *primed.validate(valid).unwrap();
                    assert_eq!(Ok(valid_info), TensorInfo::parse_checked(valid));
                    let agree = |b: &[u8]| {
                        let full = TensorInfo::parse_checked(b);
                        assert_eq!(
                            TensorInfo::parse(b),
                            full,
                            "{:?}",
                            &b[..b.len().min(HEADER_MIN_OFFSET)]
                        );
                        let view =
                            |v: TensorView<'_, u32>| (v.as_slice().as_ptr(), v.shape().to_vec());
                        let full_view = full.and_then(|i| i.view_of::<u32>(b)).map(view);
                        assert_eq!(TensorInfo::view_in::<u32>(b).map(view), full_view);
                        // The cache, remembering the valid description or nothing, accepts
                        // exactly what the full checks accept, with the same info and view,
                        // and still remembers only descriptions that passed.
                        for mut cache in [primed.clone(), DescriptionCache::default()] {
                            let got = cache.validate(b).copied();
                            assert_eq!(got.ok_or(()), full.map_err(|_| ()));
                            if let Some(info) = got {
                                // SAFETY: `info` is `validate`'s result for `b`, which
                                // starts 8-byte aligned (`u64` storage).
                                let v = unsafe { info.view_validated::<u32>(b) }.map(view);
                                assert_eq!(v.ok_or(()), full_view.clone().map_err(|_| ()));
                            }
                            assert_eq!(cache.validate(b).copied(), got);
                            assert_eq!(cache.validate(valid).copied(), Some(valid_info));
                        }
                    };
                    agree(bytes);
                    assert!(TensorInfo::parse(bytes).is_ok());
                    for len in [0, 63, 64, 79, 80, bytes.len() - 1] {
                        agree(&bytes[..len.min(bytes.len())]);
                    }
                    for at in 0..DESCRIPTION_SIZE {
                        let original = bytes[at];
                        for value in [0, 1, 0x80, 0xff, next() as u8, original ^ 1] {
                            bytes[at] = value;
                            agree(bytes);
                            checked += 1;
                        }
                        bytes[at] = original;
                    }
                    // Whole fields replaced by random words.
                    for _ in 0..200 {
                        let at = (next() as usize % (DESCRIPTION_SIZE / 8)) * 8;
                        let original: [u8; 8] = bytes[at..at + 8].try_into().unwrap();
                        bytes[at..at + 8].copy_from_slice(&(next() >> (next() % 64)).to_le_bytes());
                        agree(bytes);
                        bytes[at..at + 8].copy_from_slice(&original);
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 10_000);
    }

    #[test]
    fn layout_offsets_and_limits() {
        let l = TensorLayout::new(DType::U8, &[0], None).unwrap();
        assert_eq!((l.element_offset(), l.payload_len()), (64, 64));
        let h = HeaderSpec {
            type_id: 1,
            fingerprint: 2,
            size: 17,
            align: 8,
        };
        let l = TensorLayout::new(DType::F64, &[3], Some(h)).unwrap();
        assert_eq!(l.header_offset(), Some(80));
        assert_eq!(l.element_offset(), 128);
        assert_eq!(l.payload_len(), 128 + 24);
        let mut tag = [0u8; 16];
        tag[0] = 1;
        tag[8] = 2;
        assert_eq!(l.header_tag(), Some(tag));
        let wide = HeaderSpec { size: 49, ..h };
        let l = TensorLayout::new(DType::F64, &[3], Some(wide)).unwrap();
        assert_eq!((l.header_offset(), l.element_offset()), (Some(80), 192));
        let l = TensorLayout::new(DType::U8, &[2], Some(HeaderSpec { align: 64, ..h })).unwrap();
        assert_eq!((l.header_offset(), l.element_offset()), (Some(128), 192));
        assert_eq!(
            TensorLayout::new(DType::U8, &[2], None)
                .unwrap()
                .header_tag(),
            None
        );
        // Dimensions are stored as u32s: a larger one is only possible in an empty tensor,
        // which is refused; in a non-empty one the payload is too large anyway.
        let big = u32::MAX as usize + 1;
        assert_eq!(
            TensorLayout::new(DType::U8, &[3, 0, big], None),
            Err(TensorError::DimensionTooLarge { dimension: big })
        );
        assert_eq!(
            TensorLayout::new(DType::U8, &[big], None),
            Err(TensorError::TooLarge { bytes: big + 64 })
        );
        let l = TensorLayout::new(DType::U8, &[0, u32::MAX as usize], None).unwrap();
        assert_eq!(l.shape(), &[0, u32::MAX as usize]);
        assert_eq!(l.description().shape[1], u32::MAX.to_le());
        assert_eq!(
            TensorLayout::new(DType::F32, &[1; 9], None),
            Err(TensorError::RankTooLarge { rank: 9 })
        );
        assert!(matches!(
            TensorLayout::new(DType::F64, &[isize::MAX as usize], None),
            Err(TensorError::ByteSizeOverflow { .. })
        ));
        assert_eq!(
            TensorLayout::new(DType::U8, &[u32::MAX as usize], None),
            Err(TensorError::TooLarge {
                bytes: u32::MAX as usize + 64
            })
        );
        let aligned = HeaderSpec { align: 128, ..h };
        assert_eq!(
            TensorLayout::new(DType::U8, &[1], Some(aligned)),
            Err(TensorError::HeaderAlignment { align: 128 })
        );
    }
}
