//! With the `tch` feature: gives the binaries an rpath to libtorch's lib/ so
//! they start without LD_LIBRARY_PATH, and checks that the libraries are
//! there. (Missing headers are caught earlier, inside torch-sys's build, by
//! the `#error` stand-ins in libtorch-missing/; see .cargo/config.toml.)

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_TCH");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    // .cargo/config.toml sets LIBTORCH to the repo's .libtorch link.
    let dir = std::env::var_os("LIBTORCH").map(PathBuf::from);
    let lib = dir.as_ref().map(|d| d.join("lib"));
    let found = lib.as_ref().filter(|l| l.join("libtorch_cpu.so").is_file());
    let Some(lib) = found else {
        let at = dir.map_or_else(
            || "LIBTORCH is not set".to_string(),
            |d| d.display().to_string(),
        );
        panic!(
            "the `tch` feature needs the CPU libtorch 2.9.0 ({at} has no lib/libtorch_cpu.so): \
             run `bash scripts/setup.sh` (it assembles one in the cache and links it as .libtorch)"
        );
    };
    // The link may move; the cache folder it names is where the libraries live.
    let lib = lib.canonicalize().unwrap_or_else(|_| lib.clone());
    println!(
        "cargo:rerun-if-changed={}",
        lib.join("libtorch_cpu.so").display()
    );
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
