// Found only when the real libtorch headers are not: .cargo/config.toml puts
// this folder on CPLUS_INCLUDE_PATH, which the compiler searches after the
// -I folders torch-sys passes (LIBTORCH/include).
#error "ldm-train: the `tch` feature needs the CPU libtorch 2.9.0 at LIBTORCH (default: the repo's .libtorch link), and there is none: run `bash scripts/setup.sh`"
