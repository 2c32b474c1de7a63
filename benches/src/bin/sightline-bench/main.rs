//! `sightline-bench`: the end-to-end benchmark report (issue 6). Every section measures
//! sightline against a floor or a peer *in the same run, on the same machine*, and writes the
//! ratio. `report` runs them all and writes `benches/results/YYYY-MM-DD-HHMM/{report.md,
//! report.json, plot.png}` and `benches/results/latest.md`; `edge`, `search` and `ingest` run one section.
//!
//! Python peers run from the venv `benches/setup.sh` makes (`.local/bench-venv`).
//! See `benches/README.md`.

mod cluster;
mod edge;
mod ingest;
mod machine;
mod search;
mod util;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::util::{CpuTimes, Section, repo_root, venv_python};

#[derive(Parser)]
#[command(name = "sightline-bench", about = "sightline end-to-end benchmarks against floors and peers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs every implemented section and writes the dated report.
    Report(Common),
    /// Search: SearchIndex vs faiss IndexFlatL2 (1M vectors; --quick: 100k).
    Search(Common),
    /// Aggregator ingest with 100k live trajectories (--quick: 10k), one message at a time and by
    /// group commit, on SQLite and on PostgreSQL, against 5,000 sightings/s.
    Ingest(Common),
    /// Aggregator nodes sharing sites against one node: CPU per sighting (PostgreSQL, mosquitto).
    Cluster(Common),
    /// Edge throughput on the face clip vs the decode-only and inference-only floors and the
    /// Python peer, and RSS with 1, 2, 4 RTSP cameras (--quick: fewer passes, 10 s warm-ups).
    Edge(Common),
}

#[derive(Args, Clone)]
struct Common {
    /// Results directory (a dated directory is made inside). For `search`/`ingest`/`edge`, a report is
    /// written only when this is given.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Smaller sizes (100k vectors, 10k trajectories): a smoke run of a few minutes.
    #[arg(long)]
    quick: bool,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// Ingest: how many new sightings to time [default: 5000; --quick: 2000].
    #[arg(long)]
    sightings: Option<usize>,
    /// Search: the index sizes, comma-separated [default: 1000000,10000000; --quick: 100000].
    #[arg(long, value_delimiter = ',')]
    vectors: Vec<usize>,
    /// The Python venv made by benches/setup.sh [default: <repo>/.local/bench-venv].
    #[arg(long)]
    venv: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let (which, c): (&[&str], Common) = match cli.cmd {
        Cmd::Report(c) => (&["edge", "search", "ingest"], c),
        Cmd::Search(c) => (&["search"], c),
        Cmd::Ingest(c) => (&["ingest"], c),
        Cmd::Edge(c) => (&["edge"], c),
        Cmd::Cluster(c) => (&["cluster"], c),
    };
    let full_report = which.len() > 1;
    let repo = repo_root();
    let venv = c.venv.clone().unwrap_or_else(|| repo.join(".local/bench-venv"));
    let out = match (&c.out, full_report) {
        (Some(o), _) => Some(o.clone()),
        (None, true) => Some(repo.join("benches/results")),
        (None, false) => None,
    };
    let started = time::OffsetDateTime::now_utc();
    let clock = Instant::now();
    let mut machine = machine::describe(&venv, &repo);
    let run_cpu = CpuTimes::now();

    let mut sections: Vec<Section> = Vec::new();
    for key in which {
        let cpu = CpuTimes::now();
        let mut s = match *key {
            "edge" => edge::run(&edge::Opts { quick: c.quick, repo: &repo, venv: &venv })?,
            "cluster" => cluster::run(&cluster::Opts { repo: &repo })?,
            "search" => search::run(&search::Opts {
                quick: c.quick,
                seed: c.seed,
                vectors: &c.vectors,
                venv: &venv,
                repo: &repo,
            })?,
            _ => ingest::run(&ingest::Opts { quick: c.quick, seed: c.seed, sightings: c.sightings })?,
        };
        let other = cpu.since();
        s.notes.push(format!(
            "While this section ran, {other}: other work on the cores makes its numbers noisier (the ratios less so: their two sides ran one after the other)."
        ));
        if let Some(data) = s.data.as_object_mut() {
            data.insert("other_load".into(), json!(other));
        }
        eprintln!("{}: done in {:.0} s", s.key, s.seconds);
        sections.push(s);
    }

    // the exact command to reproduce it
    let sub = which.first().filter(|_| !full_report).copied().unwrap_or("report");
    let mut args = String::new();
    if c.quick {
        args += " --quick";
    }
    if c.seed != 0x5eed {
        args += &format!(" --seed {}", c.seed);
    }
    if let Some(n) = c.sightings {
        args += &format!(" --sightings {n}");
    }
    if let Some(o) = &c.out
        && o != &repo.join("benches/results")
        && o != Path::new("benches/results")
    {
        args += &format!(" --out {}", o.display());
    }
    let reproduce = format!(
        "bash benches/setup.sh && cargo run --release -p sightline-benches --bin sightline-bench -- {sub}{args}"
    );

