//! Returning freed memory to the operating system.
//!
//! Loading or rebuilding an indicator set frees much short-lived memory
//! (syntax trees, staging vectors, hash tables outgrown) in between the
//! long-lived indexes. The allocator keeps freed pages for reuse and gives
//! them back lazily, so right after a load of a million indicators the
//! resident set is some 35% above what is in use. [`release_freed`] asks
//! it to give back now whatever it can; the commands call it after a bulk
//! change of the indicator set.

/// Returns the calling thread's freed pages to the operating system, as
/// far as the allocator can. Costs a walk over the allocator's own
/// bookkeeping (milliseconds for gigabytes); meant for after bulk work,
/// not per event.
pub fn release_freed() {
    // SAFETY: `mi_collect` reads and updates only mimalloc's own state and
    // may be called at any time from any thread. When mimalloc is not the
    // global allocator its heaps are empty and the call does nothing.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
