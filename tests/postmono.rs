//! Real builds of const-generic messages. Shape checks that involve a const parameter run after
//! monomorphisation, which `cargo check` (and so trybuild) never reaches; and the padding proof
//! must stop a padded struct from building at all, whatever the program does with it (here:
//! `bytemuck::bytes_of`, which evaluates no psyne constant). Each case in `postmono/` is built
//! with `cargo build` as its own crate: the failing cases must fail with the derive's message at
//! the culprit's line, and the control case, using the same types correctly, must build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn build(case: &str) -> (bool, String) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("postmono");
    let dir = tmp.join(case);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let psyne = here.join("../psyne");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"postmono-{}\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
             publish = false\n\n[dependencies]\npsyne = {{ path = {:?} }}\n\n[workspace]\n",
            case.replace('_', "-"),
            psyne.display().to_string()
        ),
    )
    .unwrap();
    // Same dependency versions as the workspace.
    std::fs::copy(here.join("../Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    std::fs::copy(
        here.join("postmono").join(format!("{case}.rs")),
        dir.join("src/main.rs"),
    )
    .unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--offline", "--color", "never", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", tmp.join("target"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn const_generic_layout_checks_run_after_monomorphisation() {
    let (ok, stderr) = build("const_generic_ok");
    assert!(ok, "control case must build:\n{stderr}");

    let (ok, stderr) = build("const_generic_matrix_mismatch");
    assert!(
        !ok,
        "Block<3> has 3 elements for a 2x2 matrix and must not build"
    );
    assert!(
        stderr.contains("annotation of field `w` disagrees with its length"),
        "{stderr}"
    );
    assert!(
        stderr.contains("src/main.rs:6:13"),
        "span at the annotation:\n{stderr}"
    );
}

/// Issue 11, item 4: `bytemuck::bytes_of(&Padded::<1> { .. })` read 3 uninitialised padding
/// bytes in a `#![forbid(unsafe_code)]` program, because `Pod` was implemented for every
/// instantiation while the padding check ran only through psyne's constants and accessors. A
/// const-generic struct that has padding for some value of its parameters must now fail to
/// build, before any instantiation, at the field whose length causes it.
#[test]
fn padded_const_generic_is_not_pod() {
    let (ok, stderr) = build("padded_const_generic_is_not_pod");
    assert!(!ok, "Padded<1> has padding and must not be Pod:\n{stderr}");
    assert!(
        stderr.contains(
            "psyne: `Padded` has padding for some values of its const parameters: the length \
             of field `a` depends on them and its elements (`u8`) are 1 byte each, which is not \
             a multiple of the 4-byte alignment of `Padded`"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("`[[u8; 4]; N]` instead of `[u8; N]`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("src/main.rs:11:5"),
        "span at `a`:\n{stderr}"
    );
}
