//! The `keel` command line.

mod cli;

/// Large buffers on huge pages (`keel::device::HugePages`).
#[global_allocator]
static ALLOCATOR: keel::device::HugePages = keel::device::HugePages;

fn main() -> std::process::ExitCode {
    cli::main()
}
