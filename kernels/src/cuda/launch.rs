//! The one way a kernel is launched. A launcher pushes its arguments through
//! [`KernelCall`], which records the kind of each one and, before anything
//! reaches the driver, compares the list with the kernel's C parameter list
//! in [`SIGNATURES`]. `kernels/tests/launcher_signatures.rs` checks that
//! table against the `__global__` declarations of the `.cu` sources, so a
//! launcher whose arguments drift from its kernel fails with an error that
//! names both, instead of reading garbage on the device.

use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg};

use super::CudaError;

/// The element type behind a device pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    Bf16,
    F32,
    F64,
    I32,
}

/// The kind of one kernel parameter, as its C declaration says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// `const T*`: read only.
    In(Elem),
    /// `T*`: written (or read and written).
    Out(Elem),
    /// `int`.
    Int,
    /// `long long`.
    Long,
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// The attention kernels' `AttnDims` struct, passed by value.
    AttnDims,
}

/// A kernel's entry point and its parameter kinds, in order.
#[derive(Debug)]
pub struct Signature {
    pub family: &'static str,
    pub entry: &'static str,
    pub args: &'static [Arg],
}

use Arg::{Double, Float, In, Int, Long, Out};
use Elem::{Bf16, F32, F64, I32};

const ATTN_FORWARD: &[Arg] = &[
    In(Bf16),
    In(Bf16),
    In(Bf16),
    In(I32),
    Out(Bf16),
    Out(F32),
    Arg::AttnDims,
];
const ATTN_DELTA: &[Arg] = &[In(Bf16), In(Bf16), Out(F32), Arg::AttnDims, Int];
const ATTN_DQ: &[Arg] = &[
    In(Bf16),
    In(Bf16),
    In(Bf16),
    In(I32),
    In(Bf16),
    In(F32),
    In(F32),
    Out(Bf16),
    Arg::AttnDims,
];
const ATTN_DKDV: &[Arg] = &[
    In(Bf16),
    In(Bf16),
    In(Bf16),
    In(I32),
    In(Bf16),
    In(F32),
    In(F32),
    Out(Bf16),
    Out(Bf16),
    Arg::AttnDims,
];

