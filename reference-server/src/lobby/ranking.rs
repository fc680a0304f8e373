//! The ranking snapshot: every user by rating (best first, ties by id), rebuilt from the
//! DB in the background and at once after match results, so `/v1/me` and
//! `/v1/ranking` answer from memory.

use std::collections::HashMap;

use serde::Serialize;

/// One row of `/v1/ranking`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RankEntry {
    /// 1-based rank.
    pub rank: u64,
    /// User id.
    pub id: String,
    /// Rating.
    pub rating: i64,
    /// Level.
    pub level: i64,
}

/// Users sorted by rating.
#[derive(Debug, Default)]
pub struct Ranking {
    entries: Vec<(String, i64, i64)>,
    index: HashMap<String, usize>,
}

impl Ranking {
    /// Builds from (id, rating, level) rows already sorted by rating desc, id asc.
    pub fn new(entries: Vec<(String, i64, i64)>) -> Ranking {
        let index = entries.iter().enumerate().map(|(i, e)| (e.0.clone(), i)).collect();
        Ranking { entries, index }
    }

    /// Number of ranked users.
    pub fn total(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The rank `id` has with `rating` (its current rating, which may be newer than this
    /// snapshot): one more than the users ranked above it, not counting its own old row.
    pub fn rank_of(&self, id: &str, rating: i64) -> u64 {
        let above = |e: &(String, i64, i64)| e.1 > rating || (e.1 == rating && e.0.as_str() < id);
        let mut better = self.entries.partition_point(above);
        if self.index.get(id).is_some_and(|&own| own < better) {
            better -= 1;
        }
        better as u64 + 1
    }

    /// Entries `offset..offset + limit`.
    pub fn page(&self, offset: u64, limit: u64) -> Vec<RankEntry> {
        let start = (offset as usize).min(self.entries.len());
        let end = start.saturating_add(limit as usize).min(self.entries.len());
        self.entries[start..end]
            .iter()
            .enumerate()
            .map(|(i, (id, rating, level))| RankEntry { rank: (start + i) as u64 + 1, id: id.clone(), rating: *rating, level: *level })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Ranking {
        Ranking::new(vec![("a".into(), 1200, 3), ("b".into(), 1100, 2), ("c".into(), 1100, 1), ("d".into(), 900, 1)])
    }

    #[test]
    fn ranks_follow_rating_then_id() {
        let r = snapshot();
        assert_eq!(r.rank_of("a", 1200), 1);
        assert_eq!(r.rank_of("c", 1100), 3);
        assert_eq!(r.rank_of("d", 900), 4);
        let page = r.page(1, 2);
        assert_eq!(page.iter().map(|e| (e.rank, e.id.as_str())).collect::<Vec<_>>(), [(2, "b"), (3, "c")]);
        assert!(r.page(10, 5).is_empty());
        assert_eq!(r.total(), 4);
    }

    #[test]
    fn a_fresh_rating_ranks_correctly_against_an_older_snapshot() {
        let r = snapshot();
        // d just won its way to 1150: above b and c, its own old row not counted.
        assert_eq!(r.rank_of("d", 1150), 2);
        // a lost down to 1000: below b and c, above d.
        assert_eq!(r.rank_of("a", 1000), 3);
        // A user not in the snapshot yet.
        assert_eq!(r.rank_of("e", 950), 4);
    }
}
