//! Relative paths in a config file are relative to the file's directory, so a config works
//! whatever the working directory of the process that loads it.

use std::path::{Path, PathBuf};

/// The directory the relative paths of the config file at `path` are relative to.
pub fn dir_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Makes `path` relative to `dir` (see [`dir_of`]) when it is relative.
pub fn rebase(dir: &Path, path: &mut PathBuf) {
    if path.is_relative() {
        *path = dir.join(&*path);
    }
}
