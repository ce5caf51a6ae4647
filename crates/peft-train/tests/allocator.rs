//! `keep_freed_memory` keeps C libraries' large buffers in glibc's heap. A test without libtest's
//! harness (Cargo.toml: `harness = false`): glibc's counters are process-wide, and the check has
//! to run on the main thread, whose arena is the heap the setting is for (other threads' arenas
//! are at most 64 MiB each and are trimmed on their own terms).

/// A 64 MiB buffer (one chunk of the fused loss's logits) comes from the heap and stays there
/// after `free`, instead of being mapped and unmapped (mallinfo2: `hblkhd` counts mapped bytes,
/// `arena` the heap's bytes, `fordblks` its free bytes).
#[cfg(all(feature = "mimalloc", target_os = "linux", target_env = "gnu"))]
fn main() {
    use std::hint::black_box;

    peft_train::allocator::keep_freed_memory();
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

#[cfg(not(all(feature = "mimalloc", target_os = "linux", target_env = "gnu")))]
fn main() {}
