//! Reading files a user hands us, without trusting them: only regular files
//! (a FIFO would block forever, `/dev/zero` never ends), reads bounded by a
//! limit whatever the file claims, Arrow IPC files decoded with validation from
//! a memory map after every block is checked to lie inside the file, and the
//! decoder's own panics contained and reported as errors naming the file.
//! Messages say what is wrong and where, never the file's content.

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::{read_footer_length, FileDecoder};
use arrow_ipc::{convert::try_fb_to_schema, root_as_footer};
use arrow_schema::SchemaRef;
use std::cell::Cell;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Once};

/// A file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    pub message: String,
}

impl FileError {
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        FileError {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// The size of a regular file; anything else (missing, a directory, a FIFO, a
/// device, a socket) is an error saying what it is. Symbolic links are followed.
pub fn regular_file(path: &Path) -> Result<u64, FileError> {
    let meta = std::fs::metadata(path).map_err(|e| FileError::new(path, io_message(&e)))?;
    let kind = meta.file_type();
    if kind.is_file() {
        return Ok(meta.len());
    }
    let what = if kind.is_dir() {
        "a directory"
    } else {
        special_kind(&kind)
    };
    Err(FileError::new(
        path,
        format!("is {what}, not a regular file"),
    ))
}

#[cfg(unix)]
fn special_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> &'static str {
    "not a file"
}

/// An I/O error in words, without the `os error N` noise where a plain word says it.
pub fn io_message(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::StorageFull => "no space left on the device".to_string(),
        std::io::ErrorKind::ReadOnlyFilesystem => "the file system is read-only".to_string(),
        _ => e.to_string(),
    }
}