/// Every kernel entry point of `kernels/cuda/*.cu` with its parameter list.
pub const SIGNATURES: &[Signature] = &[
    Signature {
        family: "adamw",
        entry: "adamw_bf16",
        args: &[
            Out(F32),
            Out(F32),
            Out(F32),
            In(Bf16),
            Out(Bf16),
            Long,
            Float,
            Float,
            Float,
            Float,
            Float,
            Float,
            Float,
            Float,
        ],
    },
    Signature {
        family: "adamw",
        entry: "adamw_f32",
        args: &[
            Out(F32),
            Out(F32),
            Out(F32),
            In(F32),
            Long,
            Float,
            Float,
            Float,
            Float,
            Float,
            Float,
            Float,
            Float,
        ],
    },
    Signature {
        family: "attention",
        entry: "attention_forward_d64",
        args: ATTN_FORWARD,
    },
    Signature {
        family: "attention",
        entry: "attention_forward_d128",
        args: ATTN_FORWARD,
    },
    Signature {
        family: "attention",
        entry: "attention_backward_delta_d64",
        args: ATTN_DELTA,
    },
    Signature {
        family: "attention",
        entry: "attention_backward_delta_d128",
        args: ATTN_DELTA,
    },
    Signature {
        family: "attention",
        entry: "attention_backward_dq_d64",
        args: ATTN_DQ,
    },
    Signature {
        family: "attention",
        entry: "attention_backward_dq_d128",
        args: ATTN_DQ,
    },
    Signature {
        family: "attention",
        entry: "attention_backward_dkdv_d64",
        args: ATTN_DKDV,
    },
    Signature {
        family: "attention",
        entry: "attention_backward_dkdv_d128",
        args: ATTN_DKDV,
    },
    Signature {
        family: "attention",
        entry: "bidir_attention_forward",
        args: &[
            In(Bf16),
            In(Bf16),
            In(Bf16),
            In(I32),
            In(I32),
            In(F32),
            Int,
            Int,
            Float,
            Out(F32),
            Out(Bf16),
        ],
    },
    Signature {
        family: "attention",
        entry: "bidir_attention_backward_dq",
        args: &[
            In(Bf16),
            In(Bf16),
            In(Bf16),
            In(I32),
            In(I32),
            In(F32),
            In(F32),
            Int,
            Int,
            Float,
            Out(F32),
            Out(Bf16),
        ],
    },
    Signature {
        family: "attention",
        entry: "bidir_attention_backward_dkdv",
        args: &[
            In(Bf16),
            In(Bf16),
            In(I32),
            In(I32),
            In(F32),
            In(F32),
            In(F32),
            Int,
            Int,
            Out(Bf16),
            Out(Bf16),
        ],
    },
    Signature {
        family: "cross_entropy",
        entry: "cross_entropy_forward_backward",
        args: &[In(Bf16), In(I32), Int, Float, Out(F32), Out(Bf16)],
    },
    Signature {
        family: "embedding",
        entry: "embedding_forward",
        args: &[In(I32), In(Bf16), Int, Int, Out(Bf16)],
    },
    Signature {
        family: "embedding",
        entry: "embedding_backward",
        args: &[In(I32), In(I32), In(I32), In(Bf16), Int, Out(F32)],
    },
    Signature {
        family: "gelu",
        entry: "gelu_forward",
        args: &[In(Bf16), Out(Bf16), Long],
    },
    Signature {
        family: "gelu",
        entry: "gelu_backward",
        args: &[In(Bf16), In(Bf16), Out(Bf16), Long],
    },
    Signature {
        family: "layernorm",
        entry: "layernorm_forward",
        args: &[
            In(Bf16),
            In(Bf16),
            In(Bf16),
            Float,
            Int,
            Out(Bf16),
            Out(F32),
            Out(F32),
        ],
    },
    Signature {
        family: "layernorm",
        entry: "layernorm_backward",
        args: &[
            In(Bf16),
            In(Bf16),
            In(Bf16),
            In(F32),
            In(F32),
            Int,
            Int,
            Out(Bf16),
            Out(F32),
            Out(F32),
        ],
    },
    Signature {
        family: "reduce",
        entry: "sum_of_squares_f32",
        args: &[In(F32), Long, Out(F64)],
    },
    Signature {
        family: "reduce",
        entry: "sum_of_squares_bf16",
        args: &[In(Bf16), Long, Out(F64)],
    },
    Signature {
        family: "reduce",
        entry: "scale_f32",
        args: &[Out(F32), Long, Float],
    },
    Signature {
        family: "reduce",
        entry: "column_sum_f32",
        args: &[In(F32), Int, Int, Out(F32)],
    },
    Signature {
        family: "rmsnorm",
        entry: "rmsnorm_forward",
        args: &[In(Bf16), In(Bf16), Float, Int, Out(Bf16), Out(F32)],
    },
    Signature {
        family: "rmsnorm",
        entry: "rmsnorm_backward",
        args: &[
            In(Bf16),
            In(Bf16),
            In(Bf16),
            In(F32),
            Int,
            Int,
            Out(Bf16),
            Out(F32),
        ],
    },
    Signature {
        family: "rope",
        entry: "rope_forward",
        args: &[Out(Bf16), In(I32), Int, Int, Int, Float],
    },
    Signature {
        family: "rope",
        entry: "rope_backward",
        args: &[Out(Bf16), In(I32), Int, Int, Int, Float],
    },
    Signature {
        family: "slerp",
        entry: "slerp_reduce_f32",
        args: &[In(F32), In(F32), Long, Out(F64)],
    },
    Signature {
        family: "slerp",
        entry: "slerp_reduce_bf16",
        args: &[In(Bf16), In(Bf16), Long, Out(F64)],
    },
    Signature {
        family: "slerp",
        entry: "slerp_coefficients",
        args: &[In(F64), Float, Double, Double, Out(F32)],
    },
    Signature {
        family: "slerp",
        entry: "slerp_apply_f32",
        args: &[In(F32), In(F32), Long, In(F32), Out(F32)],
    },
    Signature {
        family: "slerp",
        entry: "slerp_apply_bf16",
        args: &[In(Bf16), In(Bf16), Long, In(F32), Out(Bf16)],
    },
    Signature {
        family: "swiglu",
        entry: "swiglu_forward",
        args: &[In(Bf16), In(Bf16), Out(Bf16), Long],
    },
    Signature {
        family: "swiglu",
        entry: "swiglu_backward",
        args: &[In(Bf16), In(Bf16), In(Bf16), Out(Bf16), Out(Bf16), Long],
    },
    Signature {
        family: "tensor",
        entry: "add_bf16",
        args: &[Out(Bf16), In(Bf16), Long],
    },
    Signature {
        family: "tensor",
        entry: "add_bias_bf16",
        args: &[Out(Bf16), In(Bf16), Long, Int],
    },
    Signature {
        family: "tensor",
        entry: "bias_grad_bf16",
        args: &[In(Bf16), Long, Int, Out(F32)],
    },
    Signature {
        family: "tensor",
        entry: "accumulate_bf16_f32",
        args: &[Out(F32), In(Bf16), Long],
    },
    Signature {
        family: "tensor",
        entry: "cast_f32_bf16",
        args: &[In(F32), Out(Bf16), Long],
    },
    Signature {
        family: "tensor",
        entry: "scale_by_mask_bf16",
        args: &[Out(Bf16), In(F32), Long],
    },
    Signature {
        family: "tensor",
        entry: "tanh_bf16",
        args: &[Out(Bf16), Long],
    },
    Signature {
        family: "tensor",
        entry: "tanh_backward_bf16",
        args: &[Out(Bf16), In(Bf16), Long],
    },
];

