//! `manifest.toml`: which model files exist, their sizes, sha256 digests and origins.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::entry::ModelEntry;
use crate::error::ModelError;
use crate::verify::verify_file;

/// The text of `models/manifest.toml` as it was when this crate was compiled.
pub const EMBEDDED_MANIFEST_TOML: &str = include_str!("../manifest.toml");

/// The parsed manifest: a list of models plus where it was read from (for messages).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The `[[model]]` tables, in file order.
    #[serde(rename = "model")]
    pub models: Vec<ModelEntry>,
    /// File path or `<embedded manifest.toml>`; used in error messages.
    #[serde(skip)]
    origin: String,
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ModelError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| ModelError::ManifestRead { path: path.to_owned(), error })?;
        Manifest::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates manifest text; `origin` names it in error messages.
    ///
    /// Rejects unknown or missing fields, duplicate names or files, malformed sha256
    /// digests and `file` values that are not bare file names.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Manifest, ModelError> {
        let invalid = |message: String| ModelError::ManifestInvalid { origin: origin.to_owned(), message };
        let mut manifest: Manifest = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        manifest.origin = origin.to_owned();
        manifest.validate().map_err(invalid)?;
        Ok(manifest)
    }

    /// The manifest compiled into this crate (`models/manifest.toml` at build time).
    ///
    /// # Panics
    /// Never in practice: the embedded text is checked by this crate's tests.
    pub fn embedded() -> &'static Manifest {
        static EMBEDDED: OnceLock<Manifest> = OnceLock::new();
        EMBEDDED.get_or_init(|| {
            Manifest::from_toml_str(EMBEDDED_MANIFEST_TOML, "<embedded manifest.toml>")
                .unwrap_or_else(|e| panic!("{e}"))
        })
    }

    /// Where this manifest came from (a path, or `<embedded manifest.toml>`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The model called `name`, if listed.
    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The model whose file name is `file_name` (e.g. `csrnet.onnx`), if listed.
    pub fn by_file(&self, file_name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.file == file_name)
    }

    /// Like [`get`](Self::get), but an unknown name is an error listing the known names.
    pub fn require(&self, name: &str) -> Result<&ModelEntry, ModelError> {
        self.get(name).ok_or_else(|| ModelError::UnknownModel {
            name: name.to_owned(),
            origin: self.origin.clone(),
            known: self.names().join(", "),
        })
    }

    /// The model names, in manifest order.
    pub fn names(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.name.as_str()).collect()
    }

    /// A manifest with only the named models (in manifest order); an empty `names`
    /// selects everything. Unknown names are an error.
    pub fn select(&self, names: &[&str]) -> Result<Manifest, ModelError> {
        if names.is_empty() {
            return Ok(self.clone());
        }
        for name in names {
            self.require(name)?;
        }
        Ok(Manifest {
            models: self.models.iter().filter(|m| names.contains(&m.name.as_str())).cloned().collect(),
            origin: self.origin.clone(),
        })
    }

    /// The path of model `name` inside `dir`, after checking its size and sha256.
    /// This is what the pipeline calls at start-up before loading a model.
    pub fn verified_path(&self, name: &str, dir: &Path) -> Result<PathBuf, ModelError> {
        let entry = self.require(name)?;
        let path = entry.path_in(dir);
        verify_file(&path, entry)?;
        Ok(path)
    }

    fn validate(&self) -> Result<(), String> {
        if self.models.is_empty() {
            return Err("no [[model]] tables".to_owned());
        }
        let mut names = HashSet::new();
        let mut files = HashSet::new();
        for m in &self.models {
            let what = format!("model `{}`", m.name);
            if m.name.is_empty() || !m.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(format!("{what}: name must be non-empty [A-Za-z0-9_-]"));
            }
            if !names.insert(m.name.as_str()) {
                return Err(format!("{what} is listed twice"));
            }
            let bare = Path::new(&m.file).file_name().is_some_and(|f| f == m.file.as_str());
            if !bare || m.file.contains('\\') {
                return Err(format!("{what}: file {:?} must be a bare file name", m.file));
            }
            if !files.insert(m.file.as_str()) {
                return Err(format!("{what}: file {:?} is used by two models", m.file));
            }
            if m.sha256.len() != 64 || !m.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(format!("{what}: sha256 {:?} is not 64 lowercase hex characters", m.sha256));
            }
            if let Some(url) = &m.url
                && !(url.starts_with("https://") || url.starts_with("http://") || url.starts_with("file://"))
            {
                return Err(format!("{what}: url {url:?} must start with https://, http:// or file://"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"
[[model]]
name = "a"
file = "a.onnx"
sha256 = "104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12"
bytes = 3
license = "CC0-1.0"
role = "test"
source = "test"
"#;

    #[test]
    fn parses_minimal_entry() {
        let m = Manifest::from_toml_str(ONE, "t.toml").unwrap();
        assert_eq!(m.names(), ["a"]);
        assert_eq!(m.get("a").unwrap().url, None);
        assert_eq!(m.by_file("a.onnx").unwrap().name, "a");
        assert!(m.get("b").is_none());
        let err = m.require("b").unwrap_err().to_string();
        assert!(err.contains("`b`") && err.contains("t.toml") && err.contains("lists: a"), "{err}");
    }

    #[test]
    fn rejects_unknown_keys() {
        let err = Manifest::from_toml_str(&format!("{ONE}colour = \"red\"\n"), "t.toml").unwrap_err().to_string();
        assert!(err.contains("t.toml") && err.contains("colour"), "{err}");
        let err = Manifest::from_toml_str(&format!("version = 1\n{ONE}"), "t.toml").unwrap_err().to_string();
        assert!(err.contains("version"), "{err}");
    }

    #[test]
    fn rejects_bad_values() {
        let cases = [
            (ONE.replace("a.onnx", "../a.onnx"), "bare file name"),
            (ONE.replace("104ee2", "104EE2"), "lowercase hex"),
            (ONE.replace("c2b12\"", "c2b1\""), "lowercase hex"),
            (format!("{ONE}{}", ONE.replace("a.onnx", "b.onnx")), "listed twice"),
            (format!("{ONE}{}", ONE.replace("name = \"a\"", "name = \"b\"")), "used by two models"),
            (format!("{ONE}url = \"ftp://x\"\n"), "must start with"),
            (ONE.replace("bytes = 3\n", ""), "missing field `bytes`"),
        ];
        for (text, expected) in cases {
            let err = Manifest::from_toml_str(&text, "t.toml").unwrap_err().to_string();
            assert!(err.contains(expected), "expected {expected:?} in: {err}");
        }
    }

    #[test]
    fn select_subset() {
        let two = format!("{ONE}{}", ONE.replace("\"a", "\"b"));
        let m = Manifest::from_toml_str(&two, "t.toml").unwrap();
        assert_eq!(m.select(&["b"]).unwrap().names(), ["b"]);
        assert_eq!(m.select(&[]).unwrap().names(), ["a", "b"]);
        assert!(m.select(&["a", "zzz"]).unwrap_err().to_string().contains("`zzz`"));
    }
}
