//! Requests turned into model inputs: TF Serving's JSON (row format
//! `{"instances": [...]}`, columnar `{"inputs": ...}`; each instance a nested
//! array in the input shape, already scaled, or `{"b64": "..."}` image
//! bytes), and image files, prepared as `keel predict` prepares them.

use crate::datasets::image_folder::{ColorMode, decode_bytes};
use serde_json::Value;
use std::path::Path;

/// What the model takes and how images become its input.
#[derive(Clone, Debug)]
pub struct InputSpec {
    /// One instance's shape, e.g. [28, 28, 1].
    pub shape: Vec<usize>,
    /// Input = pixel byte * scale.
    pub scale: f32,
    /// Most pixels an uploaded image may claim before it is decoded.
    pub max_pixels: u64,
    /// Most instances in one request.
    pub max_instances: usize,
}

/// Which form the request used: the answer has the same form.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Form {
    /// `{"instances": ...}`, answered with `{"predictions": ...}`.
    Rows,
    /// `{"inputs": ...}`, answered with `{"outputs": ...}`.
    Columns,
}

/// A TF Serving predict request's instances, row after row, with their count.
pub fn parse_predict(body: &[u8], spec: &InputSpec) -> Result<(Vec<f32>, usize, Form), String> {
    let request: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let Value::Object(map) = &request else {
        return Err("the body must be a JSON object with \"instances\" or \"inputs\"".into());
    };
    let (list, form) = match (map.get("instances"), map.get("inputs")) {
        (Some(_), Some(_)) => return Err("give \"instances\" or \"inputs\", not both".into()),
        (Some(v), None) => (v, Form::Rows),
        (None, Some(Value::Object(named))) if named.len() == 1 => {
            (named.values().next().expect("one entry"), Form::Columns)
        }
        (None, Some(Value::Object(named))) => {
            return Err(format!("the model has one input; \"inputs\" names {}", named.len()));
        }
        (None, Some(v)) => (v, Form::Columns),
        (None, None) => return Err("the body has neither \"instances\" nor \"inputs\"".into()),
    };
    let Value::Array(instances) = list else {
        return Err("\"instances\" (or \"inputs\") must be a list of instances".into());
    };
    if instances.is_empty() {
        return Err("the request has no instances".into());
    }
    if instances.len() > spec.max_instances {
        return Err(format!(
            "the request has {} instances; this server takes at most {} per request",
            instances.len(),
            spec.max_instances
        ));
    }
    let row: usize = spec.shape.iter().product();
    let mut values = Vec::with_capacity(instances.len() * row);
    for (i, instance) in instances.iter().enumerate() {
        let start = values.len();
        match instance {
            Value::Object(o) if o.len() == 1 && o.contains_key("b64") => {
                let text = o["b64"].as_str().ok_or_else(|| format!("instance {i}: \"b64\" must be a string"))?;
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|e| format!("instance {i}: \"b64\" is not base64: {e}"))?;
                let pixels = image_input(&bytes, spec, false).map_err(|e| format!("instance {i}: {e}"))?;
                values.extend(pixels);
            }
            _ => {
                flatten(instance, &spec.shape, &mut values).map_err(|e| {
                    format!(
                        "instance {i} {e}; each instance is a nested list of shape {:?} (or {{\"b64\": image bytes}})",
                        spec.shape
                    )
                })?;
            }
        }
        debug_assert_eq!(values.len() - start, row);
    }
    Ok((values, instances.len(), form))
}

