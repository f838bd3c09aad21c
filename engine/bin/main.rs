//! The `flow` binary: the one place that wires the engine to the ops, the
//! model runtime and the CUDA driver. The engine's pipeline commands come
//! from [`flow_engine::cli`]; the model commands (`generate`, `import-gguf`,
//! `serve`) are the binary's own.

mod model_cli;

use clap::{Parser, Subcommand};
use flow_engine::cli::{self, Wiring};

#[derive(Parser, Debug)]
#[command(
    name = "flow",
    version,
    about = "Content-hashed, cached pipelines for adapting LLMs to a domain"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Pipeline(cli::Command),
    /// Print a model's completion of a prompt (greedy unless --temperature).
    Generate(model_cli::GenerateArgs),
    /// Convert a GGUF file into a Hugging Face model directory.
    #[command(name = "import-gguf")]
    ImportGguf(model_cli::ImportGgufArgs),
    /// Serve a model with an OpenAI-compatible API on loopback.
    Serve(model_cli::ServeArgs),
}

/// Counts CUDA devices through the kernel crate's probe, which loads the
/// driver itself first and so never panics on a machine without one.
fn cuda_probe() -> Result<usize, String> {
    flow_kernels::cuda::probe()
        .map(|info| info.devices)
        .map_err(|e| e.to_string())
}

fn main() {
    flow_model::host_memory::keep_freed_buffers();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(e.exit_code());
        }
    };
    let code = match cli.command {
        Command::Pipeline(c) => cli::dispatch(
            c,
            &Wiring {
                registry: flow_stdlib::registry,
                cuda_probe,
            },
        ),
        Command::Generate(a) => model_cli::generate(a),
        Command::ImportGguf(a) => model_cli::import_gguf(a),
        Command::Serve(a) => model_cli::serve(a),
    };
    std::process::exit(code);
}
