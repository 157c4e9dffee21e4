//! Checking the `train` and `evaluate` sections.

use super::VariantChecker;
use crate::diagnostics::{Diagnostic, Span};
use crate::lang::ast::ValueKind;
use crate::lang::experiment::*;
use crate::lang::values::Range;

const MAX_EPOCHS: u64 = 100_000;
const MAX_BATCH: u64 = 1 << 20;
const MAX_MEMORY: u64 = 100_000_000;
const MAX_K: u64 = 1_000_000;

impl VariantChecker<'_> {
    pub(super) fn train(&mut self, schedule: Option<Schedule>) -> Option<TrainSpec> {
        let loss = self.loss();
        let optimizer = self.optimizer();
        let schedule_lr = self.schedule_lr();
        let epochs = self
            .value("train.epochs")
            .and_then(|v| self.reader.int(v, "`train.epochs`", 1, MAX_EPOCHS));
        let batch = self
            .value("train.batch")
            .and_then(|v| self.reader.int(v, "`train.batch`", 2, MAX_BATCH));
        let negatives_setting = self.setting("train.negatives");
        let negatives = negatives_setting.and_then(|s| {
            self.reader
                .word(
                    &s.value,
                    "`train.negatives`",
                    &["within_task", "cross_task"],
                )
                .map(|w| {
                    if w == "cross_task" {
                        Negatives::CrossTask
                    } else {
                        Negatives::WithinTask
                    }
                })
        });
        let decouple_setting = self.setting("train.decouple");
        let decouple =
            decouple_setting.and_then(|s| self.reader.boolean(&s.value, "`train.decouple`"));
        let grad_clip = self.value("train.grad_clip").and_then(|v| match &v.kind {
            ValueKind::Word(w) if w == "none" => Some(None),
            _ => self
                .reader
                .float(v, "`train.grad_clip`", Range::Positive)
                .map(Some),
        });
        let log = self.value("train.log").and_then(|v| {
            self.reader
                .word(v, "`train.log`", &["step", "epoch"])
                .map(|w| {
                    if w == "step" {
                        LogEvery::Step
                    } else {
                        LogEvery::Epoch
                    }
                })
        });
        let regularizer = self.regularizer(decouple);

        // Combinations that cannot mean anything.
        if let (Some(Negatives::CrossTask), Some(Schedule::Sequential), Some(s)) =
            (negatives, schedule, negatives_setting)
        {
            let mut d = Diagnostic::error("`negatives = cross_task` needs `schedule = joint`")
                .at(s.value.span, "cross-task negatives")
                .note("in a sequential schedule each batch holds one task, so cross-task pairs never meet");
            if let Some(sched) = self
                .settings
                .get("schedule")
                .filter(|s| s.value.span.file != self.defaults_file())
            {
                d = d.also(sched.value.span, "sequential here");
            }
            self.reader.error(d);
        }
        if let (Some(Schedule::Joint), Some((terms, span))) = (schedule, &regularizer) {
            if !terms.is_empty() {
                self.reader.error(
                    Diagnostic::error("a continual regularizer needs `schedule = sequential`")
                        .at(*span, "regularizer")
                        .note("a joint schedule learns every task at once: there is no earlier model to protect"),
                );
            }
        }
        Some(TrainSpec {
            loss: loss?,
            optimizer: optimizer?,
            schedule_lr: schedule_lr?,
            epochs: epochs? as u32,
            batch: batch? as usize,
            negatives: negatives?,
            regularizer: regularizer?.0,
            decouple: decouple?,
            grad_clip: grad_clip?,
            log: log?,
        })
    }

    fn defaults_file(&self) -> usize {
        self.sources
            .find(std::path::Path::new("<defaults>"))
            .unwrap_or(usize::MAX)
    }

    fn loss(&mut self) -> Option<LossSpec> {
        let call = self.call(
            "train.loss",
            &[
                ("triplet", &["margin", "negatives", "reduction"]),
                ("infonce", &["temperature", "learnable"]),
            ],
        )?;
        let r = &mut self.reader;
        match call.name {
            "triplet" => {
                let margin = call.arg("margin").map_or(Some(0.2), |v| {
                    r.float(v, "`margin` of `triplet`", Range::NonNegative)
                });
                let negatives =
                    call.arg("negatives")
                        .map_or(Some(TripletNegatives::Hardest), |v| {
                            r.word(v, "`negatives` of `triplet`", &["hardest", "all"])
                                .map(|w| {
                                    if w == "all" {
                                        TripletNegatives::All
                                    } else {
                                        TripletNegatives::Hardest
                                    }
                                })
                        });
                let reduction = call.arg("reduction").map_or(Some(Reduction::Sum), |v| {
                    r.word(v, "`reduction` of `triplet`", &["sum", "mean"])
                        .map(|w| {
                            if w == "mean" {
                                Reduction::Mean
                            } else {
                                Reduction::Sum
                            }
                        })
                });
                Some(LossSpec::Triplet {
                    margin: margin?,
                    negatives: negatives?,
                    reduction: reduction?,
                })
            }
            _ => {
                let temperature = call.arg("temperature").map_or(Some(0.07), |v| {
                    r.float(v, "`temperature` of `infonce`", Range::Positive)
                });
                let learnable = call
                    .arg("learnable")
                    .map_or(Some(false), |v| r.boolean(v, "`learnable` of `infonce`"));
                Some(LossSpec::Infonce {
                    temperature: temperature?,
                    learnable: learnable?,
                })
            }
        }
    }

    fn optimizer(&mut self) -> Option<OptimizerSpec> {
        let call = self.call(
            "train.optimizer",
            &[
                ("adamw", &["lr", "weight_decay", "beta1", "beta2", "eps"]),
                ("sgd", &["lr", "momentum", "weight_decay"]),
            ],
        )?;
        let r = &mut self.reader;
        let name = call.name;
        let mut num = |key: &str, default: f64, range: Range| {
            call.arg(key).map_or(Some(default), |v| {
                r.float(v, &format!("`{key}` of `{name}`"), range)
            })
        };
        match name {
            "adamw" => {
                let lr = num("lr", 2e-4, Range::Positive);
                let weight_decay = num("weight_decay", 1e-4, Range::NonNegative);
                let beta1 = num("beta1", 0.9, Range::UnitOpen);
                let beta2 = num("beta2", 0.999, Range::UnitOpen);
                let eps = num("eps", 1e-8, Range::Positive);
                Some(OptimizerSpec::Adamw {
                    lr: lr?,
                    weight_decay: weight_decay?,
                    beta1: beta1?,
                    beta2: beta2?,
                    eps: eps?,
                })
            }
            _ => {
                let lr = num("lr", 0.1, Range::Positive);
                let momentum = num("momentum", 0.9, Range::UnitOpen);
                let weight_decay = num("weight_decay", 0.0, Range::NonNegative);
                Some(OptimizerSpec::Sgd {
                    lr: lr?,
                    momentum: momentum?,
                    weight_decay: weight_decay?,
                })
            }
        }
    }

    fn schedule_lr(&mut self) -> Option<LrSchedule> {
        let call = self.call(
            "train.schedule_lr",
            &[
                ("constant", &[]),
                ("step", &["every", "gamma"]),
                ("cosine", &["warmup"]),
            ],
        )?;
        let r = &mut self.reader;
        match call.name {
            "constant" => Some(LrSchedule::Constant),
            "step" => {
                let every = call
                    .arg("every")
                    .map_or(Some(10), |v| r.int(v, "`every` of `step`", 1, MAX_EPOCHS));
                let gamma = call.arg("gamma").map_or(Some(0.1), |v| {
                    r.float(v, "`gamma` of `step`", Range::UnitPositive)
                });
                Some(LrSchedule::Step {
                    every: every? as u32,
                    gamma: gamma?,
                })
            }
            _ => {
                let warmup = call.arg("warmup").map_or(Some(0.0), |v| {
                    r.float(v, "`warmup` of `cosine`", Range::UnitOpen)
                });
                Some(LrSchedule::Cosine { warmup: warmup? })
            }
        }
    }

    /// The regularizer's terms and the span of the whole value.
    fn regularizer(&mut self, decouple: Option<bool>) -> Option<(Vec<RegularizerSpec>, Span)> {
        let setting = self.setting("train.regularizer")?;
        let value = self.reader.plain(&setting.value);
        let terms: Vec<&crate::lang::ast::Value> = match &value.kind {
            ValueKind::Sum(terms) => terms.iter().collect(),
            _ => vec![value],
        };
        let overrides = self.overrides("train.regularizer");
        if terms.len() > 1 {
            if let Some((_, s)) = overrides.first() {
                self.reader.error(
                    Diagnostic::error("a parameter of a `+` combination cannot be set by path")
                        .at(s.key_span, "ambiguous")
                        .hint("set the whole value: `train.regularizer = ewc(lambda = 10) + replay(memory = 200)`"),
                );
                return None;
            }
        }
        let signatures: &[(&str, &[&str])] = &[
            ("none", &[]),
            ("ewc", &["lambda", "accumulate", "on"]),
            ("mas", &["lambda", "on"]),
            ("modx", &["alpha", "temperature", "correct"]),
            ("distill", &["lambda", "temperature"]),
            ("replay", &["memory", "per_batch", "sampler"]),
        ];
        let mut out: Vec<RegularizerSpec> = Vec::new();
        let mut names: Vec<(&str, Span)> = Vec::new();
        let mut ok = true;
        for term in &terms {
            let Some(call) = self
                .reader
                .call(term, "`train.regularizer`", signatures, &overrides)
            else {
                ok = false;
                continue;
            };
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == call.name) {
                self.reader.error(
                    Diagnostic::error(format!("`{}` appears twice in the regularizer", call.name))
                        .at(call.span, "again here")
                        .also(*first, "first here"),
                );
                ok = false;
                continue;
            }
            names.push((call.name, call.span));
            if call.name == "none" {
                if terms.len() > 1 {
                    self.reader.error(
                        Diagnostic::error("`none` cannot be combined with other regularizers")
                            .at(call.span, "remove this term"),
                    );
                    ok = false;
                }
                continue;
            }
            match self.regularizer_term(&call, decouple) {
                Some(r) => out.push(r),
                None => ok = false,
            }
        }
        ok.then_some((out, value.span))
    }

    fn regularizer_term(
        &mut self,
        call: &crate::lang::values::Call<'_>,
        decouple: Option<bool>,
    ) -> Option<RegularizerSpec> {
        let name = call.name;
        let what = |p: &str| format!("`{p}` of `{name}`");
        let r = &mut self.reader;
        let coverage = |r: &mut crate::lang::values::Reader| {
            let on = call.arg("on").map_or(Some(Coverage::Both), |v| {
                r.word(v, &what("on"), &["both", "image", "text", "query"])
                    .map(|w| match w {
                        "image" => Coverage::Image,
                        "text" => Coverage::Text,
                        "query" => Coverage::Query,
                        _ => Coverage::Both,
                    })
            });
            if on == Some(Coverage::Query) && decouple == Some(false) {
                r.error(
                    Diagnostic::error("`on = query` needs `train.decouple = true`")
                        .at(call.arg_span("on"), "query branch")
                        .note("only a model trained for one direction has a single query branch"),
                );
                return None;
            }
            on
        };
        match name {
            "ewc" => {
                let lambda = call.arg("lambda").map_or(Some(1.0), |v| {
                    r.float(v, &what("lambda"), Range::NonNegative)
                });
                let accumulate = call.arg("accumulate").map_or(Some(Accumulate::Sum), |v| {
                    r.word(v, &what("accumulate"), &["sum", "mean"]).map(|w| {
                        if w == "mean" {
                            Accumulate::Mean
                        } else {
                            Accumulate::Sum
                        }
                    })
                });
                let on = coverage(r);
                Some(RegularizerSpec::Ewc {
                    lambda: lambda?,
                    accumulate: accumulate?,
                    on: on?,
                })
            }
            "mas" => {
                let lambda = call.arg("lambda").map_or(Some(1.0), |v| {
                    r.float(v, &what("lambda"), Range::NonNegative)
                });
                let on = coverage(r);
                Some(RegularizerSpec::Mas {
                    lambda: lambda?,
                    on: on?,
                })
            }
            "modx" => {
                let alpha = call.arg("alpha").map_or(Some(20.0), |v| {
                    r.float(v, &what("alpha"), Range::NonNegative)
                });
                let temperature = call.arg("temperature").map_or(Some(1.0), |v| {
                    r.float(v, &what("temperature"), Range::Positive)
                });
                let correct = call
                    .arg("correct")
                    .map_or(Some(true), |v| r.boolean(v, &what("correct")));
                Some(RegularizerSpec::Modx {
                    alpha: alpha?,
                    temperature: temperature?,
                    correct: correct?,
                })
            }
            "distill" => {
                let lambda = call.arg("lambda").map_or(Some(1.0), |v| {
                    r.float(v, &what("lambda"), Range::NonNegative)
                });
                let temperature = call.arg("temperature").map_or(Some(1.0), |v| {
                    r.float(v, &what("temperature"), Range::Positive)
                });
                Some(RegularizerSpec::Distill {
                    lambda: lambda?,
                    temperature: temperature?,
                })
            }
            _ => {
                let memory = call
                    .arg("memory")
                    .map_or(Some(200), |v| r.int(v, &what("memory"), 1, MAX_MEMORY));
                let per_batch = call
                    .arg("per_batch")
                    .map_or(Some(16.min(memory.unwrap_or(16))), |v| {
                        r.int(v, &what("per_batch"), 1, MAX_BATCH)
                    });
                let sampler = call.arg("sampler").map_or(Some(Sampler::Reservoir), |v| {
                    r.word(v, &what("sampler"), &["reservoir", "balanced"])
                        .map(|w| {
                            if w == "balanced" {
                                Sampler::Balanced
                            } else {
                                Sampler::Reservoir
                            }
                        })
                });
                if let (Some(m), Some(p)) = (memory, per_batch) {
                    if p > m {
                        r.error(
                            Diagnostic::error(format!(
                                "{} = {p} is more than the memory ({m} pairs)",
                                what("per_batch")
                            ))
                            .at(call.arg_span("per_batch"), "too many")
                            .hint("each batch draws at most `memory` replayed pairs"),
                        );
                        return None;
                    }
                }
                Some(RegularizerSpec::Replay {
                    memory: memory? as usize,
                    per_batch: per_batch? as usize,
                    sampler: sampler?,
                })
            }
        }
    }

    pub(super) fn evaluate(&mut self) -> Option<EvaluateSpec> {
        let recall = self.value("evaluate.recall").and_then(|v| {
            let items = self.reader.list(v, "`evaluate.recall`")?;
            if items.is_empty() {
                self.reader
                    .error(Diagnostic::error("`evaluate.recall` is empty").at(v.span, "no K"));
                return None;
            }
            let ks: Vec<Option<u64>> = items
                .iter()
                .map(|i| self.reader.int(i, "a recall K", 1, MAX_K))
                .collect();
            let ks: Vec<usize> = ks
                .into_iter()
                .map(|k| k.map(|k| k as usize))
                .collect::<Option<_>>()?;
            for (i, k) in ks.iter().enumerate() {
                if ks[..i].contains(k) {
                    self.reader.error(
                        Diagnostic::error(format!("recall K = {k} is listed twice"))
                            .at(items[i].span, "again here"),
                    );
                    return None;
                }
            }
            Some(ks)
        });
        let directions = self.value("evaluate.directions").and_then(|v| {
            self.reader.word_set(
                v,
                "`evaluate.directions`",
                &[("im2txt", Direction::Im2txt), ("txt2im", Direction::Txt2im)],
            )
        });
        let gallery = self.value("evaluate.gallery").and_then(|v| {
            self.reader.word_set(
                v,
                "`evaluate.gallery`",
                &[
                    ("per_task", GalleryScope::PerTask),
                    ("union", GalleryScope::Union),
                ],
            )
        });
        Some(EvaluateSpec {
            recall: recall?,
            directions: directions?,
            gallery: gallery?,
        })
    }
}
