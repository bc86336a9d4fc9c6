//! The report: rows next to their same-run baselines, printed as they come and written as Markdown and JSON.

use crate::Sizes;
use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) metric: String,
    pub(crate) value: f64,
    pub(crate) unit: String,
    pub(crate) baseline: Option<String>,
    pub(crate) baseline_value: Option<f64>,
    pub(crate) ratio: Option<f64>,
    pub(crate) target: String,
}

#[derive(Default)]
pub(crate) struct Report {
    pub(crate) rows: Vec<Row>,
}

impl Report {
    pub(crate) fn add(
        &mut self,
        scenario: &str,
        metric: &str,
        value: f64,
        unit: &str,
        baseline: Option<(&str, f64)>,
        target: &str,
    ) {
        let row = Row {
            scenario: scenario.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            baseline: baseline.map(|(b, _)| b.into()),
            baseline_value: baseline.map(|(_, v)| v),
            ratio: baseline.map(|(_, v)| if v == 0.0 { 0.0 } else { value / v }),
            target: target.into(),
        };
        println!("{}", line(&row));
        self.rows.push(row);
    }

    pub(crate) fn markdown(&self) -> String {
        let mut out = String::from(
            "| Scenario | Metric | Value | Baseline (same run) | Ratio | Target |\n|---|---|---:|---|---:|---|\n",
        );
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }
}

pub(crate) fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub(crate) fn line(r: &Row) -> String {
    let baseline = match (&r.baseline, r.baseline_value) {
        (Some(b), Some(v)) => format!("{b}: {} {}", fmt(v), r.unit),
        _ => "—".into(),
    };
    let ratio = r
        .ratio
        .map(|x| format!("{x:.2}×"))
        .unwrap_or_else(|| "—".into());
    format!(
        "| {} | {} | {} {} | {} | {} | {} |",
        r.scenario,
        r.metric,
        fmt(r.value),
        r.unit,
        baseline,
        ratio,
        r.target
    )
}

pub(crate) fn latency_rows(
    report: &mut Report,
    scenario: &str,
    name: &str,
    hist: &Histogram<u64>,
    base: Option<&Histogram<u64>>,
) {
    for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        let v = hist.value_at_quantile(q) as f64;
        let b = base.map(|b| ("raw tonic", b.value_at_quantile(q) as f64));
        report.add(scenario, &format!("{name} {label}"), v, "µs", b, "");
    }
}

/// Writes `target/bench/report.{md,json}`.
pub(crate) fn write_report(report: &Report, s: Sizes) {
    let Sizes {
        products,
        small,
        churn,
        updates,
        orders_1,
        orders_64,
        ..
    } = s;
    let out = tests::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let md = format!(
        "# Benchmark report\n\nMachine: {} cores; sizes: products {products}, small {small}, churn {churn}, relay updates {updates}, orders {orders_1}/{orders_64}.\n\n{}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        report.markdown()
    );
    std::fs::write(out.join("report.md"), md).unwrap();
    std::fs::write(
        out.join("report.json"),
        serde_json::to_vec_pretty(&report.rows).unwrap(),
    )
    .unwrap();
    println!("\nwrote {}", out.join("report.md").display());
}
