//! `ron` — the RustyOnions data-plane node, and its client. See `ron help`.

use std::process::ExitCode;

use ron_engine::cli::{parse, Command};

fn main() -> ExitCode {
    match parse(std::env::args_os().skip(1), std::env::vars()) {
        Ok(Command::Help) => {
            print!(
                "{}\n{}",
                *ron_engine::cli::HELP,
                ron_client::cli::CLIENT_HELP
            );
            ExitCode::SUCCESS
        }
        Ok(Command::Client(command)) => match ron_client::cli::run(*command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ron: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Ok(Command::PrintConfig(resolved)) => {
            print!("{}", resolved.render());
            ExitCode::SUCCESS
        }
        Ok(Command::SampleConfig(resolved)) => {
            print!("{}", resolved.sample());
            ExitCode::SUCCESS
        }
        Ok(Command::Doctor { resolved, unit }) => {
            let unit = match unit.as_deref().map(ron_engine::preflight::UnitLimits::read) {
                None => None,
                Some(Ok(limits)) => Some(limits),
                Some(Err(reason)) => {
                    eprintln!("ron: {reason}");
                    return ExitCode::from(1);
                }
            };
            if let Some(limits) = &unit {
                print!("{}", limits.describe());
            }
            let report = ron_engine::preflight::run_as(&resolved.config, unit.as_ref());
            print!("{}", report.render());
            match report.failures().count() {
                0 => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            }
        }
        Ok(Command::Version) => {
            println!("ron {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Serve(config)) => match ron_engine::server::serve(*config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ron: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Err(e) => {
            eprintln!("ron: {e}\n\nrun `ron help` for usage");
            ExitCode::from(2)
        }
    }
}