/// The signature of `entry`, if the table has it.
pub fn signature(entry: &str) -> Option<&'static Signature> {
    SIGNATURES.iter().find(|s| s.entry == entry)
}

/// A Rust type that can sit behind a kernel pointer.
pub trait DeviceElem: DeviceRepr {
    const ELEM: Elem;
}
impl DeviceElem for half::bf16 {
    const ELEM: Elem = Elem::Bf16;
}
impl DeviceElem for f32 {
    const ELEM: Elem = Elem::F32;
}
impl DeviceElem for f64 {
    const ELEM: Elem = Elem::F64;
}
impl DeviceElem for i32 {
    const ELEM: Elem = Elem::I32;
}

/// `AttnDims` of `kernels/cuda/attention.cu`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnDims {
    /// Query rows per sequence.
    pub t: i32,
    /// Key rows per sequence (s ≥ t; query i sits at key s − t + i).
    pub s: i32,
    pub q_heads: i32,
    pub kv_heads: i32,
    pub scale: f32,
    /// 0: no sliding window.
    pub window: i32,
}
// SAFETY: a plain `repr(C)` struct of i32/f32 fields, the layout of the C
// struct it mirrors.
unsafe impl DeviceRepr for AttnDims {}

/// A null pointer for an optional `const T*` parameter (`doc_ids`). A
/// device pointer is a 64-bit value.
static NULL_POINTER: u64 = 0;

/// One launch being assembled: the driver's argument list and, beside it,
/// the kinds pushed so far.
pub struct KernelCall<'a> {
    signature: &'static Signature,
    args: LaunchArgs<'a>,
    kinds: Vec<Arg>,
}

impl<'a> KernelCall<'a> {
    pub(super) fn new(
        stream: &'a CudaStream,
        function: &'a cudarc::driver::CudaFunction,
        signature: &'static Signature,
    ) -> KernelCall<'a> {
        KernelCall {
            signature,
            args: stream.launch_builder(function),
            kinds: Vec::with_capacity(signature.args.len()),
        }
    }

    /// Pushes one argument and records its kind.
    fn push<A>(mut self, arg: A, kind: Arg) -> Self
    where
        LaunchArgs<'a>: PushKernelArg<A>,
    {
        self.args.arg(arg);
        self.kinds.push(kind);
        self
    }

    pub fn input<T: DeviceElem>(self, x: &'a CudaSlice<T>) -> Self {
        self.push(x, Arg::In(T::ELEM))
    }

    /// A null `const T*` (the kernels read it as "absent").
    pub fn null_input<T: DeviceElem>(self) -> Self {
        self.push(&NULL_POINTER, Arg::In(T::ELEM))
    }

    pub fn output<T: DeviceElem>(self, x: &'a mut CudaSlice<T>) -> Self {
        self.push(x, Arg::Out(T::ELEM))
    }

    pub fn int(self, v: &'a i32) -> Self {
        self.push(v, Arg::Int)
    }

    pub fn long(self, v: &'a i64) -> Self {
        self.push(v, Arg::Long)
    }

    pub fn float(self, v: &'a f32) -> Self {
        self.push(v, Arg::Float)
    }

    pub fn double(self, v: &'a f64) -> Self {
        self.push(v, Arg::Double)
    }

    pub fn dims(self, d: &'a AttnDims) -> Self {
        self.push(d, Arg::AttnDims)
    }

    /// Launches after checking the pushed kinds against the kernel's
    /// parameter list.
    ///
    /// # Safety
    /// The buffers must be as large as the kernel indexes them for the
    /// sizes passed; the launchers check that before calling this.
    pub unsafe fn launch(mut self, config: LaunchConfig) -> Result<(), CudaError> {
        if self.kinds != self.signature.args {
            return Err(CudaError::Launch {
                entry: self.signature.entry.to_string(),
                message: format!(
                    "the launcher passes {:?}, the kernel takes {:?}",
                    self.kinds, self.signature.args
                ),
            });
        }
        // SAFETY: the argument kinds match the kernel's C parameters (checked
        // above); buffer sizes are the caller's contract.
        unsafe { self.args.launch(config) }
            .map(|_| ())
            .map_err(|e| CudaError::Launch {
                entry: self.signature.entry.to_string(),
                message: format!("{e:?}"),
            })
    }
}
