//! The model subcommands (`flow generate`, `flow serve`) through the real
//! binary: their flags.

mod cli_common;

use cli_common::Project;

/// `flow generate` runs on the model runtime of the ops: `--dtype` picks the
/// weights (stderr says which) and `--device cpu` the CPU; a value outside
/// the list is refused by name.
#[test]
fn generate_takes_the_weights_dtype_and_the_device() {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/qwen2");
    let p = Project::new("");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            golden.to_str().unwrap(),
            "--prompt",
            "The patient",
            "--max-tokens",
            "5",
        ];
        args.extend_from_slice(extra);
        p.flow(&args)
    };
    let f32_out = run(&["--device", "cpu"]);
    assert!(f32_out.status.success(), "{f32_out:?}");
    let stderr = String::from_utf8_lossy(&f32_out.stderr);
    assert!(stderr.contains("weights: f32 on the CPU"), "{stderr}");
    assert!(stderr.contains("5 new tokens"), "{stderr}");
    let bf16_out = run(&["--device", "cpu", "--dtype", "bfloat16"]);
    assert!(bf16_out.status.success(), "{bf16_out:?}");
    let stderr = String::from_utf8_lossy(&bf16_out.stderr);
    assert!(stderr.contains("weights: bf16 on the CPU"), "{stderr}");
    let bad = run(&["--dtype", "half"]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("bfloat16"), "{stderr}");
}
