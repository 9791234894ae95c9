//! A tour of the predeclared message types and one user-defined type: name, type id, layout
//! fingerprint, size, alignment, and every field with its offset, element type and shape.
//!
//! Run with `cargo run --release --example schema_tour` (it takes no options; `--help` prints
//! what it shows).

use psyne::{Message, MessageSchema, PsyneMessage};
use psyne_examples::args::Args;
use psyne_schemas::{
    Embedding64, Embedding128, Embedding256, Embedding512, Embedding768, Embedding1024, Gradient,
    Matrix,
};

/// A user-defined message: an attention head's projection with its bias and bookkeeping.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
#[psyne(name = "tour.AttentionHead")]
struct AttentionHead {
    /// Query projection, 4 rows x 8 columns, stored column-major in a flat array.
    #[psyne(matrix(rows = 4, cols = 8))]
    w_q: [f32; 32],
    /// Bias vector.
    bias: [f32; 4],
    /// A nested message: the embedding this head attends from.
    source: Embedding64,
    head: u32,
    layer: u32,
}

/// What `--help` prints.
const USAGE: &str = "\
A tour of psyne's predeclared message types and one user-defined type: name, type id, layout
fingerprint, size, alignment and every field, then the generated nalgebra views in use.

usage: schema_tour   (no options)
";

fn print_schema(rust_type: &str, s: &MessageSchema) {
    println!(
        "{rust_type:<18} name {:<18} type_id {:#018x}  fingerprint {:#018x}  size {:>6} B  \
         align {}",
        s.name, s.type_id, s.fingerprint, s.size, s.align
    );
    for f in s.fields {
        println!(
            "    {:<14} offset {:>7}  size {:>7} B  {:<12} shape {}",
            f.name,
            f.offset,
            f.size,
            f.elem.name(),
            f.shape
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    Args::parse(&[], USAGE)?;
    let schemas = [
        ("Embedding64", Embedding64::schema()),
        ("Embedding128", Embedding128::schema()),
        ("Embedding256", Embedding256::schema()),
        ("Embedding512", Embedding512::schema()),
        ("Embedding768", Embedding768::schema()),
        ("Embedding1024", Embedding1024::schema()),
        ("Matrix<4, 4>", Matrix::<4, 4>::schema()),
        ("Matrix<256, 256>", Matrix::<256, 256>::schema()),
        ("Gradient<256>", Gradient::<256>::schema()),
        ("AttentionHead", AttentionHead::schema()),
    ];
    println!("psyne message schemas (shapes are innermost-first: [rows x cols] for matrices)\n");
    for (rust_type, s) in &schemas {
        print_schema(rust_type, s);
        println!();
    }

    // The generated views in action: y = W_q * x for the user type, computed in place.
    let mut head: AttentionHead = bytemuck::Zeroable::zeroed();
    head.w_q_from_row_major(&(0..32).map(|k| k as f32).collect::<Vec<_>>())?;
    head.bias_vector_mut().fill(0.5);
    let x = nalgebra::SVector::<f32, 8>::repeat(1.0);
    let y = head.w_q_matrix() * x + head.bias_vector();
    println!("W_q (row-major 0..32) * ones(8) + 0.5 = {:?}", y.as_slice());
    Ok(())
}
