//! The shape of a call signature and of a word-valued choice. The tables
//! themselves are in `schema.rs`; the checker reads every call through them.

/// Allowed range of a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// `> 0`
    Positive,
    /// `>= 0`
    NonNegative,
    /// `[0, 1)`
    UnitOpen,
    /// `(0, 1]`
    UnitPositive,
}

impl Range {
    pub(crate) fn admits(self, x: f64) -> bool {
        match self {
            Range::Positive => x > 0.0,
            Range::NonNegative => x >= 0.0,
            Range::UnitOpen => (0.0..1.0).contains(&x),
            Range::UnitPositive => x > 0.0 && x <= 1.0,
        }
    }

    /// How messages say the range ("`lr` of `adamw` must be greater than 0").
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Range::Positive => "greater than 0",
            Range::NonNegative => "0 or more",
            Range::UnitOpen => "at least 0 and below 1",
            Range::UnitPositive => "above 0 and at most 1",
        }
    }
}

/// What a call parameter accepts.
#[derive(Debug, Clone, Copy)]
pub enum ParamType {
    /// A finite number in a range.
    Number(Range),
    /// A whole number in `min..=max`.
    Whole { min: u64, max: u64 },
    /// One of these words: the words of a [`Choice`], so that every word read
    /// converts to its value.
    Word(&'static [&'static str]),
    /// A list of at most `max_len` whole numbers in `min..=max`. Messages name one
    /// item `item` ("a hidden size") and count the list in `unit` ("layers").
    WholeList {
        min: u64,
        max: u64,
        max_len: usize,
        item: &'static str,
        unit: &'static str,
    },
}

/// What a parameter is when the pipeline does not give it.
#[derive(Debug, Clone, Copy)]
pub enum ParamDefault {
    Number(f64),
    Whole(u64),
    Word(&'static str),
    WholeList(&'static [u64]),
    /// Computed by the call's builder from other parameters; the text says how.
    Computed(&'static str),
    /// The pipeline must give it.
    Required,
}

/// One parameter of a call: its name, what it accepts, its default.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub accepts: ParamType,
    pub default: ParamDefault,
}

// Constructors that tie a default to the type it must have.

pub(crate) const fn number(name: &'static str, range: Range, default: f64) -> Param {
    Param {
        name,
        accepts: ParamType::Number(range),
        default: ParamDefault::Number(default),
    }
}

pub(crate) const fn whole(name: &'static str, min: u64, max: u64, default: u64) -> Param {
    Param {
        name,
        accepts: ParamType::Whole { min, max },
        default: ParamDefault::Whole(default),
    }
}

/// A whole number whose default the builder computes (`how` documents it).
pub(crate) const fn whole_computed(
    name: &'static str,
    min: u64,
    max: u64,
    how: &'static str,
) -> Param {
    Param {
        name,
        accepts: ParamType::Whole { min, max },
        default: ParamDefault::Computed(how),
    }
}

pub(crate) const fn word(
    name: &'static str,
    words: &'static [&'static str],
    default: &'static str,
) -> Param {
    Param {
        name,
        accepts: ParamType::Word(words),
        default: ParamDefault::Word(default),
    }
}

pub(crate) const fn flag(name: &'static str, default: bool) -> Param {
    word(
        name,
        <bool as Choice>::WORDS,
        if default { "true" } else { "false" },
    )
}

/// One call form of a call-valued setting. `kind` is what the checker matches on
/// to build the typed value: matches over it are exhaustive, so a form added here
/// without a builder arm does not compile.
pub struct Signature<K: 'static> {
    pub name: &'static str,
    pub kind: K,
    pub params: &'static [Param],
}

pub(crate) const fn call<K>(name: &'static str, kind: K, params: &'static [Param]) -> Signature<K> {
    Signature { name, kind, params }
}

/// The call forms a setting (or several settings, like both model branches) takes.
pub struct CallTable<K: 'static> {
    pub settings: &'static [&'static str],
    pub forms: &'static [Signature<K>],
}

impl<K> CallTable<K> {
    pub fn form(&self, name: &str) -> Option<&'static Signature<K>> {
        self.forms.iter().find(|f| f.name == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        self.forms.iter().map(|f| f.name)
    }

    /// How messages name a parameter's owner: the call (`lambda` of `ewc`), or
    /// the setting where one call serves several (`embed` of `model.text`), so
    /// the message says which.
    pub(crate) fn owner<'a>(&self, setting: &'a str, call: &'a str) -> &'a str {
        if self.settings.len() > 1 {
            setting
        } else {
            call
        }
    }

    pub(crate) fn erased(&self) -> impl Iterator<Item = CallForm> + '_ {
        self.forms.iter().map(|f| CallForm {
            settings: self.settings,
            name: f.name,
            params: f.params,
        })
    }
}

/// A call form without its checker-side kind: what docs and tests iterate.
#[derive(Debug, Clone, Copy)]
pub struct CallForm {
    /// The settings that take this call.
    pub settings: &'static [&'static str],
    pub name: &'static str,
    pub params: &'static [Param],
}

/// A word-valued choice: the words a pipeline may write and the value each means,
/// in the order messages list them. Implemented with `choices!` in `schema.rs`,
/// which writes each word beside its value.
pub(crate) trait Choice: Copy + PartialEq + 'static {
    const WORDS: &'static [&'static str];
    const VALUES: &'static [Self];

    fn from_word(word: &str) -> Option<Self> {
        let at = Self::WORDS.iter().position(|w| *w == word)?;
        Self::VALUES.get(at).copied()
    }
}

/// Implements [`Choice`] from `Type { "word" => value, ... }` lines.
macro_rules! choices {
    ($($ty:ty { $($word:literal => $value:expr),+ $(,)? })+) => {$(
        impl Choice for $ty {
            const WORDS: &'static [&'static str] = &[$($word),+];
            const VALUES: &'static [Self] = &[$($value),+];
        }
    )+};
}
pub(crate) use choices;
