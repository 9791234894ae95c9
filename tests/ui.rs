//! Compile-fail tests for `#[derive(PsyneMessage)]`: every case in `ui/<category>/<case>.rs` must
//! fail to compile with exactly the diagnostics in the `.stderr` beside it (span and message).
//!
//! Toolchain pin: the `.stderr` files were produced with rustc 1.95.0, the project's toolchain.
//! Compiler diagnostics change between releases; on another rustc, review the differences and
//! regenerate with `TRYBUILD=overwrite cargo test -p psyne-tests --test ui`.
//!
//! trybuild runs `cargo check`, which does not evaluate constants of const-generic
//! instantiations; the checks that need them (flat matrix shapes that depend on a const
//! parameter) are tested with real builds in `postmono.rs`. Padding, including that of
//! const-generic structs (`ui/generics/`), is decided at the definition and tested here.

/// The rustc release the `.stderr` files were produced with.
const PINNED_RUSTC: &str = "rustc 1.95.";

#[test]
fn ui() {
    // The compiler's "other types implement `Field`" hints list `half::f16`/`bf16` when the
    // `half` feature is on; the snapshots are of the default build, which `.ci/run` tests first.
    if cfg!(feature = "half") {
        eprintln!("ui: snapshots are of the default features; run without `--features half`");
        return;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !version.starts_with(PINNED_RUSTC) {
        eprintln!(
            "note: the .stderr files were produced with {PINNED_RUSTC}x but this is `{}`; \
             differences in wording are expected (see the module docs)",
            version.trim()
        );
    }
    trybuild::TestCases::new().compile_fail("ui/*/*.rs");
}
