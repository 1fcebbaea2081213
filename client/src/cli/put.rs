//! `ron put FILE|-`: stores a file, or standard input spooled to a temp file first (the
//! address is announced before the first byte, so it must be known), and prints its
//! address.

use std::io::Seek;
use std::path::PathBuf;

use ron_codec::Address;

use super::progress::ProgressBar;
use crate::{Client, ClientError, Endpoint, Options};

/// Stores `path` (`None`: standard input).
pub(super) fn run(
    endpoint: &Endpoint,
    options: Options,
    path: Option<PathBuf>,
    bar: &mut ProgressBar,
) -> Result<(), ClientError> {
    let mut client = Client::connect(endpoint, options)?;
    let stored = match path {
        Some(path) => {
            bar.total = std::fs::metadata(&path).ok().map(|m| m.len());
            client.put_file(&path, &mut |n| bar.update(n))?
        }
        None => {
            let (mut spool, addr, len) = spool_stdin()?;
            bar.total = Some(len);
            client.put(&mut spool, addr, len, &mut |n| bar.update(n))?
        }
    };
    bar.finish();
    println!("{}", stored.addr);
    if let Some(copies) = stored.copies {
        eprintln!("{copies} copies");
    }
    Ok(())
}

/// Copies stdin to an unnamed temp file, hashing it on the way.
fn spool_stdin() -> Result<(std::fs::File, Address, u64), ClientError> {
    let mut spool = crate::temp_file().map_err(ClientError::Output)?;
    let (addr, len) = crate::hash_copy(&mut std::io::stdin().lock(), &mut spool)?;
    spool.rewind().map_err(ClientError::Output)?;
    Ok((spool, addr, len))
}
