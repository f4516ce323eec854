//! How much memory a run may use, and allocation that reports failure instead of aborting.
//!
//! The effective limit is the smallest of physical memory (`MemTotal`), the cgroup's
//! `memory.max` (v2) or `memory.limit_in_bytes` (v1), and what remains of the address-space limit
//! (`ulimit -v`, `RLIMIT_AS`) after what the process already maps. Containers and batch schedulers
//! set the cgroup limit; shells set `ulimit`. Physical memory alone would let a job start that the
//! kernel then kills.

use crate::error::{Error, Result};
use std::sync::OnceLock;

/// A memory limit and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Bytes available.
    pub bytes: f64,
    /// Where the number comes from, for messages: `"physical memory"`, `"cgroup memory limit"`,
    /// `"address-space limit (ulimit -v)"` or `"address space"`.
    pub source: &'static str,
}

impl Limit {
    fn min(self, other: Option<Limit>) -> Limit {
        match other {
            Some(o) if o.bytes < self.bytes => o,
            _ => self,
        }
    }
}

/// The effective memory limit of this process now (see the module documentation).
///
/// Physical memory and the cgroup limit are read once per process; the address-space limit is
/// read on every call, because what remains of it changes as the process maps memory.
pub fn limit() -> Limit {
    static FIXED: OnceLock<Limit> = OnceLock::new();
    let fixed = *FIXED.get_or_init(|| {
        let physical = physical_memory()
            .map(|bytes| Limit {
                bytes,
                source: "physical memory",
            })
            .unwrap_or(Limit {
                bytes: isize::MAX as f64,
                source: "address space",
            });
        physical.min(cgroup_limit().map(|bytes| Limit {
            bytes,
            source: "cgroup memory limit",
        }))
    });
    fixed.min(address_space_left().map(|bytes| Limit {
        bytes,
        source: "address-space limit (ulimit -v)",
    }))
}

/// Checks that `bytes` fit in the effective limit; the error says what for and how much.
pub fn check(bytes: f64, side: f64) -> Result<()> {
    check_with(bytes, side, 0.0, limit())
}

/// Checks that `bytes` more than the process uses now fit in the effective limit: resident
/// memory counts against physical and cgroup limits, mapped memory against `ulimit -v` (whose
/// limit [`limit`] already reports net of it). `side` is the canvas side, for the message.
pub fn check_additional(bytes: f64, side: f64) -> Result<()> {
    let limit = limit();
    let in_use = if limit.source.starts_with("address") {
        0.0
    } else {
        status_bytes("VmRSS:").unwrap_or(0.0)
    };
    check_with(bytes, side, in_use, limit)
}

fn check_with(bytes: f64, side: f64, in_use: f64, limit: Limit) -> Result<()> {
    if bytes.is_finite() && in_use + bytes <= limit.bytes {
        return Ok(());
    }
    if bytes.is_finite() && bytes <= limit.bytes {
        // Not the canvas's fault: what the process holds already leaves too little room.
        return Err(Error::MemoryHeld {
            side,
            needed_bytes: bytes,
            held_bytes: in_use,
            limit_bytes: limit.bytes,
            limit_source: limit.source,
        });
    }
    Err(Error::CanvasTooLarge {
        side,
        needed_bytes: bytes,
        limit_bytes: (limit.bytes - in_use).max(0.0),
        limit_source: limit.source,
    })
}

/// A vector of `len` zeroed values, or [`Error::OutOfMemory`] naming `what`.
///
/// Zeroed by the allocator (fresh pages from the OS are already zero), not by a memset.
pub fn try_zeroed_vec<T: bytemuck::Zeroable>(
    len: usize,
    what: impl FnOnce() -> String,
) -> Result<Vec<T>> {
    let bytes = len as f64 * std::mem::size_of::<T>() as f64;
    if beyond_limit(bytes) {
        return Err(Error::OutOfMemory {
            what: what(),
            bytes,
        });
    }
    let v = bytemuck::allocation::try_zeroed_vec::<T>(len).map_err(|()| Error::OutOfMemory {
        what: what(),
        bytes,
    })?;
    advise_huge_pages(v.as_ptr().cast(), len * std::mem::size_of::<T>());
    Ok(v)
}

