//! Dataset files: IDX parsing, where files are looked for, and checksummed
//! downloads from a local HTTP server. All data is synthetic.

use flate2::Compression;
use flate2::write::GzEncoder;
use keel::datasets::download::{fetch_verified, sha256_hex};
use keel::datasets::{DataSource, idx, mnist};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Writes a tiny MNIST (train: 12 images, test: 5) into `dir`, images gzipped, labels raw.
fn write_tiny_mnist(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", 12usize), ("t10k", 5)] {
        let pixels: Vec<u8> = (0..n * 784).map(|i| (i % 251) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte.gz")), gz(&idx::encode(&[n, 28, 28], &pixels)))
            .unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), idx::encode(&[n], &labels)).unwrap();
    }
}

fn offline(dir: &Path) -> DataSource {
    DataSource { data_dir: Some(dir.to_path_buf()), cache_dir: None, mirror: None, allow_download: false }
}

#[test]
fn loads_raw_and_gzipped_files_from_the_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_mnist(&tmp.path().join("mnist"));
    let ((x_train, y_train), (x_test, y_test)) = mnist::load_data_from(&offline(tmp.path())).unwrap();
    assert_eq!(x_train.shape(), &[12, 28, 28]);
    assert_eq!(y_train.shape(), &[12]);
    assert_eq!(x_test.shape(), &[5, 28, 28]);
    assert!(x_train.is_u8());
    assert_eq!(x_train.get(300), Some((300 % 251) as f32));
    assert_eq!(y_test.get(3), Some(3.0));
}

#[test]
fn files_directly_in_the_data_dir_are_found_too() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_mnist(tmp.path());
    assert!(mnist::load_data_from(&offline(tmp.path())).is_ok());
}

#[test]
fn missing_files_list_what_was_looked_for_and_where() {
    let tmp = tempfile::tempdir().unwrap();
    let err = mnist::load_data_from(&offline(tmp.path())).unwrap_err().to_string();
    for name in
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    {
        assert!(err.contains(name), "{err}");
    }
    assert!(err.contains(&tmp.path().join("mnist").display().to_string()), "{err}");
    assert!(err.contains("--data-dir") && err.contains("KEEL_DATA_DIR"), "{err}");
}

#[test]
fn a_failed_download_is_reported_with_the_places_searched() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nobody listens on: the download fails at once.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let source = DataSource {
        data_dir: None,
        cache_dir: Some(tmp.path().to_path_buf()),
        mirror: Some(format!("http://{closed}/mnist")),
        allow_download: true,
    };
    let err = mnist::load_data_from(&source).unwrap_err().to_string();
    assert!(err.contains("Downloading them failed") && err.contains(&closed.to_string()), "{err}");
    let cache = tmp.path().join("mnist");
    let empty = std::fs::read_dir(&cache).map_or(true, |mut entries| entries.next().is_none());
    assert!(empty, "no partial files may stay in {}", cache.display());
}

fn corrupt_case(images: Vec<u8>, labels: Vec<u8>) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let (ip, lp) = (tmp.path().join("images"), tmp.path().join("labels"));
    std::fs::write(&ip, images).unwrap();
    std::fs::write(&lp, labels).unwrap();
    mnist::read_split(&ip, &lp).unwrap_err().to_string()
}

#[test]
fn corrupt_files_are_named_with_the_problem() {
    let good_images = idx::encode(&[3, 28, 28], &[7; 3 * 784]);
    let good_labels = idx::encode(&[3], &[1, 2, 3]);

    let mut truncated = good_images.clone();
    truncated.truncate(truncated.len() - 100);
    let err = corrupt_case(truncated, good_labels.clone());
    assert!(err.contains("images") && err.contains("truncated"), "{err}");

    let mut wrong_magic = good_images.clone();
    wrong_magic[0] = 0x1f;
    wrong_magic[1] = 0x00;
    let err = corrupt_case(wrong_magic, good_labels.clone());
    assert!(err.contains("wrong magic"), "{err}");

    // A labels file where an images file belongs.
    let err = corrupt_case(good_labels.clone(), good_labels.clone());
    assert!(err.contains("1 dimension(s) but 3"), "{err}");

    let err = corrupt_case(good_images.clone(), idx::encode(&[2], &[1, 2]));
    assert!(err.contains("labels") && err.contains("2 labels") && err.contains("3 images"), "{err}");

    let err = corrupt_case(good_images.clone(), idx::encode(&[3], &[1, 2, 12]));
    assert!(err.contains("outside the classes"), "{err}");

    let mut bad_gz = gz(&good_images);
    let mid = bad_gz.len() / 2;
    bad_gz.truncate(mid);
    let err = corrupt_case(bad_gz, good_labels.clone());
    assert!(err.contains("gzip"), "{err}");

    let err = corrupt_case(vec![0, 0], good_labels);
    assert!(err.contains("too short"), "{err}");
}

/// Serves `body` once; with `cut` it announces the full length but sends only part.
fn serve_once(body: Vec<u8>, cut: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                return;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        stream.write_all(head.as_bytes()).unwrap();
        let sent = if cut { &body[..body.len() / 2] } else { &body[..] };
        stream.write_all(sent).unwrap();
    });
    format!("http://{addr}/file.gz")
}

fn dir_is_empty_but(dir: &Path, keep: &str) -> bool {
    std::fs::read_dir(dir).unwrap().all(|e| e.unwrap().file_name() == keep)
}

#[test]
fn downloads_are_verified_and_atomic() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("cache").join("file.gz");
    let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let sum = sha256_hex(&body);

    fetch_verified(&serve_once(body.clone(), false), &dest, &sum).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);

    let other = tmp.path().join("cache").join("other.gz");
    let err = fetch_verified(&serve_once(body.clone(), false), &other, &"0".repeat(64)).unwrap_err().to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(!other.exists());

    let err = fetch_verified(&serve_once(body, true), &other, &sum).unwrap_err().to_string();
    assert!(err.contains("download failed"), "{err}");
    assert!(!other.exists());
    assert!(dir_is_empty_but(&tmp.path().join("cache"), "file.gz"), "temporary files must be removed");
}
