//! Conversions between f32 and the 16-bit float formats (through `half`'s
//! vectorised slice conversions).

use half::slice::HalfFloatSliceExt;

/// bf16 → f32 (exact).
pub fn bf16_to_f32(src: &[half::bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "bf16_to_f32: lengths");
    src.convert_to_f32_slice(dst);
}

/// f32 → bf16, rounding to nearest even.
pub fn f32_to_bf16(src: &[f32], dst: &mut [half::bf16]) {
    assert_eq!(src.len(), dst.len(), "f32_to_bf16: lengths");
    dst.convert_from_f32_slice(src);
}

/// f16 → f32 (exact).
pub fn f16_to_f32(src: &[half::f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32: lengths");
    src.convert_to_f32_slice(dst);
}
