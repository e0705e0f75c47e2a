use super::{Callback, Control};
use crate::error::{Error, Result};
use crate::model::{History, Logs, Model};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

/// Streams each epoch's logs to a CSV file, as `keras.callbacks.CSVLogger`:
/// a header `epoch,accuracy,loss,val_accuracy,val_loss` (logs in name order)
/// and a row per epoch, written and flushed as each epoch ends. As in Keras
/// the `epoch` column counts from 0.
///
/// Arguments: `filename`; builder methods `separator` (default ',') and
/// `append` (default false: start a new file; true: add rows to an existing one).
///
/// ```
/// use keel::callbacks::CSVLogger;
/// let log = CSVLogger::new("training.csv");
/// ```
#[derive(Debug)]
pub struct CSVLogger {
    filename: PathBuf,
    separator: char,
    append: bool,
    file: Option<File>,
    keys: Vec<String>,
}

impl CSVLogger {
    pub fn new(filename: impl Into<PathBuf>) -> Self {
        CSVLogger { filename: filename.into(), separator: ',', append: false, file: None, keys: Vec::new() }
    }

    pub fn separator(mut self, separator: char) -> Self {
        self.separator = separator;
        self
    }

    pub fn append(mut self, append: bool) -> Self {
        self.append = append;
        self
    }
}

impl Callback for CSVLogger {
    fn on_train_begin(&mut self, _model: &mut Model) -> Result<()> {
        let had_rows = self.append && std::fs::metadata(&self.filename).is_ok_and(|m| m.len() > 0);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.append)
            .truncate(!self.append)
            .open(&self.filename)
            .map_err(|e| Error::io(&self.filename, e))?;
        self.file = Some(file);
        // Appending under an existing header: keep its columns.
        self.keys = if had_rows {
            let text = std::fs::read_to_string(&self.filename).map_err(|e| Error::io(&self.filename, e))?;
            let header = text.lines().next().unwrap_or_default();
            header.split(self.separator).skip(1).map(str::to_string).collect()
        } else {
            Vec::new()
        };
        Ok(())
    }

    fn on_epoch_end(&mut self, _model: &mut Model, epoch: usize, logs: &Logs) -> Result<Control> {
        let sep = self.separator.to_string();
        let mut text = String::new();
        if self.keys.is_empty() {
            self.keys = logs.keys().cloned().collect();
            text = format!("epoch{sep}{}\n", self.keys.join(&sep));
        }
        let values: Vec<String> =
            self.keys.iter().map(|k| logs.get(k).map_or_else(|| "NA".into(), |v| v.to_string())).collect();
        text += &format!("{}{sep}{}\n", epoch - 1, values.join(&sep));
        let file = self.file.as_mut().expect("opened in on_train_begin");
        file.write_all(text.as_bytes()).and_then(|()| file.flush()).map_err(|e| Error::io(&self.filename, e))?;
        Ok(Control::Continue)
    }

    fn on_train_end(&mut self, _model: &mut Model, _history: &History) -> Result<()> {
        self.file = None;
        Ok(())
    }
}
