//! The `ptychostitch` binary: the command-line tool of [`ptychostitch_cli::run`].

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(ptychostitch_cli::run(std::env::args_os()) as u8)
}
