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
//! Modules, from the bottom up: [`message`] (what a message is).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod message;
pub mod slab;

pub use message::{
    ElemType, Field, FieldSchema, LengthMismatch, Message, MessageHeader, MessageSchema, Shape,
    fnv1a64,
};
pub use psyne_derive::PsyneMessage;
pub use slab::{Slab, SlabBuilder, SlabError};

/// Items used by the code that `#[derive(PsyneMessage)]` generates. Not a public API: names and
/// signatures change between versions without notice.
#[doc(hidden)]
pub mod __private {
    pub use crate::message::{
        ElemType, Field, FieldSchema, LengthMismatch, Message, Shape, fingerprint, fnv1a64,
        fnv1a64_u64,
    };
    pub use bytemuck;
    pub use core;
    pub use nalgebra;

    /// `Some(shape)` unwrapped in a constant (the derive never builds more than 2 dimensions).
    pub const fn shape(dims: &[usize]) -> Shape {
        match Shape::new(dims) {
            Some(s) => s,
            None => panic!("psyne: too many dimensions"),
        }
    }
}