/// Appends the numbers of `value`, which must be nested lists of `shape`
/// (a trailing channel of 1 may be left out).
fn flatten(value: &Value, shape: &[usize], out: &mut Vec<f32>) -> Result<(), String> {
    match (value, shape) {
        (Value::Number(n), []) | (Value::Number(n), [1]) => {
            let v = n.as_f64().filter(|v| v.is_finite() && v.abs() <= f32::MAX as f64);
            out.push(v.ok_or_else(|| format!("holds {n}, not a finite number"))? as f32);
            Ok(())
        }
        (Value::Array(items), [len, rest @ ..]) if items.len() == *len => {
            items.iter().try_for_each(|item| flatten(item, rest, out))
        }
        (Value::Array(items), [len, ..]) => Err(format!("has a list of {} where {len} belong", items.len())),
        (Value::Array(_), []) => Err("has a list where a number belongs".into()),
        (other, _) => {
            Err(format!("holds {} where {} belongs", kind(other), if shape.len() <= 1 { "a number" } else { "a list" }))
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// An image file's bytes as one model input (grey or RGB, resized, scaled;
/// inverted first when asked), its size checked before it is decoded.
pub fn image_input(bytes: &[u8], spec: &InputSpec, invert: bool) -> Result<Vec<f32>, String> {
    let &[h, w, c] = spec.shape.as_slice() else {
        return Err(format!("the model takes inputs of shape {:?}, not images", spec.shape));
    };
    let mode = ColorMode::for_channels(c).map_err(|e| e.to_string())?;
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("unreadable image: {e}"))?;
    if reader.format().is_none() {
        return Err("not a PNG, JPEG or BMP image".into());
    }
    let (width, height) =
        reader.into_dimensions().map_err(|e| format!("not a readable PNG, JPEG or BMP image ({e})"))?;
    if width as u64 * height as u64 > spec.max_pixels {
        return Err(format!(
            "the image claims {width}x{height} pixels, more than the {} this server decodes; send a smaller image",
            spec.max_pixels
        ));
    }
    let (mut pixels, _) =
        decode_bytes(bytes, Path::new("the upload"), Some((h, w)), mode).map_err(|e| e.to_string())?;
    if invert {
        pixels.iter_mut().for_each(|p| *p = 255 - *p);
    }
    // The same arithmetic as a byte tensor scaled in memory.
    Ok(pixels.iter().map(|&b| (b as f64 * spec.scale as f64) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InputSpec {
        InputSpec { shape: vec![2, 2, 1], scale: 1.0 / 255.0, max_pixels: 1 << 20, max_instances: 8 }
    }

    #[test]
    fn rows_and_columns_parse_to_the_same_values() {
        let rows = br#"{"instances": [[[0.1, 0.2], [0.3, 0.4]], [[[1], [2]], [[3], [4]]]]}"#;
        let (values, n, form) = parse_predict(rows, &spec()).unwrap();
        assert_eq!((n, form), (2, Form::Rows));
        assert_eq!(values, vec![0.1, 0.2, 0.3, 0.4, 1.0, 2.0, 3.0, 4.0]);
        let columns = br#"{"inputs": {"x": [[[0.1, 0.2], [0.3, 0.4]], [[1, 2], [3, 4]]]}}"#;
        let (again, n, form) = parse_predict(columns, &spec()).unwrap();
        assert_eq!((again, n, form), (values, 2, Form::Columns));
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        let error = |body: &str| parse_predict(body.as_bytes(), &spec()).unwrap_err();
        assert!(error("{").contains("not valid JSON"));
        assert!(error("[1]").contains("JSON object"));
        assert!(error(r#"{"instances": []}"#).contains("no instances"));
        assert!(error(r#"{"instances": [[[1, 2]]]}"#).contains("list of 1 where 2 belong"));
        assert!(error(r#"{"instances": [[[1, 2], [3, "a"]]]}"#).contains("a string where a number belongs"));
        assert!(error(r#"{"instances": [[[1, 2], [3, 1e999]]]}"#).contains("not valid JSON"));
        assert!(error(r#"{"instances": [[[1, 2], [3, 1e300]]]}"#).contains("not a finite number"));
        assert!(error(r#"{"instances": [1, 2, 3, 4, 5, 6, 7, 8, 9]}"#).contains("at most 8"));
        assert!(error(r#"{"instances": [{"b64": "@@"}]}"#).contains("not base64"));
        assert!(error(r#"{"signature_name": "x"}"#).contains("neither"));
    }

    #[test]
    fn huge_images_are_refused_before_decoding() {
        // A PNG header claiming 50000 x 50000 pixels, with no pixel data.
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, b'I', b'H', b'D', b'R'];
        png.extend_from_slice(&50000u32.to_be_bytes());
        png.extend_from_slice(&50000u32.to_be_bytes());
        png.extend_from_slice(&[8, 0, 0, 0, 0]);
        let crc = crc32(&png[12..]);
        png.extend_from_slice(&crc.to_be_bytes());
        // An empty IDAT and IEND: a complete header, no pixels.
        for chunk in [&b"IDAT"[..], &b"IEND"[..]] {
            png.extend_from_slice(&0u32.to_be_bytes());
            png.extend_from_slice(chunk);
            png.extend_from_slice(&crc32(chunk).to_be_bytes());
        }
        let error = image_input(&png, &spec(), false).unwrap_err();
        assert!(error.contains("50000x50000"), "{error}");
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}
