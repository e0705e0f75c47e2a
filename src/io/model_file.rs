//! The `.keel` model file: one [safetensors](https://huggingface.co/docs/safetensors)
//! file. Its JSON header (plain text at the start of the file) holds, as
//! metadata, the format version, the architecture and the training state; its
//! tensors are the weights, named `"<layer>/<kernel|bias>"` with Keras' shapes,
//! and the optimizer's state, `"optimizer/<slot>/<layer>/<kernel|bias>"`.
//! Any safetensors reader (Python's `safetensors`, for one) can open it.
//!
//! Loading trusts nothing: the header is parsed by the safetensors crate
//! (bounded size, offsets checked against the file), the architecture is
//! checked argument by argument, and no buffer is allocated beyond what the
//! file's tensors hold, before the weights are matched one by one. Nothing in
//! a file is ever executed.

use crate::datasets::download::sha256_hex;
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::model::{Architecture, History, Model, WeightInfo};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The `format` metadata value of every keel file.
pub const FORMAT: &str = "keel";
/// The version written; files of a newer version are refused with a clear error.
pub const FORMAT_VERSION: u32 = 1;

/// Most optimizer steps (and epochs) a file may claim: far beyond any
/// training run, and exact in the f64 arithmetic of bias corrections.
const MAX_ITERATIONS: u64 = 1 << 40;

/// A tensor to write: name, shape, values.
type NamedTensor<'a> = (String, Vec<usize>, &'a [f32]);

/// What a resume needs beyond weights and optimizer buffers.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainingState {
    epochs_trained: usize,
    optimizer_iterations: u64,
    history: History,
}

impl Model {
    /// Saves the whole model, as Keras' `model.save`: architecture, weights,
    /// and when compiled the optimizer with its state, the epochs trained and
    /// the History, so that [`Model::load`] continues exactly where this
    /// left off. The write is atomic: a crash leaves the previous file intact.
    ///
    /// ```no_run
    /// # use keel::prelude::*;
    /// # fn f(model: &Model) -> keel::Result<()> {
    /// model.save("model.keel")?;
    /// let mut again = Model::load("model.keel")?;
    /// # Ok(()) }
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let architecture = self.architecture()?;
        let mut metadata = header(&architecture);
        let mut tensors = self.weight_tensors()?;
        if let Some(optimizer) = self.optimizer() {
            let state = TrainingState {
                epochs_trained: self.epochs_trained(),
                optimizer_iterations: optimizer.iterations(),
                history: self.history().clone(),
            };
            metadata.insert("training".into(), to_json(&state));
            for (slot, values) in optimizer.slots() {
                if values.is_empty() {
                    continue;
                }
                for w in self.weights()?.into_iter().filter(|w| !w.state) {
                    tensors.push((format!("optimizer/{slot}/{}", w.name), w.shape.clone(), &values[w.range.clone()]));
                }
            }
        }
        write_tensors(path.as_ref(), tensors, metadata)
    }

    /// Loads a model written by [`Model::save`] (or `keel train --save`):
    /// built, compiled if it was, with its weights, and with its training
    /// state when the file has one.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let bytes = read_checked(path)?;
        Self::load_bytes(&bytes, path)
    }

    /// [`Model::load`] from a file's bytes; `path` names it in errors.
    pub fn load_bytes(bytes: &[u8], path: &Path) -> Result<Model> {
        let file = ModelFile::parse(path, bytes)?;
        if file.optional_metadata(BASELINE_KEY).is_some() {
            return Err(file.corrupt(
                "it holds a classical baseline (`keel baseline --save`), not a network; load it with Baseline::load"
                    .into(),
            ));
        }
        let architecture_text = file.metadata("architecture")?;
        let architecture: Architecture = serde_json::from_str(architecture_text)
            .map_err(|e| file.corrupt(format!("its architecture is not valid: {e}")))?;
        let mut model = Model::from_architecture_within(&architecture, Some(file.weight_elements()))
            .map_err(|e| file.corrupt(format!("its architecture cannot be built: {e}")))?;
        file.restore_weights(&mut model, "")?;
        if let Some(text) = file.optional_metadata("training") {
            let state: TrainingState = serde_json::from_str(text)
                .map_err(|e| file.corrupt(format!("its training state is not valid: {e}")))?;
            if state.optimizer_iterations > MAX_ITERATIONS || state.epochs_trained as u64 > MAX_ITERATIONS {
                return Err(file.corrupt(format!(
                    "its training state claims {} optimizer steps and {} epochs, more than keel counts ({MAX_ITERATIONS})",
                    state.optimizer_iterations, state.epochs_trained
                )));
            }
            let weights: Vec<WeightInfo> = model.weights()?.into_iter().filter(|w| !w.state).collect();
            let len = model.params()?.len();
            if let Some(optimizer) = model.optimizer_mut() {
                for (slot, buffer) in optimizer.slots_mut() {
                    let prefix = format!("optimizer/{slot}/");
                    if file.has_prefix(&prefix) {
                        buffer.clear();
                        buffer.resize(len, 0.0);
                        file.read_weights(&weights, &prefix, buffer)?;
                    }
                }
                optimizer.set_iterations(state.optimizer_iterations);
            }
            model.epochs_trained = state.epochs_trained;
            model.history = state.history;
        }
        file.check_all_used(&model)?;
        Ok(model)
    }

    /// Saves the weights alone (a safetensors file), as `model.save_weights`.
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut metadata = HashMap::new();
        metadata.insert("format".into(), FORMAT.into());
        metadata.insert("format_version".into(), FORMAT_VERSION.to_string());
        write_tensors(path.as_ref(), self.weight_tensors()?, metadata)
    }

    /// Loads weights saved by [`Model::save_weights`] (or [`Model::save`])
    /// into this built model; every tensor's name and shape must match.
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = read_checked(path)?;
        let file = ModelFile::parse(path, &bytes)?;
        file.restore_weights(self, "")
    }

    /// Every weight, trainable or state, from its buffer.
    fn weight_tensors(&self) -> Result<Vec<NamedTensor<'_>>> {
        let (params, state) = (self.params()?, self.state()?);
        Ok(self
            .weights()?
            .into_iter()
            .map(|w| {
                let buffer = if w.state { state } else { params };
                (w.name, w.shape, &buffer[w.range])
            })
            .collect())
    }
}

