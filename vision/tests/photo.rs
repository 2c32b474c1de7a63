//! `FacePipeline::embed_photo` (uploaded photo → one embedding) on the real models and the real
//! photos of `shared/media`, plus hostile and unsupported uploads. Run with `--nocapture` to see
//! what the detector found and the measured distances.

use std::time::{Duration, Instant};

use image::{ImageEncoder, RgbImage};
mod common;
use common::{frames, media, pipeline};
use sightline_vision::photo::decode_photo;
use sightline_vision::{FacePipeline, PhotoError, PhotoFace, PhotoLimits, distance, load_rgb};

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(media(name)).unwrap()
}

fn embed(p: &mut FacePipeline, name: &str) -> PhotoFace {
    let t = Instant::now();
    let face = p.embed_photo(&bytes(name), &PhotoLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!(
        "{name} {:?}: {} face(s), chosen {:.0}x{:.0} px at ({:.0}, {:.0}), score {:.3}, quality {:.2}, {} ms",
        face.image_size,
        face.faces_found,
        face.bbox[2],
        face.bbox[3],
        face.bbox[0],
        face.bbox[1],
        face.det_score,
        face.quality,
        t.elapsed().as_millis()
    );
    assert_eq!(face.embedding.len(), 128, "{name}");
    assert!(face.embedding.iter().all(|v| v.is_finite()), "{name}");
    face
}

fn png_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

#[test]
fn portraits_embed_and_identities_separate() {
    let mut p = pipeline();
    let miranda = embed(&mut p, "lin-manuel-miranda.png");
    assert_eq!(miranda.faces_found, 1);
    assert_eq!(miranda.image_size, [704, 612]);

    let obama = embed(&mut p, "obama.jpg");
    let obama2 = embed(&mut p, "obama2.jpg");
    let obama3 = embed(&mut p, "obama3.jpg");
    // a tall portrait (1434x2333) is detected with its long side capped at max_width
    assert!(p.detector.last_input.iter().all(|&s| s <= p.detector.max_width), "{:?}", p.detector.last_input);
    assert_eq!(p.detector.max_width, 1280, "the cap is restored after the photo");
    let biden = embed(&mut p, "biden.jpg");
    let biden2 = embed(&mut p, "biden2.jpg");
    for (name, f, size) in [
        ("obama.jpg", &obama, [910, 1137]),
        ("obama2.jpg", &obama2, [626, 1200]),
        ("obama3.jpg", &obama3, [1434, 2333]),
        ("biden.jpg", &biden, [970, 2204]),
        ("biden2.jpg", &biden2, [1200, 1200]),
    ] {
        assert_eq!(f.faces_found, 1, "{name}");
        assert_eq!(f.image_size, size, "{name}");
        assert!(f.det_score > 0.85 && f.bbox[2] > 100.0, "{name}: {f:?}");
    }

    let d = |a: &PhotoFace, b: &PhotoFace| distance(&a.embedding, &b.embedding);
    let pairs = [
        ("obama-obama2", d(&obama, &obama2), true),
        ("obama-obama3", d(&obama, &obama3), true),
        ("obama2-obama3", d(&obama2, &obama3), true),
        ("biden-biden2", d(&biden, &biden2), true),
        ("obama-biden", d(&obama, &biden), false),
        ("obama3-miranda", d(&obama3, &miranda), false),
        ("biden-miranda", d(&biden, &miranda), false),
    ];
    for (what, dist, same) in pairs {
        eprintln!("distance {what}: {dist:.3}");
        assert_eq!(dist < 0.6, same, "{what}: {dist}");
    }
}

#[test]
fn the_photo_path_matches_the_frame_path() {
    // `embed_photo` must produce what `analyze` produces on the same pixels (same detector settings).
    let mut p = pipeline();
    let photo = embed(&mut p, "obama2.jpg");
    let frame = load_rgb(&media("obama2.jpg")).unwrap();
    let analyzed = p.analyze(&frame).unwrap();
    assert_eq!(analyzed.len(), 1);
    assert_eq!(analyzed[0].face.bbox, photo.bbox);
    assert_eq!(analyzed[0].quality, photo.quality);
    assert!(distance(&analyzed[0].embedding, &photo.embedding) < 1e-5);
}

#[test]
fn with_two_people_the_larger_face_is_chosen() {
    let mut p = pipeline();
    let two = embed(&mut p, "two_people.jpg");
    assert_eq!(two.faces_found, 2);
    let faces = p.detector.detect(&load_rgb(&media("two_people.jpg")).unwrap()).unwrap();
    assert_eq!(faces.len(), 2);
    let area = |b: &[f32; 4]| b[2] * b[3];
    let largest = faces.iter().map(|f| area(&f.bbox)).fold(0.0, f32::max);
    let smallest = faces.iter().map(|f| area(&f.bbox)).fold(f32::MAX, f32::min);
    eprintln!("two_people.jpg face areas: {:?}", faces.iter().map(|f| (f.bbox[0], area(&f.bbox))).collect::<Vec<_>>());
    assert_eq!(area(&two.bbox), largest);
    assert!(largest > smallest);
    // and it is the person it should be: left face Obama, right face Biden
    let obama = embed(&mut p, "obama.jpg");
    let biden = embed(&mut p, "biden.jpg");
    let left = faces.iter().map(|f| f.bbox[0]).fold(f32::MAX, f32::min) == two.bbox[0];
    let (same, other) = if left { (&obama, &biden) } else { (&biden, &obama) };
    let (ds, dother) = (distance(&two.embedding, &same.embedding), distance(&two.embedding, &other.embedding));
    eprintln!(
        "two_people chosen face ({}): {ds:.3} to its person, {dother:.3} to the other",
        if left { "left" } else { "right" }
    );
    assert!(ds < 0.45 && dother > 0.7, "{ds} {dother}");
}

/// `obama.jpg` stored rotated (as a phone stores a portrait shot) with EXIF orientation 6
/// ("rotate 90° clockwise to display"): the decoder must turn it back upright.
#[test]
fn exif_orientation_is_applied() {
    let upright = load_rgb(&media("obama.jpg")).unwrap();
    let stored = image::imageops::rotate270(&upright);
    // Exif: big-endian TIFF header, one IFD entry: Orientation (0x0112), SHORT, count 1, value 6.
    let exif: Vec<u8> =
        [&b"MM\0\x2a\0\0\0\x08"[..], &[0, 1], &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0], &[0, 0, 0, 0]].concat();
    let mut jpeg = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95);
    enc.set_exif_metadata(exif).unwrap();
    enc.write_image(stored.as_raw(), stored.width(), stored.height(), image::ExtendedColorType::Rgb8).unwrap();

    let decoded = decode_photo(&jpeg, &PhotoLimits::default()).unwrap();
    assert_eq!(decoded.dimensions(), upright.dimensions());

    let mut p = pipeline();
    let rotated = p.embed_photo(&jpeg, &PhotoLimits::default()).unwrap();
    let original = embed(&mut p, "obama.jpg");
    assert_eq!(rotated.image_size, [910, 1137]);
    let d = distance(&rotated.embedding, &original.embedding);
    eprintln!("obama.jpg re-encoded with EXIF rotation vs original: {d:.3}");
    assert!(d < 0.1, "{d}");
}

