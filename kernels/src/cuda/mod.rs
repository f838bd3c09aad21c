//! The CUDA side of the kernels: finding the driver, NVRTC and the CUDA
//! headers without ever panicking, compiling the `.cu` sources at run time
//! for the device's architecture, and caching the PTX on disk by content
//! hash so a second start compiles nothing.
//!
//! cudarc loads libcuda and libnvrtc lazily and panics when they are
//! missing, so nothing here touches cudarc before [`probe`] (driver) or
//! [`load_nvrtc`] (compiler) succeeded.

mod blas;
mod device;
mod launch;
mod launchers;
mod sources;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use blas::{column_major, load_cublaslt, locate_cublaslt, Blas};
pub use device::Gpu;
pub use launch::{signature, Arg, AttnDims, DeviceElem, Elem, KernelCall, Signature, SIGNATURES};
pub use launchers::{AttentionShape, BidirLayout, EmbeddingBuckets, SlerpElem};
pub use sources::{KernelSource, SOURCES};

/// Why the CUDA path is unavailable or failed.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver: {0}")]
    NoDriver(String),
    #[error("NVRTC (libnvrtc.so) not found; looked in: {searched}. Set FLOW_NVRTC_LIB to its path, or `pip install nvidia-cuda-nvrtc`")]
    NoNvrtc { searched: String },
    #[error("CUDA headers (cuda_bf16.h) not found; looked in: {searched}. Set CUDA_HOME, or FLOW_CUDA_INCLUDE, or `pip install nvidia-cuda-runtime`")]
    NoHeaders { searched: String },
    #[error("cuBLASLt (libcublasLt.so) not found; looked in: {searched}. Set FLOW_CUBLASLT_LIB to its path, or `pip install nvidia-cublas`")]
    NoCublasLt { searched: String },
    #[error("failed to load {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("kernel `{kernel}` failed to compile for {arch}:\n{log}")]
    Compile {
        kernel: String,
        arch: String,
        log: String,
    },
    #[error("kernel `{entry}`: {message}")]
    Launch { entry: String, message: String },
    #[error("kernel cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
}

/// What [`probe`] found.
#[derive(Clone, Debug)]
pub struct CudaInfo {
    pub devices: usize,
}

/// Checks for the CUDA driver and counts devices. Loads `libcuda.so.1`
/// itself first, so a machine without one gets an error, not a panic.
pub fn probe() -> Result<CudaInfo, CudaError> {
    static PROBE: OnceLock<Result<usize, String>> = OnceLock::new();
    let result = PROBE.get_or_init(|| {
        // SAFETY: loading a shared library runs its initialisers; libcuda's
        // are the driver's own and have no preconditions.
        let lib = unsafe { libloading::Library::new("libcuda.so.1") }
            .or_else(|_| unsafe { libloading::Library::new("libcuda.so") })
            .map_err(|e| format!("libcuda.so.1 could not be loaded ({e})"))?;
        // Keep it loaded for cudarc, which opens it again by name.
        std::mem::forget(lib);
        cudarc::driver::result::init().map_err(|e| format!("cuInit failed: {e:?}"))?;
        let n = cudarc::driver::result::device::get_count()
            .map_err(|e| format!("cuDeviceGetCount failed: {e:?}"))?;
        if n <= 0 {
            return Err("the driver reports no CUDA device".to_string());
        }
        Ok(n as usize)
    });
    match result {
        Ok(n) => Ok(CudaInfo { devices: *n }),
        Err(e) => Err(CudaError::NoDriver(e.clone())),
    }
}

/// Candidate locations of a file under the usual CUDA install roots, the
/// environment's overrides and the PyPI wheels' `nvidia/cu13` folders.
fn cuda_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(v) = std::env::var_os(var) {
            roots.push(PathBuf::from(v));
        }
    }
    roots.push(PathBuf::from("/usr/local/cuda"));
    roots.push(PathBuf::from("/usr"));
    roots.extend(wheel_roots());
    roots
}

