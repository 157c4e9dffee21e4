//! How a manifest's split cuts images into tasks: the written form (a YAML map
//! per split) parsed into typed rules, every mistake named by its path in the
//! manifest (`splits.secoco.animals.match`).
//!
//! ```yaml
//! splits:
//!   secoco:
//!     overlap: first              # split options (reserved names)
//!     test_images: 1000
//!     animals: { supercategory: [animal], match: dominant }
//!     dogs:    { caption: "(?i)\\bdogs?\\b" }
//!   stream:                       # instance-incremental: random chunks, not rules
//!     random: { tasks: 3, seed: 7 }
//! ```

use indexmap::IndexMap;
use serde_json::Value;

/// The keys of a split that are options, not tasks.
pub const SPLIT_OPTIONS: [&str; 4] = ["overlap", "evaluate", "test_images", "random"];

/// The most chunks a `random` split may have.
const MAX_RANDOM_TASKS: u64 = 1000;

/// The most a caption regex may compile to: a manifest is untrusted input.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// How a task's listed values meet an image's values in a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Match {
    /// The image has one of the listed values.
    #[default]
    Any,
    /// Every value of the image is listed (an image with no value is not selected).
    All,
    /// The image's most frequent value (most annotated instances) is listed;
    /// with a tie for most, every tied value must be listed.
    Dominant,
}

impl Match {
    pub fn name(self) -> &'static str {
        match self {
            Match::Any => "any",
            Match::All => "all",
            Match::Dominant => "dominant",
        }
    }
}

/// What happens to an image that two tasks of a split select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// It is an error (the default: tasks are meant to be disjoint).
    #[default]
    Error,
    /// The first task in manifest order keeps it.
    First,
}

/// Which held-out part a split evaluates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Part {
    #[default]
    Test,
    /// The validation part: for choosing settings (λ) without touching the test part.
    Val,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Test => "test",
            Part::Val => "val",
        }
    }
}

/// One task: the images selected by every column rule and by the caption rule.
#[derive(Debug, Clone, Default)]
pub struct TaskRule {
    /// Column name to listed values.
    pub columns: IndexMap<String, Vec<String>>,
    pub matching: Match,
    /// Images with at least one caption this expression matches.
    pub caption: Option<regex::Regex>,
}

/// An instance-incremental stream (IncCLIP's setting): every image of the
/// dataset in one of `tasks` equal random chunks named `chunk1` .. `chunkN`,
/// drawn with `seed`, instead of tasks chosen by rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomChunks {
    pub tasks: usize,
    pub seed: u64,
}

/// A split: its tasks in order and its options.
#[derive(Debug, Clone, Default)]
pub struct SplitRules {
    /// Task names in order with their rules; a `random` split's chunks have
    /// empty rules (nothing selects by them: [`SplitRules::random`] does).
    pub tasks: IndexMap<String, TaskRule>,
    /// Set for a split of random chunks.
    pub random: Option<RandomChunks>,
    pub overlap: Overlap,
    pub evaluate: Part,
    /// At most this many evaluation images per task (the first by id hash).
    pub test_images: Option<usize>,
}

/// Parses a split's map. Errors are `path: what was expected`.
pub fn parse_split(name: &str, entries: &IndexMap<String, Value>) -> Result<SplitRules, String> {
    let mut rules = SplitRules::default();
    let here = |key: &str| format!("splits.{name}.{key}");
    let mut first_rule_task: Option<&str> = None;
    for (key, value) in entries {
        match key.as_str() {
            "overlap" => {
                rules.overlap = match value.as_str() {
                    Some("error") => Overlap::Error,
                    Some("first") => Overlap::First,
                    _ => {
                        return Err(format!(
                            "{}: expected `error` or `first`, found {}",
                            here(key),
                            show(value)
                        ))
                    }
                }
            }
            "evaluate" => {
                rules.evaluate = match value.as_str() {
                    Some("test") => Part::Test,
                    Some("val") => Part::Val,
                    _ => {
                        return Err(format!(
                            "{}: expected `test` or `val`, found {}",
                            here(key),
                            show(value)
                        ))
                    }
                }
            }
            "test_images" => {
                rules.test_images = match value.as_u64() {
                    Some(n) if n >= 1 => Some(n as usize),
                    _ => {
                        return Err(format!(
                            "{}: expected a number of images (1 or more), found {}",
                            here(key),
                            show(value)
                        ))
                    }
                }
            }
            "random" => {
                let chunks = parse_random(&here(key), value)?;
                for i in 1..=chunks.tasks {
                    rules.tasks.insert(format!("chunk{i}"), TaskRule::default());
                }
                rules.random = Some(chunks);
            }
            task => {
                first_rule_task.get_or_insert(task);
                let Value::Object(fields) = value else {
                    return Err(format!(
                        "{}: a task is a map such as `{{ column: [values] }}`, found {} (split options are {})",
                        here(task),
                        show(value),
                        SPLIT_OPTIONS.join(", ")
                    ));
                };
                let fields: IndexMap<String, Value> = fields.clone().into_iter().collect();
                rules
                    .tasks
                    .insert(task.to_string(), parse_task(&here(task), &fields)?);
            }
        }
    }
    if let (Some(_), Some(task)) = (rules.random, first_rule_task) {
        return Err(format!(
            "{}: a `random` split cuts its tasks itself (`chunk1` ..); it takes no task rules",
            here(task)
        ));
    }
    if rules.tasks.is_empty() {
        return Err(format!("split `{name}` has no tasks"));
    }
    Ok(rules)
}

