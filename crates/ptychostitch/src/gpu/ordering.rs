//! Stream ordering for memory one stream frees while others used it.
//!
//! A [`super::cuda::GpuPlan`]'s tables live on its own stream and are freed there,
//! stream-ordered, when the plan is dropped; its kernels may run on a caller's stream (torch's
//! current stream, often non-blocking). A free queued on the owner's stream is ordered after
//! work on another stream only if the owner's stream waits for that work. So after every launch
//! on another stream, an event is recorded there and the owner's stream waits on it: the free
//! (and anything else queued on the owner's stream later) comes after the kernel.
//!
//! The decision is here, apart from the driver calls, so that it is tested without a GPU.

/// What must follow a launch on stream `used` that reads memory the stream `owner` frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLaunch {
    /// The same stream: its own order suffices.
    Nothing,
    /// Record an event on `used`; make `owner` wait on it.
    OwnerWaits,
}

/// CUDA's handles for the legacy default stream: 0 and `CU_STREAM_LEGACY` (1).
fn legacy(stream: usize) -> bool {
    stream == 0 || stream == 1
}

/// The ordering a launch on `used` needs for memory freed on `owner` (raw `CUstream` handles).
pub fn after_launch(owner: usize, used: usize) -> AfterLaunch {
    if owner == used || (legacy(owner) && legacy(used)) {
        AfterLaunch::Nothing
    } else {
        AfterLaunch::OwnerWaits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_on_another_stream_orders_the_owner_after_it() {
        // The plan's stream is the legacy default stream (0).
        assert_eq!(after_launch(0, 0), AfterLaunch::Nothing);
        assert_eq!(after_launch(0, 1), AfterLaunch::Nothing);
        // torch's or CuPy's stream (a pointer), the per-thread default stream (2).
        assert_eq!(after_launch(0, 0x5555_0000_1230), AfterLaunch::OwnerWaits);
        assert_eq!(after_launch(0, 2), AfterLaunch::OwnerWaits);
        assert_eq!(after_launch(0x77, 0x77), AfterLaunch::Nothing);
        assert_eq!(after_launch(0x77, 0), AfterLaunch::OwnerWaits);
    }
}
