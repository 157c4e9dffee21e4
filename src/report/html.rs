//! The report as one self-contained HTML page: the paper's tables with their
//! policy groups as spanning headers, and the plots as inline SVG drawn by
//! `plotters` (no scripts, no external files: it reads offline).

use super::model::{Block, DriftChart, Matrix, Report, RowKind};
use super::text::{cell, drift_grid, matrix_grid, preamble, shares_grid, Grid};
use plotters::prelude::*;

/// Ten distinguishable colours (Tableau 10), cycled with dash patterns.
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}\
th,td{padding:0.25em 0.6em;text-align:right;white-space:nowrap}\
th:first-child,td:first-child{text-align:left}\
thead th{border-bottom:1px solid #444}th.group{border-bottom:1px solid #999;text-align:center}\
tr.summary td{background:#f4f4f4}tr.first-summary td{border-top:1px solid #444}\
.charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}\
code{background:#f4f4f4;padding:0 0.2em}";

pub fn render(report: &Report) -> Result<String, String> {
    let title = format!("{}: Recall@{} (%)", report.pipeline, report.k);
    let mut body = format!(
        "<h1>{}</h1>\n<p>{}</p>\n",
        escape(&title),
        escape(&preamble(report)).replace('\n', " ")
    );
    for w in &report.warnings {
        body.push_str(&format!(
            "<p class=\"warning\"><b>warning:</b> {}</p>\n",
            escape(w)
        ));
    }
    for block in &report.blocks {
        body.push_str(&format!("<h2>{}</h2>\n", escape(&block.title)));
        body.push_str(&block_table(block));
    }
    if !report.formulas.is_empty() {
        body.push_str("<h2>Formulas</h2>\n<ul>\n");
        for (metric, formula) in &report.formulas {
            body.push_str(&format!(
                "<li><code>{}</code>: <code>{}</code></li>\n",
                escape(metric),
                escape(formula)
            ));
        }
        body.push_str("</ul>\n");
    }
    body.push_str(&format!(
        "<h2>Recall after each stage</h2>\n<p>R@{} on each task (task known) after each stage, \
         mean over seeds, for every variant with more than one stage; a task's line starts \
         before it is learned (forward transfer).</p>\n\
         <div class=\"charts\">\n",
        report.k
    ));
    // A joint model's single stage makes no line.
    for m in report.matrices.iter().filter(|m| m.stages.len() > 1) {
        body.push_str(&format!(
            "<figure>{}</figure>\n",
            recall_chart(m, report.k).map_err(|e| format!("plotting {}: {e}", m.variant))?
        ));
    }
    body.push_str("</div>\n");
    if !report.drift.is_empty() {
        body.push_str(
            "<h2>Drift diagnostics</h2>\n<p>Each old task after each later stage, averaged over \
             old tasks, directions and seeds (<code>drift.arrow</code> has every row).</p>\n\
             <div class=\"charts\">\n",
        );
        for chart in &report.drift {
            body.push_str(&format!(
                "<figure>{}</figure>\n",
                drift_chart(chart).map_err(|e| format!("plotting {}: {e}", chart.metric))?
            ));
        }
        body.push_str("</div>\n");
        if let Some(grid) = drift_grid(report) {
            body.push_str("<h3>At the last stage</h3>\n");
            body.push_str(&plain_table(&grid));
        }
    }
    body.push_str(&format!(
        "<h2>Recall matrices</h2>\n<p>R@{} on each task (columns) after each stage (rows), task \
         known, mean ± std over seeds.</p>\n",
        report.k
    ));
    body.push_str(&matrices(&report.matrices));
    let z = &report.zeroshot;
    if !z.blocks.is_empty() {
        body.push_str(&format!(
            "<h2>Zero-shot classification</h2>\n<p>Top-{} accuracy (%) of each task's evaluated \
             images against the prompt of every class of the set, by each stage's model, mean ± \
             std over seeds (<code>zeroshot.arrow</code> has top-5 too).</p>\n",
            super::zeroshot::TOP
        ));
        for block in &z.blocks {
            body.push_str(&format!("<h3>{}</h3>\n", escape(&block.title)));
            body.push_str(&block_table(block));
        }
        body.push_str("<div class=\"charts\">\n");
        for chart in z.charts.iter().filter(|c| !c.series.is_empty()) {
            body.push_str(&format!(
                "<figure>{}</figure>\n",
                drift_chart(chart).map_err(|e| format!("plotting {}: {e}", chart.metric))?
            ));
        }
        body.push_str("</div>\n");
        body.push_str(&matrices(&z.matrices));
    }
    if let Some(grid) = shares_grid(report) {
        body.push_str(
            "<h2>Regularizer terms</h2>\n<p>Each term's share of the loss (%) per stage, mean \
             ± std over seeds; below 1% a term is inert.</p>\n",
        );
        body.push_str(&plain_table(&grid));
    }
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(&title)
    ))
}

