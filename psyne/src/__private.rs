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