    println!();
    for s in &sections {
        println!("## {}", s.title);
        for h in &s.headline {
            println!("- {}", h.replace("**", ""));
        }
        if !s.ok {
            println!("- CHECK FAILED: see the notes of this section");
        }
    }
    let ok = sections.iter().all(|s| s.ok);
    machine["load"] = json!(run_cpu.since().to_string());

    if let Some(out) = out {
        let stamp = format!(
            "{:04}-{:02}-{:02}-{:02}{:02}",
            started.year(),
            started.month() as u8,
            started.day(),
            started.hour(),
            started.minute()
        );
        let mut dir = out.join(&stamp);
        let mut k = 2;
        while dir.exists() {
            dir = out.join(format!("{stamp}-{k}"));
            k += 1;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let report = json!({
            "schema": "sightline-bench/1",
            "started_utc": started.format(&time::format_description::well_known::Rfc3339)?,
            "seconds": clock.elapsed().as_secs_f64(),
            "quick": c.quick,
            "seed": c.seed,
            "reproduce": reproduce,
            "argv": std::env::args().collect::<Vec<_>>(),
            "machine": machine,
            "ok": ok,
            "sections": sections.iter().map(|s| (s.key.to_string(), serde_json::to_value(s).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
        });
        let json_path = dir.join("report.json");
        std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)?;

        let plot = dir.join("plot.png");
        let plotted = match venv_python(&venv) {
            Some(py) => match util::python(
                &py,
                &repo.join("benches/plot.py"),
                &[json_path.to_str().context("path")?, plot.to_str().context("path")?],
            ) {
                Ok(_) => true,
                Err(e) => {
                    eprintln!("plot not drawn: {e:#}");
                    false
                }
            },
            None => false,
        };
        let md = markdown(&report, &sections, plotted.then_some("plot.png"), &reproduce, clock.elapsed().as_secs_f64());
        std::fs::write(dir.join("report.md"), &md)?;
        if full_report {
            let rel = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let latest = format!(
                "<!-- a copy of {rel}/report.md, rewritten by `sightline-bench report` -->\n\n{}",
                markdown(
                    &report,
                    &sections,
                    plotted.then(|| format!("{rel}/plot.png")).as_deref(),
                    &reproduce,
                    clock.elapsed().as_secs_f64()
                )
                .replacen(
                    "\n",
                    &format!("\n\nResults directory: [`{rel}/`]({rel}/) ([JSON]({rel}/report.json))\n"),
                    1
                )
            );
            std::fs::write(out.join("latest.md"), latest)?;
        }
        println!("\nreport: {}", dir.join("report.md").display());
    }
    if !ok {
        anyhow::bail!("a correctness check failed (see the report)");
    }
    Ok(())
}

fn markdown(
    report: &serde_json::Value,
    sections: &[Section],
    plot: Option<&str>,
    reproduce: &str,
    seconds: f64,
) -> String {
    let m = &report["machine"];
    let s = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let mut md = String::new();
    md += &format!("# sightline benchmark report — {}\n", s(&report["started_utc"]));
    md += &format!(
        "\n{}run in {:.0} s. Every ratio compares numbers measured in this run, on this machine.\n",
        if report["quick"].as_bool() == Some(true) { "**Quick** (reduced sizes) " } else { "Full " },
        seconds
    );
    md += "\n## Headlines\n\n";
    for sec in sections {
        for h in &sec.headline {
            md += &format!("- {h}\n");
        }
        if !sec.ok {
            md += &format!("- **{}: a correctness check FAILED** (see below)\n", sec.key);
        }
    }
    if let Some(p) = plot {
        md += &format!("\n![throughput and latency per configuration]({p})\n");
    }
    md += "\n## Machine and versions\n\n| | |\n|---|---|\n";
    for (k, label) in [
        ("cpu", "CPU"),
        ("cores", "cores available (logical CPUs)"),
        ("cpu_flags", "SIMD"),
        ("memory", "RAM"),
        ("load", "other load during the run"),
        ("kernel", "kernel"),
        ("os", "OS"),
        ("rustc", "rustc"),
        ("git_commit", "git commit"),
    ] {
        md += &format!("| {label} | {} |\n", s(&m[k]));
    }
    if let Some(p) = m["python_packages"].as_object() {
        for (k, v) in p {
            md += &format!("| {k} | {} |\n", s(v));
        }
    }
    md += &format!("\nReproduce:\n\n```sh\n{reproduce}\n```\n");
    for sec in sections {
        md += &format!("\n## {}\n\n{}\n\n", sec.title, sec.about);
        for t in &sec.tables {
            md += &t.markdown();
            md += "\n";
        }
        for n in &sec.notes {
            md += &format!("- {n}\n");
        }
        md += &format!("\n(section took {:.0} s)\n", sec.seconds);
    }
    md
}
