//! Checking the `train` and `evaluate` sections.

use super::VariantChecker;
use crate::data::Manifest;
use crate::diagnostics::{did_you_mean, Diagnostic, Span};
use crate::lang::ast::{Value, ValueKind};
use crate::lang::experiment::*;
use crate::lang::schema::{
    self, LossCall, LrScheduleCall, OptimizerCall, Range, RegularizerCall, MAX_BATCH, MAX_EPOCHS,
};
use crate::lang::values::Args;

const MAX_K: u64 = 1_000_000;

impl VariantChecker<'_> {
    pub(super) fn train(
        &mut self,
        schedule: Option<Schedule>,
        manifest: Option<&Manifest>,
    ) -> Option<TrainSpec> {
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
        let negatives =
            negatives_setting.and_then(|s| self.reader.choice(&s.value, "`train.negatives`"));
        let decouple = self
            .value("train.decouple")
            .and_then(|v| self.reader.choice(v, "`train.decouple`"));
        let grad_clip = self.value("train.grad_clip").and_then(|v| match &v.kind {
            ValueKind::Word(w) if w == "none" => Some(None),
            _ => self
                .reader
                .float(v, "`train.grad_clip`", Range::Positive)
                .map(Some),
        });
        let log = self
            .value("train.log")
            .and_then(|v| self.reader.choice(v, "`train.log`"));
        let regularizer = self.regularizer(decouple, manifest);

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
        self.call("train.loss", &schema::LOSS_CALLS)?.build(|call| {
            Some(match call.kind() {
                LossCall::Triplet => LossSpec::Triplet {
                    margin: call.number("margin")?,
                    negatives: call.choice("negatives")?,
                    reduction: call.choice("reduction")?,
                },
                LossCall::Infonce => LossSpec::Infonce {
                    temperature: call.number("temperature")?,
                    learnable: call.choice("learnable")?,
                },
            })
        })
    }

    fn optimizer(&mut self) -> Option<OptimizerSpec> {
        self.call("train.optimizer", &schema::OPTIMIZER_CALLS)?
            .build(|call| {
                Some(match call.kind() {
                    OptimizerCall::Adamw => OptimizerSpec::Adamw {
                        lr: call.number("lr")?,
                        weight_decay: call.number("weight_decay")?,
                        beta1: call.number("beta1")?,
                        beta2: call.number("beta2")?,
                        eps: call.number("eps")?,
                    },
                    OptimizerCall::Sgd => OptimizerSpec::Sgd {
                        lr: call.number("lr")?,
                        momentum: call.number("momentum")?,
                        weight_decay: call.number("weight_decay")?,
                    },
                })
            })
    }

    fn schedule_lr(&mut self) -> Option<LrSchedule> {
        self.call("train.schedule_lr", &schema::LR_SCHEDULE_CALLS)?
            .build(|call| {
                Some(match call.kind() {
                    LrScheduleCall::Constant => LrSchedule::Constant,
                    LrScheduleCall::Step => LrSchedule::Step {
                        every: call.whole("every")? as u32,
                        gamma: call.number("gamma")?,
                    },
                    LrScheduleCall::Cosine => LrSchedule::Cosine {
                        warmup: call.number("warmup")?,
                    },
                })
            })
    }

    /// The regularizer's terms and the span of the whole value.
    fn regularizer(
        &mut self,
        decouple: Option<bool>,
        manifest: Option<&Manifest>,
    ) -> Option<(Vec<RegularizerSpec>, Span)> {
        let setting = self.setting("train.regularizer")?;
        let value = self.reader.plain(&setting.value);
        let terms: Vec<&Value> = match &value.kind {
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
        let mut out: Vec<RegularizerSpec> = Vec::new();
        let mut names: Vec<(&str, Span)> = Vec::new();
        let mut ok = true;
        for term in &terms {
            let Some(mut call) = self.reader.call(
                term,
                "train.regularizer",
                &schema::REGULARIZER_CALLS,
                &overrides,
            ) else {
                ok = false;
                continue;
            };
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == call.name()) {
                call.error(
                    Diagnostic::error(format!(
                        "`{}` appears twice in the regularizer",
                        call.name()
                    ))
                    .at(call.span(), "again here")
                    .also(*first, "first here"),
                );
                ok = false;
                continue;
            }
            names.push((call.name(), call.span()));
            if call.kind() == RegularizerCall::None && terms.len() > 1 {
                call.error(
                    Diagnostic::error("`none` cannot be combined with other regularizers")
                        .at(call.span(), "remove this term"),
                );
                ok = false;
                continue;
            }
            match call.build(|call| regularizer_term(call, decouple, manifest)) {
                Some(Some(term)) => out.push(term),
                Some(None) => {}
                None => ok = false,
            }
        }
        // Pseudo texts are negatives of replayed images: without replay there are none.
        let span_of = |name: &str| names.iter().find(|(n, _)| *n == name).map(|(_, s)| *s);
        if let (Some(pseudo), None) = (span_of("pseudo_text"), span_of("replay")) {
            self.reader.error(
                Diagnostic::error("`pseudo_text` needs `replay` in the same regularizer")
                    .at(pseudo, "no replayed images to give pseudo texts to")
                    .hint("combine them: `train.regularizer = replay(memory = 200) + pseudo_text(per_image = 1)`"),
            );
            ok = false;
        }
        ok.then_some((out, value.span))
    }

    pub(super) fn evaluate(&mut self, manifest: Option<&Manifest>) -> Option<EvaluateSpec> {
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
        let directions = self
            .value("evaluate.directions")
            .and_then(|v| self.reader.word_set(v, "`evaluate.directions`"));
        let gallery = self
            .value("evaluate.gallery")
            .and_then(|v| self.reader.word_set(v, "`evaluate.gallery`"));
        let zeroshot = self.zeroshot(manifest);
        let downstream = self.downstream(manifest);
        Some(EvaluateSpec {
            recall: recall?,
            directions: directions?,
            gallery: gallery?,
            zeroshot: zeroshot?,
            downstream: downstream?,
        })
    }

    /// `evaluate.downstream`: manifests that declare class sets and whose features
    /// have the sizes of the pipeline's dataset (the same encoders), none twice.
    fn downstream(&mut self, manifest: Option<&Manifest>) -> Option<Vec<Downstream>> {
        let v = self.value("evaluate.downstream")?;
        let items = self.reader.list(v, "`evaluate.downstream`")?;
        let mut out: Vec<Downstream> = Vec::new();
        let mut ok = true;
        for item in items {
            let span = self.reader.plain(item).span;
            let Some((path, m)) = self.manifest_at(item, "evaluate.downstream") else {
                ok = false;
                continue;
            };
            let mut fail = |checker: &mut Self, message: String, label: &str| {
                checker
                    .reader
                    .error(Diagnostic::error(message).at(span, label.to_string()));
                ok = false;
            };
            if m.class_sets().next().is_none() {
                fail(
                    self,
                    format!(
                        "the dataset `{}` declares no `classes:` to classify its images by",
                        m.name
                    ),
                    "a downstream set needs class sets",
                );
                continue;
            }
            if let (Some(ours), Some(theirs)) =
                (manifest.and_then(Manifest::feature_dims), m.feature_dims())
            {
                if ours != theirs {
                    fail(
                        self,
                        format!(
                            "the dataset `{}` has {}-d image and {}-d text features, the pipeline's dataset {}-d and {}-d: a downstream set is featurized by the same encoders",
                            m.name, theirs.image, theirs.text, ours.image, ours.text
                        ),
                        "other encoders",
                    );
                    continue;
                }
            }
            if out.iter().any(|d| d.dataset == path) {
                fail(
                    self,
                    format!("the dataset `{}` is listed twice", m.name),
                    "again here",
                );
                continue;
            }
            out.push(Downstream {
                dataset: path,
                name: m.name.clone(),
                class_sets: m.class_sets().map(|(n, _)| n.to_string()).collect(),
            });
        }
        ok.then_some(out)
    }

    /// `evaluate.zeroshot`: class set names, none twice, each declared in the
    /// `classes:` of the dataset's manifest (when the manifest could be read).
    fn zeroshot(&mut self, manifest: Option<&Manifest>) -> Option<Vec<String>> {
        let v = self.value("evaluate.zeroshot")?;
        let items = self.reader.list(v, "`evaluate.zeroshot`")?;
        let mut out: Vec<(String, Span)> = Vec::new();
        let mut ok = true;
        for item in items {
            let Some((name, span)) = self.name(item, "a class set") else {
                ok = false;
                continue;
            };
            if let Some((_, first)) = out.iter().find(|(n, _)| *n == name) {
                self.reader.error(
                    Diagnostic::error(format!("class set `{name}` is listed twice"))
                        .at(span, "again here")
                        .also(*first, "first here"),
                );
                ok = false;
            }
            if let Some(m) = manifest {
                if m.class_set(&name).is_none() {
                    let known: Vec<&str> = m.class_sets().map(|(n, _)| n).collect();
                    let label = if known.is_empty() {
                        "it declares no `classes:`".to_string()
                    } else {
                        format!("class sets are: {}", known.join(", "))
                    };
                    let mut d = Diagnostic::error(format!(
                        "the dataset `{}` declares no class set `{name}`",
                        m.name
                    ))
                    .at(span, label)
                    .hint("a manifest declares class sets as `classes: { NAME: { column: COLUMN, template: \"a photo of {}\" } }`");
                    if let Some(s) = did_you_mean(&name, known.iter().copied()) {
                        d = d.hint(format!("did you mean `{s}`?"));
                    }
                    self.reader.error(d);
                    ok = false;
                }
            }
            out.push((name, span));
        }
        ok.then(|| out.into_iter().map(|(n, _)| n).collect())
    }
}

