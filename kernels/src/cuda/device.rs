//! A CUDA device with flow's kernels loaded: modules compiled on first use
//! for the device's own architecture, and host-side launchers for the
//! kernels the ops call directly (SLERP for merging, AdamW for training).
//!
//! Only construct a [`Gpu`] after [`super::probe`] succeeded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg,
};

use super::{compile, CudaError, SOURCES};

/// One device, its stream, and the kernel modules loaded so far.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

fn driver(e: cudarc::driver::DriverError) -> CudaError {
    CudaError::NoDriver(format!("{e:?}"))
}

const THREADS: u32 = 256;

fn grid_for(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 65_535 * 8) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl Gpu {
    /// Opens device `ordinal`.
    pub fn new(ordinal: usize) -> Result<Gpu, CudaError> {
        super::probe()?;
        let ctx = CudaContext::new(ordinal).map_err(driver)?;
        let (major, minor) = ctx.compute_capability().map_err(driver)?;
        let stream = ctx.default_stream();
        Ok(Gpu {
            ctx,
            stream,
            arch: format!("sm_{major}{minor}"),
            modules: Mutex::new(HashMap::new()),
        })
    }

    /// The architecture the kernels are compiled for (`sm_90` on Hopper).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Kernel `entry` of family `family`, compiling and loading the family
    /// on first use (PTX cached on disk).
    pub fn function(&self, family: &str, entry: &str) -> Result<CudaFunction, CudaError> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        let source =
            SOURCES
                .iter()
                .find(|k| k.name == family)
                .ok_or_else(|| CudaError::Compile {
                    kernel: family.to_string(),
                    arch: self.arch.clone(),
                    log: "no such kernel family".into(),
                })?;
        let module = match modules.get(source.name) {
            Some(m) => m.clone(),
            None => {
                let ptx = compile(source, &self.arch, Some(&super::cache_dir()))?;
                let m = self
                    .ctx
                    .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                    .map_err(driver)?;
                modules.insert(source.name, m.clone());
                m
            }
        };
        module.load_function(entry).map_err(driver)
    }

    /// `slerp(t, a, b)` of two f32 tensors on the device, mergekit's rules;
    /// returns the result and whether the linear branch was taken.
    pub fn slerp_f32(&self, t: f32, a: &[f32], b: &[f32]) -> Result<(Vec<f32>, bool), CudaError> {
        assert_eq!(a.len(), b.len(), "slerp of tensors of different sizes");
        let n = a.len() as i64;
        let s = &self.stream;
        let da = s.clone_htod(a).map_err(driver)?;
        let db = s.clone_htod(b).map_err(driver)?;
        let mut sums = s.alloc_zeros::<f64>(3).map_err(driver)?;
        let mut coeffs = s.alloc_zeros::<f32>(3).map_err(driver)?;
        // Poisoned, so a kernel that skips an element shows up as NaN.
        let mut out = s.clone_htod(&vec![f32::NAN; a.len()]).map_err(driver)?;
        let reduce = self.function("slerp", "slerp_reduce_f32")?;
        let coefficients = self.function("slerp", "slerp_coefficients")?;
        let apply = self.function("slerp", "slerp_apply_f32")?;
        let threshold = crate::cpu::SLERP_DOT_THRESHOLD;
        let eps = crate::cpu::SLERP_NORM_EPS;
        // SAFETY: argument lists match the kernels' signatures in slerp.cu.
        unsafe {
            s.launch_builder(&reduce)
                .arg(&da)
                .arg(&db)
                .arg(&n)
                .arg(&mut sums)
                .launch(grid_for(a.len()))
                .map_err(driver)?;
            s.launch_builder(&coefficients)
                .arg(&sums)
                .arg(&t)
                .arg(&threshold)
                .arg(&eps)
                .arg(&mut coeffs)
                .launch(LaunchConfig {
                    grid_dim: (1, 1, 1),
                    block_dim: (1, 1, 1),
                    shared_mem_bytes: 0,
                })
                .map_err(driver)?;
            s.launch_builder(&apply)
                .arg(&da)
                .arg(&db)
                .arg(&n)
                .arg(&coeffs)
                .arg(&mut out)
                .launch(grid_for(a.len()))
                .map_err(driver)?;
        }
        let result = s.clone_dtoh(&out).map_err(driver)?;
        let c = s.clone_dtoh(&coeffs).map_err(driver)?;
        Ok((result, c[2] != 0.0))
    }

    /// One AdamW step on f32 tensors (master weights, moments and gradient
    /// uploaded, updated on the device, copied back).
    #[allow(clippy::too_many_arguments)]
    pub fn adamw_f32(
        &self,
        cfg: &crate::cpu::AdamW,
        step: u64,
        param: &mut [f32],
        grad: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    ) -> Result<(), CudaError> {
        let n = param.len() as i64;
        let s = &self.stream;
        let mut dp = s.clone_htod(param).map_err(driver)?;
        let mut dm = s.clone_htod(m).map_err(driver)?;
        let mut dv = s.clone_htod(v).map_err(driver)?;
        let dg = s.clone_htod(grad).map_err(driver)?;
        let f = self.function("adamw", "adamw_f32")?;
        let bc1 = 1.0 - cfg.beta1.powi(step as i32);
        let bc2 = 1.0 - cfg.beta2.powi(step as i32);
        let scale = 1.0f32;
        // SAFETY: argument list matches `adamw_f32` in adamw.cu.
        unsafe {
            s.launch_builder(&f)
                .arg(&mut dp)
                .arg(&mut dm)
                .arg(&mut dv)
                .arg(&dg)
                .arg(&n)
                .arg(&cfg.lr)
                .arg(&cfg.beta1)
                .arg(&cfg.beta2)
                .arg(&cfg.eps)
                .arg(&cfg.weight_decay)
                .arg(&bc1)
                .arg(&bc2)
                .arg(&scale)
                .launch(grid_for(param.len()))
                .map_err(driver)?;
        }
        s.memcpy_dtoh(&dp, param).map_err(driver)?;
        s.memcpy_dtoh(&dm, m).map_err(driver)?;
        s.memcpy_dtoh(&dv, v).map_err(driver)?;
        Ok(())
    }
}
