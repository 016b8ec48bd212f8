//! `wsbench`: parse the command line, start the logger, dispatch to the
//! subcommand, and turn its error into one line and an exit status.

use std::process::ExitCode;

use clap::Parser;
use wsbench::cli::{Cli, Command};

fn main() -> ExitCode {
    // clap prints usage errors itself and exits 2 (0 for --help).
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    wsbench::signal::install();
    let result = match cli.command {
        Command::Server(args) => wsbench::server::run(args),
        Command::Bench(args) => wsbench::bench::run(args),
        Command::Chat(args) => wsbench::chat::run(args),
        Command::Pingpong(args) => wsbench::pingpong::run(args),
        Command::Load(args) => wsbench::load::run(args),
        Command::Report(args) => wsbench::report::run(args),
        Command::Fanout(args) => wsbench::fanout::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code() as u8)
        }
    }
}
