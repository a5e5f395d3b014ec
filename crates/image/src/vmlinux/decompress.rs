//! Streaming the compressed payload through its decompressor into the output file, and
//! checking the result against the size the kernel build recorded.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use flate2::bufread::GzDecoder;
use liblzma::bufread::XzDecoder;
use liblzma::stream::Stream;

use super::error::read_error;
use super::header::Payload;
use super::{Compression, VmlinuxError};

/// Buffer size for both sides of the decompression stream.
const IO_BUF: usize = 1 << 20;

/// Compares the decompressed size with the payload's trailer, which the kernel's own
/// `mkpiggy` also reads to size the decompression buffer.
pub(super) fn check_size(size: u64, payload: &Payload, path: &Path) -> Result<(), VmlinuxError> {
    // The trailer is 32 bits wide: compare modulo 2^32.
    if size as u32 != payload.size_trailer {
        return Err(VmlinuxError::SizeMismatch {
            path: path.to_owned(),
            expected: payload.size_trailer,
            actual: size,
        });
    }
    Ok(())
}

/// Streams the payload through its decoder into `out_file`, returning the bytes written.
///
/// Each decoder stops at the end of its first stream or frame, so the size trailer that
/// follows (and any padding) is never mistaken for a second, corrupt stream.
pub(super) fn decompress(
    file: &mut File,
    path: &Path,
    payload: &Payload,
    out_file: &File,
    out: &Path,
) -> Result<u64, VmlinuxError> {
    file.seek(SeekFrom::Start(payload.start))
        .map_err(|source| read_error(path, source))?;
    let input = BufReader::with_capacity(IO_BUF, file.take(payload.length));
    let decode_error = |source| VmlinuxError::Decompress {
        path: path.to_owned(),
        compression: payload.compression,
        source,
    };
    let write_error = |source| VmlinuxError::Write {
        path: out.to_owned(),
        source,
    };

    let mut decoder = open_decoder(payload.compression, input, path)?;
    let mut writer = BufWriter::with_capacity(IO_BUF, out_file);
    let size = copy_stream(&mut decoder, &mut writer, decode_error, write_error)?;
    writer.flush().map_err(write_error)?;
    out_file.sync_all().map_err(write_error)?;
    Ok(size)
}

// Limitation: legacy lzma streams carry no checksum, nor do zstd frames made without
// `--check` (the kernel build's zstd CLI adds one), so corruption inside such a payload can
// go unnoticed when the size trailer still matches; the ELF checks catch only damaged headers.
fn open_decoder<'a, R: BufRead + 'a>(
    compression: Compression,
    input: R,
    path: &Path,
) -> Result<Box<dyn Read + 'a>, VmlinuxError> {
    let decoder: io::Result<Box<dyn Read + 'a>> = match compression {
        Compression::Gzip => Ok(Box::new(GzDecoder::new(input))),
        Compression::Xz => Ok(Box::new(XzDecoder::new(input))),
        Compression::Lzma => Stream::new_lzma_decoder(u64::MAX)
            .map(|stream| Box::new(XzDecoder::new_stream(input, stream)) as Box<dyn Read>)
            .map_err(io::Error::from),
        Compression::Zstd => zstd::stream::read::Decoder::with_buffer(input)
            .map(|decoder| Box::new(decoder.single_frame()) as Box<dyn Read>),
        Compression::Bzip2 | Compression::Lz4 | Compression::Lzo => {
            return Err(VmlinuxError::UnsupportedCompression {
                path: path.to_owned(),
                compression,
            })
        }
    };
    decoder.map_err(|source| VmlinuxError::Decompress {
        path: path.to_owned(),
        compression,
        source,
    })
}

/// Copies `reader` to `writer`, telling read failures from write failures.
fn copy_stream(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    read_error: impl Fn(io::Error) -> VmlinuxError,
    write_error: impl Fn(io::Error) -> VmlinuxError,
) -> Result<u64, VmlinuxError> {
    let mut buf = vec![0u8; IO_BUF];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        writer.write_all(&buf[..n]).map_err(&write_error)?;
        total += n as u64;
    }
}
