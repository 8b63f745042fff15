//! `purgectl`: command-line client of a purgecast node.

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match cli::Args::try_parse() {
        Ok(args) => args,
        Err(err) => {
            // clap exits 2 on usage errors, but 2 means "did not complete in
            // time" here; usage errors are errors like any other (1).
            let code = if err.use_stderr() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
            let _ = err.print();
            return code;
        }
    };
    match cli::run(args).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
