//! What valid pipelines mean: defaults, extends, sweeps, labels, lexical forms.

mod common;
use common::*;
use lethe::lang::*;

#[test]
fn every_shipped_pipeline_validates() {
    let mut n = 0;
    for path in shipped_pipelines() {
        let o = check_file(&path);
        assert!(o.result.is_ok(), "{}:\n{}", path.display(), o.rendered());
        n += 1;
    }
    assert!(
        n >= 6,
        "expected the reference pipelines in pipelines/, found {n}"
    );
}

#[test]
fn reference_examples_are_in_pipelines() {
    // The design's reference examples (beside the checkout) must be shipped unchanged
    // but for paths; CI has them, a bare clone may not.
    let examples = repo().join("../shared/design/examples");
    let Ok(entries) = std::fs::read_dir(&examples) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let shipped = repo().join("pipelines").join(path.file_name().unwrap());
        assert!(shipped.is_file(), "{} is not in pipelines/", path.display());
        let o = check_file(&shipped);
        assert!(o.result.is_ok(), "{}", o.rendered());
    }
}

#[test]
fn quickstart_takes_the_documented_defaults() {
    let o = check_file(&repo().join("pipelines/quickstart.pipe"));
    let e = &o.pipeline().experiments[0];
    assert_eq!(e.label, "quickstart");
    assert_eq!(e.tasks, ["animals", "vehicles", "clothes"]);
    assert_eq!(e.seed, 0);
    assert_eq!(e.schedule, Schedule::Sequential);
    assert_eq!(e.index, IndexPolicy::Frozen);
    assert_eq!(e.device, DeviceSpec::Cpu);
    assert_eq!(e.model.share, 0);
    assert_eq!(e.model.image.hidden, [1024]);
    assert_eq!(e.model.image.embed, 512);
    assert_eq!(e.train.epochs, 20);
    assert_eq!(e.train.batch, 128);
    assert_eq!(e.train.grad_clip, Some(2.0));
    assert!(e.train.regularizer.is_empty());
    assert_eq!(
        e.train.loss,
        LossSpec::Triplet {
            margin: 0.2,
            negatives: TripletNegatives::Hardest,
            reduction: Reduction::Sum,
        }
    );
    assert_eq!(e.evaluate.recall, [1, 5, 10]);
    assert_eq!(
        e.evaluate.directions,
        [Direction::Im2txt, Direction::Txt2im]
    );
    assert_eq!(
        e.evaluate.gallery,
        [GalleryScope::PerTask, GalleryScope::Union]
    );
    assert!(e.dataset.ends_with("datasets/emoji/emoji.yaml"));
    assert!(
        !e.dataset.to_string_lossy().contains(".."),
        "{}",
        e.dataset.display()
    );
}

#[test]
fn extends_overrides_by_dotted_path_and_keeps_the_rest() {
    let o = check_file(&fixture("child.pipe"));
    let p = o.pipeline();
    assert_eq!(p.name, "child");
    let e = &p.experiments[0];
    assert_eq!(e.train.epochs, 2, "inherited from base.pipe");
    assert_eq!(
        e.train.regularizer,
        [RegularizerSpec::Mas {
            lambda: 1.0,
            on: Coverage::Both
        }]
    );
    match &e.train.optimizer {
        OptimizerSpec::Adamw {
            lr, weight_decay, ..
        } => {
            assert_eq!(*lr, 1e-3);
            assert_eq!(*weight_decay, 1e-4, "other parameters keep their defaults");
        }
        other => panic!("{other:?}"),
    }
    // The parent's relative dataset path resolves against the parent's folder.
    assert!(e.dataset.ends_with("tests/fixtures/toy.yaml"));
}

#[test]
fn emoji_mas_extends_emoji_ewc() {
    let o = check_file(&repo().join("pipelines/emoji-mas.pipe"));
    let e = &o.pipeline().experiments[0];
    assert_eq!(e.seed, 7);
    assert_eq!(e.model.share, 1);
    assert_eq!(e.train.schedule_lr, LrSchedule::Cosine { warmup: 0.1 });
    assert!(
        matches!(e.train.regularizer[..], [RegularizerSpec::Mas { lambda, .. }] if lambda == 1000.0)
    );
}

