//! The memory allocator training runs fastest with on the CPU (docs/benchmarks.md).
//!
//! A training step frees and allocates the same large tensor buffers again and again. glibc's
//! allocator returns every buffer over 32 MiB to the system when it is freed, so the next step
//! faults fresh zeroed pages in; at a vocabulary of 32,000 that was a third of the step. mimalloc
//! told to keep freed memory reuses it. A program opts in with two lines:
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: peft_train::allocator::Allocator = peft_train::allocator::Allocator;
//!
//! fn main() {
//!     peft_train::allocator::keep_freed_memory();
//!     // ... train
//! }
//! ```

/// mimalloc, to be declared the `#[global_allocator]`.
pub use mimalloc::MiMalloc as Allocator;

/// mimalloc.h's `mi_option_purge_delay` (libmimalloc-sys does not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed pages to the system (`purge_delay = -1`), so a training
/// loop reuses them; memory stays at the loop's peak. Has no effect unless [`Allocator`] is the
/// global allocator.
pub fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's documented options; any value is valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