/// `random: { tasks: n, seed: s }`.
fn parse_random(at: &str, value: &Value) -> Result<RandomChunks, String> {
    let Value::Object(fields) = value else {
        return Err(format!(
            "{at}: expected `{{ tasks: n, seed: s }}`, found {}",
            show(value)
        ));
    };
    let mut tasks = None;
    let mut seed = None;
    for (key, value) in fields {
        match key.as_str() {
            "tasks" => match value.as_u64() {
                Some(n) if (1..=MAX_RANDOM_TASKS).contains(&n) => tasks = Some(n as usize),
                _ => {
                    return Err(format!(
                        "{at}.tasks: expected a number of chunks from 1 to {MAX_RANDOM_TASKS}, found {}",
                        show(value)
                    ))
                }
            },
            "seed" => match value.as_u64() {
                Some(s) => seed = Some(s),
                None => {
                    return Err(format!(
                        "{at}.seed: expected a whole number (0 or more), found {}",
                        show(value)
                    ))
                }
            },
            other => {
                return Err(format!(
                    "{at}.{other}: unknown key; `random` takes `tasks` and `seed`"
                ))
            }
        }
    }
    match (tasks, seed) {
        (Some(tasks), Some(seed)) => Ok(RandomChunks { tasks, seed }),
        (None, _) => Err(format!("{at}: missing `tasks` (the number of chunks)")),
        (_, None) => Err(format!("{at}: missing `seed` (chunks are drawn with it)")),
    }
}

fn parse_task(at: &str, fields: &IndexMap<String, Value>) -> Result<TaskRule, String> {
    let mut task = TaskRule {
        columns: IndexMap::new(),
        matching: Match::Any,
        caption: None,
    };
    let mut match_given = false;
    for (key, value) in fields {
        match key.as_str() {
            "match" => {
                match_given = true;
                task.matching = match value.as_str() {
                    Some("any") => Match::Any,
                    Some("all") => Match::All,
                    Some("dominant") => Match::Dominant,
                    _ => {
                        return Err(format!(
                            "{at}.match: expected `any`, `all` or `dominant`, found {}",
                            show(value)
                        ))
                    }
                }
            }
            "caption" => {
                let Some(source) = value.as_str() else {
                    return Err(format!(
                        "{at}.caption: expected a regular expression in quotes, found {}",
                        show(value)
                    ));
                };
                let regex = regex::RegexBuilder::new(source)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        format!(
                            "{at}.caption: not a valid regular expression: {}",
                            first_line(&e.to_string())
                        )
                    })?;
                task.caption = Some(regex);
            }
            column => {
                let values = match value {
                    Value::Array(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            scalar(v).ok_or_else(|| {
                                format!("{at}.{column}[{i}]: expected a value, found {}", show(v))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    other => vec![scalar(other).ok_or_else(|| {
                        format!(
                            "{at}.{column}: expected a list of values, found {}",
                            show(other)
                        )
                    })?],
                };
                if values.is_empty() {
                    return Err(format!(
                        "{at}.{column}: the list is empty, so the task selects nothing"
                    ));
                }
                task.columns.insert(column.to_string(), values);
            }
        }
    }
    if task.columns.is_empty() && task.caption.is_none() {
        return Err(format!(
            "{at}: the task selects nothing: give `column: [values]` or `caption: \"regex\"`"
        ));
    }
    if match_given && task.columns.is_empty() {
        return Err(format!(
            "{at}.match: `match` applies to column rules, and the task has none"
        ));
    }
    Ok(task)
}

/// A YAML scalar as text (numbers as written: category ids are numbers).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A value for an error message: short, one line.
fn show(v: &Value) -> String {
    let text = match v {
        Value::String(s) => format!("`{s}`"),
        Value::Null => "nothing".to_string(),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a map".to_string(),
        other => format!("`{other}`"),
    };
    text.chars().take(60).collect()
}

fn first_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_string()
}
