//! `catwar-server`: runs the CatWar topology (`up`), kills one of its services (`kill`),
//! and serves one service in this process (`serve`, what `up` runs for each child).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use catwar_server::compose::serve::{self, Readiness};
use catwar_server::compose::supervisor::{self, UpOptions};
use catwar_server::compose::topology::Plan;
use catwar_server::config::{Argon2Preset, ConfigError, Knobs};
use catwar_server::domain::{db, users as user_db};

/// Exit code for a bad command line, as in sysexits.h.
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "catwar-server",
    version,
    about = "The CatWar reference server: every service of the scenario, one process each"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the whole topology, supervised, and write DIR/topology.json once it listens.
    ///
    /// One `up` owns a data folder at a time (DIR/up.lock holds its pid).
    Up {
        /// Data folder: resources, state, user DB, topology.json.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// First port of the port table (storage; the router is this + 400); 0 picks free
        /// ports.
        #[arg(long, value_name = "N", default_value_t = catwar_server::config::BASE_PORT_DEFAULT)]
        base_port: u16,
        /// TOML file with any of the knobs below, spelled like the flags.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        knobs: Knobs,
    },
    /// Prepare the containerized topology: every service in its own container on the
    /// project network (SPEC §6). Writes DIR/plan.json, DIR/topology.json (the ports
    /// published on 127.0.0.1) and DIR/docker-compose.yml; `ci/compose.sh` runs it.
    Containers {
        /// Data folder, bind-mounted at the same path in every container.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// First port of the port table, inside the containers and on the host.
        #[arg(long, value_name = "N", default_value_t = catwar_server::config::BASE_PORT_DEFAULT)]
        base_port: u16,
        /// Also write the compose file here.
        #[arg(long, value_name = "FILE")]
        compose_file: Option<PathBuf>,
        /// TOML file with any of the knobs below, spelled like the flags.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        knobs: Knobs,
    },
    /// SIGKILL the process of one service of a running topology.
    Kill {
        /// Service name as in topology.json, for example `balancer`.
        service: String,
        /// The data folder given to `up`.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
    /// Manage the users of the user DB (DIR/catwar.db).
    Users {
        #[command(subcommand)]
        command: UsersCmd,
    },
    /// Relay one match's state stream to watchers until it ends (started by play servers).
    Observer {
        /// The play server that owns the match.
        #[arg(long, value_name = "ADDR")]
        play: std::net::SocketAddr,
        /// The match id.
        #[arg(long = "match", value_name = "M")]
        match_id: u64,
        /// The data folder of the topology.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Where watchers connect; port 0 picks one, printed as `listening ADDR`.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Watchers' tokens unused this long are refused (`refresh_required`).
        #[arg(long, value_name = "S", default_value_t = catwar_server::config::TOKEN_IDLE_S_DEFAULT)]
        token_idle_s: u64,
        /// The lobby to tell when a watcher's session is revoked.
        #[arg(long, value_name = "ADDR")]
        lobby: Option<std::net::SocketAddr>,
    },
    /// Run one service of a plan in this process (started by `up`).
    #[command(hide = true)]
    Serve {
        /// Service name.
        service: String,
        /// The plan written by `up`.
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
    },
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Create user1…userN with the documented test passwords `pw-<id>` (skips existing).
    Seed {
        /// The data folder.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// How many users.
        #[arg(long, value_name = "N")]
        count: u64,
        /// Password hash cost; `fast` is for large simulated populations.
        #[arg(long, value_enum, default_value = "owasp")]
        argon2: Argon2Preset,
    },
    /// Create a user, or set its password; the password is read from stdin.
    Add {
        /// The user id.
        id: String,
        /// The data folder.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Password hash cost.
        #[arg(long, value_enum, default_value = "owasp")]
        argon2: Argon2Preset,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Cmd::Up {
            data,
            base_port,
            config,
            knobs,
        } => up(data, base_port, config, knobs),
        Cmd::Containers {
            data,
            base_port,
            compose_file,
            config,
            knobs,
        } => containers(data, base_port, compose_file, config, knobs),
        Cmd::Kill { service, data } => kill(&service, &data),
        Cmd::Users { command } => users(command),
        Cmd::Observer {
            play,
            match_id,
            data,
            listen,
            token_idle_s,
            lobby,
        } => {
            init_logging("observer");
            let args = catwar_server::services::observer::ObserverArgs {
                play,
                match_id,
                data_dir: data,
                listen,
                session: catwar_server::services::observer::SessionArgs {
                    token_idle_s,
                    lobby,
                },
            };
            catwar_server::services::observer::run(&args).map_err(anyhow::Error::from)
        }
        Cmd::Serve { service, plan } => serve(&service, &plan),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("catwar-server: {}", message(&err));
            // A bad knob is a bad command line, whether given by flag or config file.
            if err.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Log timestamps followed by the service name, so the interleaved logs of all children
/// on the supervisor's terminal say who wrote each line.
struct ServiceTime(&'static str);

impl tracing_subscriber::fmt::time::FormatTime for ServiceTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        tracing_subscriber::fmt::time::SystemTime.format_time(w)?;
        write!(w, " {:>17}", self.0)
    }
}

fn init_logging(service: &str) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let name: &'static str = Box::leak(service.to_string().into_boxed_str());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .with_timer(ServiceTime(name))
        .try_init();
}

