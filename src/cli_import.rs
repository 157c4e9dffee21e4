//! The command line of bringing data in: `lethe import coco|karpathy|precomp`
//! and `lethe featurize`'s progress display. Kept apart from `main.rs` so the
//! data commands change without touching the others.

use clap::{Args, Subcommand};
use lethe::diagnostics::{render_all, Diagnostic, SourceMap};
use lethe::encode::featurize::{featurize_with, FeaturizeOptions};
use lethe::import::{coco, karpathy, precomp, ImportError};
use lethe::lang::DeviceSpec;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Subcommand)]
pub enum ImportCommand {
    /// MS-COCO's annotation files: captions, instances (categories), Karpathy's split.
    #[command(
        after_help = "Example:\n  lethe import coco --captions annotations/captions_train2014.json \\\n      \
--captions annotations/captions_val2014.json \\\n      \
--instances annotations/instances_train2014.json --instances annotations/instances_val2014.json \\\n      \
--images train2014 --images val2014 --karpathy dataset_coco.json -o datasets/coco\n\n\
Writes DIR/raw/images.jsonl (id, file, cocoid, filename, split, category and supercategory\n\
lists with one entry per annotated instance), DIR/raw/captions.jsonl and DIR/coco.yaml with\n\
the SeCOCO split (animals, vehicles, food by dominant supercategory; 1,000 test images per task)\n\
and its validation twin. Then: lethe featurize DIR/coco.yaml.\n\
Exit status 2 on malformed input, with the file and the JSON path of the problem."
    )]
    Coco {
        /// COCO captions JSON (captions_train2014.json, ...); repeat for several.
        #[arg(long, required = true, value_name = "FILE")]
        captions: Vec<PathBuf>,
        /// COCO instances JSON (instances_train2014.json, ...): categories and supercategories.
        #[arg(long, value_name = "FILE")]
        instances: Vec<PathBuf>,
        /// Folders holding the image files named in `file_name`, searched in order.
        #[arg(long, required = true, value_name = "DIR")]
        images: Vec<PathBuf>,
        /// Karpathy's dataset_coco.json: train + restval train, val validation, test test.
        #[arg(long, value_name = "FILE")]
        karpathy: Option<PathBuf>,
        #[command(flatten)]
        out: OutDir,
    },
    /// A Karpathy split file (dataset_flickr30k.json, dataset_flickr8k.json, dataset_coco.json).
    #[command(
        after_help = "Example:\n  lethe import karpathy dataset_flickr30k.json --images flickr30k-images -o datasets/flickr30k\n\n\
Images: `filename` (under `filepath` for COCO) in the --images folder; captions: `sentences[].raw`;\n\
parts: train and restval train, val validation, test test. The manifest's default split picks\n\
images by caption words (animals, vehicles, food); edit it freely."
    )]
    Karpathy {
        /// The Karpathy JSON file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The folder of the image files.
        #[arg(long, value_name = "DIR")]
        images: PathBuf,
        #[command(flatten)]
        out: OutDir,
    },
    /// VSE++ / SCAN precomputed features: *_ims.npy with *_caps.txt, in pairs.
    #[command(
        after_help = "Example:\n  lethe import precomp --images data/coco_precomp/train_ims.npy --captions data/coco_precomp/train_caps.txt \\\n      \
--images data/coco_precomp/testall_ims.npy --captions data/coco_precomp/testall_caps.txt -o datasets/coco-precomp\n\n\
Image i owns captions k*i .. k*i+k-1 (k = --captions-per-image). A (images, regions, dim) array is\n\
averaged over regions. The part of each pair comes from --part or the file name (train, dev/val,\n\
test). Captions have no features in this format: `lethe featurize` embeds them with MiniLM, or pass\n\
--caption-features with one row per caption."
    )]
    Precomp {
        /// Image features (.npy, float32/float16/float64); repeat, paired with --captions.
        #[arg(long, required = true, value_name = "FILE")]
        images: Vec<PathBuf>,
        /// Captions, one per line; repeat, paired with --images.
        #[arg(long, required = true, value_name = "FILE")]
        captions: Vec<PathBuf>,
        /// Captions per image.
        #[arg(long, default_value_t = 5, value_name = "K")]
        captions_per_image: usize,
        /// The part of each pair (train, val or test), instead of guessing from its file name.
        #[arg(long, value_name = "PART")]
        part: Vec<String>,
        /// Caption features (.npy, one row per caption), one per pair.
        #[arg(long, value_name = "FILE")]
        caption_features: Vec<PathBuf>,
        /// A CSV of image labels (header, one row per image in order; `a|b` for several values).
        #[arg(long, value_name = "FILE")]
        tasks: Option<PathBuf>,
        #[command(flatten)]
        out: OutDir,
    },
}

