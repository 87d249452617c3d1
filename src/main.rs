//! The `ringway` binary: allocator, command line, exit code. Everything else is in the
//! library.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ringway::cli::main()
}
