//! `catwar-server`: runs the CatWar topology (`up`), kills one of its services (`kill`),
//! serves one service in this process (`serve`, what `up` runs for each child), and
//! writes the files that run it in containers (`containers`) or on Kubernetes
//! (`kubernetes`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use catwar_server::compose::kubernetes;
use catwar_server::compose::serve::{self, Readiness};
use catwar_server::compose::supervisor::{self, UpOptions};
use catwar_server::compose::topology::{Plan, Topology};
use catwar_server::config::{Argon2Preset, ConfigError, Knobs, Settings};
use catwar_server::domain::{db, users as user_db};

/// Exit code for a bad command line, as in sysexits.h.
const EXIT_USAGE: u8 = 64;
/// Where an observer listens when neither `--listen` nor the environment says: a port
/// of its own on loopback, next to the play server that started it.
const OBSERVER_LISTEN_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

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
    /// Write the Kubernetes manifests of the topology, or ready its data folder in the
    /// cluster (docs/scale-out.md).
    Kubernetes {
        #[command(subcommand)]
        command: KubernetesCmd,
    },
    /// SIGKILL the process of one service of a running topology.
    Kill {
        /// Service name as in topology.json: storage, balancer, balancer-observer,
        /// file-node-0…, profile, lobby, play-0…, router; or active-balancer, whichever of
        /// the two balancers is active now (as in scenarios' fault schedules).
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
        play: SocketAddr,
        /// The match id.
        #[arg(long = "match", value_name = "M")]
        match_id: u64,
        /// The data folder of the topology.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Where watchers connect; port 0 picks one, printed as `listening ADDR`
        /// [default: $CATWAR_OBSERVER_LISTEN, else 127.0.0.1:0].
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Watchers' tokens unused this long are refused (`refresh_required`).
        #[arg(long, value_name = "S", default_value_t = catwar_server::config::TOKEN_IDLE_S_DEFAULT)]
        token_idle_s: u64,
        /// The lobby to tell when a watcher's session is revoked.
        #[arg(long, value_name = "ADDR")]
        lobby: Option<SocketAddr>,
    },
    /// Run one service of a plan in this process (started by `up`).
    #[command(hide = true)]
    Serve {
        /// Service name.
        service: String,
        /// The plan written by `up`, or the Kubernetes manifests' ConfigMap.
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        /// Listen here instead of at the plan's address, which stays where the others
        /// reach this service (a Kubernetes Service's address, in front of the pod).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// The admin listener (`/metrics`, `/healthz`) here instead of at the plan's
        /// metrics address [default with --listen: its host, a free port].
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<SocketAddr>,
    },
    /// Print a Prometheus scrape configuration for a topology.json: one job, `catwar`,
    /// with every service's admin listener as a target labelled `service=NAME`.
    PrometheusConfig {
        /// The topology file (DIR/topology.json of a running `up`).
        #[arg(long, value_name = "FILE")]
        topology: PathBuf,
        /// How often Prometheus scrapes each service.
        #[arg(long, value_name = "S", default_value_t = catwar_server::compose::prometheus::SCRAPE_INTERVAL_S_DEFAULT)]
        scrape_interval_s: u64,
    },
}

