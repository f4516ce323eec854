//! Stream ordering for memory one stream frees while others used it.
//!
//! A [`super::cuda::GpuPlan`]'s tables live on its own stream and are freed there,
//! stream-ordered, when the plan is dropped; its kernels may run on a caller's stream (torch's
//! current stream, often a side stream). A free queued on the owner's stream is ordered after
//! work on another stream only if the owner's stream waits for that work. So after a launch on
//! another stream an event is recorded there, and when the plan is dropped the owner's stream
//! waits on the last event of every stream it was used on, then frees. The owner's stream is
//! not made to wait at every launch: that wait (on the legacy default stream) would serialise
//! every blocking stream -- torch's default stream among them -- behind a kernel queued on a
//! side stream.
//!
//! A launch on a stream that is being captured into a CUDA graph (`torch.cuda.graph`) records
//! nothing outside the capture (an event recorded there may not be waited on by a stream that
//! is not captured; the capture would be invalidated): the plan's tables are instead kept for
//! the life of the process, since the graph may replay them at any later time and its end
//! cannot be observed.
//!
//! The decision is here, apart from the driver calls, so that it is tested without a GPU.

/// What must follow a launch on stream `used` that reads memory the stream `owner` frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLaunch {
    /// The same stream: its own order suffices.
    Nothing,
    /// Record an event on `used`; the owner's stream waits on it before it frees.
    RecordForDrop,
    /// `used` is capturing a graph: touch nothing outside it, and never free the tables.
    KeepTables,
}

/// CUDA's handles for the legacy default stream: 0 and `CU_STREAM_LEGACY` (1).
fn legacy(stream: usize) -> bool {
    stream == 0 || stream == 1
}

/// The ordering a launch on `used` needs for memory freed on `owner` (raw `CUstream` handles);
/// `capturing`: `used` is capturing a CUDA graph.
pub fn after_launch(owner: usize, used: usize, capturing: bool) -> AfterLaunch {
    if capturing {
        AfterLaunch::KeepTables
    } else if owner == used || (legacy(owner) && legacy(used)) {
        AfterLaunch::Nothing
    } else {
        AfterLaunch::RecordForDrop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_on_another_stream_orders_the_owners_free_after_it() {
        // The plan's stream is the legacy default stream (0).
        assert_eq!(after_launch(0, 0, false), AfterLaunch::Nothing);
        assert_eq!(after_launch(0, 1, false), AfterLaunch::Nothing);
        // torch's or CuPy's stream (a pointer), the per-thread default stream (2).
        assert_eq!(
            after_launch(0, 0x5555_0000_1230, false),
            AfterLaunch::RecordForDrop
        );
        assert_eq!(after_launch(0, 2, false), AfterLaunch::RecordForDrop);
        assert_eq!(after_launch(0x77, 0x77, false), AfterLaunch::Nothing);
        assert_eq!(after_launch(0x77, 0, false), AfterLaunch::RecordForDrop);
    }

    #[test]
    fn a_launch_into_a_graph_capture_keeps_the_tables_and_records_nothing() {
        for used in [0, 1, 2, 0x77, 0x5555_0000_1230] {
            assert_eq!(after_launch(0, used, true), AfterLaunch::KeepTables);
        }
    }
}
