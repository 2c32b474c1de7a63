//! `edge-agent`: run, check-config, crowd-baseline, probe.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sightline_base::logging::{self, Stamps};
use sightline_base::signals;
use sightline_edge_agent::config::{Config, RtspTransport};
use sightline_edge_agent::{SystemClock, agent, baseline, decode, rtsp};

#[derive(Parser)]
#[command(name = "edge-agent", version, about = "sightline edge agent: cameras in, sightings out on MQTT")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file: syntax, keys, values, decoders, runtime library and model files.
    CheckConfig { config: PathBuf },
    /// Capture a camera's empty-scene density baseline (run while nobody is in view).
    CrowdBaseline {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        camera: String,
        /// Frames to average, one a second.
        #[arg(long, default_value_t = 5)]
        frames: usize,
        /// Where to write it; default: the camera's `[camera.crowd] baseline`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print codec, resolution and frame rate of an RTSP URL.
    Probe {
        url: String,
        #[arg(long, default_value = "tcp", value_parser = ["tcp", "udp"])]
        transport: String,
        #[arg(long, default_value_t = 10.0)]
        timeout_s: f64,
    },
}

/// glibc's malloc arenas the agent may use (`MALLOC_ARENA_MAX`, unless set in the environment).
/// glibc gives every thread that contends for malloc an arena of its own, up to 8 per core; the
/// agent has a dozen threads (ONNX Runtime, GStreamer, tokio, the workers), and each arena keeps
/// its own freed pages. Two arenas cut the agent's peak RSS on the face clip by 30–40 MiB (about
/// 215 to 180 MiB on the 2-core reference VM) with no measurable change in throughput (`benches/`).
const MALLOC_ARENAS: i32 = 2;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    /// `M_ARENA_MAX` of glibc's malloc.h.
    const M_ARENA_MAX: std::ffi::c_int = -8;
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in main, before any other thread exists; mallopt only
        // changes a tunable of the allocator.
        unsafe { mallopt(M_ARENA_MAX, MALLOC_ARENAS) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> anyhow::Result<()> {
    limit_malloc_arenas();
    logging::init("info,ort=warn", Stamps::UnlessJournald);
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match cli.command {
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            decode::init()?;
            let (reload_tx, reload) = tokio::sync::mpsc::channel(1);
            rt.block_on(async move {
                // SIGTERM or Ctrl-C stops the agent; each SIGHUP asks for a reload
                let shutdown = signals::shutdown_watch(Some(reload_tx));
                let control = agent::Control { shutdown, reload, config_path: Some(config) };
                agent::run(cfg, Arc::new(SystemClock), control).await
            })?;
        }
        Command::CheckConfig { config } => {
            let cfg = Config::load(&config)?;
            decode::check_decoder(&cfg.decode.h264, "h264")?;
            decode::check_decoder(&cfg.decode.h265, "h265")?;
            for c in &cfg.cameras {
                if let Some(f) = &c.file {
                    anyhow::ensure!(f.is_file(), "camera {}: file {} not found", c.id, f.display());
                }
            }
            agent::load_models(&cfg).context("loading the models")?;
            // a model the manifest does not list is loaded without a checksum: say which
            let unverified = sightline_edge_agent::model_files::unverified(cfg.loaded_model_files());
            let models = match unverified.is_empty() {
                true => "models verified".to_string(),
                false => {
                    let list: Vec<String> = unverified.iter().map(|(k, f)| format!("{k} = {f:?}")).collect();
                    format!("models loaded, UNVERIFIED (not in the model manifest): {}", list.join(", "))
                }
            };
            println!(
                "{}: OK (agent {}, site {}, {} camera(s), {models})",
                config.display(),
                cfg.agent.id,
                cfg.agent.site,
                cfg.cameras.len()
            );
        }
        Command::CrowdBaseline { config, camera, frames, out } => {
            let cfg = Config::load(&config)?;
            let cam = cfg
                .cameras
                .iter()
                .find(|c| c.id == camera)
                .with_context(|| format!("{}: no camera {camera:?} (cameras: {})", config.display(), ids(&cfg)))?;
            let out = out.or_else(|| cam.crowd.baseline.clone()).with_context(|| {
                format!("camera {camera}: give --out or set `[camera.crowd] baseline` in {}", config.display())
            })?;
            decode::init()?;
            let mut density = agent::load_density(&cfg)?;
            let baseline = rt.block_on(baseline::capture(&cfg, cam, &mut density, frames))?;
            baseline.save(&out)?;
            println!(
                "{}: baseline of camera {camera} from {} frame(s): {}x{} cells, {:.1} people of floor removed per frame",
                out.display(),
                baseline.frames,
                baseline.width,
                baseline.height,
                baseline.cells.iter().sum::<f32>()
            );
        }
        Command::Probe { url, transport, timeout_s } => {
            let url: url::Url = url.parse().with_context(|| format!("{url:?} is not a URL"))?;
            let transport = if transport == "udp" { RtspTransport::Udp } else { RtspTransport::Tcp };
            let info = rt.block_on(rtsp::probe(&url, transport, Duration::from_secs_f64(timeout_s)))?;
            println!("url:        {}", rtsp::redact(&url));
            println!("codec:      {} ({})", info.codec, info.rfc6381.as_deref().unwrap_or("?"));
            match info.resolution {
                Some((w, h)) => println!("resolution: {w}x{h}"),
                None => println!("resolution: unknown"),
            }
            match info.fps {
                Some(f) => println!("frame rate: {f:.2} fps"),
                None => println!("frame rate: unknown"),
            }
        }
    }
    Ok(())
}

fn ids(cfg: &Config) -> String {
    cfg.cameras.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", ")
}