/// One term of the regularizer: `Some(None)` for `none`, which adds no term.
fn regularizer_term(
    call: &mut Args<'_, '_, RegularizerCall>,
    decouple: Option<bool>,
    manifest: Option<&Manifest>,
) -> Option<Option<RegularizerSpec>> {
    let term = match call.kind() {
        RegularizerCall::None => return Some(None),
        RegularizerCall::Ewc => {
            // Before any `?`, so that the rule is checked whatever else is wrong.
            let on = coverage(call, decouple);
            RegularizerSpec::Ewc {
                lambda: call.number("lambda")?,
                accumulate: call.choice("accumulate")?,
                on: on?,
            }
        }
        RegularizerCall::Mas => {
            let on = coverage(call, decouple);
            RegularizerSpec::Mas {
                lambda: call.number("lambda")?,
                on: on?,
            }
        }
        RegularizerCall::Modx => RegularizerSpec::Modx {
            alpha: call.number("alpha")?,
            temperature: call.number("temperature")?,
            correct: call.choice("correct")?,
        },
        RegularizerCall::Distill => RegularizerSpec::Distill {
            lambda: call.number("lambda")?,
            temperature: call.number("temperature")?,
        },
        RegularizerCall::Replay => {
            let memory = call.whole("memory");
            // 16 replayed pairs per batch, fewer when the memory is smaller.
            let per_batch = call.whole_or("per_batch", memory.map_or(16, |m| m.min(16)));
            if let (Some(m), Some(p)) = (memory, per_batch) {
                if p > m {
                    let what = call.what("per_batch");
                    let at = call.param_span("per_batch");
                    call.error(
                        Diagnostic::error(format!(
                            "{what} = {p} is more than the memory ({m} pairs)"
                        ))
                        .at(at, "too many")
                        .hint("each batch draws at most `memory` replayed pairs"),
                    );
                    return None;
                }
            }
            RegularizerSpec::Replay {
                memory: memory? as usize,
                per_batch: per_batch? as usize,
                sampler: call.choice("sampler")?,
            }
        }
        RegularizerCall::PseudoText => RegularizerSpec::PseudoText {
            per_image: pseudo_per_image(call, manifest)?,
            weight: call.number("weight")?,
        },
    };
    Some(Some(term))
}

