//! `#[derive(PsyneMessage)]` (placeholder while the real derive is written).
use proc_macro::TokenStream;
/// Derives `psyne::Message`.
#[proc_macro_derive(PsyneMessage, attributes(psyne))]
pub fn derive_psyne_message(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
