//! Histograms in reports and on the worker wire: base64 of the HdrHistogram V2 format,
//! which decodes to the very histogram that was encoded, so that histograms of several
//! runs or processes add up exactly.

use base64::Engine as _;
use hdrhistogram::serialization::{DeserializeError, Deserializer, Serializer as _, V2Serializer};
use hdrhistogram::Histogram;

/// Why a serialized histogram could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    /// The text is not base64.
    #[error("histogram is not base64")]
    Base64(#[source] base64::DecodeError),
    /// The bytes are not a V2 histogram.
    #[error("histogram is not HdrHistogram V2")]
    Format(#[source] DeserializeError),
}

/// Serializes a histogram as base64 of the HdrHistogram V2 format.
pub fn encode_histogram(histogram: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(histogram, &mut bytes)
        .expect("a histogram serializes into memory");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads a histogram written by [`encode_histogram`].
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, HistogramError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(HistogramError::Base64)?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(HistogramError::Format)
}
