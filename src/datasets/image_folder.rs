//! ImageNet-style folders, as Keras' `image_dataset_from_directory`:
//! `root/<class_name>/*.{png,jpg,jpeg,bmp}`, classes in alphabetical order.
//! Images are decoded in parallel, converted to grey or RGB, optionally
//! resized, and kept in memory as bytes (N, H, W, C).

use crate::error::{Error, Result};
use crate::random;
use crate::tensor::{Samples, Tensor};
use image::imageops::FilterType;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// File extensions read as images (others are skipped, as Keras does).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// Channels to convert images to, as Keras' `color_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorMode {
    Grayscale,
    #[default]
    Rgb,
}

impl ColorMode {
    /// The mode of images with `channels` channels (1: grey, 3: RGB), or an error naming them.
    pub fn for_channels(channels: usize) -> Result<ColorMode> {
        match channels {
            1 => Ok(ColorMode::Grayscale),
            3 => Ok(ColorMode::Rgb),
            _ => Err(Error::InvalidArgument(format!(
                "the model takes {channels} channels; images have 1 (grey) or 3 (RGB)"
            ))),
        }
    }

    pub fn channels(self) -> usize {
        match self {
            ColorMode::Grayscale => 1,
            ColorMode::Rgb => 3,
        }
    }
}

/// How to read a folder.
#[derive(Clone, Debug, Default)]
pub struct FolderOptions {
    /// Resize every image to (height, width); without it all images must have one size.
    pub image_size: Option<(usize, usize)>,
    pub color_mode: ColorMode,
    /// Shuffle the samples with this seed (Keras shuffles before `validation_split`
    /// takes the last ones, so the split holds every class); `None` keeps
    /// class-then-file-name order.
    pub shuffle_seed: Option<u64>,
}

/// A folder's images (N, H, W, C) and labels (N,) as bytes, with the class
/// names (folder names, by label) and each sample's file.
#[derive(Debug)]
pub struct ImageFolder {
    pub images: Tensor,
    pub labels: Tensor,
    pub class_names: Vec<String>,
    pub files: Vec<PathBuf>,
}

/// Reads `root/<class>/<image>` into memory; see the module documentation.
pub fn image_folder(root: &Path, options: &FolderOptions) -> Result<ImageFolder> {
    let (samples, class_names) = list(root, options)?;
    let channels = options.color_mode.channels();
    let decoded: Vec<(Vec<u8>, (usize, usize))> = samples
        .par_iter()
        .map(|(path, _)| decode(path, options.image_size, options.color_mode))
        .collect::<Result<_>>()?;
    let (h, w) = decoded[0].1;
    if let Some(i) = decoded.iter().position(|(_, size)| *size != (h, w)) {
        return Err(size_mismatch(&samples[i].0, decoded[i].1, &samples[0].0, (h, w)));
    }
    let n = samples.len();
    let mut pixels = Vec::with_capacity(n * h * w * channels);
    decoded.into_iter().for_each(|(p, _)| pixels.extend(p));
    let (files, labels): (Vec<PathBuf>, Vec<u8>) = samples.into_iter().unzip();
    Ok(ImageFolder {
        images: Tensor::from_u8(&[n, h, w, channels], pixels)?,
        labels: Tensor::from_u8(&[n], labels)?,
        class_names,
        files,
    })
}

fn size_mismatch(path: &Path, size: (usize, usize), first: &Path, want: (usize, usize)) -> Error {
    Error::CorruptFile {
        path: path.into(),
        message: format!(
            "is {}x{} but {} is {}x{}; give an image size (--image-size HxW) to resize them all",
            size.0,
            size.1,
            first.display(),
            want.0,
            want.1
        ),
    }
}

/// An image file and its label.
type Sample = (PathBuf, u8);

/// A batch being decoded ahead: its rows and the thread decoding them.
type Pending = (Vec<usize>, JoinHandle<Result<Vec<u8>>>);

/// The folder's samples (file, label), in class-then-name order or shuffled,
/// and its class names; checks the layout.
/// The class folders of `root` (its subfolders), sorted by name: what a
/// folder dataset's labels are, listed without reading any image.
pub fn class_folders(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut classes: Vec<(String, PathBuf)> = read_dir_sorted(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .map(|p| (p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), p))
        .collect();
    classes.sort();
    Ok(classes)
}

fn list(root: &Path, options: &FolderOptions) -> Result<(Vec<Sample>, Vec<String>)> {
    let corrupt = |path: &Path, message: String| Error::CorruptFile { path: path.into(), message };
    let classes = class_folders(root)?;
    if classes.is_empty() {
        return Err(corrupt(root, "has no class folders; put each class's images in root/<class_name>/".into()));
    }
    if classes.len() > 256 {
        return Err(corrupt(root, format!("has {} class folders; keel reads up to 256", classes.len())));
    }
    let mut samples: Vec<Sample> = Vec::new();
    for (label, (name, dir)) in classes.iter().enumerate() {
        let images: Vec<PathBuf> = read_dir_sorted(dir)?.into_iter().filter(|p| is_image(p)).collect();
        if images.is_empty() {
            return Err(corrupt(dir, format!("class folder '{name}' has no images ({})", IMAGE_EXTENSIONS.join(", "))));
        }
        samples.extend(images.into_iter().map(|p| (p, label as u8)));
    }
    if let Some(seed) = options.shuffle_seed {
        samples.shuffle(&mut random::stream(seed, random::streams::FOLDER));
    }
    Ok((samples, classes.into_iter().map(|(name, _)| name).collect()))
}

