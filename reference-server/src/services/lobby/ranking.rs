//! The ranking snapshot: every user by rating (best first, ties by id), rebuilt from the
//! DB in the background and at once after match results, so `/v1/me` and
//! `/v1/ranking` answer from memory.

use std::collections::{HashMap, HashSet};

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
#[derive(Debug, Default, Clone)]
pub struct Ranking {
    entries: Vec<(String, i64, i64)>,
    index: HashMap<String, usize>,
}

impl Ranking {
    /// Builds from (id, rating, level) rows already sorted by rating desc, id asc.
    pub fn new(entries: Vec<(String, i64, i64)>) -> Ranking {
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.0.clone(), i))
            .collect();
        Ranking { entries, index }
    }

    /// Puts each (id, rating, level) row at its place, replacing the user's old row:
    /// what a rebuild from the DB would give for those users, in time linear in the
    /// ranking's length and without reading the others.
    pub fn update(&mut self, rows: Vec<(String, i64, i64)>) {
        if rows.is_empty() {
            return;
        }
        let changed: HashSet<String> = rows.iter().map(|row| row.0.clone()).collect();
        self.entries.retain(|entry| !changed.contains(&entry.0));
        for row in rows {
            let at = self
                .entries
                .partition_point(|e| e.1 > row.1 || (e.1 == row.1 && e.0 < row.0));
            self.entries.insert(at, row);
        }
        for (position, entry) in self.entries.iter().enumerate() {
            match self.index.get_mut(&entry.0) {
                Some(slot) => *slot = position,
                None => {
                    self.index.insert(entry.0.clone(), position);
                }
            }
        }
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
            .map(|(i, (id, rating, level))| RankEntry {
                rank: (start + i) as u64 + 1,
                id: id.clone(),
                rating: *rating,
                level: *level,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Ranking {
        Ranking::new(vec![
            ("a".into(), 1200, 3),
            ("b".into(), 1100, 2),
            ("c".into(), 1100, 1),
            ("d".into(), 900, 1),
        ])
    }

    #[test]
    fn ranks_follow_rating_then_id() {
        let r = snapshot();
        assert_eq!(r.rank_of("a", 1200), 1);
        assert_eq!(r.rank_of("c", 1100), 3);
        assert_eq!(r.rank_of("d", 900), 4);
        let page = r.page(1, 2);
        assert_eq!(
            page.iter()
                .map(|e| (e.rank, e.id.as_str()))
                .collect::<Vec<_>>(),
            [(2, "b"), (3, "c")]
        );
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

    /// Sorted as the DB's `ORDER BY rating DESC, id` sorts them.
    fn sorted(mut rows: Vec<(String, i64, i64)>) -> Vec<(String, i64, i64)> {
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows
    }

    proptest::proptest! {
        #[test]
        fn an_update_equals_a_rebuild(
            ratings in proptest::collection::vec(990i64..1010, 1..60),
            changes in proptest::collection::vec((0usize..80, 990i64..1010), 0..6),
        ) {
            let users: Vec<(String, i64, i64)> = ratings
                .iter()
                .enumerate()
                .map(|(i, &rating)| (format!("user{i}"), rating, 1))
                .collect();
            // Changes name existing users and, past the end, new ones.
            let mut rows: Vec<(String, i64, i64)> = Vec::new();
            for (who, rating) in changes {
                let id = format!("user{who}");
                rows.retain(|row| row.0 != id);
                rows.push((id, rating, 2));
            }
            let mut after: Vec<(String, i64, i64)> =
                users.iter().filter(|u| !rows.iter().any(|r| r.0 == u.0)).cloned().collect();
            after.extend(rows.iter().cloned());
            let rebuilt = Ranking::new(sorted(after));
            let mut updated = Ranking::new(sorted(users));
            updated.update(rows);
            proptest::prop_assert_eq!(&updated.entries, &rebuilt.entries);
            proptest::prop_assert_eq!(&updated.index, &rebuilt.index);
        }
    }
}
