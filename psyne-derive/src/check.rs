//! The rules that can be decided from the tokens alone, one function per rule. Each reports into
//! the [`Ctxt`] at the culprit's span with a message that names the field and says how to fix
//! it. Rules that need sizes (padding, shapes with const generics) are emitted as constant
//! evaluation by `expand`.

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Expr, GenericParam, Ident, Lit, Type};

use crate::ast::{Container, Layout, Tensor, is_number, type_string, ungroup};
use crate::attr;
use crate::ctxt::Ctxt;

/// Runs every rule; fills in each field's [`Tensor`] classification.
pub fn check(cx: &Ctxt, cont: &mut Container<'_>) {
    check_repr(cx, cont);
    check_generics(cx, cont);
    check_type_id(cx, cont);
    for field in &mut cont.fields {
        check_field_type(cx, field.ident, field.ty);
        field.tensor = classify(cx, field.ident, field.ty, &field.attrs);
    }
    check_generic_layout(cx, cont);
}

/// The layout must be defined: `#[repr(C)]` (optionally with `align(N)`).
fn check_repr(cx: &Ctxt, cont: &mut Container<'_>) {
    let repr = attr::repr(cx, &cont.input.attrs);
    cont.repr_align = repr.align;
    if repr.c.is_none() {
        let ident = cont.ident();
        cx.error_spanned_by(
            ident,
            format!(
                "`{ident}` needs a defined layout to be shared: add `#[repr(C)]` above \
                 `struct {ident}` (Rust may reorder fields otherwise)"
            ),
        );
    }
}

/// Only const generics: a type parameter could be anything (a `Vec`, a reference), and a
/// lifetime would mean borrowed data.
fn check_generics(cx: &Ctxt, cont: &Container<'_>) {
    for param in &cont.input.generics.params {
        match param {
            GenericParam::Type(t) => cx.error_spanned_by(
                t,
                format!(
                    "type parameter `{}` is not supported in a psyne message: its layout must be \
                     known; use a concrete element type (e.g. `f32`) or a const generic \
                     (`const N: usize`)",
                    t.ident
                ),
            ),
            GenericParam::Lifetime(l) => cx.error_spanned_by(
                l,
                format!(
                    "lifetime `{}` is not allowed: a psyne message owns its data and cannot \
                     borrow; store the values inline (e.g. `[f32; N]`)",
                    l.lifetime
                ),
            ),
            GenericParam::Const(_) => {}
        }
    }
}

/// An explicit id would be shared by every instantiation of a generic struct.
fn check_type_id(cx: &Ctxt, cont: &Container<'_>) {
    if let Some(id) = &cont.attrs.type_id
        && cont.is_generic()
    {
        cx.error_at(
            id.span,
            "`type_id` cannot be set on a const-generic struct: every instantiation needs its \
             own id; use `#[psyne(name = \"...\")]` (the id is then derived from the name and \
             the const parameters)",
        );
    }
}

/// A const-generic message must be free of padding for *every* value of its parameters, because
/// `Pod` is implemented for every instantiation and nothing (`bytemuck::bytes_of`, a channel)
/// has to evaluate a psyne constant before reading its bytes. Stable Rust cannot make the impls
/// conditional on the sizes, so the proof is made before monomorphisation, from what the tokens
/// say: every field whose type names a const parameter must be an array (possibly nested) whose
/// outermost element type names none. Its size is then a whole number of that element, and its
/// alignment the element's, which `expand::generic_layout_proof` turns into constants that
/// decide "no padding for any value". Anything else that names a parameter (a const-generic
/// message, a type alias, a macro) has an alignment and a size the derive cannot bound, and is
/// rejected here.
fn check_generic_layout(cx: &Ctxt, cont: &mut Container<'_>) {
    if !cont.is_generic() {
        return;
    }
    let params: Vec<Ident> = cont
        .input
        .generics
        .const_params()
        .map(|c| c.ident.clone())
        .collect();
    let sname = cont.ident();
    for field in &mut cont.fields {
        if !names_any(field.ty.to_token_stream(), &params) {
            continue;
        }
        let mut ty = ungroup(field.ty);
        let unit = loop {
            match ty {
                Type::Array(a) if names_any(a.elem.to_token_stream(), &params) => {
                    ty = ungroup(&a.elem);
                }
                Type::Array(a) => break Some((&*a.elem, &a.len)),
                _ => break None,
            }
        };
        match unit {
            Some((unit, len)) => field.layout = Layout::Repeated { unit, len },
            None => cx.error_spanned_by(
                ty,
                format!(
                    "field `{f}` has a type that depends on a const parameter of `{sname}` but \
                     is not an array of a type that does not; a const-generic psyne message \
                     must be free of padding for every value of its parameters, which the \
                     derive proves only for fields `[T; N]` or `[[T; R]; C]` whose `T` names no \
                     parameter (a number, or a message with concrete arguments); use such an \
                     array, or give `{t}` concrete arguments",
                    f = field.ident,
                    t = type_string(ty),
                ),
            ),
        }
    }
}

