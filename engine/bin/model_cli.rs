//! The model subcommands: `flow generate`, `flow import-gguf`, `flow serve`.
//! Thin wrappers over the model runtime (flow-model) and the server
//! (flow-stdlib), so a user can try any model in one line.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use flow_stdlib::model::runtime::{self, ChatMessage, FinishReason, GenerateOptions, WeightDtype};

/// `flow generate MODEL_DIR --prompt TEXT`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A Hugging Face model directory (config.json, safetensors, tokenizer.json).
    pub model: PathBuf,
    /// The prompt: raw text, or the user message with `--chat`.
    #[arg(long)]
    pub prompt: String,
    /// Most new tokens.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; greedy when not given.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Nucleus sampling threshold (with --temperature).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Apply the model's chat template to the prompt (one user message).
    #[arg(long)]
    pub chat: bool,
    /// auto, cpu, cuda or cuda:N: where the model computes.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// The weights' type on the CPU: auto (the checkpoint's: bf16 when every
    /// tensor is stored in bf16, else f32), float32 or bfloat16.
    #[arg(long, default_value = "auto", value_parser = ["auto", "float32", "bfloat16"])]
    pub dtype: String,
}

/// `flow import-gguf IN OUT`.
#[derive(Args, Debug)]
pub struct ImportGgufArgs {
    /// The GGUF file.
    pub input: PathBuf,
    /// The Hugging Face model directory to write.
    pub output: PathBuf,
}

/// `flow serve MODEL_DIR [--port P]`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A Hugging Face model directory.
    pub model: PathBuf,
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Address to listen on; default 127.0.0.1 (loopback). Naming another
    /// one (e.g. 0.0.0.0) opens the server to the network.
    #[arg(long)]
    pub host: Option<String>,
    /// The model name clients send (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// auto, cpu, cuda or cuda:N: where the model computes.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// The weights' type on the CPU: auto (the checkpoint's: bf16 when every
    /// tensor is stored in bf16, else f32), float32 or bfloat16.
    #[arg(long, default_value = "auto", value_parser = ["auto", "float32", "bfloat16"])]
    pub dtype: String,
}

fn fail(what: impl std::fmt::Display) -> i32 {
    eprintln!("flow: {what}");
    1
}

/// Prints the completion alone on stdout; notices go to stderr.
pub fn generate(a: GenerateArgs) -> i32 {
    let device = match resolve_device(&a.device) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let notice = |line: &str| eprintln!("flow: {line}");
    let gpu = runtime::cuda_backend(device, &notice);
    let model = match runtime::load_on(&a.model, gpu, weight_dtype(&a.dtype), &notice) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let text = if a.chat {
        let messages = [ChatMessage {
            role: "user".into(),
            content: a.prompt.clone(),
        }];
        match model.render_chat(&messages, true) {
            Ok(t) => t,
            Err(e) => return fail(e),
        }
    } else {
        a.prompt.clone()
    };
    // A chat template carries its own special tokens; a raw prompt gets the
    // tokenizer's (e.g. a BOS), as transformers' pipelines do.
    let ids = match model.encode(&text, !a.chat) {
        Ok(ids) => ids,
        Err(e) => return fail(e),
    };
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        temperature: a.temperature.unwrap_or(0.0),
        top_p: a.top_p,
        seed: a.seed,
        stop_tokens: Vec::new(),
    };
    let started = std::time::Instant::now();
    let generation = match model.generate(std::slice::from_ref(&ids), &opts) {
        Ok(g) => match g.into_iter().next() {
            Some(g) => g,
            None => return fail("the model returned no generation"),
        },
        Err(e) => return fail(e),
    };
    let mut tokens = generation.tokens.clone();
    // The stop token ends the completion; it is not part of it.
    if matches!(generation.finish_reason, FinishReason::Stop) {
        tokens.pop();
    }
    let completion = match model.decode(&tokens, true) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{completion}");
    eprintln!(
        "flow: {} prompt tokens, {} new tokens in {:.2}s",
        ids.len(),
        generation.tokens.len(),
        started.elapsed().as_secs_f64()
    );
    0
}

/// The device `--device` names, resolved (a missing driver: the CPU, said on
/// stderr); an unreadable name is an error (the exit code).
fn resolve_device(name: &str) -> Result<flow_stdlib::op::Device, i32> {
    let request = flow_engine::device::parse_device(name).map_err(fail)?;
    let (device, notice) = flow_engine::device::resolve_device(request, super::cuda_probe);
    if let Some(notice) = notice {
        eprintln!("{notice}");
    }
    Ok(device)
}

/// `--dtype`'s value (clap has checked it is one of these).
fn weight_dtype(name: &str) -> WeightDtype {
    match name {
        "float32" => WeightDtype::Float32,
        "bfloat16" => WeightDtype::Bfloat16,
        _ => WeightDtype::Auto,
    }
}

pub fn import_gguf(a: ImportGgufArgs) -> i32 {
    match flow_model::gguf::import_gguf(&a.input, &a.output) {
        Ok(summary) => {
            eprintln!(
                "flow: {} ({}): {} tensors, {} parameters -> {}",
                a.input.display(),
                summary.architecture,
                summary.tensors,
                summary.parameters,
                a.output.display()
            );
            0
        }
        Err(e) => fail(e),
    }
}

pub fn serve(a: ServeArgs) -> i32 {
    let host = a.host.as_deref().unwrap_or("127.0.0.1");
    // An IPv6 address needs brackets before the port.
    let addr = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{}", a.port)
    } else {
        format!("{host}:{}", a.port)
    };
    let device = match resolve_device(&a.device) {
        Ok(d) => d,
        Err(code) => return code,
    };
    eprintln!("flow: serving {} on http://{addr}/v1", a.model.display());
    let opts = flow_stdlib::serve::ServeOptions {
        model_name: a.name,
        allow_non_loopback: a.host.is_some(),
        device,
        dtype: weight_dtype(&a.dtype),
    };
    match flow_stdlib::serve::serve(&a.model, &addr, &opts) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}