/// `nvidia/cu13` (or cu12) folders of installed PyPI wheels: in the
/// project's CI tool folder and in the site-packages of the python on PATH.
fn wheel_roots() -> Vec<PathBuf> {
    // The CI tool folder of this checkout, from anywhere inside it.
    let mut bases: Vec<PathBuf> = std::env::current_dir()
        .map(|d| {
            d.ancestors()
                .map(|a| a.join(".ci/.tools"))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    if let Ok(out) = std::process::Command::new("python3")
        .args(["-c", "import site,sys; print('\\n'.join(site.getsitepackages()+[site.getusersitepackages()]+sys.path))"])
        .stderr(std::process::Stdio::null())
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if !line.trim().is_empty() {
                bases.push(PathBuf::from(line.trim()));
            }
        }
    }
    let mut roots = Vec::new();
    for base in bases {
        for sub in [
            "nvidia/cu13",
            "nvidia/cuda_nvrtc",
            "nvidia/cuda_runtime",
            "nvidia/cublas",
        ] {
            let p = base.join(sub);
            if p.is_dir() {
                roots.push(p);
            }
        }
    }
    roots
}

/// Finds a CUDA library: the file named by the environment variable
/// `env`, else the first of `names` in `lib64`/`lib` of the CUDA roots.
/// Err holds the folders searched.
fn locate_library(env: &str, names: &[&str]) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
    }
    let mut searched = Vec::new();
    for root in cuda_roots() {
        for dir in ["lib64", "lib", "lib/x86_64-linux-gnu"] {
            let d = root.join(dir);
            for name in names {
                let p = d.join(name);
                if p.is_file() {
                    return Ok(p);
                }
            }
            searched.push(d.display().to_string());
        }
    }
    Err(searched.join(", "))
}

/// Loads the library `locate` finds, once, and keeps it loaded so that
/// cudarc's own lookup by soname finds it (cudarc would panic where it
/// finds none). Returns its path.
fn load_library_once(
    cell: &'static OnceLock<Result<PathBuf, String>>,
    what: &str,
    locate: impl FnOnce() -> Result<PathBuf, CudaError>,
) -> Result<&'static Path, CudaError> {
    let r = cell.get_or_init(|| {
        let path = locate().map_err(|e| e.to_string())?;
        // SAFETY: loading a CUDA library runs its initialisers, which have
        // no preconditions.
        let lib = unsafe { libloading::Library::new(&path) }
            .map_err(|e| format!("failed to load {}: {e}", path.display()))?;
        std::mem::forget(lib);
        Ok(path)
    });
    match r {
        Ok(p) => Ok(p.as_path()),
        Err(e) => Err(CudaError::Load {
            path: PathBuf::from(what),
            message: e.clone(),
        }),
    }
}

/// Finds libnvrtc: `FLOW_NVRTC_LIB`, then `lib64`/`lib` of the CUDA roots.
pub fn locate_nvrtc() -> Result<PathBuf, CudaError> {
    locate_library(
        "FLOW_NVRTC_LIB",
        &["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
    )
    .map_err(|searched| CudaError::NoNvrtc { searched })
}

/// Where the CUDA headers came from, said once in the log.
#[derive(Clone, Debug)]
pub struct HeaderDir {
    pub path: PathBuf,
    pub origin: &'static str,
}

/// Finds the folder holding `cuda_bf16.h`: `FLOW_CUDA_INCLUDE`,
/// `CUDA_HOME`/`CUDA_PATH`, `/usr/local/cuda/include`, or the PyPI wheel
/// `nvidia-cuda-runtime`'s `nvidia/cu13/include`.
pub fn locate_headers() -> Result<HeaderDir, CudaError> {
    let mut searched = Vec::new();
    if let Some(p) = std::env::var_os("FLOW_CUDA_INCLUDE") {
        let p = PathBuf::from(p);
        if p.join("cuda_bf16.h").is_file() {
            return Ok(HeaderDir {
                path: p,
                origin: "FLOW_CUDA_INCLUDE",
            });
        }
        searched.push(p.display().to_string());
    }
    for root in cuda_roots() {
        let p = root.join("include");
        if p.join("cuda_bf16.h").is_file() {
            let origin = if root.starts_with("/usr") {
                "the system CUDA install"
            } else if root.components().any(|c| c.as_os_str() == "nvidia") {
                "the nvidia-cuda-runtime wheel"
            } else {
                "CUDA_HOME/CUDA_PATH"
            };
            return Ok(HeaderDir { path: p, origin });
        }
        searched.push(p.display().to_string());
    }
    Err(CudaError::NoHeaders {
        searched: searched.join(", "),
    })
}

/// Loads libnvrtc from [`locate_nvrtc`] once and keeps it loaded. Returns its path.
pub fn load_nvrtc() -> Result<&'static Path, CudaError> {
    static LOADED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    load_library_once(&LOADED, "libnvrtc", locate_nvrtc)
}