/// The metadata key of a classical baseline's description.
pub(crate) const BASELINE_KEY: &str = "baseline";

/// A keel file's metadata and tensors (name, shape, values), after the
/// checks every keel file gets: a bounded header consistent with the file's
/// length, the format and its version, every tensor's checksum.
pub(crate) struct KeelFile {
    pub metadata: HashMap<String, String>,
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// Reads any keel file (a model, a baseline) as [`KeelFile`].
pub(crate) fn read_keel_file(path: &Path) -> Result<KeelFile> {
    let bytes = read_checked(path)?;
    let file = ModelFile::parse(path, &bytes)?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = file
        .tensors
        .iter()
        .map(|(name, view)| {
            let values =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
            (name.to_string(), view.shape().to_vec(), values)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(KeelFile { metadata: file.metadata, tensors })
}

/// The metadata of the keel file at `path`, from its header alone (bounded
/// as [`read_keel_file`] bounds it).
pub(crate) fn read_keel_header(path: &Path) -> Result<HashMap<String, String>> {
    let corrupt = |message: String| Error::CorruptFile { path: path.into(), message };
    let (_, _, header) = open_header(path)?;
    #[derive(serde::Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: HashMap<String, String>,
    }
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("{NOT_KEEL} (its header is not valid: {e})")))?;
    if header.metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(corrupt(format!("{NOT_KEEL} (no \"format\": \"keel\" in its metadata)")));
    }
    Ok(header.metadata)
}

/// Writes a keel file of F32 tensors with `metadata` (format, version and
/// checksums added), atomically.
pub(crate) fn write_keel_file(
    path: &Path,
    tensors: Vec<(String, Vec<usize>, &[f32])>,
    mut metadata: HashMap<String, String>,
) -> Result<()> {
    metadata.insert("format".into(), FORMAT.into());
    metadata.insert("format_version".into(), FORMAT_VERSION.to_string());
    write_tensors(path, tensors, metadata)
}

const NOT_KEEL: &str = "not a keel model file; it may be truncated or another kind of file: save models with model.save or `keel train --save`";

/// Largest header a keel file may have (the safetensors crate's own bound).
const MAX_HEADER: u64 = 100_000_000;

