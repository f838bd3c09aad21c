//! Every CUDA kernel compiles with NVRTC for Ampere (sm_80) and Hopper
//! (sm_90). Needs no GPU: NVRTC and the headers come from a CUDA install or
//! the PyPI wheels `nvidia-cuda-nvrtc` and `nvidia-cuda-runtime` (which
//! `.ci/run` installs). Without them this test fails and says how to
//! install them: a kernel that does not compile must never pass CI.

use flow_kernels::cuda;

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    let nvrtc = cuda::load_nvrtc().unwrap_or_else(|e| panic!("{e}"));
    let headers = cuda::locate_headers().unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "NVRTC: {}; headers: {} ({})",
        nvrtc.display(),
        headers.path.display(),
        headers.origin
    );
    let mut failures = Vec::new();
    for kernel in cuda::SOURCES {
        for arch in ["sm_80", "sm_90"] {
            match cuda::compile(kernel, arch, None) {
                Ok(ptx) => {
                    assert!(
                        ptx.contains(".entry"),
                        "{} for {arch}: PTX has no entry point",
                        kernel.name
                    );
                    assert!(
                        ptx.contains(&format!(".target {arch}")),
                        "{} for {arch}: wrong target",
                        kernel.name
                    );
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn compiled_ptx_is_cached_on_disk_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = cuda::SOURCES.iter().find(|k| k.name == "adamw").unwrap();
    let first = cuda::compile(kernel, "sm_90", Some(dir.path())).unwrap_or_else(|e| panic!("{e}"));
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "one cached PTX file");
    // Replace the cached text: a second compile must read the cache, not NVRTC.
    let path = files[0].as_ref().unwrap().path();
    std::fs::write(&path, "// cached\n").unwrap();
    let second = cuda::compile(kernel, "sm_90", Some(dir.path())).unwrap();
    assert_eq!(second, "// cached\n");
    assert_ne!(first, second);
}

#[test]
fn every_kernel_entry_point_is_exported_unmangled() {
    // The Rust launchers look functions up by these names.
    let expected = [
        ("adamw", &["adamw_bf16", "adamw_f32"][..]),
        (
            "slerp",
            &[
                "slerp_reduce_f32",
                "slerp_reduce_bf16",
                "slerp_coefficients",
                "slerp_apply_f32",
                "slerp_apply_bf16",
            ],
        ),
        (
            "attention",
            &[
                "attention_forward_d64",
                "attention_forward_d128",
                "attention_backward_dq_d128",
                "attention_backward_dkdv_d64",
                "attention_backward_delta_d64",
            ],
        ),
        ("cross_entropy", &["cross_entropy_forward_backward"]),
    ];
    for (name, entries) in expected {
        let kernel = cuda::SOURCES.iter().find(|k| k.name == name).unwrap();
        let ptx = cuda::compile(kernel, "sm_90", None).unwrap_or_else(|e| panic!("{e}"));
        for entry in entries {
            assert!(
                ptx.contains(&format!(".entry {entry}(")),
                "{name}: no entry {entry}"
            );
        }
    }
}
