//! Raw lists: the JSON-lines files `lethe featurize` reads and `lethe import`
//! writes. One object per line: `id` and other string fields; a metadata field
//! may also be a list of strings (a multi-valued column, such as COCO's
//! `category` with one entry per annotated instance). Every line has the same
//! keys. Errors name the file, the line and the key.
//!
//! Before a dataset is featurized, `lethe validate` and `lethe data inspect`
//! read its tasks from these lists ([`raw_table`]: a table without features).

use super::error::DataError;
use super::tables::Table;
use indexmap::IndexMap;
use std::collections::HashMap;
use std::path::Path;

/// The largest raw list read: COCO's 616,767 captions are about 90 MB.
pub const MAX_RAW_BYTES: u64 = 8 << 30;

/// A field of a raw record.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    One(String),
    Many(Vec<String>),
}

impl RawValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RawValue::One(s) => Some(s),
            RawValue::Many(_) => None,
        }
    }
}

/// A parsed raw list: records with their line numbers (1-based).
#[derive(Debug, Clone, Default)]
pub struct RawList {
    /// Field names in the order of the first line.
    pub keys: Vec<String>,
    /// Which fields hold lists.
    pub list_keys: Vec<String>,
    pub records: Vec<IndexMap<String, RawValue>>,
    pub lines: Vec<usize>,
}

impl RawList {
    /// A string field of record `i` (checked present at reading).
    pub fn text(&self, i: usize, key: &str) -> &str {
        self.records[i]
            .get(key)
            .and_then(RawValue::as_str)
            .unwrap_or_default()
    }
}

/// Reads and checks a raw list; `required` fields must be strings on every line.
pub fn read_raw_list(path: &Path, required: &[&str]) -> Result<RawList, DataError> {
    let text = crate::files::read_text_bounded(path, MAX_RAW_BYTES)?;
    let at = |line: usize, m: String| DataError::invalid(path, format!("line {line}: {m}"));
    let mut list = RawList::default();
    let mut first_line_of: HashMap<String, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let object: IndexMap<String, serde_json::Value> = serde_json::from_str(line)
            .map_err(|e| at(number, format!("not a JSON object ({e})")))?;
        let mut record = IndexMap::with_capacity(object.len());
        for (key, value) in object {
            let value = match value {
                serde_json::Value::String(s) => RawValue::One(s),
                serde_json::Value::Array(items) => RawValue::Many(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(j, v)| match v {
                            serde_json::Value::String(s) => Ok(s),
                            other => Err(at(
                                number,
                                format!("`{key}[{j}]` must be a string, found {}", kind(&other)),
                            )),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                other => {
                    return Err(at(
                        number,
                        format!(
                            "`{key}` must be a string or a list of strings, found {}",
                            kind(&other)
                        ),
                    ))
                }
            };
            record.insert(key, value);
        }
        if list.records.is_empty() {
            list.keys = record.keys().cloned().collect();
            for name in required.iter().chain(["id"].iter()) {
                if !record.contains_key(*name) {
                    return Err(at(number, format!("no `{name}` field")));
                }
            }
            list.list_keys = record
                .iter()
                .filter(|(_, v)| matches!(v, RawValue::Many(_)))
                .map(|(k, _)| k.clone())
                .collect();
            for name in required.iter().chain(["id"].iter()) {
                if list.list_keys.iter().any(|k| k == name) {
                    return Err(at(
                        number,
                        format!("`{name}` must be a string, found a list"),
                    ));
                }
            }
        } else {
            if let Some(missing) = list.keys.iter().find(|k| !record.contains_key(*k)) {
                return Err(at(
                    number,
                    format!("no `{missing}` field (line {} has one)", list.lines[0]),
                ));
            }
            if let Some(extra) = record.keys().find(|k| !list.keys.contains(k)) {
                return Err(at(
                    number,
                    format!(
                        "field `{extra}` is not on line {}; every line has the same fields",
                        list.lines[0]
                    ),
                ));
            }
            for (key, value) in &record {
                let is_list = list.list_keys.contains(key);
                if is_list != matches!(value, RawValue::Many(_)) {
                    return Err(at(
                        number,
                        format!(
                            "`{key}` is {} here but {} on line {}",
                            if is_list { "a string" } else { "a list" },
                            if is_list { "a list" } else { "a string" },
                            list.lines[0]
                        ),
                    ));
                }
            }
        }
        let id = record
            .get("id")
            .and_then(RawValue::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(first) = first_line_of.insert(id.clone(), number) {
            return Err(at(
                number,
                format!("duplicate id \"{id}\" (also on line {first})"),
            ));
        }
        list.records.push(record);
        list.lines.push(number);
    }
    if list.records.is_empty() {
        return Err(DataError::invalid(path, "the list has no records"));
    }
    Ok(list)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The table a raw list will become, without features (`dim` 0): ids and every
/// field but `skip` as a text or list column.
pub fn raw_table(list: &RawList, skip: &[&str]) -> Table {
    let mut table = Table {
        ids: (0..list.records.len())
            .map(|i| list.text(i, "id").to_string())
            .collect(),
        ..Table::default()
    };
    for key in &list.keys {
        if key == "id" || skip.contains(&key.as_str()) {
            continue;
        }
        if list.list_keys.contains(key) {
            let values = list
                .records
                .iter()
                .map(|r| match r.get(key) {
                    Some(RawValue::Many(v)) => v.clone(),
                    _ => Vec::new(),
                })
                .collect();
            table.lists.insert(key.clone(), values);
        } else {
            let values = (0..list.records.len())
                .map(|i| list.text(i, key).to_string())
                .collect();
            table.columns.insert(key.clone(), values);
        }
    }
    table
}