#[test]
fn table1_grid_labels_and_order() {
    let o = check_file(&repo().join("pipelines/table1.pipe"));
    let ex = &o.pipeline().experiments;
    assert_eq!(ex.len(), 60);
    // Variant lines are the first axis, sharing the second, seeds innermost.
    assert_eq!(ex[0].label, "joint CTNP, no sharing");
    assert_eq!((ex[0].seed, ex[1].seed, ex[2].seed), (1, 2, 3));
    assert_eq!(ex[3].label, "joint CTNP, sharing");
    assert_eq!(ex[3].model.share, 1);
    assert_eq!(
        ex[0].axes,
        [
            ("variant".to_string(), "joint CTNP".to_string()),
            ("model.share".to_string(), "no sharing".to_string())
        ]
    );
    let ewc_q = ex
        .iter()
        .find(|e| e.label == "frozen EWC-q, sharing")
        .unwrap();
    assert!(ewc_q.train.decouple);
    assert!(matches!(
        ewc_q.train.regularizer[..],
        [RegularizerSpec::Ewc {
            on: Coverage::Query,
            ..
        }]
    ));
    let joint = &ex[0];
    assert_eq!(joint.schedule, Schedule::Joint);
    assert_eq!(joint.train.negatives, Negatives::CrossTask);
}

#[test]
fn derived_labels_and_parameter_axes() {
    let o = check(&with_header(
        "    sweep {\n        train.optimizer.lr = [1e-4, 2e-4]\n        train.regularizer = [none, ewc(lambda = 10) + replay(memory = 50) as \"mix\"]\n    }",
    ));
    let ex = &o.pipeline().experiments;
    let labels: Vec<&str> = ex.iter().map(|e| e.label.as_str()).collect();
    assert_eq!(
        labels,
        ["1e-4, none", "1e-4, mix", "2e-4, none", "2e-4, mix"]
    );
    match &ex[2].train.optimizer {
        OptimizerSpec::Adamw { lr, .. } => assert_eq!(*lr, 2e-4),
        other => panic!("{other:?}"),
    }
    assert_eq!(ex[1].train.regularizer.len(), 2);
}

#[test]
fn seed_list_without_sweep_is_an_unlabelled_axis() {
    let o = check(&with_header("    seed = [3, 1, 2]"));
    let ex = &o.pipeline().experiments;
    assert_eq!(ex.iter().map(|e| e.seed).collect::<Vec<_>>(), [3, 1, 2]);
    assert!(ex.iter().all(|e| e.label == "t" && e.axes.is_empty()));
}

#[test]
fn lexical_forms() {
    let text = format!(
        "# a comment line\n\npipeline \"lex \\\"quoted\\\"\" {{  # trailing comment\n    dataset = \"{}\"; split = domains\n    tasks = [\n        d1,   # first\n        d2,\n    ]\n    train {{\n        optimizer = adamw(\n            lr = 2E-4,\n            weight_decay = 0,\n        )\n        regularizer = ewc(lambda = 1e3)\n            + replay(memory = 100, per_batch = 8)\n    }}\n}}\n",
        fixture("toy.yaml").display()
    );
    let o = check(&text);
    let p = o.pipeline();
    assert_eq!(p.name, "lex \"quoted\"");
    let e = &p.experiments[0];
    assert_eq!(e.tasks, ["d1", "d2"]);
    assert_eq!(e.train.regularizer.len(), 2);
    match &e.train.optimizer {
        OptimizerSpec::Adamw {
            lr, weight_decay, ..
        } => assert_eq!((*lr, *weight_decay), (2e-4, 0.0)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn device_forms() {
    for (written, expected) in [
        ("cpu", DeviceSpec::Cpu),
        ("cuda", DeviceSpec::Cuda(0)),
        ("\"cuda:1\"", DeviceSpec::Cuda(1)),
    ] {
        let o = check(&with_header(&format!("    device = {written}")));
        assert_eq!(o.pipeline().experiments[0].device, expected);
    }
}
