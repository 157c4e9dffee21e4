//! Photos into the image encoder's input: ImageNet's evaluation crop.
//!
//! EfficientNet-Lite0 was trained and evaluated on ImageNet photos prepared the
//! TensorFlow way: the central square of 224/256 of the shorter side, resized to
//! 224x224 with a bicubic filter (`_decode_and_center_crop` in the reference
//! code; torchvision's `Resize(256) + CenterCrop(224)` keeps the same region).
//! COCO and Flickr30K photos are 300 to 640 pixels a side, any aspect ratio;
//! squashing them whole into a square (what [`super::image::load_rgb`] does for
//! icons and drawings) would distort every object.

use super::image::SIZE;
use std::path::Path;

/// The crop keeps this fraction of the shorter side (224 / (224 + 32)).
const CROP_FRACTION: f64 = SIZE as f64 / (SIZE as f64 + 32.0);

/// Decodes a JPEG or PNG of any size (by content, not extension), composites
/// transparency onto white, centre-crops and resizes to `SIZE x SIZE` RGB bytes.
pub fn load_photo(path: &Path) -> Result<Vec<u8>, String> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| format!("{}: {}", path.display(), crate::files::io_message(&e)))?
        .with_guessed_format()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let decoded = reader
        .decode()
        .map_err(|e| format!("{}: not a readable JPEG or PNG image ({e})", path.display()))?;
    let rgb = if decoded.color().has_alpha() {
        over_white(&decoded.to_rgba8())
    } else {
        decoded.to_rgb8()
    };
    Ok(center_crop(&rgb))
}

/// The central square of `CROP_FRACTION` of the shorter side, resized to the
/// encoder's input with a bicubic (Catmull-Rom) filter.
pub fn center_crop(rgb: &image::RgbImage) -> Vec<u8> {
    let (w, h) = rgb.dimensions();
    let side = ((w.min(h) as f64 * CROP_FRACTION).round() as u32).max(1);
    let (x, y) = ((w - side.min(w)) / 2, (h - side.min(h)) / 2);
    let square = image::imageops::crop_imm(rgb, x, y, side.min(w), side.min(h)).to_image();
    image::imageops::resize(
        &square,
        SIZE as u32,
        SIZE as u32,
        image::imageops::FilterType::CatmullRom,
    )
    .into_raw()
}

fn over_white(rgba: &image::RgbaImage) -> image::RgbImage {
    let mut rgb = image::RgbImage::new(rgba.width(), rgba.height());
    for (x, y, p) in rgba.enumerate_pixels() {
        let a = p[3] as f32 / 255.0;
        let blend = |c: u8| (c as f32 * a + 255.0 * (1.0 - a)).round() as u8;
        rgb.put_pixel(x, y, image::Rgb([blend(p[0]), blend(p[1]), blend(p[2])]));
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_photo_keeps_its_centre() {
        // 400x200: left quarter red, middle half green, right quarter blue. The
        // crop is the central 175x175 square, all green.
        let img = image::RgbImage::from_fn(400, 200, |x, _| match x {
            0..100 => image::Rgb([255, 0, 0]),
            100..300 => image::Rgb([0, 255, 0]),
            _ => image::Rgb([0, 0, 255]),
        });
        let out = center_crop(&img);
        assert_eq!(out.len(), SIZE * SIZE * 3);
        assert!(out.chunks(3).all(|p| p == [0, 255, 0]));
    }

    #[test]
    fn a_tiny_image_still_fills_the_input() {
        let img = image::RgbImage::from_pixel(1, 1, image::Rgb([9, 8, 7]));
        let out = center_crop(&img);
        assert_eq!(out.len(), SIZE * SIZE * 3);
        assert!(out.chunks(3).all(|p| p == [9, 8, 7]));
    }
}
