//! Messages: the [`Message`] trait, the [`MessageHeader`] that precedes every payload in channel
//! memory, stable type ids and layout fingerprints, and the static field schema.
//!
//! This module owns the *description* of a message. It never allocates, never touches channel
//! memory and never panics at run time: every value here is a compile-time constant or a plain
//! `#[repr(C)]` struct.
//!
//! # Type ids and fingerprints
//!
//! * [`Message::TYPE_ID`] identifies *which* message this is, and is stable across builds,
//!   processes and machines: the 64-bit FNV-1a hash ([`fnv1a64`]) of the message name (the
//!   struct's name or `#[psyne(name = "...")]`), combined with the value of every const generic
//!   parameter so that `Matrix<4, 4>` and `Matrix<8, 8>` differ. `#[psyne(type_id = N)]` sets it
//!   explicitly.
//! * [`Message::FINGERPRINT`] identifies *what the bytes mean*: it hashes every field's name,
//!   element type, shape, offset and size, plus the total size and alignment. Renaming, reordering
//!   or retyping a field changes the fingerprint but not the type id, so a peer built from an older
//!   schema is recognised ("same message, different layout") rather than misread.

use core::fmt;

/// The fixed-size header that precedes every payload in channel memory (and on the wire).
///
/// 32 bytes, `#[repr(C)]`, stored in the machine's native byte order in channel memory (a ring
/// is only mapped on one machine). Payloads start 64-byte aligned after it (or
/// at the payload type's alignment when that is larger).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MessageHeader {
    /// Length of the payload in bytes (not counting this header or any padding after it).
    pub len: u32,
    /// Bit set of `MessageHeader::FLAG_*` values: the wrap marker (device and compressed are
    /// reserved).
    pub flags: u32,
    /// [`Message::TYPE_ID`] of the payload, or a user-chosen id for raw byte payloads.
    pub type_id: u64,
    /// Sequence number assigned by the sending end, starting at 0 and increasing by one per
    /// published message.
    pub sequence: u64,
    /// Send time in nanoseconds on the sender's monotonic clock (`CLOCK_MONOTONIC`), or 0 when the
    /// channel was built without timestamps.
    pub timestamp_ns: u64,
}

// SAFETY: `MessageHeader` is `#[repr(C)]` with fields u32, u32, u64, u64, u64: offsets 0, 4, 8,
// 16, 24, size 32, no padding; every bit pattern is a valid value of each field.
unsafe impl bytemuck::Zeroable for MessageHeader {}
// SAFETY: as above (no padding, all fields `Pod`, `Copy`, `'static`).
unsafe impl bytemuck::Pod for MessageHeader {}

const _: () = assert!(core::mem::size_of::<MessageHeader>() == 32);

impl MessageHeader {
    /// Size of the header in bytes (32).
    pub const SIZE: usize = core::mem::size_of::<MessageHeader>();
    /// The record is not a message but a filler the reader skips (`32 + len` bytes): written
    /// where a record would cross the end of the ring (the next record is at offset 0) and before
    /// a payload aligned to more than 64 bytes.
    pub const FLAG_WRAP: u32 = 1 << 0;
    /// Reserved for device-resident payloads (the ring would carry a descriptor of GPU memory).
    /// No channel sets or interprets it yet.
    pub const FLAG_DEVICE: u32 = 1 << 1;
    /// Reserved for compressed payloads. No channel sets or interprets it yet.
    pub const FLAG_COMPRESSED: u32 = 1 << 2;

    /// Whether this header is a wrap marker rather than a message.
    pub const fn is_wrap(&self) -> bool {
        self.flags & Self::FLAG_WRAP != 0
    }
}

