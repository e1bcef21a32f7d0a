//! Standard output of every command. A reader that goes away (`tenants list | head -1`)
//! ends the output, not the command: the command runs to its end and exits with the code
//! it documents. Any other failure to write (a full disk behind a redirect) is remembered
//! and turns the exit code into 2, since the output is incomplete.

use std::io::Write;
use std::sync::Mutex;

/// The first write error other than a closed pipe.
static FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// Writes `args` to stdout; see the module documentation for errors.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(args).and_then(|()| stdout.flush())
        && error.kind() != std::io::ErrorKind::BrokenPipe
    {
        let mut failure = FAILURE.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert_with(|| error.to_string());
    }
}

/// Why stdout could not be written, if it could not (a closed pipe excepted).
pub fn failure() -> Option<String> {
    FAILURE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `print!` that survives a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

/// `println!` that survives a closed stdout.
macro_rules! outln {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};