#[test]
fn photos_without_a_usable_face_are_refused() {
    let mut p = pipeline();
    let blank = png_bytes(&RgbImage::from_pixel(640, 480, image::Rgb([200, 200, 200])));
    let e = p.embed_photo(&blank, &PhotoLimits::default()).unwrap_err();
    assert!(matches!(e, PhotoError::NoFace), "{e:?}");
    assert!(e.is_user_error() && e.to_string().contains("no face found"), "{e}");

    // the portrait shrunk until its face is under `min_face_px`
    let small = image::imageops::resize(
        &load_rgb(&media("obama.jpg")).unwrap(),
        160,
        200,
        image::imageops::FilterType::Triangle,
    );
    p.min_face_px = 80.0;
    match p.embed_photo(&png_bytes(&small), &PhotoLimits::default()) {
        Err(e @ PhotoError::FaceTooSmall { width_px, min_px: 80 }) => {
            assert!(width_px < 80, "{e}");
            eprintln!("{e}");
        }
        other => panic!("{other:?}"),
    }
}

/// A minimal PNG: signature, IHDR with these dimensions (8-bit RGB), one tiny IDAT, IEND.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let ihdr = [&width.to_be_bytes()[..], &height.to_be_bytes(), &[8, 2, 0, 0, 0]].concat();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x63, 0, 0, 0, 1, 0, 1]);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn hostile_and_unsupported_uploads_fail_cleanly() {
    let limits = PhotoLimits::default();
    assert_eq!((limits.max_bytes, limits.max_pixels), (10 << 20, 40_000_000));
    let decode = |b: &[u8]| decode_photo(b, &limits);

    // decompression bomb: the header claims 100000x100000 (30 GB of RGB); refused from the header
    let t = Instant::now();
    match decode(&png_header_only(100_000, 100_000)) {
        Err(PhotoError::TooManyPixels { width: 100_000, height: 100_000, max_pixels: 40_000_000 }) => {}
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(1));
    // the same for a JPEG: a real one with its SOF0 dimensions patched to 60000x60000
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
        .write_image(&[128; 16 * 16 * 3], 16, 16, image::ExtendedColorType::Rgb8)
        .unwrap();
    let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).expect("baseline JPEG has SOF0");
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xea, 0x60, 0xea, 0x60]);
    match decode(&jpeg) {
        Err(PhotoError::TooManyPixels { width: 60_000, height: 60_000, .. }) => {}
        other => panic!("{other:?}"),
    }
    // the header check is exact: a photo just within the pixel budget decodes
    let tight = PhotoLimits { max_pixels: 640 * 480, ..limits };
    let blank = png_bytes(&RgbImage::new(640, 480));
    assert_eq!(decode_photo(&blank, &tight).unwrap().dimensions(), (640, 480));
    let tighter = PhotoLimits { max_pixels: 640 * 480 - 1, ..limits };
    assert!(matches!(decode_photo(&blank, &tighter), Err(PhotoError::TooManyPixels { .. })));

    // over the byte limit
    let small = PhotoLimits { max_bytes: 1000, ..limits };
    match decode_photo(&bytes("obama.jpg"), &small) {
        Err(e @ PhotoError::TooLarge { bytes: 279_922, max_bytes: 1000 }) => assert!(e.is_user_error()),
        other => panic!("{other:?}"),
    }

    // garbage, and garbage behind a JPEG or PNG signature
    let e = decode(b"this is certainly not an image, just some text").unwrap_err();
    assert!(matches!(e, PhotoError::UnsupportedFormat { .. } | PhotoError::Decode { .. }), "{e:?}");
    eprintln!("{e}");
    for fake in [&b"\xff\xd8\xff\xe0 not really a jpeg"[..], b"\x89PNG\r\n\x1a\n not really a png"] {
        let e = decode(fake).unwrap_err();
        assert!(matches!(e, PhotoError::Decode { .. }), "{e:?}");
        eprintln!("{e}");
    }
    let truncated = &bytes("obama.jpg")[..2000];
    let e = decode(truncated).map(|i| i.dimensions());
    eprintln!("obama.jpg truncated to 2000 bytes: {e:?}");
    assert!(decode(b"").is_err());

    // other image formats are named
    let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";
    // 2x2 24-bit BMP: file header, BITMAPINFOHEADER, two rows of 6 bytes padded to 8
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&(54u32 + 16).to_le_bytes());
    bmp.extend_from_slice(&[0, 0, 0, 0]);
    bmp.extend_from_slice(&54u32.to_le_bytes());
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&2i32.to_le_bytes());
    bmp.extend_from_slice(&2i32.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);
    bmp.extend_from_slice(&[255; 16]);
    let webp = b"RIFF\x24\0\0\0WEBPVP8 ";
    let heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic";
    for (data, name) in [(&gif[..], "GIF"), (&bmp, "BMP"), (webp, "WebP"), (heic, "HEIC")] {
        match decode(data) {
            Err(e @ PhotoError::UnsupportedFormat { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(name) && msg.contains("JPEG or PNG"), "{msg}");
                eprintln!("{msg}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn the_miranda_photo_finds_him_in_the_clip() {
    let tmp = std::env::temp_dir().join(format!("sightline-hamilton-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let frames = frames("short_hamilton_clip.mp4", "3/1", &tmp);
    std::fs::remove_dir_all(&tmp).ok();
    assert!(frames.len() >= 25, "{} frames", frames.len());

    let mut p = pipeline();
    let photo = embed(&mut p, "lin-manuel-miranda.png");
    p.min_face_px = 30.0; // as the manifest's measurement
    let (mut faces, mut matches, mut closest) = (0, Vec::new(), f32::MAX);
    for (i, frame) in frames.iter().enumerate() {
        for f in p.analyze(frame).unwrap() {
            faces += 1;
            let d = distance(&photo.embedding, &f.embedding);
            closest = closest.min(d);
            if d < 0.6 {
                matches.push((i, d));
            }
        }
    }
    let frame_of = |i: usize| (i as f32 * 29.97 / 3.0).round() as usize;
    eprintln!(
        "clip: {} frames at 3 fps, {faces} faces >= 30 px, {} match the photo (< 0.6), closest {closest:.3}; matches at clip frames {:?}",
        frames.len(),
        matches.len(),
        matches.iter().map(|(i, d)| (frame_of(*i), (d * 1000.0).round() / 1000.0)).collect::<Vec<_>>()
    );
    assert!(closest < 0.5, "{closest}");
    assert!(matches.len() >= 5, "{matches:?}");
    // he performs in the first ~200 frames; Obama's audience shots come after frame 230
    assert!(matches.iter().all(|(i, _)| frame_of(*i) < 230), "{matches:?}");
}
