//! Scenario parsing and validation: defaults, the shipped scenarios, and errors that
//! name their field.

use super::*;

const SMOKE: &str = include_str!("../../../scenarios/smoke.toml");
const LOGIN_STORM: &str = include_str!("../../../scenarios/login-storm.toml");

fn invalid_field(text: &str) -> String {
    match Scenario::parse(text) {
        Err(ScenarioError::Invalid { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn smoke_scenario_parses() {
    let scenario = Scenario::parse(SMOKE).unwrap();
    assert_eq!(scenario.scenario.name, "smoke");
    assert_eq!(scenario.scenario.seed, 42);
    // The whole run, with the server's start and the results check, stays within a minute.
    assert!(scenario.scenario.duration_s <= 40);
    assert_eq!(scenario.population.clients, 200);
    assert_eq!(scenario.script.stale_version, 0.3);
    assert!(scenario.script.idle > 0.0 && scenario.script.start == 1.0);
    assert!(scenario.script.observe > 0.0);
    assert_eq!(scenario.server.token_idle_s, 3);
    let match_s = scenario.server.match_duration().as_secs_f64();
    assert!(
        match_s <= 10.0,
        "a smoke match lasts seconds, not {match_s} s"
    );
    assert_eq!(scenario.faults.len(), 1);
    assert!(scenario.faults[0].stops_balancer());
    let metrics: Vec<&str> = scenario
        .thresholds
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    for metric in [
        "login.p99",
        "lobby.me.p99",
        "play.input_ack.p99",
        "tokens.collisions",
        "failover.gap",
        "invariants.violations",
    ] {
        assert!(
            metrics.contains(&metric),
            "{metric} missing from {metrics:?}"
        );
    }
}

#[test]
fn login_storm_scenario_parses() {
    let scenario = Scenario::parse(LOGIN_STORM).unwrap();
    assert_eq!(scenario.population.clients, 2000);
    assert!(scenario.load.start_window_ms() < scenario.load.think_time_ms);
    assert_eq!(scenario.script.stale_version, 0.0);
    assert!(scenario.faults.is_empty());
}

#[test]
fn defaults_fill_missing_sections() {
    let scenario = Scenario::parse("[scenario]\nname = \"tiny\"\n").unwrap();
    assert_eq!(scenario.scenario.seed, 1);
    assert_eq!(scenario.scenario.duration_s, 60);
    assert_eq!(scenario.population.clients, 100);
    assert_eq!(scenario.population.stale_version, "1.0.0");
    assert_eq!(scenario.load.model, LoadModel::Closed);
    assert_eq!(scenario.load.think_time_ms, 1000);
    assert!(scenario.faults.is_empty() && scenario.thresholds.is_empty());
    assert_eq!(scenario.population.user_count(), 100);
    assert_eq!(scenario.load.start_window_ms(), 1000);
    let script = &scenario.script;
    assert_eq!(
        (
            script.wrong_password,
            script.ranking,
            script.ip_change,
            script.idle,
            script.start
        ),
        (0.02, 0.5, 0.02, 0.0, 1.0)
    );
    assert_eq!(scenario.server.argon2, Argon2Preset::Fast);
    assert_eq!(scenario.server.token_idle_s, 600);
    assert_eq!((script.input_hz, script.observe), (10, 0.3));
    let server = &scenario.server;
    assert_eq!(
        (server.players_per_match, server.match_fill_timeout_s),
        (4, 5)
    );
    assert_eq!((server.match_ticks, server.tick_hz), (600, 20));
    assert_eq!(server.observer_backend, ObserverBackend::Process);
    // The default run holds a default match: 5 s of fill and 30 s of ticks.
    assert_eq!(server.match_duration(), std::time::Duration::from_secs(30));
}

#[test]
fn play_fields_parse() {
    let text = "[scenario]\nname = \"x\"\nduration_s = 20\n\
                [script]\ninput_hz = 30\nobserve = 1.0\n\
                [server]\nplayers_per_match = 2\nmatch_fill_timeout_s = 1\nmatch_ticks = 100\n\
                tick_hz = 50\nobserver_backend = \"docker\"\n";
    let scenario = Scenario::parse(text).unwrap();
    assert_eq!(
        (scenario.script.input_hz, scenario.script.observe),
        (30, 1.0)
    );
    let server = &scenario.server;
    assert_eq!(
        (server.players_per_match, server.match_fill_timeout_s),
        (2, 1)
    );
    assert_eq!(server.tick_period(), std::time::Duration::from_millis(20));
    assert_eq!(server.match_duration(), std::time::Duration::from_secs(2));
    assert_eq!(server.observer_backend.name(), "docker");
}

#[test]
fn play_errors_name_their_field() {
    let base = "[scenario]\nname = \"x\"\nduration_s = 60\n";
    for (section, setting, field) in [
        (
            "server",
            "players_per_match = 0",
            "server.players_per_match",
        ),
        (
            "server",
            "players_per_match = 65",
            "server.players_per_match",
        ),
        (
            "server",
            "match_fill_timeout_s = 3601",
            "server.match_fill_timeout_s",
        ),
        ("server", "match_ticks = 0", "server.match_ticks"),
        ("server", "tick_hz = 0", "server.tick_hz"),
        ("server", "tick_hz = 1001", "server.tick_hz"),
        ("script", "input_hz = 1001", "script.input_hz"),
        ("script", "observe = 1.5", "script.observe"),
    ] {
        let text = format!("{base}[{section}]\n{setting}\n");
        assert_eq!(invalid_field(&text), field, "{setting}");
    }
    match Scenario::parse(&format!("{base}[server]\nobserver_backend = \"vm\"\n")) {
        Err(ScenarioError::Syntax(message)) => {
            assert!(message.contains("observer_backend"), "{message}")
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn a_match_must_fit_in_the_run_when_clients_start_one() {
    // 1 s of fill, 100 ticks at 20 Hz (5 s) and 5 s around them: 11 s at least.
    let text = |duration_s: u64, start: f64| {
        format!(
            "[scenario]\nname = \"x\"\nduration_s = {duration_s}\n[script]\nstart = {start}\n\
             [server]\nmatch_fill_timeout_s = 1\nmatch_ticks = 100\n"
        )
    };
    assert_eq!(invalid_field(&text(10, 0.5)), "server.match_ticks");
    assert!(Scenario::parse(&text(11, 0.5)).is_ok());
    assert!(
        Scenario::parse(&text(10, 0.0)).is_ok(),
        "no match, no constraint"
    );
    // The defaults, a 30 s match after a 5 s fill, need 40 s.
    let short = "[scenario]\nname = \"x\"\nduration_s = 39\n";
    match Scenario::parse(short) {
        Err(ScenarioError::Invalid { field, message }) => {
            assert_eq!(field, "server.match_ticks");
            assert!(message.contains(">= 40"), "{message}");
        }
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn login_and_lobby_fields_parse() {
    let text = "[scenario]\nname = \"x\"\nduration_s = 20\n\
                [population]\nclients = 50\nusers = 7\n\
                [script]\nwrong_password = 0.5\nranking = 0\nip_change = 1\nidle = 0.1\nstart = 0.0\n\
                [server]\nargon2 = \"owasp\"\ntoken_idle_s = 3\n";
    let scenario = Scenario::parse(text).unwrap();
    assert_eq!(scenario.population.user_count(), 7);
    assert_eq!(scenario.script.wrong_password, 0.5);
    assert_eq!(scenario.script.ip_change, 1.0);
    assert_eq!(scenario.script.idle, 0.1);
    assert_eq!(scenario.script.start, 0.0);
    assert_eq!(scenario.server.argon2, Argon2Preset::Owasp);
    assert_eq!(scenario.server.argon2.name(), "owasp");
    assert_eq!(scenario.server.token_idle_s, 3);
}

#[test]
fn login_and_lobby_errors_name_their_field() {
    let base = "[scenario]\nname = \"x\"\nduration_s = 20\n";
    for field in ["wrong_password", "ranking", "ip_change", "idle", "start"] {
        assert_eq!(
            invalid_field(&format!("{base}[script]\n{field} = -0.1\n")),
            format!("script.{field}")
        );
    }
    assert_eq!(
        invalid_field(&format!("{base}[population]\nusers = 0\n")),
        "population.users"
    );
    assert_eq!(
        invalid_field(&format!("{base}[load]\nstart_spread_ms = 3600001\n")),
        "load.start_spread_ms"
    );
    assert_eq!(
        invalid_field(&format!("{base}[server]\ntoken_idle_s = 0\n")),
        "server.token_idle_s"
    );
    assert_eq!(
        invalid_field(&format!(
            "{base}[population]\nclients = {}\n",
            CLIENTS_MAX + 1
        )),
        "population.clients"
    );
    // The idle branch sleeps token_idle_s + 1 s; 20 s cannot hold a 15 s timeout.
    let idle = |timeout: u64| {
        format!("{base}[script]\nidle = 0.5\nstart = 0\n[server]\ntoken_idle_s = {timeout}\n")
    };
    assert_eq!(invalid_field(&idle(15)), "script.idle");
    assert!(Scenario::parse(&idle(14)).is_ok());
    // Without the idle branch any timeout goes.
    let no_match = "[script]\nstart = 0\n";
    assert!(Scenario::parse(&format!("{base}{no_match}[server]\ntoken_idle_s = 600\n")).is_ok());
    for (text, named) in [
        (format!("{base}[server]\nargon2 = \"slow\"\n"), "argon2"),
        (format!("{base}[server]\nflags = [\"--x\"]\n"), "flags"),
    ] {
        match Scenario::parse(&text) {
            Err(ScenarioError::Syntax(message)) => {
                assert!(message.contains(named), "{message}")
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }
}

#[test]
fn unknown_field_is_named() {
    let text = "[scenario]\nname = \"x\"\n[population]\nclientz = 5\n";
    match Scenario::parse(text) {
        Err(ScenarioError::Syntax(message)) => {
            assert!(message.contains("clientz"), "{message}")
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn bad_values_name_their_field() {
    let base = "[scenario]\nname = \"x\"\nduration_s = 10\n";
    assert_eq!(
        invalid_field(&format!("{base}[population]\nclients = 0\n")),
        "population.clients"
    );
    assert_eq!(
        invalid_field(&format!(
            "{base}[script]\nstart = 0\n[load]\nmodel = \"open\"\n"
        )),
        "load.stages"
    );
    assert_eq!(
        invalid_field(&format!("{base}[script]\nstale_version = 1.5\n")),
        "script.stale_version"
    );
    assert_eq!(
        invalid_field("[scenario]\nname = \"a b\"\n"),
        "scenario.name"
    );
    assert_eq!(
        invalid_field("[scenario]\nname = \"x\"\nduration_s = 0\n"),
        "scenario.duration_s"
    );
    assert_eq!(
        invalid_field(&format!("{base}[population]\nstale_version = \"../etc\"\n")),
        "population.stale_version"
    );
    let fault = |at: &str, service: &str| {
        format!(
            "{base}[script]\nstart = 0\n\
             [[faults]]\nat_s = {at}\naction = \"kill\"\nservice = \"{service}\"\n"
        )
    };
    assert_eq!(invalid_field(&fault("10.0", "balancer")), "faults[0].at_s");
    assert_eq!(
        invalid_field(&fault("1.0", "balancer-2")),
        "faults[0].service"
    );
    assert!(Scenario::parse(&fault("1.0", "file-node-2")).is_ok());
    let at_end = |service: &str| fault("1.0", service) + "when = \"match_end\"\n";
    let scenario = Scenario::parse(&at_end("play-1")).unwrap();
    assert_eq!(scenario.faults[0].when, FaultMoment::MatchEnd);
    assert_eq!(invalid_field(&at_end("lobby")), "faults[0].when");
    let observer = Scenario::parse(&fault("1.0", "observer")).unwrap();
    assert!(observer.faults[0].stops_observer() && !observer.faults[0].stops_balancer());
    assert_eq!(
        invalid_field(&fault("1.0", "observer-1")),
        "faults[0].service"
    );
    let restart = fault("1.0", "lobby").replace("\"kill\"", "\"restart\"");
    let scenario = Scenario::parse(&restart).unwrap();
    assert_eq!(scenario.faults[0].action, FaultAction::Restart);
    assert!(!scenario.faults[0].stops_balancer());
    let reboot = fault("1.0", "lobby").replace("\"kill\"", "\"reboot\"");
    assert!(matches!(
        Scenario::parse(&reboot),
        Err(ScenarioError::Syntax(message)) if message.contains("restart")
    ));
}

#[test]
fn a_balancer_restart_starts_a_failover_as_a_kill_does() {
    let text = "[scenario]\nname = \"x\"\n[script]\nstart = 0\n[[faults]]\nat_s = 1.0\n\
                action = \"restart\"\nservice = \"active-balancer\"\n\
                [thresholds]\n\"failover.gap\" = \"< 1s\"\n";
    let scenario = Scenario::parse(text).unwrap();
    assert!(scenario.faults[0].stops_balancer());
}

#[test]
fn unknown_threshold_metric_is_an_error() {
    let text = "[scenario]\nname = \"x\"\n[thresholds]\n\"update.check.p42\" = \"< 1ms\"\n";
    assert_eq!(invalid_field(text), "thresholds.\"update.check.p42\"");
}

#[test]
fn failover_threshold_needs_a_balancer_kill() {
    let text = "[scenario]\nname = \"x\"\n[thresholds]\n\"failover.gap\" = \"< 1s\"\n";
    assert_eq!(invalid_field(text), "thresholds.\"failover.gap\"");
}

#[test]
fn mistyped_value_is_a_syntax_error_naming_the_field() {
    let text = "[scenario]\nname = \"x\"\nseed = \"forty-two\"\n";
    match Scenario::parse(text) {
        Err(ScenarioError::Syntax(message)) => assert!(message.contains("seed"), "{message}"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

const CAPACITY: &str = include_str!("../../../scenarios/capacity.toml");
const SOAK: &str = include_str!("../../../scenarios/soak.toml");
const GENERATOR: &str = include_str!("../../../scenarios/generator.toml");
const CHAOS: &str = include_str!("../../../scenarios/chaos.toml");

#[test]
fn the_chaos_scenario_kills_every_kind_of_process_within_a_minute() {
    let chaos = Scenario::parse(CHAOS).unwrap();
    assert!(chaos.scenario.duration_s <= 60);
    let killed: Vec<&str> = chaos.faults.iter().map(|f| f.service.as_str()).collect();
    for service in [
        "storage",
        "balancer",
        "balancer-observer",
        "file-node-1",
        "profile",
        "lobby",
        "play-0",
        "play-1",
        "router",
        "observer",
    ] {
        assert!(killed.contains(&service), "{service} is never killed");
    }
    assert!(chaos.faults.iter().all(|f| f.action == FaultAction::Kill));
    assert!(chaos.faults.iter().any(|f| f.when == FaultMoment::MatchEnd));
}

#[test]
fn open_model_scenarios_parse() {
    let capacity = Scenario::parse(CAPACITY).unwrap();
    assert_eq!(capacity.load.model, LoadModel::Open);
    let knee = capacity.knee.as_ref().expect("capacity looks for the knee");
    assert!(knee.stop && knee.conditions.len() >= 2);
    assert!(capacity
        .thresholds
        .iter()
        .any(|t| t.name == "knee.arrival_rate"));

    let soak = Scenario::parse(SOAK).unwrap();
    assert_eq!(soak.load.model, LoadModel::Open);
    assert_eq!(soak.load.arrival, Arrival::Poisson);
    assert!(soak.scenario.duration_s >= 1800 && soak.faults.len() >= 5);
    assert!(soak.knee.is_none());

    let generator = Scenario::parse(GENERATOR).unwrap();
    assert!(generator.script.me_requests > 1_000);
    assert_eq!(generator.script.start, 0.0);
}

#[test]
fn open_model_fields_are_checked() {
    let base = "[scenario]\nname = \"x\"\nduration_s = 10\n[script]\nstart = 0\n";
    let open = |load: &str| format!("{base}[load]\nmodel = \"open\"\n{load}");
    assert_eq!(
        invalid_field(&open("stages = [{ duration_s = 20, target_per_s = 5 }]\n")),
        "load.stages"
    );
    assert_eq!(
        invalid_field(&open("stages = [{ duration_s = 5, target_per_s = -1 }]\n")),
        "load.stages[0].target_per_s"
    );
    assert_eq!(
        invalid_field(&open("stages = [{ duration_s = 0, target_per_s = 1 }]\n")),
        "load.stages[0].duration_s"
    );
    assert_eq!(
        invalid_field(&open(
            "start_rate_per_s = 1e9\nstages = [{ duration_s = 5, target_per_s = 1 }]\n"
        )),
        "load.start_rate_per_s"
    );
    // Stages in a closed model would be ignored; that is an error, not a surprise.
    assert_eq!(
        invalid_field(&format!(
            "{base}[load]\nstages = [{{ duration_s = 5, target_per_s = 1 }}]\n"
        )),
        "load.stages"
    );
    let ok = open("arrival = \"constant\"\nstages = [{ duration_s = 5, target_per_s = 1 }]\n");
    assert_eq!(
        Scenario::parse(&ok).unwrap().load.arrival,
        Arrival::Constant
    );
}

#[test]
fn knee_and_workers_are_checked() {
    let base = "[scenario]\nname = \"x\"\nduration_s = 10\n[script]\nstart = 0\n";
    let open = "[load]\nmodel = \"open\"\nstages = [{ duration_s = 5, target_per_s = 1 }]\n";
    assert_eq!(
        invalid_field(&format!(
            "{base}[knee]\nconditions = {{ \"lobby.me.p99\" = \"< 5ms\" }}\n"
        )),
        "knee"
    );
    assert_eq!(
        invalid_field(&format!(
            "{base}{open}[knee]\nconditions = {{ \"lobby.me.p50\" = \"< 5ms\" }}\n"
        )),
        "knee.conditions.\"lobby.me.p50\""
    );
    assert_eq!(
        invalid_field(&format!("{base}{open}[knee]\nconditions = {{}}\n")),
        "knee.conditions"
    );
    let knee = Scenario::parse(&format!(
        "{base}{open}[knee]\nconditions = {{ \"errors.rate\" = \"< 1%\" }}\n"
    ))
    .unwrap()
    .knee
    .unwrap();
    assert_eq!((knee.window_s, knee.stop), (3, true));
    assert_eq!(
        invalid_field(&format!(
            "{base}[population]\nclients = 10\n[load]\nworkers = 3\n"
        )),
        "population.users"
    );
    assert_eq!(
        invalid_field(&format!("{base}[load]\nworkers = 0\n")),
        "load.workers"
    );
    let workers = Scenario::parse(&format!(
        "{base}[population]\nclients = 10\nusers = 12\n[load]\nworkers = 3\n"
    ))
    .unwrap();
    assert_eq!(workers.load.workers, 3);
}