/// Batches decoded ahead of use, at most this many at a time.
const PREFETCH_DEPTH: usize = 2;

/// An image folder read on demand, for folders too large for memory: only
/// file names and labels are kept; `fit`, `evaluate` and `predict` decode the
/// rows of each batch when they ask for them (in parallel), and the next
/// batch is decoded on a background thread while the current one trains. At
/// most `PREFETCH_DEPTH` batches are held decoded.
pub struct FolderStream {
    files: Arc<[PathBuf]>,
    shape: Vec<usize>,
    size: (usize, usize),
    mode: ColorMode,
    scale: f32,
    pending: Mutex<Vec<Pending>>,
}

/// A folder as a [`FolderStream`] of images scaled by `scale`, with its
/// labels (N,) and class names. Images take `options.image_size`, or the
/// first image's size (then every image must have it).
pub fn image_folder_stream(
    root: &Path,
    options: &FolderOptions,
    scale: f32,
) -> Result<(FolderStream, Tensor, Vec<String>)> {
    let (samples, class_names) = list(root, options)?;
    let size = match options.image_size {
        Some(size) => size,
        None => decode(&samples[0].0, None, options.color_mode)?.1,
    };
    let n = samples.len();
    let (files, labels): (Vec<PathBuf>, Vec<u8>) = samples.into_iter().unzip();
    let shape = vec![n, size.0, size.1, options.color_mode.channels()];
    let stream = FolderStream {
        files: files.into(),
        shape,
        size,
        mode: options.color_mode,
        scale,
        pending: Mutex::new(Vec::new()),
    };
    Ok((stream, Tensor::from_u8(&[n], labels)?, class_names))
}

impl FolderStream {
    /// The image files, by row.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn decode_rows(files: &[PathBuf], indices: &[usize], size: (usize, usize), mode: ColorMode) -> Result<Vec<u8>> {
        let images: Vec<Vec<u8>> = indices
            .par_iter()
            .map(|&i| {
                let (bytes, got) = decode(&files[i], Some(size), mode)?;
                if got != size {
                    return Err(size_mismatch(&files[i], got, &files[0], size));
                }
                Ok(bytes)
            })
            .collect::<Result<_>>()?;
        Ok(images.concat())
    }
}

impl Samples for FolderStream {
    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn prefetch(&self, indices: &[usize]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.iter().any(|(i, _)| i == indices) {
            return;
        }
        if pending.len() >= PREFETCH_DEPTH {
            let (_, stale) = pending.remove(0);
            let _ = stale.join();
        }
        let (files, rows, size, mode) = (Arc::clone(&self.files), indices.to_vec(), self.size, self.mode);
        let handle = std::thread::spawn(move || Self::decode_rows(&files, &rows, size, mode));
        pending.push((indices.to_vec(), handle));
    }

    fn gather(&self, indices: &[usize], out: &mut [f32]) -> Result<()> {
        let ready = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.iter().position(|(i, _)| i == indices).map(|k| pending.remove(k).1)
        };
        let bytes = match ready {
            Some(handle) => {
                handle.join().unwrap_or_else(|_| Err(Error::State("an image decoding thread panicked".into())))?
            }
            None => Self::decode_rows(&self.files, indices, self.size, self.mode)?,
        };
        // The same arithmetic as a byte Tensor scaled in memory (in f64), so streaming changes no result.
        out.iter_mut().zip(&bytes).for_each(|(o, &b)| *o = (b as f64 * self.scale as f64) as f32);
        Ok(())
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths: Vec<PathBuf> =
        entries.map(|e| e.map(|e| e.path())).collect::<std::io::Result<_>>().map_err(|e| Error::io(dir, e))?;
    paths.sort();
    Ok(paths)
}

fn is_image(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// One image as bytes in `mode`, resized to `size` when given; with its (height, width).
pub fn decode(path: &Path, size: Option<(usize, usize)>, mode: ColorMode) -> Result<(Vec<u8>, (usize, usize))> {
    let reader = image::ImageReader::open(path).map_err(|e| Error::io(path, e))?;
    let reader = reader.with_guessed_format().map_err(|e| Error::io(path, e))?;
    prepare(reader, path, size, mode)
}

/// [`decode`] for an image's bytes already in memory (standard input, an
/// upload); `origin` names it in errors.
pub fn decode_bytes(
    bytes: &[u8],
    origin: &Path,
    size: Option<(usize, usize)>,
    mode: ColorMode,
) -> Result<(Vec<u8>, (usize, usize))> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes));
    let reader = reader.with_guessed_format().map_err(|e| Error::io(origin, e))?;
    prepare(reader, origin, size, mode)
}

/// Decodes, resizes to `size` when given, and converts to `mode`.
fn prepare<R: std::io::BufRead + std::io::Seek>(
    reader: image::ImageReader<R>,
    path: &Path,
    size: Option<(usize, usize)>,
    mode: ColorMode,
) -> Result<(Vec<u8>, (usize, usize))> {
    let image = reader.decode().map_err(|e| Error::CorruptFile {
        path: path.into(),
        message: format!("not a readable PNG, JPEG or BMP image ({e}); remove or replace it"),
    })?;
    let image = match size {
        Some((h, w)) if (image.height() as usize, image.width() as usize) != (h, w) => {
            image.resize_exact(w as u32, h as u32, FilterType::Triangle)
        }
        _ => image,
    };
    let dims = (image.height() as usize, image.width() as usize);
    let bytes = match mode {
        ColorMode::Grayscale => image.to_luma8().into_raw(),
        ColorMode::Rgb => image.to_rgb8().into_raw(),
    };
    Ok((bytes, dims))
}
