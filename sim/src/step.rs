//! The steps of the client script that are timed, and the invariants checked on every run.
//!
//! Adding a step or an invariant is one enum variant more here; metrics, thresholds and
//! the report pick it up through `ALL` and `name()`.

/// One timed request of the client script.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// `GET /v1/update` at storage.
    UpdateCheck,
    /// `GET /v1/files/{version}/{path}` at a file-transfer node, body included.
    FileDownload,
    /// `POST /v1/login` at profile: a new TCP connection, the TLS handshake, the request
    /// and the answer, as a real client pays for each login.
    Login,
    /// `GET /v1/me` at the lobby.
    LobbyMe,
    /// `GET /v1/ranking` at the lobby.
    LobbyRanking,
    /// `POST /v1/refresh` at profile over a new TLS connection.
    Refresh,
    /// `POST /v1/start` at the lobby.
    LobbyStart,
    /// Connecting to the play server and joining the match: `join` sent → `joined`.
    PlayJoin,
    /// From sending input `seq` n to the first `state` whose `ack` is at least n.
    PlayInputAck,
    /// Between the arrivals of two consecutive `state` lines of a match; intervals over
    /// 1.5 tick periods count as late (`tick_late`), skipped ticks as `tick_gap`.
    PlayTickInterval,
    /// The whole match as a player lives it, from `joined` to `end`: the fill wait, the
    /// ticks, and the commit of the results.
    PlayMatch,
    /// `GET /v1/observer` at the router, which starts a match observer.
    RouterObserver,
    /// From sending `watch` to a match observer to its first `state` line; an observer
    /// asked for before its match started waits for the match too.
    ObserverFirstState,
    /// A watch from the observer's first `state` to its `end`, beside the player's match.
    /// A stream cut before its `end` (the observer or its play server died) is the error
    /// `observer_lost`.
    ObserverWatch,
    /// `POST /v1/logout` at profile over a new TLS connection.
    Logout,
}

impl Step {
    /// Every step, in script order.
    pub const ALL: [Step; 15] = [
        Step::UpdateCheck,
        Step::FileDownload,
        Step::Login,
        Step::LobbyMe,
        Step::LobbyRanking,
        Step::Refresh,
        Step::LobbyStart,
        Step::PlayJoin,
        Step::PlayInputAck,
        Step::PlayTickInterval,
        Step::PlayMatch,
        Step::RouterObserver,
        Step::ObserverFirstState,
        Step::ObserverWatch,
        Step::Logout,
    ];

    /// The name used in thresholds, reports and tables.
    pub fn name(self) -> &'static str {
        match self {
            Step::UpdateCheck => "update.check",
            Step::FileDownload => "file.download",
            Step::Login => "login",
            Step::LobbyMe => "lobby.me",
            Step::LobbyRanking => "lobby.ranking",
            Step::Refresh => "refresh",
            Step::LobbyStart => "lobby.start",
            Step::PlayJoin => "play.join",
            Step::PlayInputAck => "play.input_ack",
            Step::PlayTickInterval => "play.tick_interval",
            Step::PlayMatch => "play.match",
            Step::RouterObserver => "router.observer",
            Step::ObserverFirstState => "observer.first_state",
            Step::ObserverWatch => "observer.watch",
            Step::Logout => "logout",
        }
    }

    /// The position of the step in `ALL`, for per-step arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The step with this name, if any.
    pub fn from_name(name: &str) -> Option<Step> {
        Step::from_name_inner(name)
    }

    /// Whether the step is a request the client made and the server answered, as opposed
    /// to a measure of what the server pushes on its own (`play.tick_interval`: ticks;
    /// `play.input_ack`: acknowledgements riding on ticks). `errors.rate` and the
    /// request rates count requests only, so ticks never dilute them.
    pub fn is_request(self) -> bool {
        !matches!(self, Step::PlayTickInterval | Step::PlayInputAck)
    }

    fn from_name_inner(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.name() == name)
    }
}

