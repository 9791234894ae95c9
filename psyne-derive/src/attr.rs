//! Parsing of `#[psyne(...)]` and `#[repr(...)]` attributes into typed values with spans.
//!
//! Struct level: `#[psyne(name = "...")]`, `#[psyne(type_id = N)]`.
//! Field level: `#[psyne(matrix(rows = R, cols = C))]`.
//! Unknown, duplicated and malformed attributes are errors at their own span.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, LitInt, LitStr};

use crate::ctxt::Ctxt;

/// A value together with the span of the attribute that set it.
pub struct Spanned2<T> {
    pub value: T,
    pub span: Span,
}

/// Struct-level `#[psyne(...)]` options.
#[derive(Default)]
pub struct ContainerAttrs {
    pub name: Option<Spanned2<String>>,
    pub type_id: Option<Spanned2<u64>>,
}

/// `#[psyne(matrix(rows = R, cols = C))]` on a field.
pub struct MatrixAttr {
    pub rows: Expr,
    pub cols: Expr,
    /// Span of the `matrix` keyword.
    pub span: Span,
}

/// Field-level `#[psyne(...)]` options.
#[derive(Default)]
pub struct FieldAttrs {
    pub matrix: Option<MatrixAttr>,
}

fn set_once<T>(cx: &Ctxt, slot: &mut Option<Spanned2<T>>, value: T, span: Span, what: &str) {
    if slot.is_some() {
        cx.error_at(
            span,
            format!("duplicate psyne attribute `{what}`: give it once"),
        );
    } else {
        *slot = Some(Spanned2 { value, span });
    }
}

pub fn container(cx: &Ctxt, attrs: &[Attribute]) -> ContainerAttrs {
    let mut out = ContainerAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("psyne")) {
        let res = attr.parse_nested_meta(|meta| {
            let span = meta.path.span();
            if meta.path.is_ident("name") {
                let lit: LitStr = meta.value()?.parse().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "expected a string literal: `#[psyne(name = \"MyMessage\")]`",
                    )
                })?;
                if lit.value().is_empty() {
                    cx.error_spanned_by(&lit, "a psyne message name must not be empty");
                }
                set_once(cx, &mut out.name, lit.value(), span, "name");
            } else if meta.path.is_ident("type_id") {
                let lit: LitInt = meta.value()?.parse().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "expected an integer literal: `#[psyne(type_id = 42)]`",
                    )
                })?;
                match lit.base10_parse::<u64>() {
                    Ok(v) => set_once(cx, &mut out.type_id, v, span, "type_id"),
                    Err(_) => cx.error_spanned_by(&lit, "`type_id` must fit in a u64"),
                }
            } else if meta.path.is_ident("matrix") {
                return Err(meta.error(
                    "`matrix(...)` belongs on a tensor field, not on the struct: \
                     put `#[psyne(matrix(rows = R, cols = C))]` above the field",
                ));
            } else {
                let name = path_name(&meta.path);
                return Err(meta.error(format!(
                    "unknown psyne attribute `{name}`: on a struct, expected \
                     `name = \"...\"` or `type_id = N`"
                )));
            }
            Ok(())
        });
        if let Err(e) = res {
            cx.syn_error(e);
        }
    }
    out
}

pub fn field(cx: &Ctxt, attrs: &[Attribute]) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("psyne")) {
        let res = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("matrix") {
                let span = meta.path.span();
                let mut rows: Option<Expr> = None;
                let mut cols: Option<Expr> = None;
                meta.parse_nested_meta(|inner| {
                    let slot = if inner.path.is_ident("rows") {
                        &mut rows
                    } else if inner.path.is_ident("cols") {
                        &mut cols
                    } else {
                        let name = path_name(&inner.path);
                        return Err(inner.error(format!(
                            "unknown matrix option `{name}`: expected \
                             `matrix(rows = R, cols = C)`"
                        )));
                    };
                    let expr: Expr = inner.value()?.parse()?;
                    if slot.is_some() {
                        let name = path_name(&inner.path);
                        return Err(inner
                            .error(format!("duplicate `{name}` in `matrix(...)`: give it once")));
                    }
                    *slot = Some(expr);
                    Ok(())
                })
                .map_err(|e| {
                    if e.to_string().starts_with("expected parentheses") {
                        syn::Error::new(
                            e.span(),
                            "malformed `matrix`: write `matrix(rows = R, cols = C)`",
                        )
                    } else {
                        e
                    }
                })?;
                let (Some(rows), Some(cols)) = (rows, cols) else {
                    return Err(
                        meta.error("`matrix` needs both dimensions: `matrix(rows = R, cols = C)`")
                    );
                };
                if out.matrix.is_some() {
                    return Err(meta.error("duplicate psyne attribute `matrix`: give it once"));
                }
                out.matrix = Some(MatrixAttr { rows, cols, span });
            } else if meta.path.is_ident("name") || meta.path.is_ident("type_id") {
                let name = path_name(&meta.path);
                return Err(meta.error(format!(
                    "`{name}` belongs on the struct, not on a field: \
                     on a field, only `matrix(rows = R, cols = C)` is accepted"
                )));
            } else {
                let name = path_name(&meta.path);
                return Err(meta.error(format!(
                    "unknown psyne attribute `{name}`: on a field, expected \
                     `matrix(rows = R, cols = C)`"
                )));
            }
            Ok(())
        });
        if let Err(e) = res {
            cx.syn_error(e);
        }
    }
    out
}

fn path_name(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// What `#[repr(...)]` says about the struct.
#[derive(Default)]
pub struct Repr {
    /// Span of a `C` item, if any.
    pub c: Option<Span>,
    /// The largest `align(N)`, if any (the struct's alignment is at least this).
    pub align: Option<u64>,
}

/// Parses every `#[repr(...)]`, reporting representations that cannot carry a message.
pub fn repr(cx: &Ctxt, attrs: &[Attribute]) -> Repr {
    let mut out = Repr::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("repr")) {
        let res = attr.parse_nested_meta(|meta| {
            let p = &meta.path;
            if p.is_ident("C") {
                out.c = Some(p.span());
            } else if p.is_ident("packed") {
                if meta.input.peek(syn::token::Paren) {
                    let content;
                    syn::parenthesized!(content in meta.input);
                    let _: LitInt = content.parse()?;
                }
                cx.error_at(
                    p.span(),
                    "psyne messages cannot be `packed`: tensor views need aligned fields; \
                     remove `packed` and order fields from largest to smallest alignment \
                     (add explicit `_pad: [u8; N]` fields if needed)",
                );
            } else if p.is_ident("align") {
                let content;
                syn::parenthesized!(content in meta.input);
                let lit: LitInt = content.parse()?;
                // A value rustc rejects (not a power of two, too large) is its error to report.
                if let Ok(n) = lit.base10_parse::<u64>() {
                    out.align = Some(out.align.map_or(n, |a| a.max(n)));
                }
            } else if p.is_ident("transparent") || p.is_ident("Rust") {
                cx.error_at(
                    p.span(),
                    format!(
                        "`repr({})` does not fix a layout psyne can share: use `#[repr(C)]`",
                        path_name(p)
                    ),
                );
            } else {
                cx.error_at(
                    p.span(),
                    format!(
                        "unsupported representation `{}` for a psyne message: use `#[repr(C)]`",
                        path_name(p)
                    ),
                );
            }
            Ok(())
        });
        if let Err(e) = res {
            cx.syn_error(e);
        }
    }
    out
}
