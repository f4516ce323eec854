//! NVRTC, loaded by path and called through its C API: the kernel compiled to a CUBIN for the
//! device's architecture (which needs no driver JIT, so an NVRTC newer than the driver works)
//! or, where that fails, to PTX.
//!
//! Why not cudarc's NVRTC bindings: they find the library only by the loader's names, and only
//! the CUDA 12 ones (`cuda-12080`), and keep the first failure for the process. The NVRTC that
//! pip installs with torch or JAX sits in `site-packages/nvidia/…/lib`, off the loader's path,
//! and may be CUDA 13's. The nine functions used here have had the same C signatures since
//! CUDA 11.1.

use super::libraries;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};

type Program = *mut c_void;
type Status = c_int;

/// What a compilation produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// Machine code for the architecture named in the options (`--gpu-architecture=sm_XY`).
    Cubin,
    /// PTX, for the driver to compile when it loads it.
    Ptx,
}

/// A loaded NVRTC.
pub(crate) struct Nvrtc {
    library: libloading::Library,
    path: PathBuf,
    version: (i32, i32),
}

impl std::fmt::Debug for Nvrtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NVRTC {}.{} ({})",
            self.version.0,
            self.version.1,
            self.path.display()
        )
    }
}

impl Nvrtc {
    /// The first NVRTC of [`libraries::nvrtc_candidates`] that loads, for a driver of CUDA
    /// `driver_major`; the error says where it looked. Nothing is remembered: the next call
    /// searches again (a library installed meanwhile is found).
    pub(crate) fn load(driver_major: Option<u32>) -> Result<Nvrtc, String> {
        let dirs = libraries::search_dirs();
        let mut tried = Vec::new();
        for candidate in libraries::nvrtc_candidates(&dirs, driver_major) {
            // SAFETY: loading NVRTC runs its initialisers, which have no preconditions; the
            // library stays loaded as long as `Nvrtc` lives, and its functions are only called
            // through `call` below with the signatures of NVRTC's C API.
            match unsafe { libloading::Library::new(&candidate) } {
                Ok(library) => {
                    let mut nvrtc = Nvrtc {
                        library,
                        path: candidate.clone(),
                        version: (0, 0),
                    };
                    match nvrtc.read_version() {
                        Ok(version) => {
                            nvrtc.version = version;
                            return Ok(nvrtc);
                        }
                        Err(e) => tried.push(format!("{}: {e}", candidate.display())),
                    }
                }
                Err(_) if candidate.components().count() == 1 => {} // a loader name: absent
                Err(e) => tried.push(format!("{}: {e}", candidate.display())),
            }
        }
        let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        Err(format!(
            "no NVRTC (libnvrtc.so.12 or .13, the CUDA runtime compiler) could be loaded; searched {}, then the loader's path{}; install it with pip install nvidia-cuda-nvrtc-cu12 (or the CUDA toolkit), or name its folder in PTYCHOSTITCH_NVRTC_DIRS",
            searched.join(", "),
            if tried.is_empty() {
                String::new()
            } else {
                format!(" ({})", tried.join("; "))
            }
        ))
    }

    /// NVRTC's version, e.g. (12, 8).
    pub(crate) fn version(&self) -> (i32, i32) {
        self.version
    }

