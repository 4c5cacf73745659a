//! The `baton` binary: parse, install tracing, run, map the result to an exit code.

use clap::Parser;

fn main() {
    let cli = baton::cli::Cli::parse();
    // A dispatcher logs what it does; other commands only warnings, unless BATON_LOG says otherwise.
    let default_level = if matches!(cli.command, baton::cli::Command::Run { .. }) { "info" } else { "warn" };
    baton::logging::init(default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("baton: cannot start the runtime: {e}");
            std::process::exit(baton::ExitCode::Usage.code());
        }
    };
    let code = match runtime.block_on(baton::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("baton: {e}");
            e.exit_code()
        }
    };
    // Do not wait for lingering blocking tasks (a standby lock wait, say).
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code.code());
}
