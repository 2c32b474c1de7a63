//! The model files the config names (`[faces] detector`, `[crowd] person_model`,
//! `[crowd] density_model`): each is a plain file name inside `[agent] model_dir`.
//!
//! A name that is a path (absolute, with a separator, `..`) is refused by `Config::load`, naming
//! the key: a config must not load a model from elsewhere than the directory the verified models
//! are put in (`scripts/setup.sh`, `models fetch`). A file the model manifest does not list (a
//! custom model put into `model_dir` on purpose) is allowed but cannot be sha256-verified: the
//! agent logs it as unverified when it loads it, and `edge-agent check-config` says so instead of
//! "models verified".

use std::path::{Component, Path};

/// Why `file` is not a plain file name inside the model directory, if it is not.
pub fn check_name(file: &str) -> Result<(), String> {
    let mut parts = Path::new(file).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) if !file.contains(['/', '\\']) => Ok(()),
        _ if file.is_empty() => Err("must name a model file in [agent] model_dir".into()),
        _ => Err(format!(
            "{file:?} is not a file name: models are loaded from [agent] model_dir only (no absolute \
             paths, directories or `..`); put the file there and name it alone"
        )),
    }
}

/// Those of `loaded` (`(key, file name)`: `Config::loaded_model_files`) the model manifest does
/// not list: loaded without sha256 verification.
pub fn unverified<'a>(loaded: Vec<(&'static str, &'a str)>) -> Vec<(&'static str, &'a str)> {
    let manifest = sightline_models::Manifest::embedded();
    loaded.into_iter().filter(|(_, file)| manifest.by_file(file).is_none()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_are_accepted() {
        for ok in ["yunet_n_dynamic.onnx", "custom-detector.onnx", "a..b.onnx"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "/etc/models/yunet.onnx", "../yunet.onnx", "sub/yunet.onnx", "..", ".", "a\\b.onnx", "./x.onnx"]
        {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
