//! A worker's pool of emptied outbound buffers, so that a fan-out turn
//! reuses the buffers the previous turn wrote out instead of asking the
//! allocator for them again.
//!
//! Why it exists: every loop turn fills one buffer per subscriber and
//! writes it out. Freed and allocated again, 1,000 buffers of 4–16 KiB made
//! glibc's heap grow and shrink every turn; `perf` showed a third of the
//! broker's core in `sysmalloc`, page faults, page clearing and `madvise`
//! at 2M delivered ticks/s. Idle connections still hold no buffer: only
//! emptied ones wait here, and [`trim`] gives back what a whole
//! housekeeping period did not need, so a burst does not pin memory.
//!
//! The pool is thread-local because each worker is one thread that owns its
//! connections: a buffer never crosses threads, no lock is needed, and the
//! many call sites that queue bytes do not have to carry the pool along.

use std::cell::RefCell;

/// Buffers larger than this are freed rather than kept: a rare large
/// message must not leave a large buffer behind for every later tick.
pub const MAX_POOLED_CAPACITY_BYTES: usize = 64 * 1024;

/// The most capacity one worker's pool holds. 1,000 subscribers with
/// 16 KiB buffers fit; past it, buffers go back to the allocator.
pub const MAX_POOL_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Default)]
struct Pool {
    buffers: Vec<Vec<u8>>,
    /// Capacity of all pooled buffers.
    bytes: usize,
    /// The fewest buffers the pool held since the last trim: that many
    /// were not needed during the period.
    low_water: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// An empty buffer, from the pool when it has one, else newly allocated
/// with `capacity`.
pub fn take(capacity: usize) -> Vec<u8> {
    POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let buffer = pool.buffers.pop()?;
        pool.bytes -= buffer.capacity();
        pool.low_water = pool.low_water.min(pool.buffers.len());
        Some(buffer)
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| Vec::with_capacity(capacity))
}

/// Returns a buffer whose bytes are no longer needed.
pub fn give(mut buffer: Vec<u8>) {
    let capacity = buffer.capacity();
    if capacity == 0 || capacity > MAX_POOLED_CAPACITY_BYTES {
        return;
    }
    // `try_with`: a queue dropped while its thread is being torn down
    // finds the pool gone, and its buffer is simply freed.
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.bytes + capacity > MAX_POOL_BYTES {
            return;
        }
        buffer.clear();
        pool.bytes += capacity;
        pool.buffers.push(buffer);
    });
}

/// Frees the buffers the pool kept unused since the previous call; called
/// from the worker's housekeeping.
pub fn trim() {
    POOL.with(|pool| {
        let pool = &mut *pool.borrow_mut();
        let freed: usize = pool
            .buffers
            .drain(..pool.low_water)
            .map(|buffer| buffer.capacity())
            .sum();
        pool.bytes -= freed;
        pool.buffers.shrink_to(pool.buffers.len() * 2);
        pool.low_water = pool.buffers.len();
    });
}

/// Buffers and bytes of capacity the calling thread's pool holds.
pub fn held() -> (usize, usize) {
    POOL.with(|pool| {
        let pool = pool.borrow();
        (pool.buffers.len(), pool.bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each #[test] runs on its own thread, so each sees a fresh pool.

    #[test]
    fn a_given_buffer_comes_back_empty_with_its_capacity() {
        let mut buffer = take(100);
        buffer.extend_from_slice(&[7; 5000]);
        let capacity = buffer.capacity();
        give(buffer);
        assert_eq!(held(), (1, capacity));
        let again = take(100);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity);
        assert_eq!(held(), (0, 0));
    }

    #[test]
    fn oversized_buffers_are_not_kept() {
        give(Vec::with_capacity(MAX_POOLED_CAPACITY_BYTES + 1));
        give(Vec::new());
        assert_eq!(held(), (0, 0));
    }

    #[test]
    fn the_pool_stops_at_its_byte_bound() {
        let each = MAX_POOLED_CAPACITY_BYTES;
        for _ in 0..MAX_POOL_BYTES / each + 3 {
            give(Vec::with_capacity(each));
        }
        let (buffers, bytes) = held();
        assert!(bytes <= MAX_POOL_BYTES, "{bytes}");
        assert_eq!(buffers, MAX_POOL_BYTES / each);
    }

    #[test]
    fn trim_frees_only_what_a_whole_period_left_unused() {
        for _ in 0..10 {
            give(Vec::with_capacity(1024));
        }
        trim(); // starts a period with 10 pooled
        let taken: Vec<_> = (0..4).map(|_| take(1024)).collect();
        for buffer in taken {
            give(buffer);
        }
        // 6 were never taken during the period.
        trim();
        assert_eq!(held().0, 4);
        // A period with no takes frees the rest.
        trim();
        assert_eq!(held().0, 0);
    }
}