/// The open file, its length and its header's bytes, the header's length
/// bounded and inside the file.
fn open_header(path: &Path) -> Result<(std::fs::File, u64, Vec<u8>)> {
    use std::io::Read;
    let corrupt = |message: String| Error::CorruptFile { path: path.into(), message };
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut size = [0u8; 8];
    if len < 8 || file.read_exact(&mut size).is_err() {
        return Err(corrupt(format!("{NOT_KEEL} ({len} bytes)")));
    }
    let n = u64::from_le_bytes(size);
    if n > MAX_HEADER || 8 + n > len {
        return Err(corrupt(format!("{NOT_KEEL} (its header claims {n} bytes of a {len}-byte file)")));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    Ok((file, len, header))
}

/// A model file's bytes, read only after its header proves consistent with
/// the file's length: the header's length is bounded, and the tensors it
/// declares end exactly at the end of the file. A damaged or hostile file is
/// refused before its body (which may be gigabytes of nothing) is read.
fn read_checked(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let corrupt = |message: String| Error::CorruptFile { path: path.into(), message };
    let not_keel = NOT_KEEL;
    let (mut file, len, header) = open_header(path)?;
    let n = header.len() as u64;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("{not_keel} (its header is not valid: {e})")))?;
    let end = header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    if 8 + n + end != len {
        return Err(corrupt(format!(
            "its header declares {end} bytes of tensors but the file holds {} after the header; it is truncated or damaged",
            len - 8 - n
        )));
    }
    use std::io::Seek;
    file.rewind().map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

fn header(architecture: &Architecture) -> HashMap<String, String> {
    let mut metadata = HashMap::new();
    metadata.insert("format".into(), FORMAT.into());
    metadata.insert("format_version".into(), FORMAT_VERSION.to_string());
    metadata.insert("architecture".into(), to_json(architecture));
    metadata
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("architectures and states always serialise")
}

