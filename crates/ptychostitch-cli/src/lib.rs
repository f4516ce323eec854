//! `ptychostitch`: PtychoPINN-exact patch reassembly from the shell.
//!
//! The whole command-line tool is [`run`]: the cargo-built binary (`src/main.rs`) and the
//! Python wheel's `ptychostitch` console command (through the extension module) both call it,
//! so the two behave the same in every respect: subcommands, messages, exit codes, progress
//! bar, signals.

/// `println!` that returns the write's error instead of panicking: a closed pipe
/// (`validate … | head -1`) or a full device ends the command through its error path.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::StdoutError)
    }};
}

/// A write to standard output that failed.
#[derive(Debug)]
pub(crate) struct StdoutError(pub(crate) std::io::Error);

impl std::fmt::Display for StdoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing to standard output: {}", self.0)
    }
}

impl std::error::Error for StdoutError {}

mod args;
mod demo;
mod device;
mod input;
mod make_scan;
mod paths;
mod picture;
mod progress;
mod reassemble;
mod validate;

use clap::{Parser, Subcommand};
use std::ffi::OsString;

/// Stitch ptychography patches into an object image, exactly as PtychoPINN does, fast.
///
/// Positions are [x, y] in pixels: x is the column (second array axis), y the row (first
/// axis). They are re-centred on their mean (a common offset changes nothing); a positive x
/// moves a patch to larger column indices. Each patch's centre M×M is kept (an odd M keeps
/// M-1), shifted by bilinear interpolation, and summed onto a canvas of side M + 2p that holds
/// every patch; `reassemble` mode divides by the weight each pixel received.
#[derive(Debug, Parser)]
#[command(name = "ptychostitch", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reassemble patches from .npz / .npy files (PtychoPINN layout: Y, xcoords, ycoords).
    Reassemble(reassemble::Args),
    /// Compare the reference ("old") and fast ("new") paths on the bench-grid scan; fails unless
    /// they are bit-identical.
    Validate(validate::ValidateArgs),
    /// Time the fast path on the bench-grid scan.
    Bench(validate::BenchArgs),
    /// Synthesise an object, scan it, cut patches, reassemble, write pictures and the error.
    Demo(demo::Args),
    /// Write the bench-grid scan of any size to .npy files, in chunks (for large benchmarks).
    MakeScan(make_scan::Args),
}

/// Runs the command line `argv` (`argv[0]` the program's name) and returns the process's exit
/// status: 0 on success, 1 after an `error:` line. Bad arguments, `--help` and `--version`
/// end the process here (clap's exit, status 2 or 0), as does Ctrl-C or SIGTERM (status 130,
/// after removing temporary files): it is meant to be the process's whole work.
pub fn run<I, T>(argv: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    // The command as it was started, for the lines that suggest a next command.
    let program = argv
        .first()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ptychostitch".into());
    let cli = Cli::parse_from(&argv);
    // A file-size limit (`ulimit -f`) would otherwise kill the process with SIGXFSZ in the middle
    // of a write, leaving its temporary file; ignored, the write fails with EFBIG and the error
    // path removes it and says so in one line (Python ignores SIGXFSZ too).
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code, at start-up
    // before any thread of ours exists; it cannot violate memory safety.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    // Ctrl-C or SIGTERM: remove the temporary files of writes in progress (waiting for a commit
    // that has begun, so an image and its picture stay a pair), then exit. Without a handler the
    // process would die at once and leave hidden `.NAME.tmp-*` files behind.
    let handler = ctrlc::set_handler(|| {
        ptychostitch::atomic::abandon_pending_writes();
        eprintln!("error: interrupted; no output was changed that was not complete");
        std::process::exit(130);
    });
    if let Err(e) = handler {
        eprintln!(
            "warning: cannot handle Ctrl-C ({e}); an interrupted write may leave a temporary file"
        );
    }
    let result = match cli.command {
        Command::Reassemble(args) => reassemble::run(args),
        Command::Validate(args) => validate::validate(args),
        Command::Bench(args) => validate::bench(args),
        Command::Demo(args) => demo::run(args, &program),
        Command::MakeScan(args) => make_scan::run(args, &program),
    };
    match result {
        Ok(()) => 0,
        // The reader went away (`| head -1`): end quietly, with the status a shell reports for a
        // Unix tool that SIGPIPE ended (128 + 13).
        Err(e)
            if e.downcast_ref::<StdoutError>()
                .is_some_and(|w| w.0.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            141
        }
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            1
        }
    }
}

/// An error message as one line: control characters (a newline or an escape sequence in a file
/// name) written as Rust escapes, so the message can neither split the line nor drive the terminal.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
