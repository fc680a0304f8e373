//! The checks a parsed scenario must pass, each naming the field at fault.

use super::*;
use std::fmt;

pub(super) fn validate_meta(meta: &Meta) -> Result<(), ScenarioError> {
    if !is_safe_name(&meta.name) {
        return Err(ScenarioError::invalid(
            "scenario.name",
            format!("must be 1 to {NAME_BYTES_MAX} letters, digits, '.', '_' or '-'"),
        ));
    }
    if !(1..=DURATION_S_MAX).contains(&meta.duration_s) {
        return Err(ScenarioError::invalid(
            "scenario.duration_s",
            format!("must be between 1 and {DURATION_S_MAX}"),
        ));
    }
    Ok(())
}

pub(super) fn validate_population(population: &Population) -> Result<(), ScenarioError> {
    if !(1..=CLIENTS_MAX).contains(&population.clients) {
        return Err(ScenarioError::invalid(
            "population.clients",
            format!("must be between 1 and {CLIENTS_MAX}"),
        ));
    }
    if let Some(users) = population.users {
        if !(1..=USERS_MAX).contains(&users) {
            return Err(ScenarioError::invalid(
                "population.users",
                format!("must be between 1 and {USERS_MAX}"),
            ));
        }
    }
    let version = &population.stale_version;
    if !is_safe_name(version) || version.starts_with('.') {
        return Err(ScenarioError::invalid(
            "population.stale_version",
            format!("must be a version such as \"1.0.0\" (letters, digits, '.', '_', '-'; at most {NAME_BYTES_MAX})"),
        ));
    }
    Ok(())
}

pub(super) fn validate_load(load: &Load) -> Result<(), ScenarioError> {
    in_range("load.workers", load.workers, 1, WORKERS_MAX)?;
    if load.think_time_ms > THINK_TIME_MS_MAX {
        return Err(ScenarioError::invalid(
            "load.think_time_ms",
            format!("must be between 0 and {THINK_TIME_MS_MAX}"),
        ));
    }
    if load.start_window_ms() > THINK_TIME_MS_MAX {
        return Err(ScenarioError::invalid(
            "load.start_spread_ms",
            format!("must be between 0 and {THINK_TIME_MS_MAX}"),
        ));
    }
    Ok(())
}

pub(super) fn validate_server(server: &Server) -> Result<(), ScenarioError> {
    if !(1..TOKEN_IDLE_S_MAX).contains(&server.token_idle_s) {
        return Err(ScenarioError::invalid(
            "server.token_idle_s",
            format!("must be between 1 and {}", TOKEN_IDLE_S_MAX - 1),
        ));
    }
    in_range(
        "server.players_per_match",
        server.players_per_match,
        1,
        PLAYERS_PER_MATCH_MAX,
    )?;
    in_range(
        "server.match_fill_timeout_s",
        server.match_fill_timeout_s,
        0,
        MATCH_FILL_TIMEOUT_S_MAX,
    )?;
    in_range("server.match_ticks", server.match_ticks, 1, MATCH_TICKS_MAX)?;
    in_range(
        "server.play_servers",
        server.play_servers,
        1,
        PLAY_SERVERS_MAX,
    )?;
    in_range("server.tick_hz", server.tick_hz, 1, TICK_HZ_MAX)
}

/// The open model needs stages that fit in the run; the closed model must not have any,
/// or a scenario author would believe they ramp something.
pub(super) fn validate_stages(load: &Load, duration_s: u64) -> Result<(), ScenarioError> {
    if load.model == LoadModel::Closed {
        if !load.stages.is_empty() || load.start_rate_per_s != 0.0 {
            return Err(ScenarioError::invalid(
                "load.stages",
                "arrival stages belong to load.model = \"open\"; the closed model loops \
                 population.clients clients",
            ));
        }
        return Ok(());
    }
    if load.stages.is_empty() {
        return Err(ScenarioError::invalid(
            "load.stages",
            "the open model needs at least one stage, such as \
             [{ duration_s = 60, target_per_s = 10 }]",
        ));
    }
    if load.stages.len() > STAGES_MAX {
        return Err(ScenarioError::invalid(
            "load.stages",
            format!("at most {STAGES_MAX} stages"),
        ));
    }
    rate_in_range("load.start_rate_per_s", load.start_rate_per_s)?;
    for (index, stage) in load.stages.iter().enumerate() {
        if !(stage.duration_s > 0.0 && stage.duration_s <= DURATION_S_MAX as f64) {
            return Err(ScenarioError::invalid(
                format!("load.stages[{index}].duration_s"),
                format!("must be above 0 and at most {DURATION_S_MAX}"),
            ));
        }
        rate_in_range(
            &format!("load.stages[{index}].target_per_s"),
            stage.target_per_s,
        )?;
    }
    if load.stages_s() > duration_s as f64 {
        return Err(ScenarioError::invalid(
            "load.stages",
            format!(
                "the stages last {} s, longer than scenario.duration_s ({duration_s})",
                load.stages_s()
            ),
        ));
    }
    Ok(())
}