/// Sets the returned flag on SIGTERM or SIGINT.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    Ok(stop)
}

fn up(data: PathBuf, base_port: u16, config: Option<PathBuf>, knobs: Knobs) -> anyhow::Result<()> {
    init_logging("up");
    let file_knobs = match &config {
        Some(path) => Knobs::from_file(path)?,
        None => Knobs::default(),
    };
    let settings = knobs.or(file_knobs).resolve()?;
    Plan::check_base_port(base_port, &settings).map_err(|e| ConfigError {
        field: "--base-port".into(),
        problem: e.to_string(),
    })?;
    let exe = std::env::current_exe().context("finding this executable to start the services")?;
    let stop = stop_on_signals()?;
    std::fs::create_dir_all(&data).with_context(|| format!("--data {}", data.display()))?;
    // Before anything in the folder is read or written: it may belong to a running `up`.
    let lock = supervisor::lock_data_dir(&data)?;
    let conn = db::open(&data.join(db::DB_FILE))?;
    let users: i64 = conn
        .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
        .context("counting users")?;
    let recorded =
        db::meta(&conn, user_db::ARGON2_META_KEY).context("reading the argon2 preset")?;
    drop(conn);
    tracing::info!(
        data = %data.display(),
        base_port,
        users,
        argon2_hashes = recorded.as_deref().unwrap_or("none yet"),
        "starting the CatWar topology"
    );
    let options = UpOptions {
        data_dir: data,
        base_port,
        settings,
        exe,
    };
    supervisor::up(&options, lock, &stop)?;
    Ok(())
}

fn containers(
    data: PathBuf,
    base_port: u16,
    compose_file: Option<PathBuf>,
    config: Option<PathBuf>,
    knobs: Knobs,
) -> anyhow::Result<()> {
    let file_knobs = match &config {
        Some(path) => Knobs::from_file(path)?,
        None => Knobs::default(),
    };
    let mut settings = knobs.or(file_knobs).resolve()?;
    Plan::check_base_port(base_port, &settings).map_err(|e| ConfigError {
        field: "--base-port".into(),
        problem: e.to_string(),
    })?;
    // A process observer inside a play server's container would listen where no client
    // reaches it; observers are containers on the project network.
    settings.observer_backend = catwar_server::config::ObserverBackend::Docker;
    for dir in [data.clone(), data.join("state")] {
        std::fs::create_dir_all(&dir).with_context(|| format!("--data {}", dir.display()))?;
    }
    let data =
        std::fs::canonicalize(&data).with_context(|| format!("--data {}", data.display()))?;
    catwar_server::domain::resources::ensure_default(&data.join("resources"))?;
    db::open(&data.join(db::DB_FILE))?;
    let plan = catwar_server::compose::containers::plan(data.clone(), settings, base_port)?;
    plan.write(&data.join("plan.json"))?;
    catwar_server::compose::containers::topology(&plan).write(&data)?;
    let yaml = catwar_server::compose::containers::compose_file(&plan);
    for path in std::iter::once(data.join("docker-compose.yml")).chain(compose_file) {
        std::fs::write(&path, &yaml).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", data.join("docker-compose.yml").display());
    Ok(())
}

fn users(command: UsersCmd) -> anyhow::Result<()> {
    match command {
        UsersCmd::Seed {
            data,
            count,
            argon2,
        } => {
            let started = std::time::Instant::now();
            let added = user_db::seed(&data, count, argon2)?;
            println!(
                "seeded {added} new users (user1..user{count}, password pw-<id>, argon2 {}) in {:.1} s",
                user_db::preset_name(argon2),
                started.elapsed().as_secs_f64()
            );
        }
        UsersCmd::Add { id, data, argon2 } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\r', '\n']);
            user_db::add(&data, &id, password, argon2)?;
            println!("user {id} saved (argon2 {})", user_db::preset_name(argon2));
        }
    }
    Ok(())
}

fn kill(service: &str, data: &std::path::Path) -> anyhow::Result<()> {
    let pid = supervisor::kill(data, service)?;
    println!("killed {service} (pid {pid}) with SIGKILL");
    Ok(())
}

/// Runs one service for `up`, telling it on stdout whether the service listens (see
/// [`Readiness`]).
fn serve(name: &str, plan_path: &std::path::Path) -> anyhow::Result<()> {
    init_logging(name);
    let started = (|| {
        let plan = Plan::read(plan_path)?;
        let addr = plan.addr_of(name)?;
        let listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        let stop = stop_on_signals()?;
        let running = serve::start(&plan, name, listener)?;
        anyhow::Ok((addr, stop, running))
    })();
    let (addr, stop, running) = match started {
        Ok(started) => started,
        Err(err) => {
            // `up` reads the reason; if it is gone, the error below still reaches stderr.
            let _ = Readiness::Failed(message(&err)).report();
            return Err(err.context(format!("service {name}")));
        }
    };
    Readiness::Ready(addr)
        .report()
        .with_context(|| format!("service {name}: telling `up` it listens"))?;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    running
        .shutdown()
        .with_context(|| format!("service {name}: stopping"))
}

/// The error and its causes on one line, each cause once: typed errors name their source
/// in their own text already, so a cause that the line so far ends with is skipped.
fn message(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
