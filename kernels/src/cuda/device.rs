//! A CUDA device with flow's kernels loaded: modules compiled on first use
//! for the device's own architecture. The launchers of every kernel are in
//! `launchers.rs`; `slerp_f32` here is the host-to-host form the `slerp`
//! op calls.
//!
//! Only construct a [`Gpu`] after [`super::probe`] succeeded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};

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

    /// `slerp(t, a, b)` of two f32 host tensors on the device, mergekit's
    /// rules; returns the result and whether the linear branch was taken.
    pub fn slerp_f32(&self, t: f32, a: &[f32], b: &[f32]) -> Result<(Vec<f32>, bool), CudaError> {
        if a.len() != b.len() {
            return Err(CudaError::Launch {
                entry: "slerp".into(),
                message: format!("tensors of {} and {} elements", a.len(), b.len()),
            });
        }
        let s = &self.stream;
        let da = s.clone_htod(a).map_err(driver)?;
        let db = s.clone_htod(b).map_err(driver)?;
        // Poisoned, so a kernel that skips an element shows up as NaN.
        let mut out = s.clone_htod(&vec![f32::NAN; a.len()]).map_err(driver)?;
        let linear = self.slerp(t, &da, &db, &mut out)?;
        Ok((s.clone_dtoh(&out).map_err(driver)?, linear))
    }
}
