//! The model subcommands: `flow generate`, `flow import-gguf`, `flow serve`.
//! Thin wrappers over the model runtime (flow-model) and the server
//! (flow-stdlib), so a user can try any model in one line.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use flow_model::{ChatMessage, ChatTemplate, GenerateOptions, Model, Tokenizer};
use flow_stdlib::model::runtime::WeightDtype;

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
    let model = match Model::load(&a.model) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let tokenizer = match Tokenizer::load(&a.model) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let text = if a.chat {
        let template = match ChatTemplate::load(&a.model) {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        let messages = [ChatMessage {
            role: "user".into(),
            content: a.prompt.clone(),
        }];
        match template.render(&messages, true) {
            Ok(t) => t,
            Err(e) => return fail(e),
        }
    } else {
        a.prompt.clone()
    };
    // A chat template carries its own special tokens; a raw prompt gets the
    // tokenizer's (e.g. a BOS), as transformers' pipelines do.
    let ids = match tokenizer.encode(&text, !a.chat) {
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
    let generation = match model
        .generate(std::slice::from_ref(&ids), &opts)
        .into_iter()
        .next()
    {
        Some(g) => g,
        None => return fail("the model returned no generation"),
    };
    let mut tokens = generation.tokens.clone();
    // The stop token ends the completion; it is not part of it.
    if matches!(generation.finish_reason, flow_model::FinishReason::Stop) {
        tokens.pop();
    }
    let completion = match tokenizer.decode(&tokens, true) {
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
    let request = match flow_engine::device::parse_device(&a.device) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let (device, notice) = flow_engine::device::resolve_device(request, super::cuda_probe);
    if let Some(notice) = notice {
        eprintln!("{notice}");
    }
    eprintln!("flow: serving {} on http://{addr}/v1", a.model.display());
    let opts = flow_stdlib::serve::ServeOptions {
        model_name: a.name,
        allow_non_loopback: a.host.is_some(),
        device,
        dtype: match a.dtype.as_str() {
            "float32" => WeightDtype::Float32,
            "bfloat16" => WeightDtype::Bfloat16,
            _ => WeightDtype::Auto,
        },
    };
    match flow_stdlib::serve::serve(&a.model, &addr, &opts) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}
