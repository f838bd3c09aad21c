//! `import_gguf`: a GGUF file (e.g. the one `fetch_wheel` extracts) turned
//! into a Hugging Face model directory (config.json, safetensors weights,
//! tokenizer.json, chat template) that every model op reads.
//!
//! The conversion itself is flow-model's `gguf::import_gguf(input, out_dir)`;
//! the op adds a check of the file's magic and `import.json`, a summary of
//! what was converted. The chat template travels in tokenizer_config.json
//! when the GGUF carries one (`tokenizer.chat_template`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::miette;
use serde::Deserialize;

use crate::artifacts::model::ImportInfo;
use crate::artifacts::JsonFile;
use crate::op::{Op, OpContext, OpResult, OpSpec, Outputs, Param, ParamsShape, Resources, Type};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(ImportGguf)]
}

/// Checks that `input` looks like a GGUF file (magic `GGUF`).
pub fn check_gguf(input: &Path) -> OpResult<()> {
    let mut magic = [0u8; 4];
    let read =
        std::fs::File::open(input).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
    match read {
        Err(e) => Err(miette!("import_gguf: cannot read {}: {e}", input.display())),
        Ok(()) if &magic != b"GGUF" => Err(miette!(
            "import_gguf: {} is not a GGUF file (it does not start with `GGUF`)",
            input.display()
        )),
        Ok(()) => Ok(()),
    }
}

/// Converts `input` into a model directory at `out_dir`.
pub fn import(input: &Path, out_dir: &Path) -> OpResult<flow_model::gguf::ImportSummary> {
    check_gguf(input)?;
    flow_model::gguf::import_gguf(input, out_dir).map_err(|e| miette!("import_gguf: {e}"))
}

/// The `import_gguf` op.
pub struct ImportGguf;

/// `import_gguf`'s params (see its spec).
#[derive(Deserialize)]
struct ImportGgufParams {
    input: PathBuf,
}

impl Op for ImportGguf {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "import_gguf",
            version: 3,
            doc: "Converts a GGUF file into a Hugging Face model directory (config.json, safetensors, tokenizer, chat template).",
            params: vec![Param::required("input", Type::File, "the .gguf file (e.g. a fetch_wheel node's `file`)")],
            produces: Type::Model,
            // The node itself is the model directory.
            outputs: vec![],
            resources: Resources::ALL_THREADS,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<ImportGgufParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: ImportGgufParams = ctx.params()?;
        let input = p.input.as_path();
        ctx.progress.message("converting GGUF");
        let summary = import(input, &ctx.out_dir)?;
        let info = ImportInfo {
            source: ctx.input_name(input),
            summary,
        };
        info.write(&ctx.out_dir)?;
        let summary = &info.summary;
        ctx.log(&format!(
            "imported {} ({}, {} parameters, {} tensors)",
            input.display(),
            summary.hf_architecture,
            summary.parameters,
            summary.tensors
        ));
        Ok(Outputs::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_files_that_are_not_gguf() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gguf");
        std::fs::write(&p, b"PK\x03\x04 not gguf").unwrap();
        let err = import(&p, dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a GGUF file"), "{err}");
        let err = import(&dir.path().join("missing.gguf"), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