/// A message type: a `#[repr(C)]` struct of plain numbers and tensors, checked at compile time.
///
/// Implemented only by `#[derive(PsyneMessage)]`, which proves the layout first (no padding, only
/// plain-old-data fields, shapes consistent with array lengths).
///
/// ```
/// use psyne::{Message, PsyneMessage};
///
/// #[derive(Clone, Copy, PsyneMessage)]
/// #[repr(C)]
/// struct Activation {
///     #[psyne(matrix(rows = 2, cols = 3))]
///     values: [f32; 6],
///     layer: u32,
///     step: u32,
/// }
///
/// assert_eq!(Activation::NAME, "Activation");
/// assert_eq!(Activation::TYPE_ID, psyne::fnv1a64(b"Activation"));
/// assert_eq!(Activation::FIELDS[0].shape.as_slice(), &[2, 3]);
///
/// let mut a: Activation = bytemuck::Zeroable::zeroed();
/// a.values_matrix_mut()[(1, 2)] = 5.0; // row 1, column 2 -> values[1 + 2 * 2]
/// assert_eq!(a.values[5], 5.0);
/// ```
///
/// # Safety
///
/// Implementors must be `#[repr(C)]` structs without padding whose fields are all [`Field`]s, and
/// `FIELDS` must describe them exactly. Do not implement this trait by hand; use the derive.
pub unsafe trait Message: bytemuck::Pod + Field {
    /// Stable identifier of this message type (see the [module docs](self)).
    const TYPE_ID: u64;
    /// The stable name: the struct's name or `#[psyne(name = "...")]`.
    const NAME: &'static str;
    /// Hash of the complete layout: field names, element types, shapes, offsets, sizes, total size
    /// and alignment.
    const FINGERPRINT: u64;
    /// One entry per field, in declaration (and memory) order.
    const FIELDS: &'static [FieldSchema];

    #[doc(hidden)]
    /// Evaluating this constant runs the layout checks of const-generic messages (after
    /// monomorphisation). Only the derive defines it.
    const __PSYNE_LAYOUT_CHECKED: ();

    /// Everything known about this type's layout, as one value (for printing and comparing).
    fn schema() -> MessageSchema {
        MessageSchema {
            name: Self::NAME,
            type_id: Self::TYPE_ID,
            fingerprint: Self::FINGERPRINT,
            size: core::mem::size_of::<Self>(),
            align: core::mem::align_of::<Self>(),
            fields: Self::FIELDS,
        }
    }
}

/// A summary of a message type's layout, returned by [`Message::schema`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageSchema {
    /// [`Message::NAME`].
    pub name: &'static str,
    /// [`Message::TYPE_ID`].
    pub type_id: u64,
    /// [`Message::FINGERPRINT`].
    pub fingerprint: u64,
    /// `size_of::<T>()` in bytes.
    pub size: usize,
    /// `align_of::<T>()` in bytes.
    pub align: usize,
    /// [`Message::FIELDS`].
    pub fields: &'static [FieldSchema],
}

/// The element type of a field: a number type or a nested message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElemType {
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// `i8`
    I8,
    /// `i16`
    I16,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `u8`
    U8,
    /// `u16`
    U16,
    /// `u32`
    U32,
    /// `u64`
    U64,
    /// `half::f16` (feature `half`)
    F16,
    /// `half::bf16` (feature `half`)
    BF16,
    /// Another message type, nested by value.
    Message {
        /// The nested type's [`Message::NAME`].
        name: &'static str,
        /// The nested type's [`Message::FINGERPRINT`].
        fingerprint: u64,
    },
}

