use clap::Parser;
use flowsteer::distributed::driver;

fn main() -> std::process::ExitCode {
    let cli = flowsteer::cli::Cli::parse();
    // Under mpirun/srun: join the job's world (docs/distributed.md); otherwise nothing happens.
    let result = driver::start().and_then(|()| flowsteer::cli::run(cli));
    match result {
        Ok(()) => {
            driver::finish();
            std::process::ExitCode::SUCCESS
        }
        Err(e) => driver::fail(&e),
    }
}
