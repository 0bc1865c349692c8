//! The `flint` binary; everything is in the library, shared with the Python package.

fn main() {
    std::process::exit(flint_cli::run(std::env::args_os()));
}
