use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = flowsteer::cli::Cli::parse();
    match flowsteer::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
