//! ONNX Runtime: loading the shared library, execution providers, sessions.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use serde::Deserialize;

use crate::{Result, VisionError};

/// `[runtime]` section of the agent's (and aggregator's) config.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Path of `libonnxruntime.so`; when unset, `ORT_DYLIB_PATH`.
    pub onnxruntime: Option<PathBuf>,
    /// Threads per inference (intra-op); 0 = number of cores.
    pub threads: usize,
    /// Whether idle intra-op threads spin (busy-wait) for the next piece of work instead of
    /// sleeping. ONNX Runtime spins by default, which buys a little latency on an otherwise idle
    /// machine; on an edge box, where decoders, other models and other cameras share the cores,
    /// the spinning threads burn the CPU the others need. Measured on the 2-core reference VM
    /// (`benches/results/`): off, the face pipeline analyses about 1.6x the frames per second
    /// at about half the CPU per frame. Off by default.
    pub spinning: bool,
    /// Execution providers in order of preference: "cpu" (always available), or
    /// "cuda" / "tensorrt" / "openvino" when built with the matching cargo feature.
    pub execution_providers: Vec<String>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { onnxruntime: None, threads: 0, spinning: false, execution_providers: vec!["cpu".into()] }
    }
}

/// A loaded ONNX Runtime: creates sessions with the configured providers and threads.
#[derive(Clone)]
pub struct Runtime {
    env: ort::environment::Environment,
    threads: usize,
    spinning: bool,
    providers: Vec<ort::ep::ExecutionProviderDispatch>,
}

impl Runtime {
    pub fn new(cfg: &RuntimeConfig) -> Result<Runtime> {
        let path = match &cfg.onnxruntime {
            Some(p) => p.clone(),
            None => std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).ok_or(VisionError::RuntimeUnset)?,
        };
        if !path.is_file() {
            return Err(VisionError::RuntimeMissing { path });
        }
        let providers = cfg.execution_providers.iter().map(|name| provider(name)).collect::<Result<Vec<_>>>()?;
        // ONNX Runtime allows one environment per process: the first one made is kept and shared.
        static ENV: std::sync::Mutex<Option<ort::environment::Environment>> = std::sync::Mutex::new(None);
        let mut shared = ENV.lock().unwrap();
        let env = match &*shared {
            Some(env) => env.clone(),
            None => {
                let load = |detail: String| VisionError::RuntimeLoad { path: path.clone(), detail };
                let env = ort::init_from(&path)
                    .map_err(|e| load(e.to_string()))?
                    .with_name("sightline")
                    .build()
                    .map_err(|e| load(e.to_string()))?;
                shared.insert(env).clone()
            }
        };
        let threads = if cfg.threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            cfg.threads
        };
        Ok(Runtime { env, threads, spinning: cfg.spinning, providers: providers.into_iter().flatten().collect() })
    }

    /// The same runtime with another intra-op thread count (e.g. 1 for a background model that
    /// must not take the cores from the latency-critical one).
    pub fn with_threads(&self, threads: usize) -> Runtime {
        Runtime { threads: threads.max(1), ..self.clone() }
    }

    /// Verifies `path` against the model manifest (when the file is listed there) and opens a session.
    pub fn session(&self, path: &Path) -> Result<Session> {
        let manifest = sightline_models::Manifest::embedded();
        let listed = path.file_name().and_then(|f| f.to_str()).and_then(|f| manifest.by_file(f));
        match listed {
            Some(entry) => sightline_models::verify_file(path, entry)?,
            None if !path.is_file() => {
                return Err(VisionError::ModelLoad { path: path.to_owned(), detail: "file not found".into() });
            }
            None => tracing::warn!(path = %path.display(), "model not in the manifest: loading unverified"),
        }
        let fail = |detail: String| VisionError::ModelLoad { path: path.to_owned(), detail };
        Session::builder(&self.env)
            .map_err(|e| fail(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| fail(e.to_string()))?
            .with_intra_threads(self.threads)
            .map_err(|e| fail(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| fail(e.to_string()))?
            .with_intra_op_spinning(self.spinning)
            .map_err(|e| fail(e.to_string()))?
            // the memory pattern is planned and kept per input shape: the detector sees every frame
            // size, the embedder every batch size, so it only adds up (on the face clip the agent's
            // peak RSS is 12-25 MiB lower without it, at the same frame rate)
            .with_memory_pattern(false)
            .map_err(|e| fail(e.to_string()))?
            .with_execution_providers(&self.providers)
            .map_err(|e| fail(e.to_string()))?
            .commit_from_file(path)
            .map_err(|e| fail(e.to_string()))
    }
}

/// Maps a configured provider name to an ort provider; `None` for the implicit CPU provider.
fn provider(name: &str) -> Result<Option<ort::ep::ExecutionProviderDispatch>> {
    match name {
        "cpu" => Ok(None),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Some(ort::ep::CUDA::default().build())),
        #[cfg(feature = "tensorrt")]
        "tensorrt" => Ok(Some(ort::ep::TensorRT::default().build())),
        #[cfg(feature = "openvino")]
        "openvino" => Ok(Some(ort::ep::OpenVINO::default().build())),
        other => Err(VisionError::UnknownProvider(other.to_owned())),
    }
}

/// Checks that a session has the named inputs/outputs a model's code relies on.
pub(crate) fn require_outlets(session: &Session, model: &'static str, inputs: &[&str], outputs: &[&str]) -> Result<()> {
    let has = |outlets: &[ort::value::Outlet], n: &str| outlets.iter().any(|o| o.name() == n);
    for n in inputs {
        if !has(session.inputs(), n) {
            return Err(VisionError::ModelInterface { model, detail: format!("no input named {n:?}") });
        }
    }
    for n in outputs {
        if !has(session.outputs(), n) {
            return Err(VisionError::ModelInterface { model, detail: format!("no output named {n:?}") });
        }
    }
    Ok(())
}
