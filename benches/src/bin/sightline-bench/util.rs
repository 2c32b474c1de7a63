//! What every section shares: the seeded generator, latency statistics, the report's building
//! blocks, and running the bench venv's Python.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

pub const DIM: usize = 128;

pub use sightline_benches::Rng;

/// Clock ticks per second of the CPU times in `/proc`.
fn clk_tck() -> f64 {
    // SAFETY: sysconf only reads a constant
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// CPU seconds of a process (`self` or a pid) from `/proc/PID/stat`: the sum of the first `fields`
/// of utime, stime (all its threads), cutime, cstime (its reaped children). NaN if unreadable.
fn proc_cpu_s(pid: &str, fields: usize) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // after "(comm) ": utime, stime, cutime, cstime are fields 14-17 (indices 11-14)
    let times: Vec<f64> = stat
        .rsplit_once(") ")
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .skip(11)
        .take(fields)
        .filter_map(|v| v.parse().ok())
        .collect();
    if times.len() == fields { times.iter().sum::<f64>() / clk_tck() } else { f64::NAN }
}

/// A `/proc/PID/status` field in KiB (`VmHWM`, `VmRSS`); `pid` may be `self`.
pub fn status_kib(pid: &str, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// User + system CPU seconds of a process (`self` or a pid), all its threads.
pub fn cpu_s(pid: &str) -> f64 {
    proc_cpu_s(pid, 2)
}

/// Where the machine's CPU time goes, read at one instant: all processes' (`/proc/stat`), this
/// process's and its reaped children's (`/proc/self/stat`), and the hypervisor's steal (the
/// virtual CPUs' time taken back by the host). Two readings tell how much other work shared the
/// cores in between: the noise every number of that stretch carries.
#[derive(Clone, Copy, Debug)]
pub struct CpuTimes {
    busy_s: f64,
    steal_s: f64,
    ours_s: f64,
    at: Instant,
}

/// Other work on the machine over a stretch, in cores (average CPU-seconds per second).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct OtherLoad {
    /// Processes other than this one and its children (kernel threads included).
    pub others_cores: f64,
    /// Time the hypervisor gave the virtual CPUs to someone else.
    pub steal_cores: f64,
    pub seconds: f64,
}

impl CpuTimes {
    pub fn now() -> CpuTimes {
        let tck = clk_tck();
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // cpu  user nice system idle iowait irq softirq steal guest guest_nice (guest is in user)
        let cpu: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0.0))
            .chain(std::iter::repeat(0.0))
            .take(8)
            .collect();
        CpuTimes {
            busy_s: (cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6]) / tck,
            steal_s: cpu[7] / tck,
            ours_s: proc_cpu_s("self", 4),
            at: Instant::now(),
        }
    }

    /// Other work since this reading. Call it once this process's children have been reaped
    /// (their CPU counts as ours only then).
    pub fn since(&self) -> OtherLoad {
        let now = CpuTimes::now();
        let seconds = (now.at - self.at).as_secs_f64().max(1e-9);
        OtherLoad {
            others_cores: ((now.busy_s - self.busy_s) - (now.ours_s - self.ours_s)).max(0.0) / seconds,
            steal_cores: (now.steal_s - self.steal_s) / seconds,
            seconds,
        }
    }
}

impl std::fmt::Display for OtherLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "other processes used {:.2} cores on average over {:.0} s; the hypervisor stole {:.2} cores",
            self.others_cores, self.seconds, self.steal_cores
        )
    }
}

/// Percentiles and rate of per-operation latencies.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
    /// Operations per second, one after the other: count / total time.
    pub per_s: f64,
}

impl Stats {
    pub fn of(latencies: &[Duration]) -> Stats {
        Stats::of_ms(&latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>())
    }

    pub fn of_ms(ms: &[f64]) -> Stats {
        let mut v = ms.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len().max(1);
        // nearest rank
        let pct = |p: f64| v.get(((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1).copied().unwrap_or(f64::NAN);
        let total: f64 = v.iter().sum();
        Stats {
            count: v.len(),
            p50_ms: pct(50.0),
            p95_ms: pct(95.0),
            p99_ms: pct(99.0),
            mean_ms: total / n as f64,
            max_ms: v.last().copied().unwrap_or(f64::NAN),
            per_s: v.len() as f64 / (total / 1e3),
        }
    }
}

/// A Markdown table.
#[derive(Clone, Debug, Serialize)]
pub struct Table {
    pub caption: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(caption: &str, header: &[&str]) -> Table {
        Table { caption: caption.into(), header: header.iter().map(|s| s.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        if !self.caption.is_empty() {
            s += &format!("{}\n\n", self.caption);
        }
        s += &format!("| {} |\n", self.header.join(" | "));
        s += &format!(
            "|{}\n",
            self.header.iter().enumerate().map(|(i, _)| if i == 0 { "---|" } else { "---:|" }).collect::<String>()
        );
        for r in &self.rows {
            s += &format!("| {} |\n", r.join(" | "));
        }
        s
    }
}

/// One section of the report.
#[derive(Debug, Serialize)]
pub struct Section {
    /// `search`, `ingest`: the subcommand and the JSON key.
    pub key: &'static str,
    pub title: String,
    /// What is measured, how, against what.
    pub about: String,
    /// The floor/peer verdicts, one line each.
    pub headline: Vec<String>,
    pub tables: Vec<Table>,
    pub notes: Vec<String>,
    /// Every measured number, for the JSON report and the plot.
    pub data: Value,
    /// False when a correctness check failed (e.g. the search results disagree with faiss).
    pub ok: bool,
    pub seconds: f64,
}

/// Where the repository is: this crate's parent (benches/..), else the current directory.
pub fn repo_root() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match built.canonicalize() {
        Ok(p) if p.join("benches/Cargo.toml").is_file() => p,
        _ => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    }
}

/// The bench venv's Python, if `benches/setup.sh` made it.
pub fn venv_python(venv: &Path) -> Option<PathBuf> {
    let p = venv.join("bin/python");
    p.is_file().then_some(p)
}

/// Runs `python script args…` and returns its stdout; stderr goes to ours.
pub fn python(python: &Path, script: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!("{} {} failed: {}", python.display(), script.display(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `1234.5` → `1 234`, for counts and rates.
pub fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// Milliseconds with 3 significant-ish digits.
pub fn ms(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// A ratio as `1.23×`.
pub fn ratio(x: f64) -> String {
    if x.is_finite() { format!("{x:.2}×") } else { "–".into() }
}