/// `per_image` of `pseudo_text`: at most what the dataset generates per image
/// (when its manifest could be read).
fn pseudo_per_image(
    call: &mut Args<'_, '_, RegularizerCall>,
    manifest: Option<&Manifest>,
) -> Option<usize> {
    let n = call.whole("per_image")? as usize;
    let Some(m) = manifest else {
        return Some(n);
    };
    let at = call.param_span("per_image");
    let generated = match m.pseudo_negatives() {
        None => {
            call.error(
                Diagnostic::error(format!(
                    "the dataset `{}` generates no pseudo negative texts",
                    m.name
                ))
                .at(call.span(), "needs them")
                .hint("declare them in the manifest, `pseudo_negatives: { per_image: 3 }`, and run `lethe featurize`"),
            );
            return None;
        }
        Some(p) => p.per_image,
    };
    if n > generated {
        let what = call.what("per_image");
        call.error(
            Diagnostic::error(format!(
                "{what} = {n} is more than the dataset `{}` generates ({generated} per image)",
                m.name
            ))
            .at(at, "too many")
            .hint("raise `pseudo_negatives.per_image` in the manifest and run `lethe featurize` again"),
        );
        return None;
    }
    Some(n)
}

/// `on` of a weight penalty; `query` needs one model per direction.
fn coverage(call: &mut Args<'_, '_, RegularizerCall>, decouple: Option<bool>) -> Option<Coverage> {
    let on = call.choice("on");
    if on == Some(Coverage::Query) && decouple == Some(false) {
        let at = call.param_span("on");
        call.error(
            Diagnostic::error("`on = query` needs `train.decouple = true`")
                .at(at, "query branch")
                .note("only a model trained for one direction has a single query branch"),
        );
        return None;
    }
    on
}