#[derive(Subcommand)]
enum KubernetesCmd {
    /// Write data.yaml and services.yaml: the data volume, the plan, the Job that readies
    /// the folder, and a Deployment and a Service at a fixed ClusterIP per service.
    Manifests {
        /// The folder to write them in (deploy/kubernetes holds the default ones).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// First port of the port table, in the pods and at the Services.
        #[arg(long, value_name = "N", default_value_t = catwar_server::config::BASE_PORT_DEFAULT)]
        base_port: u16,
        /// The first Service address; the others follow it. It must lie in the
        /// cluster's service range (kubeadm, kind and minikube: 10.96.0.0/12).
        #[arg(long, value_name = "IP", default_value_t = kubernetes::SERVICE_IP_FIRST_DEFAULT)]
        service_ip_first: Ipv4Addr,
        /// TOML file with any of the knobs below, spelled like the flags.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        // Boxed: the knobs would make every value of this enum as large as they are.
        #[command(flatten)]
        knobs: Box<Knobs>,
    },
    /// Ready the data folder a plan names (resources, state, the user DB) and write its
    /// topology.json there (the first step in the cluster, run by a Job).
    Prepare {
        /// The plan, as the manifests' ConfigMap holds it.
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
    },
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Create user1…userN with the documented test passwords `pw-<id>`; existing users
    /// keep their hashes, so only the missing ones cost hashing time.
    Seed {
        /// The data folder.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// How many users.
        #[arg(long, value_name = "N")]
        count: u64,
        /// Password hash cost; `fast` is for large simulated populations. Default: the
        /// preset the DB recorded at its last seed or add, owasp for a new DB.
        #[arg(long, value_enum)]
        argon2: Option<Argon2Preset>,
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
        Cmd::Kubernetes { command } => kubernetes_files(command),
        Cmd::Kill { service, data } => kill(&service, &data),
        Cmd::Users { command } => users(command),
        Cmd::Observer {
            play,
            match_id,
            data,
            listen,
            token_idle_s,
            lobby,
        } => observer_listen(listen).and_then(|listen| {
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
        }),
        Cmd::Serve {
            service,
            plan,
            listen,
            metrics_listen,
        } => serve(&service, &plan, listen, metrics_listen),
        Cmd::PrometheusConfig {
            topology,
            scrape_interval_s,
        } => prometheus_config(&topology, scrape_interval_s),
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

/// The settings from the flags, over the config file, over the defaults; and a base port
/// they leave room for, or a bad command line naming `--base-port`.
fn settings(knobs: Knobs, config: Option<&Path>, base_port: u16) -> anyhow::Result<Settings> {
    let file_knobs = match config {
        Some(path) => Knobs::from_file(path)?,
        None => Knobs::default(),
    };
    let settings = knobs.or(file_knobs).resolve()?;
    Plan::check_base_port(base_port, &settings).map_err(|e| ConfigError {
        field: "--base-port".into(),
        problem: e.to_string(),
    })?;
    Ok(settings)
}

fn up(data: PathBuf, base_port: u16, config: Option<PathBuf>, knobs: Knobs) -> anyhow::Result<()> {
    init_logging("up");
    let settings = settings(knobs, config.as_deref(), base_port)?;
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
    if users == 0 {
        // Every login would fail with login_failed; say why before the first one does.
        tracing::warn!(
            data = %data.display(),
            "the user DB has no users: every login will fail; create some with \
             `catwar-server users seed --data {} --count N`",
            data.display()
        );
    }
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
    let mut settings = settings(knobs, config.as_deref(), base_port)?;
    // A process observer inside a play server's container would listen where no client
    // reaches it; observers are containers on the project network.
    settings.observer_backend = catwar_server::config::ObserverBackend::Docker;
    std::fs::create_dir_all(&data).with_context(|| format!("--data {}", data.display()))?;
    let data =
        std::fs::canonicalize(&data).with_context(|| format!("--data {}", data.display()))?;
    prepare_data(&data)?;
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

/// Readies a data folder for services that `up` does not start: its state folder, the
/// default resources and the user DB, as `up` makes them before its first child.
fn prepare_data(data: &Path) -> anyhow::Result<()> {
    let state = data.join("state");
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    catwar_server::domain::resources::ensure_default(&data.join("resources"))?;
    db::open(&data.join(db::DB_FILE))?;
    Ok(())
}

fn kubernetes_files(command: KubernetesCmd) -> anyhow::Result<()> {
    match command {
        KubernetesCmd::Manifests {
            out,
            base_port,
            service_ip_first,
            config,
            knobs,
        } => {
            let settings = settings(*knobs, config.as_deref(), base_port)?;
            let plan = kubernetes::plan(settings, base_port, service_ip_first)?;
            std::fs::create_dir_all(&out).with_context(|| format!("--out {}", out.display()))?;
            for (name, text) in kubernetes::manifests(&plan) {
                let path = out.join(name);
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("{}", path.display());
            }
        }
        KubernetesCmd::Prepare { plan } => {
            let plan = Plan::read(&plan)?;
            prepare_data(&plan.data_dir)?;
            Topology::of_plan(&plan).write(&plan.data_dir)?;
            println!("prepared {}", plan.data_dir.display());
        }
    }
    Ok(())
}

/// Where an observer listens: `--listen`, else `$CATWAR_OBSERVER_LISTEN` (a play pod's
/// own address), else loopback.
fn observer_listen(flag: Option<SocketAddr>) -> anyhow::Result<SocketAddr> {
    if let Some(listen) = flag {
        return Ok(listen);
    }
    let name = kubernetes::OBSERVER_LISTEN_ENV;
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name}={value:?} is not an address")),
        Err(std::env::VarError::NotPresent) => Ok(OBSERVER_LISTEN_DEFAULT),
        Err(err) => Err(err).with_context(|| format!("reading {name}")),
    }
}

fn users(command: UsersCmd) -> anyhow::Result<()> {
    match command {
        UsersCmd::Seed {
            data,
            count,
            argon2,
        } => {
            let started = std::time::Instant::now();
            let seeded = user_db::seed(&data, count, argon2)?;
            println!(
                "seeded {} new users (user1..user{count}, password pw-<id>, argon2 {}) in {:.1} s",
                seeded.added,
                user_db::preset_name(seeded.preset),
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

/// The name scenarios use for whichever balancer is active; `kill` resolves it too.
const ACTIVE_BALANCER: &str = "active-balancer";
/// How long each balancer has to say its role; a live one answers in microseconds.
const STATUS_TIMEOUT_MS: u64 = 500;

fn kill(service: &str, data: &Path) -> anyhow::Result<()> {
    let service = if service == ACTIVE_BALANCER {
        active_balancer(data)?
    } else {
        service.to_string()
    };
    let pid = supervisor::kill(data, &service)?;
    println!("killed {service} (pid {pid}) with SIGKILL");
    Ok(())
}

/// Asks both balancers for their role (`GET /v1/status`) and names the active one.
fn active_balancer(data: &Path) -> anyhow::Result<String> {
    #[derive(serde::Deserialize)]
    struct Status {
        role: String,
    }
    let topology = Topology::read(data)?;
    for name in ["balancer", "balancer-observer"] {
        let addr = topology.service(name)?.addr;
        let timeout = Duration::from_millis(STATUS_TIMEOUT_MS);
        let Ok(answer) = catwar_server::runtime::client::get(addr, "/v1/status", timeout) else {
            continue;
        };
        if answer.status == 200 && answer.json::<Status>().is_ok_and(|s| s.role == "active") {
            return Ok(name.to_string());
        }
    }
    anyhow::bail!("{ACTIVE_BALANCER}: neither balancer nor balancer-observer says it is active")
}

/// Runs one service for `up`, telling it on stdout whether the service and its admin
/// listener listen (see [`Readiness`]); at `listen` when given, else at its plan address,
/// and the admin listener at `metrics_listen`, else on `listen`'s host at a free port,
/// else at its plan address.
fn serve(
    name: &str,
    plan_path: &Path,
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    init_logging(name);
    let started = (|| {
        let plan = Plan::read(plan_path)?;
        let addr = match listen {
            Some(listen) => listen,
            None => plan.addr_of(name)?,
        };
        let metrics = match (metrics_listen, listen) {
            (Some(metrics), _) => metrics,
            (None, Some(listen)) => SocketAddr::new(listen.ip(), 0),
            (None, None) => plan.metrics_of(name)?,
        };
        let listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        let metrics_listener = std::net::TcpListener::bind(metrics)
            .with_context(|| format!("binding the metrics listener {metrics}"))?;
        let metrics = metrics_listener.local_addr()?;
        let stop = stop_on_signals()?;
        let running = serve::start(&plan, name, listener, metrics_listener)?;
        anyhow::Ok((addr, metrics, stop, running))
    })();
    let (addr, metrics, stop, running) = match started {
        Ok(started) => started,
        Err(err) => {
            // `up` reads the reason; if it is gone, the error below still reaches stderr.
            let _ = Readiness::Failed(message(&err)).report();
            return Err(err.context(format!("service {name}")));
        }
    };
    Readiness::Ready { addr, metrics }
        .report()
        .with_context(|| format!("service {name}: telling `up` it listens"))?;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    running
        .shutdown()
        .with_context(|| format!("service {name}: stopping"))
}

fn prometheus_config(topology: &Path, scrape_interval_s: u64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(topology)
        .with_context(|| format!("reading {}", topology.display()))?;
    let topology: Topology =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", topology.display()))?;
    print!(
        "{}",
        catwar_server::compose::prometheus::scrape_config(&topology, scrape_interval_s)
    );
    Ok(())
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