/// Each matrix under its variant and name.
fn matrices(list: &[Matrix]) -> String {
    list.iter()
        .map(|m| {
            format!(
                "<h3>{} · {}</h3>\n{}",
                escape(&m.variant),
                escape(&m.direction),
                plain_table(&matrix_grid(m))
            )
        })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn block_table(block: &Block) -> String {
    let mut s = String::from("<table>\n<thead>\n<tr><th></th>");
    for (policy, span) in block.groups() {
        s.push_str(&format!(
            "<th class=\"group\" colspan=\"{span}\">{}</th>",
            escape(policy.title())
        ));
    }
    s.push_str("</tr>\n<tr><th>task</th>");
    for c in &block.columns {
        s.push_str(&format!(
            "<th title=\"{}\">{}</th>",
            escape(&c.variant),
            escape(&c.header)
        ));
    }
    s.push_str("</tr>\n</thead>\n<tbody>\n");
    let mut first = true;
    for row in &block.rows {
        let class = match (row.kind, first) {
            (RowKind::Task, _) => "",
            (_, true) => " class=\"summary first-summary\"",
            (_, false) => " class=\"summary\"",
        };
        if row.kind != RowKind::Task {
            first = false;
        }
        s.push_str(&format!("<tr{class}><td>{}</td>", escape(&row.label)));
        for c in &row.cells {
            s.push_str(&format!("<td>{}</td>", escape(&cell(c))));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody>\n</table>\n");
    s
}

fn plain_table(grid: &Grid) -> String {
    let mut s = String::from("<table>\n<thead><tr>");
    for h in &grid.header {
        s.push_str(&format!("<th>{}</th>", escape(h)));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for row in &grid.rows {
        s.push_str("<tr>");
        for c in row {
            s.push_str(&format!("<td>{}</td>", escape(c)));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody>\n</table>\n");
    s
}

type Series = (String, Vec<(f64, f64)>);

/// One line chart as an SVG string: x is the stage.
fn line_chart(
    title: &str,
    y_label: &str,
    stages: u64,
    series: &[Series],
) -> Result<String, String> {
    let (mut lo, mut hi) = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(y), b.max(y))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let (lo, hi) = (lo - pad, hi + pad);
    let x_max = stages.max(2) as f64 + 0.2;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (420, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(44)
            .build_cartesian_2d(0.8f64..x_max, lo..hi)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("stage")
            .y_desc(y_label)
            .x_labels(stages.max(2) as usize + 1)
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-6 {
                    format!("{}", x.round())
                } else {
                    String::new()
                }
            })
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (name, points)) in series.iter().enumerate() {
            let (r, g, b) = PALETTE[i % PALETTE.len()];
            let color = RGBColor(r, g, b);
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 11))
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn recall_chart(m: &Matrix, k: u64) -> Result<String, String> {
    let series: Vec<Series> = m
        .tasks
        .iter()
        .enumerate()
        .map(|(j, task)| {
            let points = m
                .stages
                .iter()
                .zip(&m.cells)
                .filter_map(|((stage, _), row)| row[j].map(|s| (*stage as f64, s.mean)))
                .collect();
            (task.clone(), points)
        })
        .collect();
    let stages = m.stages.iter().map(|(s, _)| *s).max().unwrap_or(1);
    line_chart(
        &format!("{} · {}", m.variant, m.direction),
        &format!("R@{k} (%)"),
        stages,
        &series,
    )
}

fn drift_chart(chart: &DriftChart) -> Result<String, String> {
    let series: Vec<Series> = chart
        .series
        .iter()
        .map(|(v, points)| {
            (
                v.clone(),
                points.iter().map(|(s, y)| (*s as f64, *y)).collect(),
            )
        })
        .collect();
    let stages = chart
        .series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(s, _)| *s))
        .max()
        .unwrap_or(2);
    line_chart(
        &format!("{} ({})", chart.metric, chart.modality),
        &chart.metric,
        stages,
        &series,
    )
}
