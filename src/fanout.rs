//! `wsbench fanout`: placeholder.
use crate::cli::FanoutArgs;
use crate::error::Error;
pub fn run(_args: FanoutArgs) -> Result<(), Error> {
    Ok(())
}
