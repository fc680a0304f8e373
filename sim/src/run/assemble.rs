//! The report of a finished run before its thresholds are judged: the scenario, the
//! server settings and the environment around what the clients measured.

use super::RunOptions;
use crate::arrivals::Schedule;
use crate::report::{
    AgentReport, ArrivalsReport, Environment, FaultRecord, KneeReport, Measured, Report,
    ScenarioInfo, ServerInfo, ServiceUsage, SimUsage, REPORT_SCHEMA,
};
use crate::scenario::{LoadModel, Scenario, WorkerLost};
use crate::topology::TargetSettings;

/// What the clients run against.
#[derive(Debug)]
pub(super) struct Target {
    /// `embedded`, or the `--target` path.
    pub(super) label: String,
    /// Whether the simulator started the server with the scenario's `[server]` settings.
    pub(super) server_applied: bool,
    /// What the target's topology.json says of its settings, when it says anything.
    pub(super) settings: Option<TargetSettings>,
}

/// What a finished simulation produced.
#[derive(Debug)]
pub(super) struct Ran {
    pub(super) started_at_unix_ms: u64,
    pub(super) duration_s: f64,
    pub(super) interrupted: bool,
    pub(super) faults: Vec<FaultRecord>,
    pub(super) measured: Measured,
    pub(super) knee: Option<KneeReport>,
    /// Each service's CPU and memory over the run.
    pub(super) services: Vec<ServiceUsage>,
    /// Processes (or agents) that ran clients.
    pub(super) workers: u32,
    /// The agents, for a run with `--agents`.
    pub(super) agents: Vec<AgentReport>,
    /// Workers or agents lost mid-run.
    pub(super) lost: Vec<String>,
}

/// The server's settings: the scenario's when the simulator applied them; else the
/// target's own where its topology.json states them (the run was refused had they
/// contradicted the scenario's assumptions), and the scenario's declaration elsewhere.
fn server_info(scenario: &Scenario, target: &Target) -> ServerInfo {
    let server = &scenario.server;
    let stated = target.settings.clone().unwrap_or_default();
    ServerInfo {
        argon2: stated
            .argon2
            .unwrap_or_else(|| server.argon2.name().to_string()),
        token_idle_s: stated.token_idle_s.unwrap_or(server.token_idle_s),
        users: scenario.population.user_count(),
        players_per_match: stated.players_per_match.unwrap_or(server.players_per_match),
        match_fill_timeout_s: stated
            .match_fill_timeout_s
            .unwrap_or(server.match_fill_timeout_s),
        match_ticks: stated.match_ticks.unwrap_or(server.match_ticks),
        tick_hz: stated.tick_hz.unwrap_or(server.tick_hz),
        observer_backend: stated
            .observer_backend
            .unwrap_or_else(|| server.observer_backend.name().to_string()),
        play_servers: stated.play_servers.unwrap_or(server.play_servers),
        applied: target.server_applied,
        read_from_target: target.settings.is_some(),
    }
}

/// The report of a run, before its thresholds are judged.
pub(super) fn unjudged_report(
    scenario: &Scenario,
    options: &RunOptions,
    target: Target,
    ran: Ran,
) -> Report {
    let mut sim = SimUsage::from_series(
        &ran.measured.timeseries.points,
        ran.workers,
        ran.measured.baseline_rss_kib,
    );
    sim.agents = ran.agents;
    sim.lost = ran.lost;
    sim.lost_fails_run = scenario.load.worker_lost == WorkerLost::Fail;
    Report {
        schema: REPORT_SCHEMA.to_string(),
        scenario: ScenarioInfo {
            name: scenario.scenario.name.clone(),
            seed: scenario.scenario.seed,
            path: options.scenario.display().to_string(),
            text: scenario.text.clone(),
        },
        started_at_unix_ms: ran.started_at_unix_ms,
        duration_s: ran.duration_s,
        interrupted: ran.interrupted,
        environment: Environment::current(target.label.clone()),
        server: server_info(scenario, &target),
        steps: ran.measured.steps,
        errors_by_code: ran.measured.errors_by_code,
        timeseries: ran.measured.timeseries,
        faults: ran.faults,
        failover: ran.measured.failover,
        invariants: ran.measured.invariants,
        funnel: ran.measured.funnel,
        arrivals: (scenario.load.model == LoadModel::Open).then(|| ArrivalsReport {
            arrival: scenario.load.arrival.name().to_string(),
            expected: Schedule::new(&scenario.load).expected_arrivals(),
            started: ran.measured.arrivals_started,
            dropped: ran.measured.arrivals_dropped,
        }),
        knee: ran.knee,
        sim,
        services: ran.services,
        thresholds: Vec::new(),
        abort: None,
        exit_code: 0,
    }
}
