//! The shape of a result table: the identifying columns every table starts with,
//! then the columns of its row type, each declared once with how a row fills it and
//! is filled from it. The writer ([`super::write`]) and the reader
//! ([`super::read`]) both go through these declarations, so a column's name and
//! type cannot differ between them.

/// How a row of type `R` fills one column and is filled back from it. The getter
/// and the setter sit beside the column's name: one declaration serves the writer
/// and the reader.
pub enum Cells<R> {
    Text(fn(&R) -> &str, fn(&mut R, String)),
    UInt64(fn(&R) -> u64, fn(&mut R, u64)),
    Float64(fn(&R) -> f64, fn(&mut R, f64)),
    OptionalUInt64(fn(&R) -> Option<u64>, fn(&mut R, Option<u64>)),
    OptionalFloat64(fn(&R) -> Option<f64>, fn(&mut R, Option<f64>)),
    /// One float64 column per name, `<prefix><name>` (the column's name is the
    /// prefix), in the order the names first appear; null where a row lacks it.
    Named(fn(&R) -> &[(String, f64)], fn(&mut R, Vec<(String, f64)>)),
    /// FixedSizeList<float32>, as wide as the first row's vector.
    Vector(fn(&R) -> &[f32], fn(&mut R, Vec<f32>)),
}

/// One declared column (or, for [`Cells::Named`], a family of columns).
pub struct Column<R> {
    pub name: &'static str,
    pub cells: Cells<R>,
}

impl<R> Column<R> {
    pub const fn text(name: &'static str, get: fn(&R) -> &str, set: fn(&mut R, String)) -> Self {
        Column {
            name,
            cells: Cells::Text(get, set),
        }
    }
    pub const fn uint64(name: &'static str, get: fn(&R) -> u64, set: fn(&mut R, u64)) -> Self {
        Column {
            name,
            cells: Cells::UInt64(get, set),
        }
    }
    pub const fn float64(name: &'static str, get: fn(&R) -> f64, set: fn(&mut R, f64)) -> Self {
        Column {
            name,
            cells: Cells::Float64(get, set),
        }
    }
    pub const fn optional_uint64(
        name: &'static str,
        get: fn(&R) -> Option<u64>,
        set: fn(&mut R, Option<u64>),
    ) -> Self {
        Column {
            name,
            cells: Cells::OptionalUInt64(get, set),
        }
    }
    pub const fn optional_float64(
        name: &'static str,
        get: fn(&R) -> Option<f64>,
        set: fn(&mut R, Option<f64>),
    ) -> Self {
        Column {
            name,
            cells: Cells::OptionalFloat64(get, set),
        }
    }
    pub const fn named(
        prefix: &'static str,
        get: fn(&R) -> &[(String, f64)],
        set: fn(&mut R, Vec<(String, f64)>),
    ) -> Self {
        Column {
            name: prefix,
            cells: Cells::Named(get, set),
        }
    }
    pub const fn vector(
        name: &'static str,
        get: fn(&R) -> &[f32],
        set: fn(&mut R, Vec<f32>),
    ) -> Self {
        Column {
            name,
            cells: Cells::Vector(get, set),
        }
    }

    /// The column's Arrow type as error messages name it.
    pub fn type_name(&self) -> &'static str {
        match self.cells {
            Cells::Text(..) => "utf8",
            Cells::UInt64(..) | Cells::OptionalUInt64(..) => "uint64",
            Cells::Float64(..) | Cells::OptionalFloat64(..) | Cells::Named(..) => "float64",
            Cells::Vector(..) => "FixedSizeList<float32>",
        }
    }

    /// Whether the column may hold nulls; the reader refuses a null anywhere else.
    pub fn may_be_null(&self) -> bool {
        matches!(
            self.cells,
            Cells::OptionalUInt64(..) | Cells::OptionalFloat64(..) | Cells::Named(..)
        )
    }

    /// The Arrow field's nullable flag: every scalar column is declared nullable
    /// (`docs/results.md`: readers then treat all columns alike); vectors are not.
    pub fn arrow_nullable(&self) -> bool {
        !matches!(self.cells, Cells::Vector(..))
    }

    /// The name `docs/results.md` gives the column: a family reads `term_<name>`.
    pub fn documented_name(&self) -> String {
        match self.cells {
            Cells::Named(..) => format!("{}<name>", self.name),
            _ => self.name.to_string(),
        }
    }
}

/// A row type of one result table: its file and its columns after the
/// identifying ones, in the table's order.
pub trait ResultRow: Default + 'static {
    /// The table's file in the run directory.
    const FILE: &'static str;
    const COLUMNS: &'static [Column<Self>];
}

/// Which run, pipeline, variant and seed a row belongs to, and the label of the
/// value each swept setting takes: the columns every table starts with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// The run directory's name (its UTC start time).
    pub run_id: String,
    pub pipeline: String,
    /// The variant's label (`ft, reindex`).
    pub variant: String,
    /// Null on `summary.arrow`'s `mean` and `std` rows (figures over seeds).
    pub seed: Option<u64>,
    /// (swept setting, label of its value), in axis order; a column each.
    pub axes: Vec<(String, String)>,
}

/// The fixed identifying columns, in order; the swept settings' columns follow them.
pub const IDENTITY: &[Column<Identity>] = &[
    Column::text("run_id", |i| &i.run_id, |i, v| i.run_id = v),
    Column::text("pipeline", |i| &i.pipeline, |i, v| i.pipeline = v),
    Column::text("variant", |i| &i.variant, |i, v| i.variant = v),
    Column::optional_uint64("seed", |i| i.seed, |i, v| i.seed = v),
];

/// The axis of `variant` lines has its own column name: `variant` is the label.
const VARIANT_LINE_AXIS: (&str, &str) = ("variant", "variant_line");

/// The column of a swept setting: its dotted path (`train.regularizer`), or
/// `variant_line` for the axis of `variant` lines.
pub fn axis_column(axis: &str) -> &str {
    if axis == VARIANT_LINE_AXIS.0 {
        VARIANT_LINE_AXIS.1
    } else {
        axis
    }
}

/// The swept setting a column names: [`axis_column`] read backwards.
pub fn axis_of_column(column: &str) -> &str {
    if column == VARIANT_LINE_AXIS.1 {
        VARIANT_LINE_AXIS.0
    } else {
        column
    }
}

/// A table's columns as `docs/results.md` lists them: its file, the identifying
/// columns and the row's own (families as `term_<name>`).
#[derive(Debug, Clone, PartialEq)]
pub struct TableColumns {
    pub file: &'static str,
    pub identity: Vec<String>,
    pub own: Vec<String>,
}

impl TableColumns {
    pub fn of<R: ResultRow>() -> Self {
        TableColumns {
            file: R::FILE,
            identity: IDENTITY.iter().map(Column::documented_name).collect(),
            own: R::COLUMNS.iter().map(Column::documented_name).collect(),
        }
    }
}
