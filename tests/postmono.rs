//! Layout checks of const-generic messages run after monomorphisation, which `cargo check` (and
//! so trybuild) never reaches. Each case in `postmono/` is built with `cargo build` as its own
//! crate: the failing cases must fail with the derive's message at the culprit's line, and the
//! control case, using the same types correctly, must build.

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

    let (ok, stderr) = build("const_generic_padding");
    assert!(!ok, "Bytes<1> has 3 bytes of padding and must not build");
    assert!(
        stderr.contains("psyne: `Bytes` has padding after field `bytes`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("src/main.rs:7:5"),
        "span at the field:\n{stderr}"
    );
    assert!(
        stderr.contains("Bytes<1>"),
        "names the instantiation:\n{stderr}"
    );
    assert!(!stderr.contains("Bytes<4>"), "Bytes<4> is fine:\n{stderr}");

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
