//! Loading a `.wasm` into a [`TaskComponent`]: reading it, sniffing its header, compiling or
//! deserializing it, and linking it against the runtime's host functions.

use std::path::Path;
use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::component::{TaskComponent, exported_functions};
use crate::error::LoadError;
use crate::runtime::Runtime;

impl Runtime {
    /// Loads a component from a `.wasm` file.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<TaskComponent, LoadError> {
        let path = path.as_ref();
        let bytes = read_component_file(path)?;
        self.load_bytes(&bytes, &path.display().to_string())
    }

    /// Loads a component from bytes; `origin` names them in error messages.
    pub fn load_bytes(&self, bytes: &[u8], origin: &str) -> Result<TaskComponent, LoadError> {
        let origin = origin.to_string();
        classify_header(bytes, &origin)?;
        let component = Component::new(&self.inner().engine, bytes).map_err(|e| {
            let message = format!("{e:#}");
            if message.contains("unexpected end") {
                LoadError::Truncated {
                    origin: origin.clone(),
                    message,
                }
            } else {
                LoadError::Invalid {
                    origin: origin.clone(),
                    message,
                }
            }
        })?;
        let loaded = self.link(component, origin)?;
        loaded.set_source(Arc::from(bytes));
        Ok(loaded)
    }

    /// Loads a component precompiled by [`TaskComponent::precompiled`], skipping compilation.
    ///
    /// # Safety
    ///
    /// `bytes` must come from [`TaskComponent::precompiled`] (wasmtime's `serialize`) of a
    /// runtime with the same settings, and must not have been altered: wasmtime checks the
    /// header and the engine settings, but runs the machine code inside as it is.
    pub unsafe fn load_precompiled(
        &self,
        bytes: &[u8],
        origin: &str,
    ) -> Result<TaskComponent, LoadError> {
        // SAFETY: the caller guarantees `bytes` is an unaltered `serialize` output.
        let component =
            unsafe { Component::deserialize(&self.inner().engine, bytes) }.map_err(|e| {
                LoadError::Invalid {
                    origin: origin.to_string(),
                    message: format!("not a usable precompiled component: {e:#}"),
                }
            })?;
        self.link(component, origin.to_string())
    }

    fn link(&self, component: Component, origin: String) -> Result<TaskComponent, LoadError> {
        let pre = self
            .inner()
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link {
                origin: origin.clone(),
                message: format!("{e:#}"),
            })?;
        let functions = exported_functions(&self.inner().engine, &component);
        Ok(TaskComponent::new(origin, self.clone(), pre, functions))
    }
}

impl TaskComponent {
    /// Loads a component from a file with the shared default [`Runtime`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<TaskComponent, LoadError> {
        Runtime::shared()?.load(path)
    }

    /// Loads a component from bytes with the shared default [`Runtime`].
    pub fn from_bytes(bytes: &[u8]) -> Result<TaskComponent, LoadError> {
        Runtime::shared()?.load_bytes(bytes, "<bytes>")
    }
}

/// The largest component file [`read_component_file`] reads: 1 GiB.
pub const MAX_COMPONENT_FILE: u64 = 1 << 30;

/// Reads a component file as [`Runtime::load`] does: only a regular file (a directory, a
/// device such as `/dev/zero`, a FIFO or a socket is [`LoadError::NotAFile`], and a FIFO is
/// never waited on), of at most [`MAX_COMPONENT_FILE`] bytes ([`LoadError::TooLarge`]).
///
/// ```
/// let error = wasmpool::read_component_file("/dev/zero").expect_err("a device");
/// assert!(error.to_string().contains("not a regular file"));
/// ```
pub fn read_component_file(path: impl AsRef<Path>) -> Result<Vec<u8>, LoadError> {
    read_regular_file(path.as_ref(), MAX_COMPONENT_FILE)
}

/// Reads the regular file `path` of at most `limit` bytes (see [`read_component_file`]).
pub(crate) fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let not_a_file = |meta: &std::fs::Metadata| LoadError::NotAFile {
        path: path.to_path_buf(),
        kind: file_kind(meta),
    };
    // Checked before opening: opening a FIFO for reading waits for a writer.
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(not_a_file(&meta));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Should the path become a FIFO between the check and the open, do not wait.
        options.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    let file = options.open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_a_file(&meta));
    }
    if meta.len() > limit {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // `take`: a file that grows while it is read still stops at the limit.
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// What a path that is not a regular file is, in words.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        return "directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_char_device() {
            return "character device";
        }
        if kind.is_block_device() {
            return "block device";
        }
        if kind.is_fifo() {
            return "FIFO";
        }
        if kind.is_socket() {
            return "socket";
        }
    }
    "special file"
}

/// Checks the 8-byte preamble: magic, then version 13 layer 1 (component) or version 1
/// layer 0 (core module). Without the magic, wasmtime's own compiled form is told apart.
fn classify_header(bytes: &[u8], origin: &str) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    const COMPONENT: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
    const CORE: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
    let origin = origin.to_string();
    if bytes.len() < 4 || &bytes[..4] != MAGIC {
        if Engine::detect_precompiled(bytes).is_some() {
            return Err(LoadError::Precompiled { origin });
        }
        return Err(LoadError::NotWasm { origin });
    }
    match bytes.get(4..8) {
        None => Err(LoadError::Truncated {
            origin,
            message: format!("{} bytes, shorter than the 8-byte header", bytes.len()),
        }),
        Some(v) if v == CORE => Err(LoadError::CoreModule { origin }),
        Some(v) if v == COMPONENT => check_section_sizes(&bytes[8..], &origin),
        Some(v) => Err(LoadError::Invalid {
            origin,
            message: format!("unknown wasm version/layer bytes {v:02x?}"),
        }),
    }
}

/// Walks the top-level sections (id byte, LEB128 size, payload): a section that claims more
/// bytes than the file has means the file was cut short.
fn check_section_sizes(mut rest: &[u8], origin: &str) -> Result<(), LoadError> {
    let truncated = |message: String| LoadError::Truncated {
        origin: origin.to_string(),
        message,
    };
    let total = rest.len() + 8;
    while let Some((_id, after_id)) = rest.split_first() {
        let offset = total - rest.len();
        let (size, after_size) = read_leb_u32(after_id)
            .ok_or_else(|| truncated(format!("section header at byte {offset} is cut off")))?;
        let size = size as usize;
        if size > after_size.len() {
            return Err(truncated(format!(
                "section at byte {offset} needs {size} bytes, only {} remain",
                after_size.len()
            )));
        }
        rest = &after_size[size..];
    }
    Ok(())
}

/// Reads an unsigned LEB128 `u32`; `None` if the bytes end first or it is too long.
fn read_leb_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_classification() {
        assert!(matches!(
            classify_header(b"hello", "f"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            classify_header(b"\0asm\x01\0\0\0", "f"),
            Err(LoadError::CoreModule { .. })
        ));
        assert!(matches!(
            classify_header(b"\0asm\x0d", "f"),
            Err(LoadError::Truncated { .. })
        ));
        assert!(classify_header(b"\0asm\x0d\0\x01\0", "f").is_ok());
    }
}
