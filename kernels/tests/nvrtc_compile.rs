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

/// The names declared `__global__` in a `.cu` file, read from the text
/// (not from the PTX), so an entry point NVRTC drops or mangles is caught.
fn declared_kernels(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("__global__") {
        rest = &rest[at + "__global__".len()..];
        let head = rest.split('(').next().unwrap_or("");
        let name = head.split_whitespace().last().unwrap_or("");
        if !name.is_empty() {
            names.push(name.to_owned());
        }
    }
    names
}

#[test]
fn every_cu_file_is_shipped_and_every_global_function_is_an_entry_for_both_archs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".cu").map(str::to_owned)
        })
        .collect();
    on_disk.sort();
    let mut shipped: Vec<String> = cuda::SOURCES.iter().map(|k| k.name.to_owned()).collect();
    shipped.sort();
    assert_eq!(
        on_disk, shipped,
        "kernels/cuda/*.cu and cuda::SOURCES differ"
    );

    let mut total = 0;
    for kernel in cuda::SOURCES {
        let text = std::fs::read_to_string(dir.join(format!("{}.cu", kernel.name))).unwrap();
        let names = declared_kernels(&text);
        assert!(!names.is_empty(), "{}.cu declares no kernel", kernel.name);
        for arch in ["sm_80", "sm_90"] {
            let ptx = cuda::compile(kernel, arch, None).unwrap_or_else(|e| panic!("{e}"));
            for name in &names {
                assert!(
                    ptx.contains(&format!(".entry {name}(")),
                    "{}.cu for {arch}: `{name}` is not an unmangled entry point (extern \"C\"?)",
                    kernel.name
                );
            }
        }
        total += names.len();
    }
    // 27 kernels in nine families when this test was written; fewer means a
    // kernel vanished from the sources.
    assert!(total >= 27, "only {total} kernels declared");
}
