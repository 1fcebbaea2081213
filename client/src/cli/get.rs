//! `ron get b3:<hex> [-o FILE] [--range FIRST-LAST]`: the verified bytes to stdout, or
//! to `FILE.part`, renamed to FILE once the whole transfer verified.

use std::io::Write;
use std::path::{Path, PathBuf};

use ron_codec::Address;

use super::progress::ProgressBar;
use super::shared::file_error;
use crate::{ByteRange, Client, ClientError, Endpoint, Options};

/// Bytes buffered between the client and stdout or the file.
const SINK_BUF_BYTES: usize = 256 * 1024;

/// Fetches `addr` (or `range` of it) to `output`, stdout if `None`.
pub(super) fn run(
    endpoint: &Endpoint,
    options: Options,
    addr: Address,
    range: Option<ByteRange>,
    output: Option<&Path>,
    bar: &mut ProgressBar,
) -> Result<(), ClientError> {
    let mut client = Client::connect(endpoint, options)?;
    let result = match output {
        None => {
            let stdout = std::io::stdout();
            let mut sink = std::io::BufWriter::with_capacity(SINK_BUF_BYTES, stdout.lock());
            let got = client.get(addr, range, &mut sink, &mut |n| bar.update(n));
            // The transfer's own failure first: a flush failing after it (a closed pipe)
            // hid a failed verification (exit 4) behind an output error (exit 5).
            let flushed = sink.flush().map_err(ClientError::Output);
            got.and(flushed)
        }
        Some(path) => get_to_file(&mut client, addr, range, path, bar),
    };
    bar.finish();
    result
}

/// Writes `path.part`, renamed to `path` once the whole transfer verified. The `.part`
/// is created new (`O_EXCL`, which follows no link): a link planted at that name in a
/// shared directory is removed, never written through; one left by an earlier run too.
fn get_to_file(
    client: &mut Client,
    addr: Address,
    range: Option<ByteRange>,
    path: &Path,
    bar: &mut ProgressBar,
) -> Result<(), ClientError> {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    if std::fs::symlink_metadata(&part).is_ok_and(|m| !m.is_dir()) {
        std::fs::remove_file(&part).map_err(file_error("remove", &part))?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part)
        .map_err(file_error("create", &part))?;
    let mut sink = std::io::BufWriter::with_capacity(SINK_BUF_BYTES, file);
    let got = client
        .get(addr, range, &mut sink, &mut |n| bar.update(n))
        .and_then(|_| sink.flush().map_err(ClientError::Output));
    if let Err(e) = got {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, path).map_err(|e| {
        let _ = std::fs::remove_file(&part);
        file_error("rename", path)(e)
    })
}
