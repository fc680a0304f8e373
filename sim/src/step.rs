//! The steps of the client script that are timed, and the invariants checked on every run.
//!
//! Adding a step (say `lobby.me`) or an invariant is one enum variant more here; metrics,
//! thresholds and the report pick it up through `ALL` and `name()`.

/// One timed request of the client script.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// `GET /v1/update` at storage.
    UpdateCheck,
    /// `GET /v1/files/{version}/{path}` at a file-transfer node, body included.
    FileDownload,
}

impl Step {
    /// Every step, in script order.
    pub const ALL: [Step; 2] = [Step::UpdateCheck, Step::FileDownload];

    /// The name used in thresholds, reports and tables.
    pub fn name(self) -> &'static str {
        match self {
            Step::UpdateCheck => "update.check",
            Step::FileDownload => "file.download",
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
}

impl Invariant {
    /// Every invariant, in report order.
    pub const ALL: [Invariant; 2] = [Invariant::DownloadsSha256, Invariant::UpdateLiveEndpoints];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::DownloadsSha256 => "downloads.sha256",
            Invariant::UpdateLiveEndpoints => "update.live_endpoints",
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
