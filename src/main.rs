//! The `normshift` command line (the program itself is the library's [`normshift::main`], over its command line module). Library errors are
//! typed; there they become one line on stderr and an exit code: 0 success, 1 verification found a difference,
//! 2 bad input or usage, 3 no runtime could run a model.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(normshift::main(std::env::args_os()))
}
