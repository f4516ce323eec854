//! The `.npy` header: reading and checking it from a stream.

#[allow(unused_imports)]
use super::*;

/// The facts of a `.npy` header, and how many bytes header and data take.
pub(super) struct Header {
    pub(super) dtype: Dtype,
    pub(super) big_endian: bool,
    pub(super) fortran_order: bool,
    pub(super) shape: Vec<usize>,
    pub(super) count: usize,
    /// Bytes of the header, magic included.
    pub(super) header_bytes: usize,
    /// Bytes of data the header declares.
    pub(super) data_bytes: usize,
}

/// The most header bytes accepted (NumPy itself writes a few hundred).
pub(super) const MAX_HEADER: usize = 1 << 20;

/// Reads and checks a `.npy` header from a stream (nothing past it).
pub(super) fn read_header(what: &str, mut reader: impl Read) -> Result<Header, NpyError> {
    let format = |reason: &str| NpyError::Format {
        what: what.to_string(),
        reason: reason.to_string(),
    };
    let read_err = |e: std::io::Error| format(&format!("reading: {e}"));
    let mut preamble = [0_u8; 8];
    read_up_to(&mut reader, &mut preamble).map_err(read_err)?;
    if &preamble[..6] != b"\x93NUMPY" {
        return Err(format("missing the \\x93NUMPY magic"));
    }
    let (header_len, prefix) = match preamble[6] {
        1 => {
            let mut b = [0_u8; 2];
            read_exactly(&mut reader, &mut b, || format("header length is truncated"))?;
            (u16::from_le_bytes(b) as usize, 10)
        }
        2 | 3 => {
            let mut b = [0_u8; 4];
            read_exactly(&mut reader, &mut b, || format("header length is truncated"))?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        v => return Err(format(&format!("unknown format version {v}"))),
    };
    if header_len > MAX_HEADER {
        return Err(format(&format!(
            "header of {header_len} bytes; at most {MAX_HEADER} are accepted"
        )));
    }
    let mut header = vec![0_u8; header_len];
    read_exactly(&mut reader, &mut header, || {
        format("header runs past the end of the file")
    })?;
    let header = std::str::from_utf8(&header).map_err(|_| format("header is not text"))?;
    let descr = dict_value(header, "descr")
        .map(|v| v.trim().trim_matches(['\'', '"']).to_string())
        .ok_or_else(|| format("header has no 'descr'"))?;
    let fortran_order = match dict_value(header, "fortran_order").map(str::trim) {
        Some("True") => true,
        Some("False") => false,
        _ => return Err(format("header has no valid 'fortran_order'")),
    };
    let shape_text = dict_value(header, "shape").ok_or_else(|| format("header has no 'shape'"))?;
    let shape = shape_text
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format(&format!("bad shape {shape_text}")))?;
    let count = shape
        .iter()
        .try_fold(1_usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format("shape overflows"))?;
    let (dtype, big_endian) = Dtype::parse(&descr);
    // An unknown dtype has no known size: nothing is read, and converting it is an error.
    let data_bytes = match dtype.size() {
        Some(size) => count
            .checked_mul(size)
            .ok_or_else(|| format("shape overflows"))?,
        None => 0,
    };
    Ok(Header {
        dtype,
        big_endian,
        fortran_order,
        shape,
        count,
        header_bytes: prefix + header_len,
        data_bytes,
    })
}

pub(super) fn standard<T: Clone>(a: ArrayD<T>) -> ArrayD<T> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// The text of `'key': value` in a Python dict literal, up to the next top-level comma.
pub(super) fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?;
    let mut depth = 0_i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    None
}

/// Fills `buf` as far as the stream goes (short at end of stream; the rest stays zero).
pub(super) fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

pub(super) fn read_exactly(
    reader: &mut impl Read,
    buf: &mut [u8],
    short: impl FnOnce() -> NpyError,
) -> Result<(), NpyError> {
    match read_up_to(reader, buf) {
        Ok(k) if k == buf.len() => Ok(()),
        _ => Err(short()),
    }
}
