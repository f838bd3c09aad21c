//! How the process's allocator treats freed buffers.
//!
//! A forward pass or training step allocates activation buffers of a few
//! megabytes each and frees them a moment later. glibc's malloc serves such
//! sizes from fresh `mmap`s once its adaptive threshold has grown and gives
//! them back with `munmap`, so every step paid for page faults, the kernel's
//! zeroing of fresh pages and TLB shootdowns between the cores (about a tenth
//! of a training step's samples in a profile, docs/performance.md). Keeping
//! freed memory in the heap for reuse removes most of that.

/// Keeps freed buffers up to glibc's largest mmap threshold (32 MiB) in the
/// heap for reuse, and never trims the heap back to the system. Call once,
/// at the start of a program that runs models; elsewhere than glibc it does
/// nothing.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's parameters; it is called before
    // the program allocates in earnest, and any value is valid for these two.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