impl ElemType {
    /// The Rust spelling of the element type (`"f32"`, ...), or the nested message's name.
    pub const fn name(&self) -> &'static str {
        match self {
            ElemType::F32 => "f32",
            ElemType::F64 => "f64",
            ElemType::I8 => "i8",
            ElemType::I16 => "i16",
            ElemType::I32 => "i32",
            ElemType::I64 => "i64",
            ElemType::U8 => "u8",
            ElemType::U16 => "u16",
            ElemType::U32 => "u32",
            ElemType::U64 => "u64",
            ElemType::F16 => "f16",
            ElemType::BF16 => "bf16",
            ElemType::Message { name, .. } => name,
        }
    }

    /// A hash of this element type, used by fingerprints; a nested message contributes its own
    /// fingerprint, so changing the inner layout changes the outer fingerprint too.
    pub const fn hash(&self) -> u64 {
        match self {
            ElemType::Message { fingerprint, .. } => *fingerprint,
            other => fnv1a64(other.name().as_bytes()),
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Largest number of array dimensions a field may have.
pub const MAX_RANK: usize = 4;

/// The shape of a field: `[]` for a scalar, `[N]` for `[T; N]`, `[R, C]` for a matrix stored as
/// `[[T; R]; C]` or as `[T; R*C]` with `#[psyne(matrix(rows = R, cols = C))]` (column-major:
/// rows first, as in nalgebra).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    rank: usize,
    dims: [usize; MAX_RANK],
}

impl Shape {
    /// The shape of a scalar.
    pub const SCALAR: Shape = Shape {
        rank: 0,
        dims: [0; MAX_RANK],
    };

    /// Builds a shape from its dimensions, innermost (fastest-varying) first; `None` if there are
    /// more than [`MAX_RANK`].
    pub const fn new(dims: &[usize]) -> Option<Shape> {
        if dims.len() > MAX_RANK {
            return None;
        }
        let mut out = Shape::SCALAR;
        while out.rank < dims.len() {
            out.dims[out.rank] = dims[out.rank];
            out.rank += 1;
        }
        Some(out)
    }

    /// This shape with one more (outer, slower-varying) dimension appended.
    ///
    /// Used by the [`Field`] impl of arrays; fails to compile (const panic) beyond [`MAX_RANK`].
    pub const fn push_outer(self, n: usize) -> Shape {
        assert!(
            self.rank < MAX_RANK,
            "psyne: arrays nested deeper than 4 levels are not supported as message fields"
        );
        let mut out = self;
        out.dims[out.rank] = n;
        out.rank += 1;
        out
    }

    /// The dimensions, innermost first.
    pub const fn as_slice(&self) -> &[usize] {
        self.dims.split_at(self.rank).0
    }

    /// Number of dimensions.
    pub const fn rank(&self) -> usize {
        self.rank
    }

    /// Number of elements (1 for a scalar).
    pub const fn len(&self) -> usize {
        let mut n = 1;
        let mut i = 0;
        while i < self.rank {
            n *= self.dims[i];
            i += 1;
        }
        n
    }

    /// Whether the shape holds no elements (some dimension is 0).
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str("x")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// One field of a message, as recorded in [`Message::FIELDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FieldSchema {
    /// The field's name in the struct.
    pub name: &'static str,
    /// Element type (after removing all array dimensions).
    pub elem: ElemType,
    /// Array dimensions, innermost first (see [`Shape`]).
    pub shape: Shape,
    /// Byte offset of the field from the start of the message.
    pub offset: usize,
    /// Size of the field in bytes.
    pub size: usize,
}

/// A type that may appear as a field of a message: the ten number types, `half::f16`/`bf16`
/// (feature `half`), other messages, and arrays of any of these.
///
/// # Safety
///
/// Implementors are [`bytemuck::Pod`] and `ELEM`/`SHAPE` describe them truthfully. Implemented by
/// this crate for numbers and arrays and by the derive for messages; do not implement it by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a field of a psyne message",
    label = "not a number, an array of numbers or a `#[derive(PsyneMessage)]` struct",
    note = "message fields must be plain old data: f32, f64, i8..i64, u8..u64, arrays of them, or other structs that derive `PsyneMessage`"
)]
pub unsafe trait Field: bytemuck::Pod {
    /// Element type once all array dimensions are removed.
    const ELEM: ElemType;
    /// Array dimensions, innermost first.
    const SHAPE: Shape;
}

macro_rules! number_fields {
    ($($t:ty => $e:ident),* $(,)?) => {$(
        // SAFETY: a primitive number is `Pod`, a scalar of its own element type.
        unsafe impl Field for $t {
            const ELEM: ElemType = ElemType::$e;
            const SHAPE: Shape = Shape::SCALAR;
        }
    )*};
}

number_fields!(
    f32 => F32, f64 => F64, i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64,
);

