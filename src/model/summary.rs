//! The Keras `model.summary()` table.

/// One layer's line in the table.
pub(super) struct Row {
    pub name: String,
    pub class: &'static str,
    pub shape: Vec<usize>,
    pub params: usize,
}

/// A per-sample shape as Keras prints a batch shape: (None, 26, 26, 32).
pub(crate) fn shape_str(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("(None, {})", dims.join(", "))
}

/// 54410 -> "54,410"
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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

pub(super) fn render(model_name: &str, rows: &[Row]) -> String {
    let cells: Vec<[String; 3]> =
        rows.iter().map(|r| [format!("{} ({})", r.name, r.class), shape_str(&r.shape), thousands(r.params)]).collect();
    let header = ["Layer (type)", "Output Shape", "Param #"];
    // Keras' default column widths, widened when a cell needs more room.
    let mut widths = [36, 27, 15];
    for row in cells.iter().chain(std::iter::once(&header.map(String::from))) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let rule = |left: &str, mid: &str, right: &str, fill: &str| {
        let parts: Vec<String> = widths.iter().map(|w| fill.repeat(w + 2)).collect();
        format!("{left}{}{right}\n", parts.join(mid))
    };
    let line = |sep: &str, cells: [&str; 3]| {
        format!(
            "{sep} {:<w0$} {sep} {:<w1$} {sep} {:>w2$} {sep}\n",
            cells[0],
            cells[1],
            cells[2],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )
    };
    let mut out = format!("Model: \"{model_name}\"\n");
    out += &rule("┏", "┳", "┓", "━");
    out += &line("┃", header);
    out += &rule("┡", "╇", "┩", "━");
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out += &rule("├", "┼", "┤", "─");
        }
        out += &line("│", [&c[0], &c[1], &c[2]]);
    }
    out += &rule("└", "┴", "┘", "─");
    let total: usize = rows.iter().map(|r| r.params).sum();
    let count = |n: usize| format!("{} ({})", thousands(n), readable_size(n * 4));
    out += &format!(" Total params: {}\n", count(total));
    out += &format!(" Trainable params: {}\n", count(total));
    out += &format!(" Non-trainable params: {}\n", count(0));
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