    /// Where it was loaded from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The symbol `name` as a function of type `F`.
    ///
    /// # Safety
    /// `F` must be the C signature NVRTC gives `name`.
    unsafe fn symbol<F: Copy>(&self, name: &str) -> Result<F, String> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.library.get::<F>(name.as_bytes()) }
            .map(|s| *s)
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    fn read_version(&self) -> Result<(i32, i32), String> {
        // SAFETY: `nvrtcResult nvrtcVersion(int *major, int *minor)`.
        let version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> Status =
            unsafe { self.symbol("nvrtcVersion")? };
        let (mut major, mut minor) = (0, 0);
        // SAFETY: both pointers are to live integers of this frame.
        self.check(unsafe { version(&mut major, &mut minor) })?;
        Ok((major, minor))
    }

    /// The message of an NVRTC status, `Ok` for success (0).
    fn check(&self, status: Status) -> Result<(), String> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: `const char *nvrtcGetErrorString(nvrtcResult result)`.
        let text: Result<unsafe extern "C" fn(Status) -> *const c_char, String> =
            unsafe { self.symbol("nvrtcGetErrorString") };
        let message = match text {
            Ok(f) => {
                // SAFETY: NVRTC returns a static NUL-terminated string for any status.
                let p = unsafe { f(status) };
                if p.is_null() {
                    format!("NVRTC error {status}")
                } else {
                    // SAFETY: non-null, NUL-terminated, static (above).
                    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
                }
            }
            Err(_) => format!("NVRTC error {status}"),
        };
        Err(message)
    }

    /// Compiles `source` (named `name`) with `options`; returns the CUBIN or the PTX (with its
    /// terminating NUL removed), or NVRTC's error with the compiler's log.
    pub(crate) fn compile(
        &self,
        source: &str,
        name: &str,
        options: &[String],
        output: Output,
    ) -> Result<Vec<u8>, String> {
        type Create = unsafe extern "C" fn(
            *mut Program,
            *const c_char,
            *const c_char,
            c_int,
            *const *const c_char,
            *const *const c_char,
        ) -> Status;
        type Compile = unsafe extern "C" fn(Program, c_int, *const *const c_char) -> Status;
        type Size = unsafe extern "C" fn(Program, *mut usize) -> Status;
        type Bytes = unsafe extern "C" fn(Program, *mut c_char) -> Status;
        type Destroy = unsafe extern "C" fn(*mut Program) -> Status;
        // SAFETY: each type above is the C signature of the NVRTC function it is read as.
        let (create, compile, destroy, log_size, log): (Create, Compile, Destroy, Size, Bytes) = unsafe {
            (
                self.symbol("nvrtcCreateProgram")?,
                self.symbol("nvrtcCompileProgram")?,
                self.symbol("nvrtcDestroyProgram")?,
                self.symbol("nvrtcGetProgramLogSize")?,
                self.symbol("nvrtcGetProgramLog")?,
            )
        };
        // SAFETY: as above.
        let (size, bytes): (Size, Bytes) = unsafe {
            match output {
                Output::Cubin => (
                    self.symbol("nvrtcGetCUBINSize")?,
                    self.symbol("nvrtcGetCUBIN")?,
                ),
                Output::Ptx => (self.symbol("nvrtcGetPTXSize")?, self.symbol("nvrtcGetPTX")?),
            }
        };
        let text = |s: &str| CString::new(s).map_err(|e| e.to_string());
        let (source, name) = (text(source)?, text(name)?);
        let options: Vec<CString> = options.iter().map(|o| text(o)).collect::<Result<_, _>>()?;
        let pointers: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
        let mut program: Program = std::ptr::null_mut();
        // SAFETY: `program` receives the new program; source and name are NUL-terminated and
        // outlive the program (destroyed below); no headers.
        self.check(unsafe {
            create(
                &mut program,
                source.as_ptr(),
                name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        })?;
        // Read a sized buffer of the program (the log or the output).
        let read = |size: Size, bytes: Bytes| -> Result<Vec<u8>, String> {
            let mut len = 0usize;
            // SAFETY: `program` is live until destroyed below; `len` is a live usize.
            self.check(unsafe { size(program, &mut len) })?;
            let mut buffer = vec![0u8; len];
            // SAFETY: `buffer` holds the `len` bytes NVRTC said it writes.
            self.check(unsafe { bytes(program, buffer.as_mut_ptr().cast()) })?;
            Ok(buffer)
        };
        // SAFETY: `program` is live; `pointers` holds NUL-terminated options that outlive the
        // call.
        let compiled =
            self.check(unsafe { compile(program, pointers.len() as c_int, pointers.as_ptr()) });
        let result = match compiled {
            Ok(()) => read(size, bytes).map(|mut out| {
                if output == Output::Ptx && out.last() == Some(&0) {
                    out.pop();
                }
                out
            }),
            Err(e) => {
                let log = read(log_size, log)
                    .map(|l| {
                        String::from_utf8_lossy(&l)
                            .trim_end_matches('\0')
                            .trim()
                            .to_string()
                    })
                    .unwrap_or_default();
                Err(if log.is_empty() {
                    e
                } else {
                    format!("{e}: {log}")
                })
            }
        };
        // SAFETY: `program` was created above and is destroyed once.
        let _ = unsafe { destroy(&mut program) };
        result
    }
}
