//! Scenario files: TOML parsing and every validation rule (`Scenario::parse`), then
//! what a run derives from a valid scenario before it starts anything: durations from
//! the server section, the start window, and the open model's first arrival times.
#![no_main]

use catwar_sim::fuzzing::arrivals;
use catwar_sim::scenario::{LoadModel, Scenario};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(scenario) = Scenario::parse(text) else {
        return;
    };
    let _ = (
        scenario.server.tick_period(),
        scenario.server.match_duration(),
        scenario.server.fill_timeout(),
        scenario.load.start_window_ms(),
        scenario.population.user_count(),
    );
    for fault in &scenario.faults {
        let _ = (fault.stops_balancer(), fault.stops_file_node());
    }
    if scenario.load.model == LoadModel::Open {
        let total_s = scenario.load.stages_s();
        let (times, expected) = arrivals(&scenario, 1000);
        assert!(expected.is_finite() && expected >= 0.0, "{expected}");
        let mut last = 0.0;
        for t in times {
            assert!(
                t.is_finite() && t >= last && t <= total_s,
                "{t} after {last}, of {total_s}"
            );
            last = t;
        }
    }
});