/// Whether `tokens` contain one of `params`, or `Self` (which names them all).
fn names_any(tokens: TokenStream, params: &[Ident]) -> bool {
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(i) => i == "Self" || params.contains(&i),
        TokenTree::Group(g) => names_any(g.stream(), params),
        TokenTree::Punct(_) | TokenTree::Literal(_) => false,
    })
}

/// Rejects field types that are never plain old data, with a fix for each.
fn check_field_type(cx: &Ctxt, field: &syn::Ident, ty: &Type) {
    let ty = ungroup(ty);
    let advice: Option<String> = match ty {
        Type::Array(a) => {
            check_field_type(cx, field, &a.elem);
            None
        }
        Type::Reference(_) => Some(
            "is a reference: a message cannot borrow (the pointer is meaningless to the \
             receiver); store the data inline, e.g. `[f32; N]`"
                .into(),
        ),
        Type::Ptr(_) => Some(
            "is a raw pointer: it is meaningless in another process or machine; store the data \
             inline, or an offset as `u64`"
                .into(),
        ),
        Type::Slice(_) => {
            Some("is a slice, which has no fixed size; use a fixed-size array `[T; N]`".into())
        }
        Type::Tuple(t) if t.elems.is_empty() => {
            Some("is `()`, which carries no data; remove the field".into())
        }
        Type::Tuple(_) => Some(
            "is a tuple, whose layout Rust does not fix; use an array or a nested \
             `#[derive(PsyneMessage)]` struct"
                .into(),
        ),
        Type::BareFn(_) => {
            Some("is a function pointer, which is meaningless in another process; remove it".into())
        }
        Type::TraitObject(_) | Type::ImplTrait(_) => Some(
            "is a trait object, which has no fixed size; use a concrete plain-old-data type".into(),
        ),
        Type::Never(_) => Some("is `!`, which has no values; remove the field".into()),
        Type::Path(p) => p.path.segments.last().and_then(|seg| {
            let id = seg.ident.to_string();
            let fix = match id.as_str() {
                "bool" => {
                    "is `bool`: only the bytes 0 and 1 are valid booleans, so it is not \
                           plain old data; use `u8` (0 or 1)"
                }
                "char" => "is `char`: not every u32 is a valid char; use `u32` (a code point)",
                "usize" | "isize" => {
                    "has a platform-dependent size; use `u64`/`i64` (or \
                                      `u32`/`i32`) so every peer agrees on the layout"
                }
                "u128" | "i128" => {
                    "has an alignment that differs between platforms and \
                                    compilers; use two `u64` fields or `[u64; 2]`"
                }
                "str" => "is `str`, which has no fixed size; use a fixed byte array `[u8; N]`",
                "String" => {
                    "is `String`, which owns heap memory the receiver cannot see; use \
                             a fixed byte array `[u8; N]`"
                }
                "Vec" | "VecDeque" | "Box" | "Rc" | "Arc" | "HashMap" | "BTreeMap" | "HashSet"
                | "BTreeSet" => {
                    return Some(format!(
                        "is `{id}`, which owns heap memory the receiver cannot see; use a \
                         fixed-size array `[T; N]`"
                    ));
                }
                "Option" => {
                    "is an `Option`, which is not plain old data (not every bit \
                             pattern is valid); store the value plus a `u32` flag field"
                }
                "PhantomData" => {
                    "is zero-sized marker data that a message cannot carry; remove \
                                  it"
                }
                "NonZeroU8" | "NonZeroU16" | "NonZeroU32" | "NonZeroU64" | "NonZero" => {
                    "is a non-zero integer, for which the zero bit pattern is invalid; use the \
                     plain integer type"
                }
                "Cell" | "RefCell" | "UnsafeCell" | "Mutex" | "RwLock" => {
                    "has interior mutability, which cannot be shared as plain bytes; use the \
                     plain value type"
                }
                _ if id.starts_with("Atomic") => {
                    "is an atomic, which cannot be shared as plain bytes; use the plain integer \
                     type"
                }
                _ => return None,
            };
            Some(fix.to_string())
        }),
        _ => None,
    };
    if let Some(advice) = advice {
        cx.error_spanned_by(
            ty,
            format!("field `{field}` {advice}; psyne messages hold only plain old data"),
        );
    }
}