#[cfg(feature = "half")]
number_fields!(half::f16 => F16, half::bf16 => BF16);

// SAFETY: an array of `Pod` fields is `Pod` (bytemuck's `min_const_generics` impl) with no padding
// between elements; its element type is the inner one and it adds one outer dimension.
unsafe impl<T: Field, const N: usize> Field for [T; N] {
    const ELEM: ElemType = T::ELEM;
    const SHAPE: Shape = T::SHAPE.push_outer(N);
}

/// 64-bit FNV-1a offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// 64-bit FNV-1a prime.
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a hash of `bytes`, usable in constants. Used for type ids and fingerprints.
///
/// ```
/// assert_eq!(psyne::fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
/// assert_eq!(psyne::fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub const fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_extend(FNV_OFFSET, bytes)
}

/// Continues an FNV-1a hash with more bytes.
pub const fn fnv1a64_extend(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

/// Continues an FNV-1a hash with the 8 little-endian bytes of `value`.
pub const fn fnv1a64_u64(hash: u64, value: u64) -> u64 {
    fnv1a64_extend(hash, &value.to_le_bytes())
}

/// Computes a layout fingerprint: every field's name, element type, shape, offset and size, then
/// the total size and alignment. Called by the derive; exposed so tools can recompute it.
pub const fn fingerprint(fields: &[FieldSchema], size: usize, align: usize) -> u64 {
    let mut h = fnv1a64(b"psyne-layout-v1");
    let mut i = 0;
    while i < fields.len() {
        let f = &fields[i];
        h = fnv1a64_u64(h, f.name.len() as u64);
        h = fnv1a64_extend(h, f.name.as_bytes());
        h = fnv1a64_u64(h, f.elem.hash());
        h = fnv1a64_u64(h, f.shape.rank() as u64);
        let dims = f.shape.as_slice();
        let mut d = 0;
        while d < dims.len() {
            h = fnv1a64_u64(h, dims[d] as u64);
            d += 1;
        }
        h = fnv1a64_u64(h, f.offset as u64);
        h = fnv1a64_u64(h, f.size as u64);
        i += 1;
    }
    h = fnv1a64_u64(h, fields.len() as u64);
    h = fnv1a64_u64(h, size as u64);
    fnv1a64_u64(h, align as u64)
}

/// A row-major copy into or out of a message field was given a buffer of the wrong length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LengthMismatch {
    /// The field involved.
    pub field: &'static str,
    /// Number of elements the field holds.
    pub expected: usize,
    /// Number of elements in the buffer that was passed.
    pub found: usize,
}

impl fmt::Display for LengthMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field `{}` holds {} elements but the buffer has {}",
            self.field, self.expected, self.found
        )
    }
}

impl std::error::Error for LengthMismatch {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn array_shapes_are_innermost_first() {
        assert_eq!(<[[f32; 3]; 2] as Field>::SHAPE.as_slice(), &[3, 2]);
        assert_eq!(<[[f32; 3]; 2] as Field>::SHAPE.len(), 6);
        assert_eq!(<u8 as Field>::SHAPE.as_slice(), &[] as &[usize]);
        assert_eq!(<[i16; 7] as Field>::ELEM, ElemType::I16);
        assert_eq!(format!("{}", <[[f32; 3]; 2] as Field>::SHAPE), "[3x2]");
    }

    #[test]
    fn shape_new_rejects_too_many_dims() {
        assert!(Shape::new(&[1, 2, 3, 4, 5]).is_none());
        assert_eq!(Shape::new(&[2, 3]).unwrap().as_slice(), &[2, 3]);
    }

    #[test]
    fn header_layout() {
        assert_eq!(MessageHeader::SIZE, 32);
        assert_eq!(core::mem::offset_of!(MessageHeader, type_id), 8);
        assert_eq!(core::mem::offset_of!(MessageHeader, timestamp_ns), 24);
        let h = MessageHeader {
            flags: MessageHeader::FLAG_WRAP,
            ..Default::default()
        };
        assert!(h.is_wrap());
    }
}