/// The kernel's source with the shared header spliced in (NVRTC gets one
/// self-contained translation unit).
pub fn full_source(kernel: &KernelSource) -> String {
    kernel
        .source
        .replace("#include \"common.cuh\"", sources::COMMON)
}

/// NVRTC options for an architecture such as `sm_90`.
///
/// No `--use_fast_math`: the kernels call the approximate intrinsics
/// (`__expf`) by name where an approximation is acceptable, and everything
/// else stays IEEE-accurate: RoPE's `sincosf` at positions in the tens of
/// thousands (the fast `__sinf` loses digits there), AdamW's square root and
/// division, the norms' sums.
fn compile_options(arch: &str, include: &Path) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        format!("--include-path={}", include.display()),
    ]
}

/// The on-disk PTX cache: `FLOW_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/flow/kernels`, else `~/.cache/flow/kernels`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOW_KERNEL_CACHE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("flow").join("kernels")
}

/// PTX of one kernel family for `arch`, compiled by NVRTC or read from the
/// cache. The cache key covers the full source, the options and the NVRTC
/// library's path and size, so any change recompiles.
pub fn compile(
    kernel: &KernelSource,
    arch: &str,
    cache: Option<&Path>,
) -> Result<String, CudaError> {
    let nvrtc = load_nvrtc()?;
    let headers = locate_headers()?;
    let source = full_source(kernel);
    let options = compile_options(arch, &headers.path);
    let mut h = blake3::Hasher::new();
    h.update(source.as_bytes());
    for o in &options {
        h.update(o.as_bytes());
        h.update(&[0]);
    }
    h.update(nvrtc.as_os_str().as_encoded_bytes());
    h.update(
        &std::fs::metadata(nvrtc)
            .map(|m| m.len())
            .unwrap_or(0)
            .to_le_bytes(),
    );
    let key = h.finalize().to_hex();
    let cached = cache.map(|dir| dir.join(format!("{}-{arch}-{key}.ptx", kernel.name)));
    if let Some(p) = &cached {
        if let Ok(ptx) = std::fs::read_to_string(p) {
            return Ok(ptx);
        }
    }
    let opts = cudarc::nvrtc::CompileOptions {
        options,
        name: Some(format!("{}.cu", kernel.name)),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(&source, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => CudaError::Compile {
            kernel: kernel.name.to_string(),
            arch: arch.to_string(),
            log: log.to_string_lossy().into_owned(),
        },
        other => CudaError::Compile {
            kernel: kernel.name.to_string(),
            arch: arch.to_string(),
            log: other.to_string(),
        },
    })?;
    let text = ptx.to_src();
    if let Some(p) = &cached {
        write_atomically(p, text.as_bytes())?;
    }
    Ok(text)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CudaError> {
    use std::io::Write;
    let err = |e: std::io::Error| CudaError::Cache {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(err)?;
    let mut f = atomic_write_file::AtomicWriteFile::open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.commit().map_err(err)
}