/// Decides which accessors a field gets, and checks `matrix(...)` annotations against the type.
fn classify<'a>(
    cx: &Ctxt,
    field: &syn::Ident,
    ty: &'a Type,
    attrs: &attr::FieldAttrs,
) -> Tensor<'a> {
    let ty = ungroup(ty);
    let matrix = attrs.matrix.as_ref();
    let Type::Array(outer) = ty else {
        if let Some(m) = matrix {
            cx.error_at(
                m.span,
                format!(
                    "`matrix(...)` only applies to array fields, but `{field}` is not an array; \
                     declare it as `[T; ROWS * COLS]` or `[[T; ROWS]; COLS]`, or remove the \
                     attribute"
                ),
            );
        }
        return Tensor::None;
    };
    let inner = ungroup(&outer.elem);
    if is_number(inner) {
        // `[T; N]`.
        return match matrix {
            None => Tensor::Vector {
                elem: inner,
                len: &outer.len,
            },
            Some(m) => {
                if let (Some(r), Some(c), Some(n)) = (
                    lit_usize(&m.rows),
                    lit_usize(&m.cols),
                    lit_usize(&outer.len),
                ) && r.checked_mul(c) != Some(n)
                {
                    cx.error_at(
                        m.span,
                        format!(
                            "`matrix(rows = {r}, cols = {c})` needs {} elements, but field \
                             `{field}` has {n}; make the array `[_; {}]` or fix the shape",
                            r.saturating_mul(c),
                            r.saturating_mul(c),
                        ),
                    );
                }
                Tensor::Matrix {
                    elem: inner,
                    rows: Box::new(m.rows.clone()),
                    cols: Box::new(m.cols.clone()),
                    flat_len: Some(&outer.len),
                }
            }
        };
    }
    if let Type::Array(col) = inner
        && is_number(ungroup(&col.elem))
    {
        // `[[T; R]; C]`: C columns of R rows.
        if let Some(m) = matrix {
            for (what, given, actual) in
                [("rows", &m.rows, &col.len), ("cols", &m.cols, &outer.len)]
            {
                if let (Some(g), Some(a)) = (lit_usize(given), lit_usize(actual))
                    && g != a
                {
                    cx.error_at(
                        given.span(),
                        format!(
                            "`{what} = {g}` disagrees with field `{field}`: a `[[T; R]; C]` \
                             field is C columns of R rows, so {what} must be {a}; fix the \
                             annotation (or drop it: nested arrays need none)"
                        ),
                    );
                }
            }
        }
        return Tensor::Matrix {
            elem: ungroup(&col.elem),
            rows: Box::new(col.len.clone()),
            cols: Box::new(outer.len.clone()),
            flat_len: None,
        };
    }
    if let Some(m) = matrix {
        cx.error_at(
            m.span,
            format!(
                "`matrix(...)` applies to arrays of numbers (`[T; N]` or `[[T; R]; C]` with T \
                 one of f32, f64, i8..i64, u8..u64), which field `{field}` is not; remove the \
                 attribute"
            ),
        );
    }
    Tensor::None
}

/// The value of an integer literal expression, if it is one.
pub fn lit_usize(e: &Expr) -> Option<usize> {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Int(i) => i.base10_parse().ok(),
            _ => None,
        },
        Expr::Group(g) => lit_usize(&g.expr),
        Expr::Paren(p) => lit_usize(&p.expr),
        _ => None,
    }
}
