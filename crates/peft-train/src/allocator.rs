//! The memory allocator training runs fastest with on the CPU (docs/benchmarks.md).
//!
//! A training step frees and allocates the same large tensor buffers again and again. glibc's
//! allocator returns every buffer over 32 MiB to the system when it is freed, so the next step
//! faults fresh zeroed pages in; at a vocabulary of 32,000 that was a third of the step. mimalloc
//! told to keep freed memory reuses it, and glibc told the same keeps the buffers of C and C++
//! libraries (libtorch's, under burn-tch). A program opts in with two lines, the call placed
//! after the model is loaded:
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: peft_train::allocator::Allocator = peft_train::allocator::Allocator;
//!
//! fn main() {
//!     // ... load the model
//!     peft_train::allocator::keep_freed_memory();
//!     // ... train
//! }
//! ```

/// mimalloc, to be declared the `#[global_allocator]`.
pub use mimalloc::MiMalloc as Allocator;

/// mimalloc.h's `mi_option_purge_delay` (libmimalloc-sys does not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed pages to the system (`purge_delay = -1`), and on glibc
/// tells the C allocator the same (the allocations of C and C++ libraries in the process, such
/// as libtorch's tensors under burn-tch, do not go through Rust's global allocator), so a
/// training loop reuses its buffers; memory stays at the loop's high-water mark. mimalloc's part
/// has no effect unless [`Allocator`] is the global allocator.
///
/// Call it once the model is loaded: what mimalloc holds freed at the call (a loader's file
/// buffers) goes back to the system first. Where the tensors are not Rust allocations (burn-tch,
/// the GPU backends) that memory would never be reused: on SmolLM2-135M under burn-tch, calling
/// it before loading kept 0.8 GB resident for the whole run (docs/benchmarks.md). Under
/// burn-ndarray the tensors, Rust allocations themselves, reuse most of it (0.09 GB more at
/// the peak when called first).
pub fn keep_freed_memory() {
    // SAFETY: mi_collect and mi_option_set take any value at any time.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
    keep_freed_c_memory();
}

/// glibc's allocator serves a buffer above its mmap threshold (dynamic, at most 32 MiB) with a
/// fresh mapping it unmaps on free, and trims freed memory at the top of its heap: both make the
/// next step fault its pages in again. Buffers up to 1 GiB come from the heap instead, which is
/// never trimmed and grows 256 MiB at a time (docs/benchmarks.md, burn-tch's step). Threads other
/// than the main one allocate from arenas of at most 64 MiB, so their larger buffers are still
/// mapped: `peft` and the examples train on the main thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_c_memory() {
    // SAFETY: mallopt only sets glibc's tuning parameters; every value here is within its range.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Without glibc, the C allocator keeps its own defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_c_memory() {}
