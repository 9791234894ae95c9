//! Integration tests for psyne live in the test targets of this package (`derive.rs`, `ui.rs`,
//! `postmono.rs`, ...). This library only carries the README, so that its code blocks run as
//! doctests and the quick start cannot rot.

#[doc = include_str!("../README.md")]
mod readme {}