fn write_tensors(
    path: &Path,
    tensors: Vec<(String, Vec<usize>, &[f32])>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, values)| (name, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    // A SHA-256 of every tensor's bytes, verified on load: a flipped bit is an error, not a quiet change.
    let checksums: std::collections::BTreeMap<&str, String> =
        bytes.iter().map(|(name, _, data)| (name.as_str(), sha256_hex(data))).collect();
    let mut metadata = metadata;
    metadata.insert("checksums".into(), to_json(&checksums));
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data).map(|view| (name.as_str(), view)).map_err(|e| {
                Error::State(format!("weight '{name}' does not fit its shape {shape:?}: {e} (a bug in keel)"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let file = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::State(format!("cannot encode {}: {e}", path.display())))?;
    write_atomic(path, &file)
}

/// A parsed file and where it came from, for error messages.
struct ModelFile<'a> {
    path: &'a Path,
    tensors: SafeTensors<'a>,
    metadata: HashMap<String, String>,
}

impl<'a> ModelFile<'a> {
    fn parse(path: &'a Path, bytes: &'a [u8]) -> Result<Self> {
        let corrupt = |message: String| Error::CorruptFile { path: path.into(), message };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
            corrupt(format!(
                "not a keel model file ({e}); it may be truncated or another kind of file: save models with model.save or `keel train --save`"
            ))
        })?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| corrupt(format!("unreadable tensors: {e}")))?;
        let file = ModelFile { path, tensors, metadata };
        if file.metadata.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(file.corrupt(
                "a safetensors file but not a keel model (no \"format\": \"keel\" in its metadata); load plain weights with load_weights".into(),
            ));
        }
        let version = file.metadata("format_version")?;
        match version.parse::<u32>() {
            Ok(v) if v <= FORMAT_VERSION => {}
            Ok(v) => {
                return Err(file.corrupt(format!(
                    "written by a newer keel (format version {v}; this keel reads up to {FORMAT_VERSION}); upgrade keel"
                )));
            }
            Err(_) => return Err(file.corrupt(format!("format_version '{version}' is not a number"))),
        }
        for (name, view) in file.tensors.iter() {
            if view.dtype() != Dtype::F32 {
                return Err(file.corrupt(format!("tensor '{name}' is {:?}; keel files hold F32 tensors", view.dtype())));
            }
        }
        file.verify_checksums()?;
        Ok(file)
    }

    /// Checks every tensor against the SHA-256 the file records for it (files
    /// written before checksums existed have none and are taken as they are).
    fn verify_checksums(&self) -> Result<()> {
        let Some(text) = self.optional_metadata("checksums") else { return Ok(()) };
        let checksums: HashMap<String, String> =
            serde_json::from_str(text).map_err(|e| self.corrupt(format!("its checksums are not valid: {e}")))?;
        let mut names: Vec<&str> = self.tensors.iter().map(|(name, _)| name).collect();
        names.sort_unstable();
        for name in names {
            let view = self.tensors.tensor(name).map_err(|e| self.corrupt(format!("tensor '{name}': {e}")))?;
            match checksums.get(name) {
                Some(sum) if *sum == sha256_hex(view.data()) => {}
                Some(_) => {
                    return Err(self.corrupt(format!(
                        "tensor '{name}' does not match its checksum: the file was damaged (or edited) after it was saved; use an intact copy"
                    )));
                }
                None => {
                    return Err(self.corrupt(format!("tensor '{name}' has no checksum although the file records them")));
                }
            }
        }
        Ok(())
    }

    fn corrupt(&self, message: String) -> Error {
        Error::CorruptFile { path: self.path.into(), message }
    }

    fn optional_metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    fn metadata(&self, key: &str) -> Result<&str> {
        self.optional_metadata(key).ok_or_else(|| self.corrupt(format!("its metadata has no \"{key}\"")))
    }

    fn has_prefix(&self, prefix: &str) -> bool {
        self.tensors.iter().any(|(name, _)| name.starts_with(prefix))
    }

    /// Elements in the weight tensors (not the optimizer's): an upper bound on
    /// what the architecture may allocate.
    fn weight_elements(&self) -> usize {
        self.tensors.iter().filter(|(n, _)| !n.starts_with("optimizer/")).map(|(_, v)| v.data().len() / 4).sum()
    }

    fn restore_weights(&self, model: &mut Model, prefix: &str) -> Result<()> {
        let (state, weights): (Vec<WeightInfo>, Vec<WeightInfo>) = model.weights()?.into_iter().partition(|w| w.state);
        self.read_weights(&weights, prefix, model.params_mut()?)?;
        self.read_weights(&state, prefix, model.state_mut()?)
    }

    /// Copies tensors `prefix + weight name` into `out` at each weight's range.
    fn read_weights(&self, weights: &[WeightInfo], prefix: &str, out: &mut [f32]) -> Result<()> {
        for w in weights {
            let name = format!("{prefix}{}", w.name);
            let view = self.tensors.tensor(&name).map_err(|_| {
                self.corrupt(format!("it has no tensor '{name}', which the model needs; it holds a different model"))
            })?;
            if view.shape() != w.shape.as_slice() {
                return Err(self.corrupt(format!(
                    "tensor '{name}' has shape {:?} but the model needs {:?}; it holds a different model",
                    view.shape(),
                    w.shape
                )));
            }
            for (i, (dst, src)) in out[w.range.clone()].iter_mut().zip(view.data().chunks_exact(4)).enumerate() {
                *dst = f32::from_le_bytes(src.try_into().expect("chunks of 4"));
                if !dst.is_finite() {
                    return Err(self.corrupt(format!(
                        "tensor '{name}' holds {} at index {i}; a model with NaN or infinite weights predicts nothing useful (it may have diverged before it was saved)",
                        *dst
                    )));
                }
            }
        }
        Ok(())
    }

    /// Refuses tensors nothing reads: they mean the file and model disagree.
    fn check_all_used(&self, model: &Model) -> Result<()> {
        let weights = model.weights()?;
        let slots: Vec<&str> =
            model.optimizer().map(|o| o.slots().into_iter().map(|(s, _)| s).collect()).unwrap_or_default();
        // In name order, so that a file with several stray tensors always names the same one.
        let mut names: Vec<&str> = self.tensors.iter().map(|(name, _)| name).collect();
        names.sort_unstable();
        for name in names {
            let weight = name.strip_prefix("optimizer/").and_then(|rest| {
                let (slot, weight) = rest.split_once('/')?;
                slots.contains(&slot).then_some(weight)
            });
            let weight = weight.unwrap_or(name);
            if !weights.iter().any(|w| w.name == weight) {
                return Err(self.corrupt(format!("tensor '{name}' belongs to no weight of the model's architecture")));
            }
        }
        Ok(())
    }
}
