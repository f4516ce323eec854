//! One writer per output element: the emulator runs a launch one thread at a time, so two GPU
//! threads storing to one element (a race on hardware) would pass unseen; the emulated launcher
//! watches every store of a launch instead (`PS_STORE` in `kernel.cu`, `emulation.h`), and every
//! other emulator test fails on a launch that has one. Here: the watch does see a race, and no
//! kernel stores an output without it.

#[test]
fn the_write_watch_sees_two_threads_store_one_element() {
    // One thread storing: no race. 64 threads in 2 blocks storing one element: 63 flagged.
    assert_eq!(
        ptychostitch_kernel_emu::racy_launch([1, 1, 1], [1, 1, 1]),
        0
    );
    assert_eq!(
        ptychostitch_kernel_emu::racy_launch([2, 1, 1], [32, 1, 1]),
        63
    );
}

#[test]
fn every_output_store_in_kernel_cu_is_watched() {
    let source = ptychostitch::gpu::KERNEL_SOURCE;
    let mut raw = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("").trim_start();
        // A store to a launch argument's array: `a.field[...] =`, `+=`, … outside PS_STORE.
        if let Some(rest) = code.strip_prefix("a.") {
            let after = rest.split_once(']').map(|(_, tail)| tail.trim_start());
            if after.is_some_and(|t| {
                t.starts_with('=') && !t.starts_with("==")
                    || ["+=", "-=", "*=", "/="].iter().any(|op| t.starts_with(op))
            }) {
                raw.push(format!("kernel.cu:{}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(
        raw.is_empty(),
        "stores that bypass PS_STORE:\n{}",
        raw.join("\n")
    );
    assert!(source.matches("PS_STORE(a.").count() >= 30);
}
