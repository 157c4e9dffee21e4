//! The report as aligned plain text or as Markdown (GitHub tables).

use super::model::{Block, Headline, Matrix, Report, Stat};

/// A table to print: an optional group row (a title per column span), a header,
/// body rows, and the body rows a rule goes above.
pub struct Grid {
    /// (title, number of value columns it spans), covering every value column.
    pub groups: Vec<(String, usize)>,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub rules_before: Vec<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Text,
    Markdown,
}

pub fn render(report: &Report, style: Style) -> String {
    let mut out = String::new();
    let heading = |level: usize, text: &str| match style {
        Style::Text => format!(
            "{text}\n{}\n\n",
            if level == 1 { "=" } else { "-" }.repeat(text.chars().count())
        ),
        Style::Markdown => format!("{} {text}\n\n", "#".repeat(level)),
    };
    out.push_str(&heading(
        1,
        &format!("{}: Recall@{} (%)", report.pipeline, report.k),
    ));
    out.push_str(&preamble(report));
    out.push('\n');
    for w in &report.warnings {
        out.push_str(&match style {
            Style::Text => format!("warning: {w}\n"),
            Style::Markdown => format!("> **warning:** {w}\n>\n"),
        });
    }
    if !report.warnings.is_empty() {
        out.push('\n');
    }
    for block in &report.blocks {
        out.push_str(&heading(2, &block.title));
        out.push_str(&draw(&block_grid(block), style));
        out.push('\n');
    }
    if !report.formulas.is_empty() {
        out.push_str(&heading(2, "Formulas"));
        for (metric, formula) in &report.formulas {
            out.push_str(&match style {
                Style::Text => format!("  {metric}: {formula}\n"),
                Style::Markdown => format!("- `{metric}`: `{formula}`\n"),
            });
        }
        out.push('\n');
    }
    out.push_str(&heading(
        2,
        &format!(
            "Recall matrices: R@{} on each task (columns) after each stage (rows), task known",
            report.k
        ),
    ));
    for m in &report.matrices {
        out.push_str(&heading(3, &format!("{} · {}", m.variant, m.direction)));
        out.push_str(&draw(&matrix_grid(m), style));
        out.push('\n');
    }
    let z = &report.zeroshot;
    if !z.blocks.is_empty() {
        out.push_str(&heading(
            2,
            &format!(
                "Zero-shot classification: top-{} accuracy (%) of each task's images against every class's prompt",
                super::zeroshot::TOP
            ),
        ));
        for block in &z.blocks {
            out.push_str(&heading(3, &block.title));
            out.push_str(&draw(&block_grid(block), style));
            out.push('\n');
        }
        for m in &z.matrices {
            out.push_str(&heading(3, &format!("{} · {}", m.variant, m.direction)));
            out.push_str(&draw(&matrix_grid(m), style));
            out.push('\n');
        }
    }
    if let Some(grid) = drift_grid(report) {
        out.push_str(&heading(
            2,
            "Drift at the last stage (mean over old tasks, directions and seeds)",
        ));
        out.push_str(&draw(&grid, style));
    }
    if let Some(grid) = shares_grid(report) {
        out.push('\n');
        out.push_str(&heading(
            2,
            "Regularizer terms: share of the loss (%) per stage, mean ± std over seeds",
        ));
        out.push_str(&draw(&grid, style));
    }
    out
}

/// One row per variant, model, stage and term: its mean share of the loss.
pub fn shares_grid(report: &Report) -> Option<Grid> {
    if report.shares.is_empty() {
        return None;
    }
    let rows = report
        .shares
        .iter()
        .map(|s| {
            let percent: Vec<f64> = s.shares.iter().map(|x| 100.0 * x).collect();
            vec![
                s.variant.clone(),
                s.model.clone(),
                format!("{} ({})", s.stage, s.task),
                s.term.clone(),
                cell(&Stat::of(&percent)),
            ]
        })
        .collect();
    Some(Grid {
        groups: Vec::new(),
        header: ["variant", "model", "stage", "term", "share"]
            .map(str::to_string)
            .to_vec(),
        rows,
        rules_before: Vec::new(),
    })
}

/// The headline `lethe run` prints: a line per variant, its label left-aligned and
/// each figure right-aligned in a fixed 20-character column, so the lines of runs
/// of one pipeline line up when compared.
pub fn headline(headline: &Headline) -> String {
    let label_width = headline
        .rows
        .iter()
        .map(|(label, _)| width(label))
        .max()
        .unwrap_or(0)
        .max(width("variant"));
    let mut out = format!("{:<label_width$}", "variant");
    for column in &headline.columns {
        out.push_str(&format!("  {column:>20}"));
    }
    out.push('\n');
    for (label, cells) in &headline.rows {
        out.push_str(&format!("{label:<label_width$}"));
        for stat in cells {
            out.push_str(&format!("  {:>20}", cell(stat)));
        }
        out.push('\n');
    }
    out
}

/// What the numbers are: the run, the seeds, and how to read the rows.
pub fn preamble(report: &Report) -> String {
    let mut s = format!(
        "Run {} of pipeline \"{}\"; mean ± sample std over {} seed{}",
        report.run_id,
        report.pipeline,
        report.seeds,
        if report.seeds == 1 { "" } else { "s" }
    );
    if let Some(wall) = report.wall_seconds {
        s.push_str(&format!("; wall time {wall:.0} s"));
    }
    s.push_str(
        ".\nRows: each task after the last stage with the task known (its own gallery), their \
         average, the union gallery with every task's queries pooled (task unknown), then \
         forgetting, BWT and FWT (recall points). Columns: variants, grouped by indexing policy.\n",
    );
    s
}

