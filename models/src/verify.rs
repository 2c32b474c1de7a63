//! Size + sha256 verification of model files (streamed, constant memory).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::entry::ModelEntry;
use crate::error::ModelError;

const BUF_SIZE: usize = 256 * 1024;

/// Checks that `path` exists, is a regular file of `entry.bytes` bytes and has sha256 `entry.sha256`.
///
/// The size is checked first, so a truncated file is reported without hashing it.
pub fn verify_file(path: &Path, entry: &ModelEntry) -> Result<(), ModelError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ModelError::Missing { path: path.to_owned() });
        }
        Err(e) => return Err(ModelError::io("cannot stat", path, e)),
    };
    if !meta.is_file() {
        return Err(ModelError::NotAFile { model: entry.name.clone(), path: path.to_owned() });
    }
    check_size(entry, path, meta.len())?;
    let (len, sha256) = hash_reader(File::open(path).map_err(|e| ModelError::io("cannot open", path, e))?, None)
        .map_err(|e| ModelError::io("cannot read", path, e))?;
    check_size(entry, path, len)?; // the file may have changed under us
    check_hash(entry, path, sha256)
}

/// The sha256 of a file as 64 lowercase hex characters (streamed).
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ModelError::Missing { path: path.to_owned() },
        _ => ModelError::io("cannot open", path, e),
    })?;
    let (_, sha256) = hash_reader(file, None).map_err(|e| ModelError::io("cannot read", path, e))?;
    Ok(sha256)
}

/// Reads `reader` to the end, optionally copying every byte to `copy_to`.
/// Returns the number of bytes and their sha256 (lowercase hex).
pub(crate) fn hash_reader(mut reader: impl Read, mut copy_to: Option<&mut dyn Write>) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        if let Some(w) = copy_to.as_mut() {
            w.write_all(&buf[..n])?;
        }
        len += n as u64;
    }
    Ok((len, hex::encode(hasher.finalize())))
}

pub(crate) fn check_size(entry: &ModelEntry, path: &Path, actual: u64) -> Result<(), ModelError> {
    if actual == entry.bytes {
        return Ok(());
    }
    Err(ModelError::SizeMismatch { model: entry.name.clone(), path: path.to_owned(), expected: entry.bytes, actual })
}

pub(crate) fn check_hash(entry: &ModelEntry, path: &Path, actual: String) -> Result<(), ModelError> {
    if actual == entry.sha256 {
        return Ok(());
    }
    Err(ModelError::HashMismatch {
        model: entry.name.clone(),
        path: path.to_owned(),
        expected: entry.sha256.clone(),
        actual,
    })
}
