//! `flowsteer sweep`.

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`flowsteer sweep` is not implemented yet")
}