pub fn cell(stat: &Option<Stat>) -> String {
    stat.as_ref().map_or_else(|| "-".to_string(), Stat::show)
}

pub fn block_grid(block: &Block) -> Grid {
    let groups = block
        .groups()
        .into_iter()
        .map(|(policy, n)| (policy.title().to_string(), n))
        .collect();
    let mut header = vec!["task".to_string()];
    header.extend(block.columns.iter().map(|c| c.header.clone()));
    let first_summary = block
        .rows
        .iter()
        .position(|r| r.kind != super::model::RowKind::Task);
    Grid {
        groups,
        header,
        rows: block
            .rows
            .iter()
            .map(|r| {
                let mut row = vec![r.label.clone()];
                row.extend(r.cells.iter().map(cell));
                row
            })
            .collect(),
        rules_before: first_summary.into_iter().collect(),
    }
}

pub fn matrix_grid(m: &Matrix) -> Grid {
    let mut header = vec!["after stage".to_string()];
    header.extend(m.tasks.iter().cloned());
    Grid {
        groups: Vec::new(),
        header,
        rows: m
            .stages
            .iter()
            .zip(&m.cells)
            .map(|((stage, task), cells)| {
                let mut row = vec![format!("{stage} ({task})")];
                row.extend(cells.iter().map(cell));
                row
            })
            .collect(),
        rules_before: Vec::new(),
    }
}

/// Variants (rows) by diagnostic (columns), at each variant's last stage.
pub fn drift_grid(report: &Report) -> Option<Grid> {
    if report.drift.is_empty() {
        return None;
    }
    let variants = super::model::unique(
        report
            .drift
            .iter()
            .flat_map(|chart| chart.series.iter().map(|(v, _)| v.as_str())),
    );
    let mut header = vec!["variant".to_string()];
    header.extend(
        report
            .drift
            .iter()
            .map(|c| format!("{} ({})", c.metric, c.modality)),
    );
    let rows = variants
        .iter()
        .map(|v| {
            let mut row = vec![v.to_string()];
            row.extend(report.drift.iter().map(|chart| {
                chart
                    .series
                    .iter()
                    .find(|(name, _)| name == v)
                    .and_then(|(_, points)| points.last())
                    .map_or_else(|| "-".to_string(), |(_, value)| format!("{value:.3}"))
            }));
            row
        })
        .collect();
    Some(Grid {
        groups: Vec::new(),
        header,
        rows,
        rules_before: Vec::new(),
    })
}

fn width(s: &str) -> usize {
    s.chars().count()
}

pub fn draw(grid: &Grid, style: Style) -> String {
    match style {
        Style::Text => draw_text(grid),
        Style::Markdown => draw_markdown(grid),
    }
}

fn draw_text(grid: &Grid) -> String {
    let n = grid.header.len();
    let mut widths: Vec<usize> = (0..n)
        .map(|c| {
            std::iter::once(&grid.header)
                .chain(&grid.rows)
                .map(|r| r.get(c).map_or(0, |s| width(s)))
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Widen a group's last column until its title fits over the span.
    let mut start = 1;
    for (title, span) in &grid.groups {
        let span_width: usize = widths[start..start + span].iter().sum::<usize>() + 2 * (span - 1);
        if width(title) > span_width {
            widths[start + span - 1] += width(title) - span_width;
        }
        start += span;
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let mut s = String::new();
        for (c, w) in widths.iter().enumerate() {
            let text = cells.get(c).map_or("", String::as_str);
            let pad = " ".repeat(w - width(text));
            if c == 0 {
                s.push_str(&format!("{text}{pad}"));
            } else {
                s.push_str(&format!("  {pad}{text}"));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    if !grid.groups.is_empty() {
        let mut s = " ".repeat(widths[0]);
        let mut start = 1;
        for (title, span) in &grid.groups {
            let span_width: usize =
                widths[start..start + span].iter().sum::<usize>() + 2 * (span - 1);
            s.push_str(&format!("  {title:^span_width$}"));
            start += span;
        }
        out.push_str(s.trim_end());
        out.push('\n');
    }
    line(&grid.header, &mut out);
    let total = widths.iter().sum::<usize>() + 2 * (n - 1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for (i, row) in grid.rows.iter().enumerate() {
        if grid.rules_before.contains(&i) {
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
        line(row, &mut out);
    }
    out
}

fn escape_markdown(s: &str) -> String {
    s.replace('|', "\\|")
}

fn draw_markdown(grid: &Grid) -> String {
    let row = |cells: &[String]| {
        format!(
            "| {} |\n",
            cells
                .iter()
                .map(|c| escape_markdown(c))
                .collect::<Vec<_>>()
                .join(" | ")
        )
    };
    let mut out = row(&grid.header);
    let mut align = vec![":--".to_string()];
    align.extend((1..grid.header.len()).map(|_| "--:".to_string()));
    out.push_str(&row(&align));
    if !grid.groups.is_empty() {
        // GitHub tables have one header row: the groups go in the first body row.
        let mut cells = vec!["*policy*".to_string()];
        for (title, span) in &grid.groups {
            cells.push(format!("*{title}*"));
            cells.extend((1..*span).map(|_| String::new()));
        }
        out.push_str(&row(&cells));
    }
    for (i, cells) in grid.rows.iter().enumerate() {
        if grid.rules_before.first().is_some_and(|&first| i >= first) {
            // Bold labels set the summary rows apart from the task rows.
            let mut cells = cells.clone();
            cells[0] = format!("**{}**", cells[0]);
            out.push_str(&row(&cells));
        } else {
            out.push_str(&row(cells));
        }
    }
    out
}