#[derive(Args)]
pub struct OutDir {
    /// The dataset folder to write (created if missing; the files of an earlier
    /// import there are replaced).
    #[arg(long = "out", short = 'o', value_name = "DIR")]
    dir: PathBuf,
}

pub fn import_cmd(command: ImportCommand) -> ExitCode {
    let result = match command {
        ImportCommand::Coco {
            captions,
            instances,
            images,
            karpathy,
            out,
        } => coco::import(&coco::CocoArgs {
            captions,
            instances,
            images,
            karpathy,
            out: out.dir,
        }),
        ImportCommand::Karpathy { file, images, out } => {
            karpathy::import(&karpathy::KarpathyArgs {
                file,
                images,
                out: out.dir,
            })
        }
        ImportCommand::Precomp {
            images,
            captions,
            captions_per_image,
            part,
            caption_features,
            tasks,
            out,
        } => precomp::import(&precomp::PrecompArgs {
            images,
            captions,
            parts: part,
            caption_features,
            captions_per_image,
            tasks,
            out: out.dir,
        }),
    };
    match result {
        Ok(summary) => {
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_error(&e.to_string());
            match e {
                ImportError::Invalid(_) => ExitCode::from(2),
                ImportError::Write(_) => ExitCode::from(1),
            }
        }
    }
}

fn print_error(message: &str) {
    let text = render_all(&[Diagnostic::error(message.to_string())], &SourceMap::new());
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `lethe featurize`: a progress bar with rate and ETA on a terminal, a line
/// every tenth of a table otherwise (logs of long runs).
/// `lethe featurize`'s arguments.
#[derive(clap::Args)]
pub struct FeaturizeArgs {
    /// The dataset manifest (.yaml) with a `raw:` section.
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,
    /// The folder `datasets/fetch-encoders.sh` filled.
    #[arg(long, value_name = "DIR", default_value = ".lethe/encoders")]
    encoders: PathBuf,
    /// Where the image files are, instead of the manifest's `raw.root`.
    #[arg(long, value_name = "DIR")]
    raw_root: Option<PathBuf>,
    /// Rows per saved chunk (default 1024 images, 8192 captions): a killed run
    /// loses at most one chunk.
    #[arg(long, value_name = "N")]
    chunk: Option<usize>,
    /// Where the encoders run (cpu, cuda, cuda:N; cuda needs a build with `--features cuda`).
    #[arg(long, value_parser = crate::parse_device, value_name = "DEVICE", default_value = "cpu")]
    device: DeviceSpec,
    /// Generated hard negative captions per image (`pseudo.arrow`), instead of the
    /// manifest's `pseudo_negatives.per_image`; 0 writes none.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=100))]
    pseudo_negatives: Option<u16>,
    /// The WordNet database pseudo negatives come from (Debian's wordnet-base).
    #[arg(long, value_name = "DIR", default_value = lethe::encode::wordnet::DEFAULT_DIR)]
    wordnet: PathBuf,
}

pub fn featurize_cmd(args: FeaturizeArgs) -> ExitCode {
    let FeaturizeArgs {
        manifest,
        encoders,
        raw_root,
        chunk,
        device,
        pseudo_negatives,
        wordnet,
    } = args;
    let (manifest, encoders) = (manifest.as_path(), encoders.as_path());
    let device = match lethe::model::device(device) {
        Ok(device) => device,
        Err(e) => {
            print_error(&e);
            return ExitCode::from(2);
        }
    };
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if !terminal {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let state = std::sync::Mutex::new((String::new(), Instant::now(), 0usize, 0usize));
    let progress = |what: &str, done: usize, total: usize| {
        let Ok(mut s) = state.lock() else { return };
        if s.0 != what {
            // A new table (or one resumed part way): rates count from here.
            *s = (what.to_string(), Instant::now(), done, 0);
            bar.set_message(what.to_string());
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.reset_eta();
            bar.reset_elapsed();
        }
        bar.set_position(done as u64);
        if !terminal && total > 0 {
            let tenth = done * 10 / total;
            if tenth > s.3 {
                s.3 = tenth;
                let seconds = s.1.elapsed().as_secs_f64();
                let rate = (done - s.2) as f64 / seconds.max(1e-9);
                let eta = (total - done) as f64 / rate.max(1e-9);
                eprintln!("featurize {what}: {done}/{total} ({rate:.1}/s, ETA {eta:.0} s)");
            }
        }
    };
    let mut options = FeaturizeOptions {
        raw_root,
        device,
        pseudo_negatives: pseudo_negatives.map(usize::from),
        wordnet,
        ..FeaturizeOptions::default()
    };
    if let Some(n) = chunk {
        options.image_chunk = n;
        options.caption_chunk = n;
    }
    let result = featurize_with(manifest, encoders, &options, &progress);
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_error(&e);
            ExitCode::from(2)
        }
    }
}
