//! The Keras `model.summary()` table.

use crate::utils::thousands;

/// One layer's line in the table.
pub(super) struct Row {
    pub name: String,
    pub class: &'static str,
    pub shape: Vec<usize>,
    pub params: usize,
    /// Functional models: the values this layer reads (`"conv2d[0][0]"`), one a line.
    pub connected: Option<Vec<String>>,
}

/// A per-sample shape as Keras prints a batch shape: (None, 26, 26, 32).
pub fn shape_str(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("(None, {})", dims.join(", "))
}

/// Bytes in Keras' units: 217640 -> "212.54 KB".
pub(crate) fn readable_size(bytes: usize) -> String {
    let mut size = bytes as f64;
    for unit in ["B", "KB", "MB", "GB", "TB"] {
        if size / 1024.0 < 1.0 {
            return format!("{size:.2} {unit}");
        }
        size /= 1024.0;
    }
    format!("{size:.2} PB")
}

/// The table; `counts` = (all weights, trainable ones).
pub(super) fn render(model_name: &str, rows: &[Row], (total, trainable): (usize, usize)) -> String {
    let functional = rows.iter().any(|r| r.connected.is_some());
    // Each row's cells, each cell one or more lines.
    let cells: Vec<Vec<Vec<String>>> = rows
        .iter()
        .map(|r| {
            let mut row =
                vec![vec![format!("{} ({})", r.name, r.class)], vec![shape_str(&r.shape)], vec![thousands(r.params)]];
            if functional {
                let connected = r.connected.clone().unwrap_or_default();
                row.push(if connected.is_empty() { vec!["-".into()] } else { connected });
            }
            row
        })
        .collect();
    let mut header = vec!["Layer (type)", "Output Shape", "Param #"];
    // Keras' default column widths, widened when a cell needs more room.
    let mut widths = vec![36, 27, 15];
    if functional {
        header.push("Connected to");
        widths = vec![29, 21, 10, 20];
    }
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.iter().map(|l| l.chars().count()).max().unwrap_or(0));
        }
    }
    let rule = |left: &str, mid: &str, right: &str, fill: &str| {
        let parts: Vec<String> = widths.iter().map(|w| fill.repeat(w + 2)).collect();
        format!("{left}{}{right}\n", parts.join(mid))
    };
    // Param # is right-aligned, the rest left-aligned.
    let line = |sep: &str, cells: &[&str]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| if i == 2 { format!(" {c:>w$} ") } else { format!(" {c:<w$} ") })
            .collect();
        format!("{sep}{}{sep}\n", parts.join(sep))
    };
    let mut out = format!("Model: \"{model_name}\"\n");
    out += &rule("┏", "┳", "┓", "━");
    out += &line("┃", &header);
    out += &rule("┡", "╇", "┩", "━");
    for (i, row) in cells.iter().enumerate() {
        if i > 0 {
            out += &rule("├", "┼", "┤", "─");
        }
        let height = row.iter().map(Vec::len).max().unwrap_or(1);
        for l in 0..height {
            let texts: Vec<&str> = row.iter().map(|cell| cell.get(l).map_or("", String::as_str)).collect();
            out += &line("│", &texts);
        }
    }
    out += &rule("└", "┴", "┘", "─");
    let count = |n: usize| format!("{} ({})", thousands(n), readable_size(n * 4));
    out += &format!(" Total params: {}\n", count(total));
    out += &format!(" Trainable params: {}\n", count(trainable));
    out += &format!(" Non-trainable params: {}\n", count(total - trainable));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format_like_keras() {
        assert_eq!(thousands(54410), "54,410");
        assert_eq!(thousands(320), "320");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(readable_size(54410 * 4), "212.54 KB");
        assert_eq!(readable_size(0), "0.00 B");
        assert_eq!(shape_str(&[5408]), "(None, 5408)");
    }
}