/// Each user's clients must live in one worker, which checks that user's results: client
/// k logs in as user k % users + 1 and lives in worker k % workers, so `users` must be a
/// multiple of `workers`.
pub(super) fn validate_workers(load: &Load, population: &Population) -> Result<(), ScenarioError> {
    let workers = u64::from(load.workers);
    if workers > 1 && population.user_count() % workers != 0 {
        return Err(ScenarioError::invalid(
            "population.users",
            format!(
                "must be a multiple of load.workers ({workers}) so that each user's clients \
                 run in one worker; it is {} (by default population.clients)",
                population.user_count()
            ),
        ));
    }
    Ok(())
}

pub(super) fn rate_in_range(field: &str, rate: f64) -> Result<(), ScenarioError> {
    if !(0.0..=RATE_PER_S_MAX).contains(&rate) {
        return Err(ScenarioError::invalid(
            field,
            format!("must be an arrival rate between 0 and {RATE_PER_S_MAX} per second"),
        ));
    }
    Ok(())
}

/// Validates `[knee]`: only per-second figures can be judged second by second, and only
/// an open model ramps the load past the knee.
pub(super) fn parse_knee(
    section: Option<&KneeSection>,
    load: &Load,
) -> Result<Option<Knee>, ScenarioError> {
    let Some(section) = section else {
        return Ok(None);
    };
    if load.model != LoadModel::Open {
        return Err(ScenarioError::invalid(
            "knee",
            "finding a knee needs load.model = \"open\" with rising stages",
        ));
    }
    let window_s = section.window_s.unwrap_or(KNEE_WINDOW_S_DEFAULT);
    in_range("knee.window_s", window_s, 1, KNEE_WINDOW_S_MAX)?;
    if section.conditions.is_empty() {
        return Err(ScenarioError::invalid(
            "knee.conditions",
            "needs at least one condition, such as { \"lobby.me.p99\" = \"< 50ms\" }",
        ));
    }
    let mut conditions = Vec::with_capacity(section.conditions.len());
    for (name, condition) in &section.conditions {
        let field = format!("knee.conditions.\"{name}\"");
        let threshold = Threshold::parse(name, condition)
            .map_err(|e| ScenarioError::invalid(field.clone(), e.0))?;
        if !threshold.metric.per_second() {
            return Err(ScenarioError::invalid(
                field,
                "the knee is judged second by second: use STEP.p99 or errors.rate",
            ));
        }
        conditions.push(threshold);
    }
    Ok(Some(Knee {
        window_s,
        stop: section.stop.unwrap_or(true),
        conditions,
    }))
}

