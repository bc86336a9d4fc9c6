//! State figures sampled at scrape time: closures registered by the services write into
//! [`Samples`], and one collector encodes them with a descriptor per name, so a family spread over
//! several samplers (one projection each) is still one metric.
use std::sync::{Arc, RwLock};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

type Sampler = Arc<dyn Fn(&mut Samples) + Send + Sync>;

/// The registered samplers, encoded as one collector.
#[derive(Clone, Default)]
pub(super) struct Samplers(Arc<RwLock<Vec<Sampler>>>);

impl Samplers {
    pub(super) fn add(&self, sampler: impl Fn(&mut Samples) + Send + Sync + 'static) {
        self.0
            .write()
            .expect("samplers lock")
            .push(Arc::new(sampler));
    }
}

impl std::fmt::Debug for Samplers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Samplers")
    }
}

impl Collector for Samplers {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let samplers: Vec<Sampler> = self.0.read().expect("samplers lock").clone();
        let mut samples = Samples::default();
        for sampler in &samplers {
            sampler(&mut samples);
        }
        // One descriptor per name (in first-seen order), then every label set of that name.
        let mut names: Vec<&'static str> = Vec::new();
        for sample in &samples.0 {
            if !names.contains(&sample.name) {
                names.push(sample.name);
            }
        }
        for name in names {
            let group: Vec<&Sample> = samples.0.iter().filter(|s| s.name == name).collect();
            let kind = match group[0].value {
                Value::Counter(_) => MetricType::Counter,
                Value::Gauge(_) => MetricType::Gauge,
            };
            let mut metric = encoder.encode_descriptor(name, group[0].help, None, kind)?;
            if let [only] = group.as_slice()
                && only.labels.is_empty()
            {
                // Through `encode_family` an empty label set would print as `name{}`.
                only.value.encode(metric)?;
                continue;
            }
            for sample in group {
                let labels: Vec<(&str, &str)> = sample
                    .labels
                    .iter()
                    .map(|(k, v)| (*k, v.as_str()))
                    .collect();
                sample.value.encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

enum Value {
    Counter(u64),
    Gauge(f64),
}

impl Value {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        match *self {
            Value::Counter(v) => ConstCounter::new(v).encode(encoder),
            Value::Gauge(v) => ConstGauge::new(v).encode(encoder),
        }
    }
}

struct Sample {
    name: &'static str,
    help: &'static str,
    labels: Vec<(&'static str, String)>,
    value: Value,
}

/// What samplers write into on each scrape.
#[derive(Default)]
pub struct Samples(Vec<Sample>);

impl Samples {
    /// A figure that only grows (named without `_total`; the encoder adds it).
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: u64,
    ) {
        self.push(name, help, labels, Value::Counter(value));
    }

    /// A figure that goes up and down.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        self.push(name, help, labels, Value::Gauge(value));
    }

    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: Value,
    ) {
        self.0.push(Sample {
            name,
            help,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            value,
        });
    }
}