/// A property that must hold on every run; one violation makes the run exit with code 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    /// Every downloaded file matches the size and sha256 of the manifest.
    DownloadsSha256,
    /// Every endpoint of every update answer is a file node of the topology that accepts
    /// connections at that moment (unless the scenario kills file nodes, when a dead one
    /// is an expected error). Checked once per endpoint offered, and again for the one
    /// each download used.
    UpdateLiveEndpoints,
    /// No two tokens issued during the run (by login or refresh, to any client) are equal.
    /// Checked once per issued token; a violation is one duplicate.
    TokensUnique,
    /// The lobby never answers with data for a token used from another IP than its
    /// session's. Checked once per request made after a client changed its IP.
    LobbyForeignIpServed,
    /// A login with a wrong password never yields a token. Checked once per wrong-password
    /// login that got an answer.
    LoginWrongPasswordToken,
    /// A player receives every tick of its match, in order, from tick 1. Checked once per
    /// `state` line; a violation is a skipped, repeated or backward tick.
    PlayTicksInOrder,
    /// A match observer relays every tick from its first one, in order, then the same
    /// `end` the player got. Checked once per observed match whose stream began; a
    /// stream cut short is a violation too, unless the scenario kills observers, when it
    /// is the error `observer_lost` of `observer.watch` (the ticks it did relay must
    /// still be in order).
    ObserversEveryTick,
    /// No match result is lost: after the run every match whose `end` a client saw is in
    /// the DB, and every user's wins and losses cover what the clients saw (in the
    /// embedded topology, equal them). Checked once per match and once per user.
    ResultsNoLoss,
    /// After every fault, once its service is back (or its process gone, for an
    /// observer), the user DB passes `PRAGMA integrity_check`. Checked once per fault the
    /// simulator could read the DB after.
    DbIntegrity,
}

impl Invariant {
    /// Every invariant, in report order.
    pub const ALL: [Invariant; 9] = [
        Invariant::DownloadsSha256,
        Invariant::UpdateLiveEndpoints,
        Invariant::TokensUnique,
        Invariant::LobbyForeignIpServed,
        Invariant::LoginWrongPasswordToken,
        Invariant::PlayTicksInOrder,
        Invariant::ObserversEveryTick,
        Invariant::ResultsNoLoss,
        Invariant::DbIntegrity,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::DownloadsSha256 => "downloads.sha256",
            Invariant::UpdateLiveEndpoints => "update.live_endpoints",
            Invariant::TokensUnique => "tokens.unique",
            Invariant::LobbyForeignIpServed => "lobby.foreign_ip_served",
            Invariant::LoginWrongPasswordToken => "login.wrong_password_token",
            Invariant::PlayTicksInOrder => "play.ticks_in_order",
            Invariant::ObserversEveryTick => "observers.every_tick",
            Invariant::ResultsNoLoss => "results.no_loss",
            Invariant::DbIntegrity => "db.integrity",
        }
    }

    /// The position of the invariant in `ALL`, for per-invariant arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A step of the design document's scenario, for the funnel: how many sessions reached
/// it, how many distinct clients, and how long they spent in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Asking storage whether the client's version is current.
    Update,
    /// Downloading and verifying an offered update.
    Download,
    /// Logging in at profile, wrong passwords and retries included.
    Login,
    /// The lobby: own data, ranking, IP change, idle and refresh, asking for a match.
    Lobby,
    /// Joining a match and playing it to its end.
    Play,
    /// Watching the match through an observer, beside playing it.
    Observe,
    /// The session completed, logout included; its time is the whole session.
    Done,
}

impl Stage {
    /// Every stage, in scenario order.
    pub const ALL: [Stage; 7] = [
        Stage::Update,
        Stage::Download,
        Stage::Login,
        Stage::Lobby,
        Stage::Play,
        Stage::Observe,
        Stage::Done,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Update => "update",
            Stage::Download => "download",
            Stage::Login => "login",
            Stage::Lobby => "lobby",
            Stage::Play => "play",
            Stage::Observe => "observe",
            Stage::Done => "done",
        }
    }

    /// The position of the stage in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// This stage's bit in a client's set of stages reached.
    pub fn bit(self) -> u8 {
        1 << self.index()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_positions_in_all() {
        for (position, step) in Step::ALL.into_iter().enumerate() {
            assert_eq!(step.index(), position);
            assert_eq!(Step::from_name(step.name()), Some(step));
        }
        for (position, invariant) in Invariant::ALL.into_iter().enumerate() {
            assert_eq!(invariant.index(), position);
        }
        for (position, stage) in Stage::ALL.into_iter().enumerate() {
            assert_eq!(stage.index(), position);
        }
    }
}
