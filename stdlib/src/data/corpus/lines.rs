//! Reading text files line by line, compressed or not.

use super::*;

/// Opens a file and undoes its compression by extension (`.gz`, `.zst`).
pub fn open_decompressed(path: &Path) -> OpResult<Box<dyn BufRead + Send>> {
    let file = File::open(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot open {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    Ok(if name.ends_with(".gz") {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(BufReader::new(file)),
        ))
    } else if name.ends_with(".zst") || name.ends_with(".zstd") {
        let dec = zstd::stream::read::Decoder::new(file)
            .into_diagnostic()
            .wrap_err_with(|| format!("{}: not a zstd stream", path.display()))?;
        Box::new(BufReader::with_capacity(1 << 16, dec))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, file))
    })
}

/// Calls `f(line_number, line)` for every line of a (possibly compressed)
/// text file; line numbers start at 1. A read or UTF-8 error names the line.
pub fn for_each_line(path: &Path, f: impl FnMut(u64, &str) -> OpResult<()>) -> OpResult<()> {
    match read_lines(path, f)? {
        None => Ok(()),
        Some(broken) => Err(miette!("{broken}")),
    }
}

/// Like [`for_each_line`], but a stream that breaks off (a truncated `.gz`
/// or `.zst`, a read error) ends the reading with the lines read so far
/// delivered and `Some(what happened)` returned. A UTF-8 byte-order mark
/// before the first line is not part of it.
pub fn read_lines(
    path: &Path,
    mut f: impl FnMut(u64, &str) -> OpResult<()>,
) -> OpResult<Option<String>> {
    let mut reader = open_decompressed(path)?;
    let mut buf = Vec::with_capacity(1 << 14);
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = match reader.read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(e) => {
                return Ok(Some(format!(
                    "{}:{}: the file breaks off after {line_no} complete lines (truncated or corrupt): {e}",
                    path.display(),
                    line_no + 1
                )))
            }
        };
        if n == 0 {
            return Ok(None);
        }
        line_no += 1;
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        let line = if line_no == 1 {
            buf.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&buf)
        } else {
            &buf[..]
        };
        match std::str::from_utf8(line) {
            Ok(line) => f(line_no, line)?,
            Err(e) => f(line_no, &format!("\u{0}invalid UTF-8: {e}"))?,
        }
    }
}
