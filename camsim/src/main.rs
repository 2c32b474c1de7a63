//! `camsim`: serves video files as RTSP cameras, for installers, demos and tests.
//!
//! ```text
//! camsim --listen 127.0.0.1:8554 --mount NAME=FILE [--mount NAME=FILE ...] [--loop]
//!        [--scale WIDTHxHEIGHT] [--corrupt PROB [--seed N]]
//! ```
//!
//! Each FILE is served at `rtsp://IP:PORT/NAME`, paced in real time. When the
//! server listens it prints `camsim: serving rtsp://IP:PORT/NAME (FILE)` on
//! stdout, one line per mount. See [`camera`] for how the streams are built.
//!
//! For fault-injection tests, `--scale` serves every file re-encoded at another size and
//! `--corrupt` damages the encoded stream deterministically (see [`corrupt`]).

mod camera;
mod corrupt;

use std::collections::HashSet;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use gstreamer as gst;
use gstreamer_rtsp_server as gst_rtsp_server;

use gst::glib;
use gst_rtsp_server::prelude::*;
use sightline_base::logging::{self, Stamps};
use tracing::info;

use camera::{Camera, Corruption, Error, MountArg, Scale};

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// Serve video files as RTSP cameras.
#[derive(Parser, Debug)]
#[command(name = "camsim", version, about)]
struct Cli {
    /// Address to listen on (IP:PORT); port 0 lets the system pick a free one.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8554")]
    listen: SocketAddr,

    /// Serve FILE at rtsp://IP:PORT/NAME; repeatable. NAME: [a-z0-9][a-z0-9_-]{0,63}.
    #[arg(long = "mount", value_name = "NAME=FILE", required = true, value_parser = camera::parse_mount)]
    mounts: Vec<MountArg>,

    /// When a file ends, start it again without ending the stream.
    #[arg(long = "loop")]
    looping: bool,

    /// Serve every file decoded, scaled to WIDTHxHEIGHT (even numbers) and re-encoded to H.264.
    #[arg(long, value_name = "WIDTHxHEIGHT", value_parser = camera::parse_scale)]
    scale: Option<Scale>,

    /// Fault injection: damage each encoded access unit with probability PROB (0 to 1) by
    /// flipping bits, zeroing a run of bytes or truncating a slice NAL unit.
    #[arg(long, value_name = "PROB", value_parser = camera::parse_probability)]
    corrupt: Option<f64>,

    /// Seed of --corrupt's damage: the same seed damages a stream the same way [default: 0].
    #[arg(long, value_name = "N", requires = "corrupt")]
    seed: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // run by hand, by scripts and by tests: its lines keep their time, even under systemd
    logging::init("info", Stamps::Always);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("camsim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    gst::init().context("cannot initialise GStreamer")?;

    let mut names = HashSet::new();
    if let Some(dup) = cli.mounts.iter().find(|m| !names.insert(&m.name)) {
        return Err(Error::DuplicateMount(dup.name.clone()).into());
    }
    let corrupt = cli.corrupt.map(|probability| Corruption { probability, seed: cli.seed.unwrap_or(0) });
    let cameras = cli
        .mounts
        .iter()
        .map(|m| Camera::open(m).map(|c| Camera { scale: cli.scale, corrupt, ..c }))
        .collect::<Result<Vec<_>, _>>()?;

    // Handle signals before announcing anything: a SIGTERM right after the
    // ready line must stop us cleanly, not kill us.
    let main_loop = glib::MainLoop::new(None, false);
    for signal in [SIGINT, SIGTERM] {
        let main_loop = main_loop.clone();
        glib_unix::unix_signal_add(signal, move || {
            info!(signal, "stopping");
            main_loop.quit();
            glib::ControlFlow::Continue
        });
    }
    let server = start_server(cli.listen, &cameras, cli.looping)?;

    let host = match cli.listen.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let port = server.bound_port();
    let mut out = std::io::stdout().lock();
    for c in &cameras {
        writeln!(out, "camsim: serving rtsp://{host}:{port}/{} ({})", c.name, c.given.display())?;
    }
    out.flush()?;
    drop(out);

    main_loop.run();
    Ok(())
}

/// Starts listening on `addr` and mounts the cameras. Binding is tried
/// first with a plain socket, for a clear error ("address already in use",
/// "cannot assign requested address"); `attach`, which creates the real
/// socket, is checked too in case the address was taken in between.
fn start_server(addr: SocketAddr, cameras: &[Camera], looping: bool) -> Result<gst_rtsp_server::RTSPServer, Error> {
    drop(TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?);
    let server = gst_rtsp_server::RTSPServer::new();
    server.set_address(&addr.ip().to_string());
    server.set_service(&addr.port().to_string());
    let mounts = server.mount_points().ok_or_else(|| Error::Gst("RTSP server has no mount points".into()))?;
    for camera in cameras {
        mounts.add_factory(&format!("/{}", camera.name), camera.factory(looping));
    }
    let fail = |reason: String| Error::Server { addr, reason };
    server.attach(None).map_err(|e| fail(format!("{e} (could not bind)")))?;
    if server.bound_port() <= 0 {
        return Err(fail("no port bound".into()));
    }
    info!(%addr, port = server.bound_port(), "listening");
    Ok(server)
}
