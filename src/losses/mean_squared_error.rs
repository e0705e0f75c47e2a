// L = mean_i (y_i - t_i)^2 per row;  dL/dy = 2 (y - t) / width
pub(super) fn mean_squared_error(out: &[f32], target: &[f32], grad: &mut [f32], width: usize, scale: f32) -> f64 {
    let g_scale = 2.0 * scale / width as f32;
    let mut total = 0.0f64;
    for ((gi, &y), &t) in grad.iter_mut().zip(out).zip(target) {
        let d = y - t;
        total += (d * d) as f64;
        *gi = d * g_scale;
    }
    total / width as f64
}
