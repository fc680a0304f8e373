//! The worker wire format and the exact merge of workers' seconds.

use super::*;
use crate::metrics::latency_histogram;

#[test]
fn totals_survive_the_wire_exactly() {
    let metrics = Metrics::new(Instant::now());
    let recorder = metrics.recorder(3);
    let t0 = Instant::now();
    for ms in [1, 2, 5, 40, 700] {
        recorder.success(Step::LobbyMe, t0, t0 + Duration::from_millis(ms));
    }
    recorder.failure(Step::Login, "busy");
    recorder.stage_entered(Stage::Play, true);
    recorder.stage_time(Stage::Play, Duration::from_secs(30));
    let snapshot = metrics.snapshot();
    let wire = WireTotals::from_snapshot(&snapshot, Vec::new(), false);
    let text = serde_json::to_string(&WorkerLine::Done(Box::new(wire))).unwrap();
    let WorkerLine::Done(back) = serde_json::from_str(&text).unwrap() else {
        panic!("not a done line");
    };
    let back = back.to_snapshot().unwrap();
    let me = Step::LobbyMe.index();
    assert_eq!(back.steps[me].latency, snapshot.steps[me].latency);
    assert_eq!(back.steps[Step::Login.index()].errors_by_code["busy"], 1);
    assert_eq!(back.funnel[Stage::Play.index()].sessions, 1);
    let play = Stage::Play.index();
    assert_eq!(back.funnel[play].time_ms, snapshot.funnel[play].time_ms);
    assert!(back.funnel[play].time_ms.max().abs_diff(30_000) < 300);
}

#[test]
fn merged_seconds_add_histograms_not_percentiles() {
    // Worker A: 99 fast answers; worker B: one slow one. The merged p99 is the fast
    // value, where averaging the two p99s would report half a second.
    let mut fast = latency_histogram();
    fast.record_n(1_000, 99).unwrap();
    let mut slow = latency_histogram();
    slow.record(1_000_000).unwrap();
    let second = |hist: &Histogram<u64>, requests| WireSecond {
        t_s: 0,
        steps: Step::ALL
            .iter()
            .map(|&step| WireInterval {
                requests: if step == Step::LobbyMe { requests } else { 0 },
                errors: 0,
                hist: (step == Step::LobbyMe).then(|| encode_histogram(hist)),
            })
            .collect(),
        load: LoadPoint {
            active: requests,
            ..LoadPoint::default()
        },
    };
    let mut merging = Merging::new();
    merging.add(&second(&fast, 99)).unwrap();
    merging.add(&second(&slow, 1)).unwrap();
    let point = merging.point(0);
    let me = point.steps[Step::LobbyMe.index()];
    assert_eq!(me.requests, 100);
    assert!(me.p99_us.unwrap() < 1_100, "{:?}", me.p99_us);
    assert_eq!(point.load.active, 100);
}

#[test]
fn shares_split_clients_and_users_alike() {
    let shares: Vec<Share> = (0..4).map(|index| Share { index, count: 4 }).collect();
    for id in 0..1_000u64 {
        assert_eq!(shares.iter().filter(|s| s.owns(id)).count(), 1);
    }
    assert_eq!(
        shares.iter().map(|s| s.part_of(10)).collect::<Vec<_>>(),
        [3, 3, 2, 2]
    );
    // Client 5 logs in as user6 (users = 8, a multiple of 4): both are worker 1's.
    assert!(shares[1].owns(5) && shares[1].owns_user("user6"));
    assert!(shares[0].owns_user("admin") && !shares[1].owns_user("admin"));
}
