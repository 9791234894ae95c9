//! Items used by the code that `#[derive(PsyneMessage)]` generates. Not a public API.

pub use crate::message::{
    ElemType, Field, FieldSchema, LengthMismatch, Message, Shape, fingerprint, fnv1a64, fnv1a64_u64,
};
pub use bytemuck;
pub use core;
pub use nalgebra;

/// A [`Shape`] from dimensions, unwrapped in a constant (the derive builds at most 2).
pub const fn shape(dims: &[usize]) -> Shape {
    match Shape::new(dims) {
        Some(s) => s,
        None => panic!("psyne: too many dimensions"),
    }
}

/// Copies row-major `src` (`src[i * cols + j]` is `(i, j)`) into column-major `dst`
/// (`dst[i + j * rows]`). Leaves `dst` unchanged on a length mismatch.
pub fn from_row_major<T: Copy>(
    dst: &mut [T],
    src: &[T],
    rows: usize,
    cols: usize,
    field: &'static str,
) -> Result<(), LengthMismatch> {
    let n = rows * cols;
    if src.len() != n || dst.len() != n {
        return Err(LengthMismatch {
            field,
            expected: n,
            found: src.len(),
        });
    }
    for (j, col) in dst.chunks_exact_mut(rows.max(1)).enumerate().take(cols) {
        for (i, d) in col.iter_mut().enumerate() {
            *d = src[i * cols + j];
        }
    }
    Ok(())
}

/// Copies column-major `src` (`src[i + j * rows]` is `(i, j)`) into row-major `dst`
/// (`dst[i * cols + j]`). Leaves `dst` unchanged on a length mismatch.
pub fn to_row_major<T: Copy>(
    src: &[T],
    dst: &mut [T],
    rows: usize,
    cols: usize,
    field: &'static str,
) -> Result<(), LengthMismatch> {
    let n = rows * cols;
    if src.len() != n || dst.len() != n {
        return Err(LengthMismatch {
            field,
            expected: n,
            found: dst.len(),
        });
    }
    for (j, col) in src.chunks_exact(rows.max(1)).enumerate().take(cols) {
        for (i, s) in col.iter().enumerate() {
            dst[i * cols + j] = *s;
        }
    }
    Ok(())
}

/// A message assembled during constant evaluation, so that the derive's layout errors can state
/// computed numbers (`panic!("{}", s)` with a `&str` is the one formatted panic allowed in a
/// constant). Parts that no longer fit are dropped whole, so the text stays valid UTF-8.
pub struct ConstMessage {
    buf: [u8; ConstMessage::CAPACITY],
    len: usize,
}

impl ConstMessage {
    /// Bytes a message can hold; the derive's messages are well under this.
    const CAPACITY: usize = 1024;

    /// An empty message.
    #[expect(
        clippy::new_without_default,
        reason = "used only in constants, where `Default::default` cannot be called"
    )]
    pub const fn new() -> Self {
        ConstMessage {
            buf: [0; Self::CAPACITY],
            len: 0,
        }
    }

    /// Appends `s`, or nothing if it does not fit whole.
    pub const fn str(mut self, s: &str) -> Self {
        let bytes = s.as_bytes();
        if bytes.len() > Self::CAPACITY - self.len {
            return self;
        }
        let mut i = 0;
        while i < bytes.len() {
            self.buf[self.len + i] = bytes[i];
            i += 1;
        }
        self.len += bytes.len();
        self
    }

    /// Appends `n` in decimal.
    pub const fn num(self, mut n: usize) -> Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let (_, digits) = digits.split_at(start);
        match core::str::from_utf8(digits) {
            Ok(s) => self.str(s),
            Err(_) => self,
        }
    }

    /// Appends `n` followed by "byte" or "bytes".
    pub const fn bytes(self, n: usize) -> Self {
        self.num(n).str(if n == 1 { " byte" } else { " bytes" })
    }

    /// The text so far.
    pub const fn as_str(&self) -> &str {
        let (text, _) = self.buf.split_at(self.len);
        match core::str::from_utf8(text) {
            Ok(s) => s,
            // Unreachable: only whole `str`s are ever appended.
            Err(_) => "psyne: layout error (message not representable)",
        }
    }
}

/// The smallest `m` such that `m * unit` is a multiple of `align` (a power of two): how many
/// elements of `unit` bytes must be grouped for their size to keep `align`.
pub const fn group_for_alignment(unit: usize, align: usize) -> usize {
    let mut m = 1;
    while m < align && !(m * unit).is_multiple_of(align) {
        m *= 2;
    }
    m
}
