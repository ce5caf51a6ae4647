//! `keep_freed_memory` returns what was freed before it (a model loader's buffers) and keeps what
//! is freed after it, in mimalloc and in glibc's heap. A test without libtest's harness
//! (Cargo.toml: `harness = false`): the allocators' state is process-wide, and the checks have to
//! run on the main thread, whose arena is the heap glibc's setting is for (other threads' arenas
//! are at most 64 MiB each and are trimmed on their own terms).

#[cfg(all(feature = "mimalloc", target_os = "linux"))]
#[global_allocator]
static ALLOCATOR: peft_train::allocator::Allocator = peft_train::allocator::Allocator;

#[cfg(all(feature = "mimalloc", target_os = "linux"))]
fn main() {
    freed_before_goes_back_freed_after_stays();
    #[cfg(target_env = "gnu")]
    large_c_buffers_stay_in_the_heap();
}

/// The process's resident memory in bytes (`VmRSS`).
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

/// A 256 MiB buffer freed before the call (the loader's file, on burn-tch or a GPU, where the
/// tensors live outside Rust's allocator) leaves the resident set; one freed after it stays.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
fn freed_before_goes_back_freed_after_stays() {
    use std::hint::black_box;

    let size = 256 << 20;
    let before = resident_bytes();
    drop(black_box(vec![1u8; size]));
    peft_train::allocator::keep_freed_memory();
    let returned = resident_bytes();
    assert!(returned < before + size / 4, "memory freed before the call stayed resident ({before} -> {returned} bytes)");
    drop(black_box(vec![1u8; size]));
    let kept = resident_bytes();
    assert!(kept > returned + size * 3 / 4, "memory freed after the call went back ({returned} -> {kept} bytes)");
    println!("test freed_before_goes_back_freed_after_stays ... ok");
}

/// A 64 MiB buffer (one chunk of the fused loss's logits) comes from the heap and stays there
/// after `free`, instead of being mapped and unmapped (mallinfo2: `hblkhd` counts mapped bytes,
/// `arena` the heap's bytes, `fordblks` its free bytes).
#[cfg(all(feature = "mimalloc", target_os = "linux", target_env = "gnu"))]
fn large_c_buffers_stay_in_the_heap() {
    use std::hint::black_box;

    let size = 64 << 20;
    // SAFETY: a plain allocation, written, measured and freed; mallinfo2 only reads counters.
    // `black_box` keeps the compiler from removing the malloc/free pair.
    let (during, after) = unsafe {
        let buffer = black_box(libc::malloc(size));
        assert!(!buffer.is_null());
        libc::memset(buffer, 1, size);
        let during = libc::mallinfo2();
        libc::free(black_box(buffer));
        (during, libc::mallinfo2())
    };
    assert_eq!(during.hblkhd, 0, "the buffer was mapped on its own");
    assert!(during.arena >= size, "the buffer is not in the heap ({} bytes)", during.arena);
    assert!(after.arena >= size && after.fordblks >= size, "the heap gave the freed buffer back ({} bytes, {} free)", after.arena, after.fordblks);
    println!("test large_c_buffers_stay_in_the_heap ... ok");
}

#[cfg(not(all(feature = "mimalloc", target_os = "linux")))]
fn main() {}
