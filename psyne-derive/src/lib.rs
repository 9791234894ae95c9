//! `#[derive(PsyneMessage)]`: turns a `#[repr(C)]` struct of numbers and tensors into a
//! `psyne::Message`.
//!
//! Use it through the `psyne` crate (`psyne::PsyneMessage`); the generated code names only
//! `::psyne::...` paths. The derive runs in three stages, like serde_derive:
//!
//! 1. **parse** (`ast`, `attr`): a typed model of the struct that keeps the original syn
//!    nodes for spans;
//! 2. **check** (`check`): every rule that can be decided from the tokens (repr, generics, field
//!    types that are never plain old data, attribute syntax, literal matrix shapes). Errors are
//!    collected in a `ctxt::Ctxt` so one compile reports every mistake, each at its own span;
//! 3. **expand** (`expand`): the `Message`, `Field`, `Pod` and `Zeroable` impls, the nalgebra
//!    accessors, and the layout checks that need the compiler's knowledge of sizes, which run as
//!    constant evaluation. Padding is always decided at the struct's definition (for a
//!    const-generic struct, for every value of its parameters at once: see below); flat matrix
//!    shapes that involve a const parameter are checked per instantiation, when its constants or
//!    accessors are first used.
//!
//! # Padding in const-generic messages
//!
//! `Pod` is implemented for every instantiation of a const-generic message, and a program can
//! read a value's bytes (`bytemuck::bytes_of`, a channel) without evaluating any psyne constant.
//! Stable Rust cannot make the impls depend on sizes, so the derive proves at the definition
//! that *no* instantiation has padding, and rejects the struct otherwise. The rule:
//!
//! 1. a field whose type names a const parameter must be an array, `[T; N]` or nested
//!    (`[[T; R]; C]`, ...), whose element `T` (the outermost element type that names no
//!    parameter) is a number or a message with concrete arguments. Other types that name a
//!    parameter (`Inner<N>`, `[Inner<N>; 2]`, a type alias or macro) are rejected at the field's
//!    type, since their size and alignment cannot be bounded before instantiation;
//! 2. the size of each such `T` must be a multiple of the message's alignment (the largest
//!    alignment of any field, or `#[repr(align(A))]` if larger). Otherwise some lengths (at the
//!    latest 0 and 1, which differ by one `T`) leave a later field or the end misaligned; the
//!    error, at the field, gives the sizes and a fix: group elements (`[[u8; 4]; N]` instead of
//!    `[u8; N]` next to a `u32`), use a larger element, or make the length a literal;
//! 3. the other fields, laid out as if those arrays were empty, must have no padding. By 2 this
//!    padding is the same for every instantiation, and the error states its number of bytes and
//!    where it is, as for an ordinary struct.
//!
//! With 2 and 3, `repr(C)` (each field at the previous end rounded up to its alignment, the size
//! rounded up to the struct's alignment) never adds a byte, whatever the parameters. The rule is
//! exact when each such array's length is its own parameter; when lengths are tied (`2 * N`, or
//! one `N` for two `[u8; N]` arrays) it may reject a struct that has no padding in practice:
//! write the arrays so that the rule sees it (e.g. `[[T; 2]; N]`). `psyne_schemas::Matrix<R, C>` and `Gradient<N>` (all
//! fields 4 bytes wide and 4-byte aligned) satisfy it.

mod ast;
mod attr;
mod check;
mod ctxt;
mod expand;

use proc_macro::TokenStream;

/// Derives `psyne::Message` (plus `bytemuck::Pod`, `bytemuck::Zeroable` and `psyne::Field`) for
/// a `#[repr(C)]` struct with named, plain-old-data fields, and generates nalgebra views of its
/// tensor fields. See the `psyne` crate documentation for the full description.
#[proc_macro_derive(PsyneMessage, attributes(psyne))]
pub fn derive_psyne_message(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    match expand::derive(&input) {
        Ok(tokens) => tokens.into(),
        Err(errors) => errors
            .into_iter()
            .map(|e| e.to_compile_error())
            .collect::<proc_macro2::TokenStream>()
            .into(),
    }
}
