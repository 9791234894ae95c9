//! A typed model of the derive input. Keeps references to the original syn nodes so that every
//! error and every generated item can carry the span of the code it came from.

use syn::{Data, DeriveInput, Expr, Fields, Ident, Type};

use crate::attr::{self, ContainerAttrs, FieldAttrs};
use crate::ctxt::Ctxt;

/// The struct being derived.
pub struct Container<'a> {
    pub input: &'a DeriveInput,
    pub attrs: ContainerAttrs,
    pub fields: Vec<Field<'a>>,
    /// The largest `#[repr(align(N))]`, filled in by `check`.
    pub repr_align: Option<u64>,
}

/// One named field.
pub struct Field<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
    pub attrs: FieldAttrs,
    pub tensor: Tensor<'a>,
    /// How the field's size depends on the const parameters, filled in by `check`.
    pub layout: Layout<'a>,
}

/// How a field's size depends on the struct's const parameters: what the padding proof of a
/// const-generic message (`check::check_generic_layout`, `expand::generic_layout_proof`) knows
/// about it before any instantiation.
pub enum Layout<'a> {
    /// The type names no const parameter: its size and alignment are constants.
    Fixed,
    /// An array (possibly nested) whose length depends on a const parameter: its size is a
    /// whole number (possibly zero) of `unit`s, and its alignment is `unit`'s. `unit` is the
    /// outermost element type that names no const parameter, and `len` the length of the array
    /// of `unit`s.
    Repeated { unit: &'a Type, len: &'a Expr },
}

/// What accessors a field gets.
pub enum Tensor<'a> {
    /// Not a tensor of numbers (a scalar, a nested message, an array of messages, a deeper
    /// array): no accessors.
    None,
    /// `[T; N]`: `x_vector()` / `x_vector_mut()`.
    Vector { elem: &'a Type, len: &'a Expr },
    /// `[[T; R]; C]`, or `[T; N]` with `#[psyne(matrix(rows = R, cols = C))]`: `x_matrix()`,
    /// `x_matrix_mut()`, `x_from_row_major()`, `x_to_row_major()`.
    Matrix {
        elem: &'a Type,
        rows: Box<Expr>,
        cols: Box<Expr>,
        /// For a flat `[T; N]` field, `N` (checked against `rows * cols`).
        flat_len: Option<&'a Expr>,
    },
}

impl<'a> Container<'a> {
    /// Builds the model, reporting what cannot be modelled (enums, unions, tuple structs).
    /// Returns `None` when there is nothing sensible to check further.
    pub fn from_ast(cx: &Ctxt, input: &'a DeriveInput) -> Option<Container<'a>> {
        let attrs = attr::container(cx, &input.attrs);
        let fields = match &input.data {
            Data::Struct(s) => match &s.fields {
                Fields::Named(named) if named.named.is_empty() => {
                    cx.error_spanned_by(
                        &input.ident,
                        "a psyne message needs at least one field: add e.g. `data: [f32; N]`",
                    );
                    return None;
                }
                Fields::Named(named) => named
                    .named
                    .iter()
                    .map(|f| {
                        let attrs = attr::field(cx, &f.attrs);
                        Field {
                            ident: f.ident.as_ref().expect("named field has an ident"),
                            ty: &f.ty,
                            attrs,
                            tensor: Tensor::None,
                            layout: Layout::Fixed,
                        }
                    })
                    .collect(),
                Fields::Unnamed(_) => {
                    cx.error_spanned_by(
                        &s.fields,
                        "psyne messages need named fields (the generated accessors are named \
                         after them): write `struct Name { field: Type, .. }`",
                    );
                    return None;
                }
                Fields::Unit => {
                    cx.error_spanned_by(
                        &input.ident,
                        "a psyne message needs at least one field: add e.g. `data: [f32; N]`",
                    );
                    return None;
                }
            },
            Data::Enum(e) => {
                cx.error_spanned_by(
                    e.enum_token,
                    "`PsyneMessage` cannot be derived for an enum: not every bit pattern is a \
                     valid variant, so it is not plain old data; use a struct with a `u32` tag \
                     field instead",
                );
                return None;
            }
            Data::Union(u) => {
                cx.error_spanned_by(
                    u.union_token,
                    "`PsyneMessage` cannot be derived for a union: its fields overlap, so the \
                     layout has no single schema; use a struct",
                );
                return None;
            }
        };
        Some(Container {
            input,
            attrs,
            fields,
            repr_align: None,
        })
    }

    pub fn ident(&self) -> &'a Ident {
        &self.input.ident
    }

    /// The stable name: `#[psyne(name = "...")]` or the struct's identifier.
    pub fn name(&self) -> String {
        match &self.attrs.name {
            Some(n) => n.value.clone(),
            None => self.input.ident.to_string(),
        }
    }

    /// Whether the struct has const generic parameters (then some checks run after
    /// monomorphisation).
    pub fn is_generic(&self) -> bool {
        self.input.generics.const_params().next().is_some()
    }
}

/// Numbers that a tensor view may hold, by their last path segment.
const NUMBERS: &[&str] = &[
    "f32", "f64", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "f16", "bf16",
];

/// Strips parentheses and invisible groups around a type.
pub fn ungroup(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Paren(p) => ty = &p.elem,
            Type::Group(g) => ty = &g.elem,
            _ => return ty,
        }
    }
}

/// Whether `ty` is spelled as one of the number types (`f32`, `half::f16`, ...).
pub fn is_number(ty: &Type) -> bool {
    match ungroup(ty) {
        Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.arguments.is_none() && NUMBERS.iter().any(|n| s.ident == n)),
        _ => false,
    }
}

/// Tokens as a user would write them (`[u8; 4]`, not `[u8 ; 4]`), for messages.
pub fn type_string(tokens: &impl quote::ToTokens) -> String {
    let mut s = tokens.to_token_stream().to_string();
    for (from, to) in [
        (" ;", ";"),
        ("[ ", "["),
        (" ]", "]"),
        ("( ", "("),
        (" )", ")"),
        (" < ", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" :: ", "::"),
        (":: ", "::"),
        (" ,", ","),
        ("{ ", "{"),
        (" }", "}"),
    ] {
        s = s.replace(from, to);
    }
    s
}
