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
//!    accessors, and the layout checks that need the compiler's knowledge of sizes (padding,
//!    shapes involving const generics), which run as constant evaluation: eagerly for ordinary
//!    structs, after monomorphisation for const-generic ones.

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