/// Asks Linux to back a large fresh allocation with transparent huge pages (where THP is in
/// `madvise` mode, the common default): one fault per 2 MiB instead of per 4 KiB when it is
/// first written. The patches' cotangent at n = 10,000 (328 MB, written sparsely) is the case
/// this is for. Only advice: nothing changes where the kernel declines.
pub(crate) fn advise_huge_pages(ptr: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if bytes < 16 * HUGE {
            return;
        }
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: `start..end` lies inside the allocation that was just made (rounded
            // inwards to whole huge pages); MADV_HUGEPAGE changes no contents and no mapping.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}

/// True for a request larger than the effective limit. An allocation the kernel grants lazily
/// (overcommit) could otherwise succeed and get the process killed when the pages are touched.
/// Requests under 64 MiB are not checked (reading the limit costs more than they do).
fn beyond_limit(bytes: f64) -> bool {
    bytes > (64 << 20) as f64 && bytes > limit().bytes
}

/// An empty vector with room for `len` values, or [`Error::OutOfMemory`] naming `what`.
pub fn try_with_capacity<T>(len: usize, what: impl FnOnce() -> String) -> Result<Vec<T>> {
    let bytes = len as f64 * std::mem::size_of::<T>() as f64;
    let mut v = Vec::new();
    if beyond_limit(bytes) || v.try_reserve_exact(len).is_err() {
        return Err(Error::OutOfMemory {
            what: what(),
            bytes,
        });
    }
    Ok(v)
}

/// A vector of `len` copies of `value`, or [`Error::OutOfMemory`] naming `what`.
pub fn try_filled_vec<T: Clone>(
    len: usize,
    value: T,
    what: impl FnOnce() -> String,
) -> Result<Vec<T>> {
    let mut v = try_with_capacity(len, what)?;
    v.resize(len, value);
    Ok(v)
}

#[cfg(target_os = "linux")]
fn physical_memory() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

#[cfg(not(target_os = "linux"))]
fn physical_memory() -> Option<f64> {
    None
}

/// The cgroup memory limit of this process, if it has one.
#[cfg(target_os = "linux")]
fn cgroup_limit() -> Option<f64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut best: Option<f64> = None;
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let file = if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}/memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
        } else {
            continue;
        };
        // A limit set on the cgroup itself, or (inside a container, where the path is
        // not visible) on the root the container sees.
        let root = if controllers.is_empty() {
            "/sys/fs/cgroup/memory.max"
        } else {
            "/sys/fs/cgroup/memory/memory.limit_in_bytes"
        };
        for candidate in [file.as_str(), root] {
            if let Some(bytes) = std::fs::read_to_string(candidate)
                .ok()
                .and_then(|t| t.trim().parse::<f64>().ok())
            {
                // cgroup v1 reports "no limit" as a huge page-aligned number.
                if bytes < 1e18 {
                    best = Some(best.map_or(bytes, |b: f64| b.min(bytes)));
                }
            }
        }
    }
    best
}

#[cfg(not(target_os = "linux"))]
fn cgroup_limit() -> Option<f64> {
    None
}

/// What remains of `RLIMIT_AS` after the address space the process already maps.
#[cfg(unix)]
fn address_space_left() -> Option<f64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` through a valid, exclusive pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let used = status_bytes("VmSize:").unwrap_or(0.0);
    Some((limit.rlim_cur as f64 - used).max(0.0))
}

#[cfg(not(unix))]
fn address_space_left() -> Option<f64> {
    None
}

/// A size from `/proc/self/status` (`VmSize:` mapped, `VmRSS:` resident), in bytes.
fn status_bytes(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_positive_and_named() {
        let l = limit();
        assert!(l.bytes > 0.0);
        assert!(!l.source.is_empty());
    }

    #[test]
    fn check_reports_what_it_needed() {
        let err = check(1e30, 1e15).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("1.000e15×1.000e15-pixel canvas"), "{text}");
        assert!(check(1024.0, 10.0).is_ok());
        assert!(check(f64::INFINITY, f64::INFINITY).is_err());
    }

    #[test]
    fn memory_held_already_is_not_blamed_on_the_canvas() {
        let limit = Limit {
            bytes: 1e9,
            source: "cgroup memory limit",
        };
        // A small canvas that does not fit beside 0.95 GB of input read whole.
        let err = check_with(1e8, 1000.0, 9.5e8, limit).unwrap_err();
        assert!(matches!(err, Error::MemoryHeld { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("out of memory: the 1000×1000-pixel canvas")
                && text.contains("already holds 906.0 MiB of the 953.7 MiB")
                && !text.contains("span too far"),
            "{text}"
        );
        // A canvas larger than the whole limit is the offsets' doing.
        let err = check_with(2e9, 1e5, 9.5e8, limit).unwrap_err();
        assert!(matches!(err, Error::CanvasTooLarge { .. }), "{err}");
    }

    #[test]
    fn failed_allocation_is_an_error_with_its_size() {
        let err = try_zeroed_vec::<u64>(usize::MAX / 16, || "a test".into()).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
        assert!(err.to_string().contains("for a test"), "{err}");
        let err = try_with_capacity::<u64>(usize::MAX / 16, || "another".into()).unwrap_err();
        assert!(err.to_string().starts_with("out of memory"), "{err}");
    }
}
