//! Nothing to build: this script exists for its `[build-dependencies]`, which
//! keep proc-macro features identical with and without the `mpi` feature (see
//! Cargo.toml).
fn main() {}
