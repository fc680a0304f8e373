//! The steps of the client script that are timed, and the invariants checked on every run.
//!
//! Adding a step (say `play.join`) or an invariant is one enum variant more here; metrics,
//! thresholds and the report pick it up through `ALL` and `name()`.

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
    /// `POST /v1/logout` at profile over a new TLS connection.
    Logout,
}

impl Step {
    /// Every step, in script order.
    pub const ALL: [Step; 8] = [
        Step::UpdateCheck,
        Step::FileDownload,
        Step::Login,
        Step::LobbyMe,
        Step::LobbyRanking,
        Step::Refresh,
        Step::LobbyStart,
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
            Step::Logout => "logout",
        }
    }

    /// The position of the step in `ALL`, for per-step arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The step with this name, if any.
    pub fn from_name(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.name() == name)
    }
}

/// A property that must hold on every run; one violation makes the run exit with code 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    /// Every downloaded file matches the size and sha256 of the manifest.
    DownloadsSha256,
    /// Every file node named in an update answer accepts connections (unless the scenario
    /// kills file nodes, when a dead endpoint is an expected error).
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
}

impl Invariant {
    /// Every invariant, in report order.
    pub const ALL: [Invariant; 5] = [
        Invariant::DownloadsSha256,
        Invariant::UpdateLiveEndpoints,
        Invariant::TokensUnique,
        Invariant::LobbyForeignIpServed,
        Invariant::LoginWrongPasswordToken,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::DownloadsSha256 => "downloads.sha256",
            Invariant::UpdateLiveEndpoints => "update.live_endpoints",
            Invariant::TokensUnique => "tokens.unique",
            Invariant::LobbyForeignIpServed => "lobby.foreign_ip_served",
            Invariant::LoginWrongPasswordToken => "login.wrong_password_token",
        }
    }

    /// The position of the invariant in `ALL`, for per-invariant arrays.
    pub fn index(self) -> usize {
        self as usize
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
    }
}
