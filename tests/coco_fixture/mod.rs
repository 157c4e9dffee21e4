//! A small MS-COCO in COCO's own formats, written by the tests: 48 JPEGs of
//! different sizes (one greyscale) in `train2014/` and `val2014/`, captions and
//! instances JSON with the fields COCO has (segmentations and all), and
//! Karpathy's `dataset_coco.json`.
//!
//! Image i (0-based, COCO id i + 1) is of kind i % 4 and in block i / 4:
//! kind 0 animals, 1 vehicles, 2 food (dominant in every block), kind 3 a tie
//! of person and animal, no annotation, or person dominant; block b is in
//! Karpathy's `test`, `val`, `train`, `restval` for b % 4 = 0, 1, 2, 3.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub const IMAGES: usize = 48;
pub const CAPTIONS_PER_IMAGE: usize = 5;

/// COCO's categories used (id, name, supercategory).
pub const CATEGORIES: [(u64, &str, &str); 7] = [
    (1, "person", "person"),
    (3, "car", "vehicle"),
    (6, "bus", "vehicle"),
    (17, "cat", "animal"),
    (18, "dog", "animal"),
    (53, "pizza", "food"),
    (61, "cake", "food"),
];

/// The category names annotated in image i, one per instance.
pub fn instances(i: usize) -> Vec<&'static str> {
    let variant = (i / 4) % 3;
    match (i % 4, variant) {
        (0, 0) => vec!["dog"],
        (0, 1) => vec!["dog", "dog", "person"],
        (0, _) => vec!["cat", "cat", "car"],
        (1, 0) => vec!["car"],
        (1, 1) => vec!["bus", "bus", "person"],
        (1, _) => vec!["car", "car", "dog"],
        (2, 0) => vec!["pizza"],
        (2, 1) => vec!["cake", "cake", "person"],
        (2, _) => vec!["pizza", "pizza", "dog"],
        (_, 0) => vec!["person", "dog"],
        (_, 1) => vec![],
        _ => vec!["person", "person", "car"],
    }
}

/// Karpathy's split of image i.
pub fn karpathy_split(i: usize) -> &'static str {
    ["test", "val", "train", "restval"][(i / 4) % 4]
}

pub fn file_name(i: usize) -> String {
    format!("COCO_{}_{:012}.jpg", folder(i), i + 1)
}

/// The first 36 images are COCO train images, the rest val images.
pub fn folder(i: usize) -> &'static str {
    if i < 36 {
        "train2014"
    } else {
        "val2014"
    }
}

pub fn caption(i: usize, k: usize) -> String {
    let what = match i % 4 {
        0 => "a dog playing on the grass",
        1 => "a red car parked on a street",
        2 => "a pizza on a wooden table",
        _ => "a man standing in a room",
    };
    format!("{what}, photo {i} caption {k}")
}

/// The fixture's files.
pub struct Coco {
    pub root: PathBuf,
}

impl Coco {
    pub fn captions(&self, split: &str) -> PathBuf {
        self.root
            .join(format!("annotations/captions_{split}2014.json"))
    }
    pub fn instances(&self, split: &str) -> PathBuf {
        self.root
            .join(format!("annotations/instances_{split}2014.json"))
    }
    pub fn karpathy(&self) -> PathBuf {
        self.root.join("dataset_coco.json")
    }
    pub fn images(&self, split: &str) -> PathBuf {
        self.root.join(format!("{split}2014"))
    }
    pub fn image_file(&self, i: usize) -> PathBuf {
        self.root.join(folder(i)).join(file_name(i))
    }
}

fn write_json(path: &Path, value: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec(value).unwrap()).unwrap();
}

/// Writes the fixture under `root`.
pub fn write(root: &Path) -> Coco {
    let coco = Coco {
        root: root.to_path_buf(),
    };
    for split in ["train", "val"] {
        std::fs::create_dir_all(coco.images(split)).unwrap();
    }
    for i in 0..IMAGES {
        let (w, h) = (32 + (i % 5) as u32 * 8, 24 + (i % 3) as u32 * 8);
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 7 + i as u32 * 13) as u8,
                (y * 11) as u8,
                ((x + y) * 5 + i as u32) as u8,
            ])
        });
        if i == 5 {
            image::DynamicImage::ImageRgb8(img)
                .to_luma8()
                .save(coco.image_file(i))
                .unwrap();
        } else {
            img.save(coco.image_file(i)).unwrap();
        }
    }
    let image_json = |i: usize| {
        json!({"license": 3, "file_name": file_name(i), "coco_url": format!("http://images.cocodataset.org/{}/{}", folder(i), file_name(i)),
               "height": 24, "width": 32, "date_captured": "2013-11-14 11:18:45", "flickr_url": "http://farm.example/x.jpg", "id": i + 1})
    };
    let category_id = |name: &str| CATEGORIES.iter().find(|c| c.1 == name).unwrap().0;
    for (split, range) in [("train", 0..36), ("val", 36..IMAGES)] {
        let images: Vec<Value> = range.clone().map(image_json).collect();
        let mut captions = Vec::new();
        let mut instances = Vec::new();
        for i in range {
            for k in 0..CAPTIONS_PER_IMAGE {
                captions.push(json!({"image_id": i + 1, "id": 1000 + i * 10 + k, "caption": format!("{} \n", caption(i, k))}));
            }
            for (n, name) in instances_of(i).into_iter().enumerate() {
                instances.push(json!({"segmentation": [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], "area": 12.5, "iscrowd": 0,
                    "image_id": i + 1, "bbox": [1.0, 2.0, 3.0, 4.0], "category_id": category_id(name), "id": 50000 + i * 10 + n}));
            }
        }
        let info = json!({"description": "COCO 2014 Dataset (lethe test fixture)", "year": 2014});
        write_json(
            &coco.captions(split),
            &json!({"info": info, "licenses": [], "images": images, "annotations": captions}),
        );
        let categories: Vec<Value> = CATEGORIES
            .iter()
            .map(|(id, name, sup)| json!({"supercategory": sup, "id": id, "name": name}))
            .collect();
        write_json(
            &coco.instances(split),
            &json!({"info": info, "licenses": [], "images": images, "annotations": instances, "categories": categories}),
        );
    }
    let karpathy: Vec<Value> = (0..IMAGES)
        .map(|i| {
            let sentences: Vec<Value> = (0..CAPTIONS_PER_IMAGE)
                .map(|k| json!({"tokens": ["a"], "raw": caption(i, k), "imgid": i, "sentid": i * 5 + k}))
                .collect();
            json!({"filepath": folder(i), "sentids": [i * 5], "filename": file_name(i), "imgid": i,
                   "split": karpathy_split(i), "sentences": sentences, "cocoid": i + 1})
        })
        .collect();
    write_json(
        &coco.karpathy(),
        &json!({"images": karpathy, "dataset": "coco"}),
    );
    coco
}

fn instances_of(i: usize) -> Vec<&'static str> {
    instances(i)
}
