//! Builds the guest task components in `guest-tasks/` (their own cargo
//! workspace) for `wasm32-wasip2`, and tells the host crate where they are
//! through the `WASMPOOL_SEED_WASM` and `WASMPOOL_FIXTURES_WASM` environment
//! variables (absolute paths, read with `env!`).
//!
//! The components land in `<target dir>/guests/wasm32-wasip2/release/`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// Environment variables that cargo or the user set for the outer build and
/// that must not leak into the nested one (flags for the host target, clippy's
/// wrapper, the outer jobserver, the outer target and profile settings).
const STRIPPED_VARS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_TARGET_DIR",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
];

/// Prefixes of further variables to strip: the outer profile overrides, and
/// the cfg and feature values cargo passes to this build script.
const STRIPPED_PREFIXES: &[&str] = &["CARGO_PROFILE_", "CARGO_CFG_", "CARGO_FEATURE_"];

fn main() {
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is set"));
    let guests = root.join("guest-tasks");
    rerun_if_changed(&root, &guests);
    ensure_target_installed();
    let target_dir = guest_target_dir(&root);
    build_guests(&guests, &target_dir);
    let release = target_dir.join(TARGET).join("release");
    export_path("WASMPOOL_SEED_WASM", &release.join("seed_tasks.wasm"));
    export_path(
        "WASMPOOL_FIXTURES_WASM",
        &release.join("fixture_tasks.wasm"),
    );
}

/// Reruns this script when the WIT or anything in the guest workspace changes,
/// except a `guest-tasks/target/` left by building the guests by hand.
fn rerun_if_changed(root: &Path, guests: &Path) {
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    let entries = guests.read_dir().expect("failed to list guest-tasks/");
    for entry in entries {
        let path = entry.expect("failed to list guest-tasks/").path();
        if path.file_name().is_some_and(|name| name != "target") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// Installs the `wasm32-wasip2` target with rustup if the toolchain lacks it.
fn ensure_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("failed to run `rustc --print sysroot`");
    let sysroot = String::from_utf8(output.stdout).expect("rustc printed a non-UTF-8 sysroot");
    if Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(TARGET)
        .is_dir()
    {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target: rustup target add {TARGET}");
    let installed = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        installed,
        "the {TARGET} target, needed to build the guest components, is not installed \
         and installing it failed; run `rustup target add {TARGET}` and build again"
    );
}

/// `<target dir>/guests`: `CARGO_TARGET_DIR` if the outer build set it
/// (relative to the package root), otherwise `target/` in the package root.
fn guest_target_dir(root: &Path) -> PathBuf {
    let outer =
        env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir));
    outer.join("guests")
}

/// Runs `cargo build --release --target wasm32-wasip2` in the guest workspace.
fn build_guests(guests: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--target", TARGET])
        .current_dir(guests);
    for (name, _) in env::vars_os() {
        let name = name.to_string_lossy();
        let prefixed = STRIPPED_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix));
        if prefixed || STRIPPED_VARS.contains(&name.as_ref()) {
            command.env_remove(name.as_ref());
        }
    }
    // After the loop, which strips the outer value.
    command.env("CARGO_TARGET_DIR", target_dir);
    let output = command
        .output()
        .expect("failed to run cargo for the guest components");
    assert!(
        output.status.success(),
        "building the guest components in {} failed ({}):\n{}",
        guests.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Passes the absolute path of a built component to the host crate.
fn export_path(var: &str, wasm: &Path) {
    assert!(
        wasm.is_file(),
        "the guest build did not produce {}",
        wasm.display()
    );
    println!("cargo:rustc-env={var}={}", wasm.display());
}
