//! Gauges computed at scrape time from state a service already keeps (its session cache,
//! its election), so the service records nothing twice and the value is never stale.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// What a computed gauge reads on each scrape.
pub(super) enum Read {
    /// One value.
    One(Box<dyn Fn() -> i64 + Send + Sync>),
    /// One value per label value, under the label named first.
    Labelled(
        &'static str,
        Box<dyn Fn() -> Vec<(&'static str, i64)> + Send + Sync>,
    ),
}

/// One gauge family whose values `read` gives on each scrape.
pub(super) struct Computed {
    pub(super) name: String,
    pub(super) help: String,
    pub(super) read: Read,
}

impl std::fmt::Debug for Computed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Computed")
            .field("name", &self.name)
            .finish()
    }
}

impl Collector for Computed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family =
            encoder.encode_descriptor(&self.name, &self.help, None, MetricType::Gauge)?;
        match &self.read {
            Read::One(read) => ConstGauge::new(read()).encode(family),
            Read::Labelled(label, read) => {
                for (value_label, value) in read() {
                    let labels = [(*label, value_label)];
                    ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
                }
                Ok(())
            }
        }
    }
}
