//! `aggregator`: run, check-config, token, broker-acl.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sightline_aggregator::auth::{Role, new_token, token_hash};
use sightline_aggregator::config::Config;
use sightline_aggregator::store::Store;
use sightline_aggregator::{SystemClock, service};
use sightline_base::logging::{self, Stamps};
use sightline_base::signals;
use sightline_contract::Clock;

#[derive(Parser)]
#[command(name = "aggregator", version, about = "sightline aggregator: sightings from every camera into trajectories")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the aggregator.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file: syntax, keys, values, the site model.
    CheckConfig { config: PathBuf },
    /// Print the broker access rules of the config's logins, for mosquitto or EMQX.
    BrokerAcl {
        #[arg(long)]
        config: PathBuf,
        /// mosquitto (`acl_file`) or emqx (`acl.conf`).
        #[arg(long)]
        format: sightline_aggregator::broker::acl::AclFormat,
    },
    /// API tokens (stored hashed; a token is shown once, when it is created).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The tree of sites the store holds.
    Sites {
        #[command(subcommand)]
        command: SitesCommand,
    },
}

#[derive(Subcommand)]
enum SitesCommand {
    /// Make the config's tree of sites the store's (after changing the tree of a database that
    /// several aggregators share; they refuse to start with another tree than the store's).
    Apply {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (once).
    Create {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        name: String,
        /// operator < integrator < admin.
        #[arg(long)]
        role: Role,
        /// Comma-separated site ids: the token sees these sites and every site below them.
        /// Default: every site.
        #[arg(long, value_delimiter = ',')]
        sites: Option<Vec<String>>,
    },
    /// Revoke a token by name.
    Revoke {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// List tokens (names, roles, dates; never the tokens).
    List {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    logging::init("info,rumqttd=warn,ort=warn", Stamps::UnlessJournald);
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(async move {
                // SIGTERM or Ctrl-C stops the aggregator (it has nothing to reload: SIGHUP ends it)
                let shutdown = signals::shutdown_watch(None);
                service::run(cfg, Arc::new(SystemClock), shutdown).await
            })?;
        }
        Command::CheckConfig { config } => {
            let cfg = Config::load(&config)?;
            let sites = cfg.sites()?;
            let ids: Vec<&str> = sites.iter().map(|s| s.id()).collect();
            println!(
                "{}: OK ({} site(s): {}; {} camera(s), {} link(s), store {})",
                config.display(),
                sites.len(),
                ids.join(", "),
                sites.iter().map(|s| s.model.cameras().len()).sum::<usize>(),
                sites.iter().map(|s| s.model.links().len()).sum::<usize>(),
                cfg.store.location()
            );
        }
        Command::BrokerAcl { config, format } => {
            let cfg = Config::load(&config)?;
            let rules = sightline_aggregator::broker::acl::Policy::new(&cfg.identities())
                .and_then(|policy| policy.render(format))
                .with_context(|| format!("config {}", config.display()))?;
            print!("{rules}");
        }
        Command::Token { command } => tokens(command)?,
        Command::Sites { command: SitesCommand::Apply { config } } => {
            let cfg = Config::load(&config)?;
            let sites = cfg.sites()?;
            let store =
                cfg.store.location().open().with_context(|| format!("opening the store of {}", config.display()))?;
            store.claim_sites(&sites.rows(), true)?;
            println!("the store of {} now holds the tree of its {} site(s)", config.display(), sites.len());
        }
    }
    Ok(())
}

fn tokens(command: TokenCommand) -> anyhow::Result<()> {
    let open = |cfg: &Config, config: &PathBuf| -> anyhow::Result<std::sync::Arc<dyn Store>> {
        cfg.store.location().open().with_context(|| format!("opening the store of {}", config.display()))
    };
    match command {
        TokenCommand::Create { config, name, role, sites } => {
            let cfg = Config::load(&config)?;
            if let Some(sites) = &sites {
                let tree = cfg.sites()?;
                anyhow::ensure!(!sites.is_empty(), "--sites: name at least one site (or leave it out: every site)");
                if let Some(unknown) = sites.iter().find(|s| tree.get(s).is_none()) {
                    let known: Vec<&str> = tree.iter().map(|s| s.id()).collect();
                    anyhow::bail!("--sites: {unknown:?} is not a site of {} ({})", config.display(), known.join(", "));
                }
            }
            let store = open(&cfg, &config)?;
            let token = new_token();
            store.create_token(&name, role, sites.as_deref(), &token_hash(&token), SystemClock.now())?;
            let scope = sites.map_or("every site".to_owned(), |s| format!("sites {}", s.join(", ")));
            eprintln!("token {name:?} ({}, {scope}) created; it is shown only this once:", role.as_str());
            println!("{token}");
        }
        TokenCommand::Revoke { config, name } => {
            let store = open(&Config::load(&config)?, &config)?;
            anyhow::ensure!(store.revoke_token(&name, SystemClock.now())?, "no active token named {name:?}");
            println!("token {name:?} revoked");
        }
        TokenCommand::List { config } => {
            let when =
                |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
            for t in open(&Config::load(&config)?, &config)?.list_tokens()? {
                let state = t.revoked_at.map(|r| format!("revoked {}", when(r))).unwrap_or("active".into());
                let sites = t.sites.map_or("every site".to_owned(), |s| s.join(","));
                println!("{}\t{}\t{sites}\tcreated {}\t{state}", t.name, t.role.as_str(), when(t.created_at));
            }
        }
    }
    Ok(())
}
