//! How a host patch stack reaches the GPU: small stacks in one copy from where they lie, large
//! ones through two page-locked (pinned) buffers, the next chunk filled on the CPU while the
//! previous one is copied (pageable copies run at a fraction of the bus speed and are
//! synchronous with respect to the host).

use std::ops::Range;

/// Stacks at least this large (bytes) are staged through pinned buffers.
pub const THRESHOLD_BYTES: usize = 32 << 20;

/// Size of each of the two pinned staging buffers (bytes), unless one patch needs more.
pub const BUFFER_BYTES: usize = 16 << 20;

/// Patches per staging buffer: as many whole patches of `patch_bytes` as `BUFFER_BYTES` holds,
/// at least one.
pub fn patches_per_buffer(patch_bytes: usize) -> usize {
    (BUFFER_BYTES / patch_bytes.max(1)).max(1)
}

/// The consecutive patch ranges, each at most `per_buffer` patches, that cover `0..count`.
pub fn chunks(count: usize, per_buffer: usize) -> impl Iterator<Item = Range<usize>> {
    let per_buffer = per_buffer.max(1);
    (0..count)
        .step_by(per_buffer)
        .map(move |start| start..(start + per_buffer).min(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_stack_once_in_order() {
        for (count, per) in [(0, 3), (1, 3), (3, 3), (4, 3), (10, 1), (7, 100), (5, 0)] {
            let ranges: Vec<_> = chunks(count, per).collect();
            let flat: Vec<usize> = ranges.iter().cloned().flatten().collect();
            assert_eq!(flat, (0..count).collect::<Vec<_>>(), "{count} {per}");
            assert!(
                ranges
                    .iter()
                    .all(|r| !r.is_empty() && r.len() <= per.max(1))
            );
        }
    }

    #[test]
    fn a_buffer_holds_at_least_one_patch() {
        assert_eq!(patches_per_buffer(BUFFER_BYTES * 3), 1);
        assert_eq!(
            patches_per_buffer(64 * 64 * 8),
            BUFFER_BYTES / (64 * 64 * 8)
        );
        assert_eq!(patches_per_buffer(0), BUFFER_BYTES);
    }
}