/// Checks `min <= value <= max`, naming `field` otherwise.
pub(super) fn in_range<T: PartialOrd + fmt::Display>(
    field: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ScenarioError> {
    if value < min || value > max {
        return Err(ScenarioError::invalid(
            field,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(())
}

pub(super) fn validate_script(
    script: &Script,
    server: &Server,
    duration_s: u64,
) -> Result<(), ScenarioError> {
    for (field, probability) in script.probabilities() {
        if !(0.0..=1.0).contains(&probability) {
            return Err(ScenarioError::invalid(
                field,
                "must be a probability between 0 and 1",
            ));
        }
    }
    in_range("script.input_hz", script.input_hz, 0, INPUT_HZ_MAX)?;
    in_range("script.me_requests", script.me_requests, 1, ME_REQUESTS_MAX)?;
    // The idle branch sleeps one second past the timeout; a run too short to hold that
    // sleep and the rest of the session would never complete the branch.
    let idle_session_s = server.token_idle_s + 1 + IDLE_SESSION_SLACK_S;
    if script.idle > 0.0 && duration_s < idle_session_s {
        return Err(ScenarioError::invalid(
            "script.idle",
            format!(
                "needs scenario.duration_s >= server.token_idle_s + {} ({idle_session_s}); \
                 the idle branch sleeps server.token_idle_s + 1 s",
                1 + IDLE_SESSION_SLACK_S
            ),
        ));
    }
    Ok(())
}

/// A client that starts a match plays it to its end, so one match and the session around
/// it must fit in the run, or `script.start` could never be carried out.
pub(super) fn validate_match_fits(
    script: &Script,
    server: &Server,
    duration_s: u64,
) -> Result<(), ScenarioError> {
    let match_s = server.match_ticks.div_ceil(u64::from(server.tick_hz));
    let needed_s = server.match_fill_timeout_s + match_s + MATCH_SESSION_SLACK_S;
    if script.start > 0.0 && duration_s < needed_s {
        return Err(ScenarioError::invalid(
            "server.match_ticks",
            format!(
                "a match of {} ticks at {} Hz ({match_s} s) after a fill timeout of {} s, plus \
                 {MATCH_SESSION_SLACK_S} s for the session around it, needs \
                 scenario.duration_s >= {needed_s}; shorten the match, lengthen the run or \
                 set script.start = 0",
                server.match_ticks, server.tick_hz, server.match_fill_timeout_s
            ),
        ));
    }
    Ok(())
}

pub(super) fn validate_faults(faults: &[Fault], duration_s: u64) -> Result<(), ScenarioError> {
    if faults.len() > FAULTS_MAX {
        return Err(ScenarioError::invalid(
            "faults",
            format!("at most {FAULTS_MAX} faults"),
        ));
    }
    for (index, fault) in faults.iter().enumerate() {
        if !(0.0..duration_s as f64).contains(&fault.at_s) {
            return Err(ScenarioError::invalid(
                format!("faults[{index}].at_s"),
                format!("must be within the run: 0 <= at_s < scenario.duration_s ({duration_s})"),
            ));
        }
        if !is_service_name(&fault.service) {
            return Err(ScenarioError::invalid(
                format!("faults[{index}].service"),
                "must be one of storage, balancer, balancer-observer, active-balancer, \
                 file-node-N, profile, lobby, play-N, router, observer",
            ));
        }
        if fault.when == FaultMoment::MatchEnd && !fault.service.starts_with("play-") {
            return Err(ScenarioError::invalid(
                format!("faults[{index}].when"),
                "\"match_end\" needs a play server (service = \"play-N\")",
            ));
        }
        validate_lasting(index, fault)?;
    }
    Ok(())
}

/// A lasting fault needs its length and its own parameter; a one-off fault takes none.
fn validate_lasting(index: usize, fault: &Fault) -> Result<(), ScenarioError> {
    let action = fault.action.name();
    let field = |name: &str| format!("faults[{index}].{name}");
    match (fault.action.lasts(), fault.for_s) {
        (true, Some(s)) if s > 0.0 && s <= FAULT_FOR_S_MAX => {}
        (true, _) => {
            return Err(ScenarioError::invalid(
                field("for_s"),
                format!("\"{action}\" needs for_s, above 0 and at most {FAULT_FOR_S_MAX}"),
            ))
        }
        (false, Some(_)) => {
            return Err(ScenarioError::invalid(
                field("for_s"),
                format!("\"{action}\" strikes once; for_s is for partition, delay, loss and pause"),
            ))
        }
        (false, None) => {}
    }
    match (fault.action, fault.delay_ms) {
        (FaultAction::Delay, Some(ms)) if ms > 0 && ms <= FAULT_DELAY_MS_MAX => {}
        (FaultAction::Delay, _) => {
            return Err(ScenarioError::invalid(
                field("delay_ms"),
                format!("\"delay\" needs delay_ms, from 1 to {FAULT_DELAY_MS_MAX}"),
            ))
        }
        (_, Some(_)) => {
            return Err(ScenarioError::invalid(
                field("delay_ms"),
                "only for action = \"delay\"",
            ))
        }
        _ => {}
    }
    match (fault.action, fault.loss_pct) {
        (FaultAction::Loss, Some(p)) if p > 0.0 && p <= 100.0 => {}
        (FaultAction::Loss, _) => {
            return Err(ScenarioError::invalid(
                field("loss_pct"),
                "\"loss\" needs loss_pct, above 0 and at most 100",
            ))
        }
        (_, Some(_)) => {
            return Err(ScenarioError::invalid(
                field("loss_pct"),
                "only for action = \"loss\"",
            ))
        }
        _ => {}
    }
    if fault.action.lasts() && fault.service == OBSERVER {
        return Err(ScenarioError::invalid(
            field("service"),
            format!("\"{action}\" needs a service of the topology, not an observer"),
        ));
    }
    Ok(())
}

pub(super) fn parse_thresholds(
    entries: &BTreeMap<String, String>,
    faults: &[Fault],
) -> Result<Vec<Threshold>, ScenarioError> {
    let mut thresholds = Vec::with_capacity(entries.len());
    for (name, condition) in entries {
        let field = format!("thresholds.\"{name}\"");
        let threshold = Threshold::parse(name, condition)
            .map_err(|e| ScenarioError::invalid(field.clone(), e.0))?;
        // Without a balancer kill there is no failover to time, and the threshold could
        // never be met; saying so now beats a failed run later.
        if threshold.metric == Metric::FailoverGap && !faults.iter().any(Fault::stops_balancer) {
            return Err(ScenarioError::invalid(
                field,
                "needs a [[faults]] entry with action = \"kill\" and service = \"balancer\"",
            ));
        }
        thresholds.push(threshold);
    }
    Ok(thresholds)
}

pub(super) fn is_safe_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= NAME_BYTES_MAX
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub(super) fn is_service_name(name: &str) -> bool {
    const FIXED: [&str; 6] = [
        "storage",
        "balancer",
        "balancer-observer",
        "profile",
        "lobby",
        "router",
    ];
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit()))
    };
    FIXED.contains(&name)
        || name == ACTIVE_BALANCER
        || name == OBSERVER
        || numbered("file-node-")
        || numbered("play-")
}
