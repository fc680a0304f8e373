//! Job queues as series: how many jobs wait in each pool and how many it refused
//! (the 503 `busy` answers), labelled by the pool's name.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// The counts of one job queue, updated by the pool that owns it.
#[derive(Debug, Default)]
pub struct QueueStats {
    depth: AtomicI64,
    refused: AtomicU64,
}

impl QueueStats {
    /// A job entered the queue.
    pub fn queued(&self) {
        self.depth.fetch_add(1, Ordering::Relaxed);
    }

    /// A worker took a job off the queue.
    pub fn taken(&self) {
        self.depth.fetch_sub(1, Ordering::Relaxed);
    }

    /// The queue was full and a job was refused.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Jobs waiting now.
    pub fn depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Jobs refused so far.
    pub fn refusals(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// Every queue of the process, encoded as one family per series at scrape time (two
/// pools registered as separate series would repeat a family, which the format forbids).
#[derive(Debug, Default)]
pub(super) struct Queues {
    pools: Mutex<Vec<(String, Arc<QueueStats>)>>,
}

impl Queues {
    pub(super) fn add(&self, name: &str, stats: Arc<QueueStats>) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.push((name.to_string(), stats));
    }
}

impl Collector for Queues {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if pools.is_empty() {
            return Ok(());
        }
        let mut depth = encoder.encode_descriptor(
            "catwar_job_queue_depth",
            "Jobs waiting for a worker, by pool",
            None,
            MetricType::Gauge,
        )?;
        for (name, stats) in pools.iter() {
            let labels = [("pool", name.as_str())];
            ConstGauge::new(stats.depth()).encode(depth.encode_family(&labels)?)?;
        }
        let mut refused = encoder.encode_descriptor(
            "catwar_job_queue_refused",
            "Jobs refused by a full queue (answered 503 busy), by pool",
            None,
            MetricType::Counter,
        )?;
        for (name, stats) in pools.iter() {
            let labels = [("pool", name.as_str())];
            ConstCounter::new(stats.refusals()).encode(refused.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::metrics::{assert_exposes, Format, Metrics};

    #[test]
    fn every_pool_is_one_label_of_one_family() {
        let metrics = Metrics::new();
        let (login, lobby) = (
            Arc::new(QueueStats::default()),
            Arc::new(QueueStats::default()),
        );
        metrics.add_queue("login", Arc::clone(&login));
        metrics.add_queue("lobby-db", Arc::clone(&lobby));
        login.queued();
        login.queued();
        login.taken();
        login.refused();
        let text = metrics.encode(Format::Text);
        assert_eq!(
            text.matches("# TYPE catwar_job_queue_depth gauge").count(),
            1,
            "{text}"
        );
        assert_exposes(
            &text,
            &[
                "catwar_job_queue_depth{pool=\"login\"} 1\n",
                "catwar_job_queue_depth{pool=\"lobby-db\"} 0\n",
                "catwar_job_queue_refused_total{pool=\"login\"} 1\n",
            ],
        );
    }
}
