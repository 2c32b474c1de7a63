//! The machine description of a report: CPU, cores, RAM, kernel, toolchain, package versions,
//! git commit (the other load during the run is added when the run ends).

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::util::venv_python;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim())
}

fn run(cmd: &str, args: &[&str], dir: &Path) -> Option<String> {
    let out = Command::new(cmd).args(args).current_dir(dir).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn describe(venv: &Path, repo: &Path) -> Value {
    let cpuinfo = read("/proc/cpuinfo");
    let meminfo = read("/proc/meminfo");
    let logical = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let flags = field(&cpuinfo, "flags").unwrap_or("");
    let simd: Vec<&str> = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni"]
        .into_iter()
        .filter(|f| flags.split(' ').any(|x| x == *f))
        .collect();
    let mem_kb: f64 =
        field(&meminfo, "MemTotal").and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0);
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned()))
        .unwrap_or_default();
    let packages = venv_python(venv).and_then(|py| {
        let code = "import json, importlib.metadata as m\n\
                    out = {}\n\
                    for p in ['faiss-cpu', 'numpy', 'onnxruntime', 'opencv-python-headless', 'paho-mqtt', 'matplotlib']:\n\
                    \x20   try: out[p] = m.version(p)\n\
                    \x20   except Exception: out[p] = 'not installed'\n\
                    import sys; out['python'] = sys.version.split()[0]\n\
                    print(json.dumps(out))";
        let out = Command::new(py).args(["-c", code]).output().ok()?;
        serde_json::from_slice::<Value>(&out.stdout).ok()
    });
    json!({
        "cpu": field(&cpuinfo, "model name").unwrap_or("unknown"),
        "cores": format!("{cores} ({logical})"),
        "cpu_flags": simd.join(" "),
        "memory": format!("{:.1} GiB", mem_kb / 1024.0 / 1024.0),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "os": os,
        "rustc": run("rustc", &["-V"], repo).unwrap_or_else(|| "unknown".into()),
        "git_commit": run("git", &["rev-parse", "HEAD"], repo).unwrap_or_else(|| "unknown".into()),
        "python_packages": packages.unwrap_or_else(|| json!({"bench venv": format!("missing: {} (run benches/setup.sh)", venv.display())})),
    })
}
