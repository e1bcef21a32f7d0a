//! The `todo-api` binary: everything lives in the library, shared with the tests.

fn main() -> std::process::ExitCode {
    todo_api::main()
}
