//! The `flow` binary: see `flow --help` and [`flow_engine::cli`].

fn main() {
    std::process::exit(flow_engine::cli::main());
}