/// Reads a regular file of at most `limit` bytes (checked while reading, so a
/// file that grows or lies about its size is still cut off).
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let size = regular_file(path)?;
    if size > limit {
        return Err(too_large(path, limit));
    }
    let file = File::open(path).map_err(|e| FileError::new(path, io_message(&e)))?;
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::new(path, io_message(&e)))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(path, limit));
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_text_bounded(path: &Path, limit: u64) -> Result<String, FileError> {
    let bytes = read_bounded(path, limit)?;
    String::from_utf8(bytes).map_err(|e| {
        FileError::new(
            path,
            format!(
                "is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

fn too_large(path: &Path, limit: u64) -> FileError {
    FileError::new(
        path,
        format!("is larger than the limit of {}", bytes(limit)),
    )
}

/// A byte count for people.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The record batches of an Arrow IPC file (the `.arrow` file format).
#[derive(Debug, Clone)]
pub struct IpcFile {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// The map the batches point into, and each batch's (offset, length) in it.
    map: Arc<memmap2::Mmap>,
    blocks: Vec<(usize, usize)>,
}

impl IpcFile {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Tells the kernel that batch `i`'s pages are not needed now: a reader that
    /// has copied a batch releases it, so the map does not keep the whole file
    /// resident beside the copy. The batch stays readable (its pages come back
    /// from the file if it is read again).
    pub fn release(&self, i: usize) {
        if let Some(&(offset, len)) = self.blocks.get(i) {
            // SAFETY: the map is a read-only private file mapping; dropping its
            // pages only makes a later read fault them in from the file again.
            // Advice that fails leaves the pages resident, which is harmless.
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
            };
        }
    }
}

/// Reads an Arrow IPC file of at most `limit` bytes from a memory map: the
/// arrays point into the map (no copy), every block's extent is checked against
/// the file's length before it is decoded, and the decoder validates every array.
pub fn read_ipc(path: &Path, limit: u64) -> Result<IpcFile, FileError> {
    let size = regular_file(path)?;
    if size > limit {
        return Err(too_large(path, limit));
    }
    let not_arrow = |why: &str| {
        FileError::new(
            path,
            format!("is not an Arrow IPC file (the `.arrow` file format): {why}"),
        )
    };
    // The smallest valid file: magic, padding, a schema message, footer, length, magic.
    if size < 16 {
        return Err(not_arrow(if size == 0 {
            "it is empty"
        } else {
            "it is too short"
        }));
    }
    let file = File::open(path).map_err(|e| FileError::new(path, io_message(&e)))?;
    // SAFETY: the map is read-only and private to this process; a file truncated
    // by someone else while we read it is outside what we can defend against.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| FileError::new(path, format!("cannot map the file: {}", io_message(&e))))?;
    let map: Arc<memmap2::Mmap> = Arc::new(map);
    let len = map.len();
    if &map[..6] != b"ARROW1" || &map[len - 6..] != b"ARROW1" {
        return Err(not_arrow("the ARROW1 magic is missing"));
    }
    let trailer: [u8; 10] = map[len - 10..]
        .try_into()
        .map_err(|_| not_arrow("no footer"))?;
    let footer_len = read_footer_length(trailer).map_err(|e| not_arrow(&e.to_string()))?;
    if footer_len > len - 10 - 8 {
        return Err(not_arrow("the footer length points outside the file"));
    }
    let footer_bytes = &map[len - 10 - footer_len..len - 10];
    let footer =
        root_as_footer(footer_bytes).map_err(|e| not_arrow(&format!("bad footer ({e})")))?;
    let ptr = NonNull::new(map.as_ptr() as *mut u8).ok_or_else(|| not_arrow("empty map"))?;
    // SAFETY: `ptr` and `len` describe the map, which the buffer's owner (a clone
    // of the Arc) keeps alive as long as any array slices it.
    let buffer = unsafe { Buffer::from_custom_allocation(ptr, len, map.clone()) };
    let check = |b: &arrow_ipc::Block| -> Result<arrow_ipc::Block, FileError> {
        let start = usize::try_from(b.offset()).ok();
        let extent = usize::try_from(b.metaDataLength())
            .ok()
            .zip(usize::try_from(b.bodyLength()).ok())
            .and_then(|(m, body)| m.checked_add(body));
        match (start, extent) {
            (Some(s), Some(n)) if s.checked_add(n).is_some_and(|end| end <= len) => Ok(*b),
            _ => Err(not_arrow("a record batch lies outside the file")),
        }
    };
    let dictionaries: Vec<_> = match footer.dictionaries() {
        Some(list) => list.iter().map(check).collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let records: Vec<_> = match footer.recordBatches() {
        Some(list) => list.iter().map(check).collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let schema_fb = footer.schema().ok_or_else(|| not_arrow("no schema"))?;
    let version = footer.version();
    contain(path, || {
        let schema = Arc::new(
            try_fb_to_schema(schema_fb).map_err(|e| not_arrow(&format!("bad schema ({e})")))?,
        );
        let mut decoder = FileDecoder::new(schema.clone(), version);
        let slice = |b: &arrow_ipc::Block| {
            buffer.slice_with_length(
                b.offset() as usize,
                b.metaDataLength() as usize + b.bodyLength() as usize,
            )
        };
        for b in &dictionaries {
            decoder
                .read_dictionary(b, &slice(b))
                .map_err(|e| not_arrow(&format!("unreadable dictionary ({e})")))?;
        }
        let mut batches = Vec::with_capacity(records.len());
        for (i, b) in records.iter().enumerate() {
            match decoder.read_record_batch(b, &slice(b)) {
                Ok(Some(batch)) => batches.push(batch),
                Ok(None) => {}
                Err(e) => return Err(not_arrow(&format!("record batch {i} is unreadable ({e})"))),
            }
        }
        let blocks = records
            .iter()
            .map(|b| {
                let len = b.metaDataLength() as usize + b.bodyLength() as usize;
                (b.offset() as usize, len)
            })
            .collect();
        Ok(IpcFile {
            schema,
            batches,
            map: map.clone(),
            blocks,
        })
    })?
}

thread_local! {
    /// Set while this thread runs code whose panics [`contain`] reports as errors.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic inside it (a decoder's bug on a hostile file) into
/// an error naming the file, without printing the panic message.
pub fn contain<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, FileError> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINED.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = CONTAINED.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(was));
    result.map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("an internal error");
        FileError::new(
            path,
            format!("is damaged: the Arrow decoder failed on it ({why})"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_by_kind() {
        let e = regular_file(Path::new("/dev/zero")).unwrap_err();
        assert!(e.message.contains("a device"), "{e}");
        let e = regular_file(Path::new("/")).unwrap_err();
        assert!(e.message.contains("a directory"), "{e}");
        let e = regular_file(Path::new("/no/such/file")).unwrap_err();
        assert_eq!(e.message, "no such file");
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![b'a'; 100]).unwrap();
        assert_eq!(read_bounded(&p, 100).unwrap().len(), 100);
        assert!(read_bounded(&p, 99).unwrap_err().message.contains("larger"));
    }

    #[test]
    fn contained_panics_become_errors() {
        let e = contain(Path::new("x.arrow"), || panic!("slice out of range")).unwrap_err();
        assert!(e.message.contains("slice out of range"), "{e}");
        assert_eq!(contain(Path::new("x"), || 3).unwrap(), 3);
    }
}
