//! Predeclared psyne message types, written with `#[derive(PsyneMessage)]` exactly as a user
//! would write their own.
//!
//! * [`Embedding64`] .. [`Embedding1024`]: one embedding vector (`data: [f32; N]`) with the batch
//!   index and layer it belongs to;
//! * [`Matrix`]`<R, C>`: an `R x C` matrix of `f32` stored column-major (`data: [[f32; R]; C]`,
//!   element `(i, j)` is `data[j][i]`), for weights and activations;
//! * [`Gradient`]`<N>`: a gradient with its momentum buffer and optimiser metadata.
//!
//! ```
//! use psyne::Message;
//! use psyne_schemas::{Embedding256, Matrix};
//!
//! let mut x: Embedding256 = psyne::bytemuck::Zeroable::zeroed();
//! x.data_vector_mut().fill(1.0);
//! let mut w: Matrix<4, 256> = psyne::bytemuck::Zeroable::zeroed();
//! w.data_matrix_mut().fill(0.5);
//! let y = w.data_matrix() * x.data_vector(); // a 4-vector, every entry 128
//! assert_eq!(y[3], 128.0);
//! assert_ne!(Matrix::<4, 256>::TYPE_ID, Matrix::<256, 4>::TYPE_ID);
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use psyne::PsyneMessage;

macro_rules! embeddings {
    ($($name:ident => $n:literal),* $(,)?) => {$(
        #[doc = concat!("An embedding vector of ", stringify!($n), " `f32` values (",
                        stringify!($n), " * 4 + 8 bytes), with its batch index and layer.")]
        ///
        /// `data_vector()` / `data_vector_mut()` give nalgebra views of `data`.
        #[derive(Clone, Copy, Debug, PsyneMessage)]
        #[repr(C)]
        pub struct $name {
            /// The embedding.
            pub data: [f32; $n],
            /// Index of this sample in its batch.
            pub batch_idx: u32,
            /// The layer that produced it.
            pub layer_id: u32,
        }
    )*};
}

embeddings!(
    Embedding64 => 64,
    Embedding128 => 128,
    Embedding256 => 256,
    Embedding512 => 512,
    Embedding768 => 768,
    Embedding1024 => 1024,
);

/// An `R x C` matrix of `f32` for weights and activations, stored column-major: `data` is `C`
/// columns of `R` values and element `(i, j)` is `data[j][i]`.
///
/// `data_matrix()` / `data_matrix_mut()` give nalgebra views; `data_from_row_major()` /
/// `data_to_row_major()` copy from and to row-major (PyTorch, C) buffers.
#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C)]
pub struct Matrix<const R: usize, const C: usize> {
    /// The values, column by column.
    pub data: [[f32; R]; C],
    /// Index of this matrix in its batch.
    pub batch_idx: u32,
    /// The layer it belongs to.
    pub layer_id: u32,
}

/// A gradient of `N` parameters together with its momentum buffer, for optimiser traffic.
#[derive(Clone, Copy, Debug, PsyneMessage)]
#[repr(C)]
pub struct Gradient<const N: usize> {
    /// The gradient `g`.
    pub grad: [f32; N],
    /// The momentum buffer `m`.
    pub momentum: [f32; N],
    /// The layer the parameters belong to.
    pub layer_id: u32,
    /// Which parameter tensor of that layer.
    pub parameter_id: u32,
    /// Optimiser step.
    pub iteration: u32,
    /// Learning rate used for this step.
    pub learning_rate: f32,
}

impl<const N: usize> Gradient<N> {
    /// Updates the momentum in place: `m = beta * m + (1 - beta) * g`.
    ///
    /// ```
    /// let mut g: psyne_schemas::Gradient<2> = psyne::bytemuck::Zeroable::zeroed();
    /// g.grad = [1.0, -2.0];
    /// g.momentum = [0.5, 0.5];
    /// g.apply_momentum(0.9);
    /// assert!((g.momentum[0] - 0.55).abs() < 1e-6);
    /// assert!((g.momentum[1] - 0.25).abs() < 1e-6);
    /// ```
    pub fn apply_momentum(&mut self, beta: f32) {
        for (m, g) in self.momentum.iter_mut().zip(&self.grad) {
            *m = beta * *m + (1.0 - beta) * *g;
        }
    }
}

/// Every ```` ```rust ```` block of the README, compiled and run as doctests of this crate: as
/// code of a crate that depends on `psyne` and `psyne-schemas` (`cargo test -p psyne-schemas
/// --doc`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
