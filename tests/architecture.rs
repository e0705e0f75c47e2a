//! The layering the code promises: layers say what to compute, the device
//! says how. No file in `src/layers/` spawns threads, uses rayon, picks a SIMD
//! level or calls a kernel that does the work itself; they go through
//! `device::current()`.

use std::path::Path;

#[test]
fn layers_leave_threads_and_kernel_choice_to_the_device() {
    let forbidden = [
        "rayon",
        "par_chunks",
        "par_iter",
        "std::thread",
        "multiversion",
        "is_x86_feature_detected",
        "target_feature",
        "kernels::matmul",
        "kernels::im2col",
        "kernels::conv_direct",
        "kernels::pool",
        "kernels::narrow",
        "activation::forward",
        "activation::backward",
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/layers");
    let mut checked = 0;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("src/layers is readable") {
        let path = entry.expect("a directory entry").path();
        let text = std::fs::read_to_string(&path).expect("a layer file is readable");
        for (line_no, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden.iter().filter(|w| code.contains(*w)) {
                found.push(format!("{}:{}: {word}", path.display(), line_no + 1));
            }
        }
        checked += 1;
    }
    assert!(checked >= 20, "expected the layer files in {}, found {checked}", dir.display());
    assert!(found.is_empty(), "layers doing the device's work:\n{}", found.join("\n"));
}
