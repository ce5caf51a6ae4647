//! The loss curve of a run, from its log, as an SVG picture.

use std::path::Path;

use peft_core::{PeftError, Result};
use plotters::prelude::*;

/// Draws the training loss of every step and the evaluation losses of `log` (a run's
/// `log.jsonl`) into the SVG file `out`.
pub fn plot_losses(log: &Path, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(log).map_err(|source| PeftError::Io { path: log.display().to_string(), source })?;
    let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let points = |key: &str| -> Vec<(f64, f64)> { lines.iter().filter_map(|v| Some((v["step"].as_f64()?, v[key].as_f64()?))).filter(|(_, y)| y.is_finite()).collect() };
    let (train, eval) = (points("loss"), points("eval_loss"));
    let all = train.iter().chain(&eval);
    let (x_max, y_min, y_max) = all.fold((1.0f64, f64::INFINITY, f64::NEG_INFINITY), |(x, lo, hi), &(s, y)| (x.max(s), lo.min(y), hi.max(y)));
    if !y_min.is_finite() {
        return Err(PeftError::InvalidConfig(format!("{} holds no loss to plot", log.display())));
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(out, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root).caption("loss", ("sans-serif", 20)).margin(12).x_label_area_size(40).y_label_area_size(56).build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))?;
        chart.configure_mesh().x_desc("optimizer step").y_desc("loss per token").draw()?;
        chart.draw_series(LineSeries::new(train.clone(), &BLUE))?.label("train").legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        if !eval.is_empty() {
            chart.draw_series(LineSeries::new(eval.clone(), &RED))?;
            chart.draw_series(eval.iter().map(|&p| Circle::new(p, 4, RED.filled())))?.label("eval").legend(|(x, y)| Circle::new((x + 10, y), 4, RED.filled()));
        }
        chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| PeftError::Io { path: out.display().to_string(), source: std::io::Error::other(e.to_string()) })
}
