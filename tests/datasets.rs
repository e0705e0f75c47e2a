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
    DataSource { data_dir: Some(dir.to_path_buf()), allow_download: false, ..DataSource::default() }
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
        cache_dir: Some(tmp.path().to_path_buf()),
        mirror: Some(format!("http://{closed}/mnist")),
        allow_download: true,
        ..DataSource::default()
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

/// A CIFAR binary batch of `n` records: label byte(s) then 3 planes of 1024 bytes.
/// Image i has red = i, green = 100 + pixel % 100, blue = 7; its labels are `labels(i)`.
fn cifar_batch(n: usize, labels: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        out.extend(labels(i));
        out.extend(std::iter::repeat_n(i as u8, 1024));
        out.extend((0..1024).map(|p| (100 + p % 100) as u8));
        out.extend(std::iter::repeat_n(7u8, 1024));
    }
    out
}

fn cifar10_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> =
        (1..=5).map(|b| (format!("data_batch_{b}.bin"), cifar_batch(4, |i| vec![(i + b) as u8 % 10]))).collect();
    files.push(("test_batch.bin".into(), cifar_batch(3, |i| vec![9 - i as u8])));
    files
}

#[test]
fn cifar10_loads_extracted_or_from_its_archive_channels_last() {
    use keel::datasets::catalog;
    let check = |source: &DataSource| {
        let entry = catalog::find("cifar10").unwrap();
        let ((x, y), (xt, yt)) = entry.load(source).unwrap();
        assert_eq!(
            (x.shape(), y.shape(), xt.shape(), yt.shape()),
            (&[20, 32, 32, 3][..], &[20][..], &[3, 32, 32, 3][..], &[3][..])
        );
        let pixels = x.to_f32_vec();
        // Image 2 of batch 1, pixel 5: (red, green, blue) = (2, 105, 7), channels last.
        assert_eq!(&pixels[(2 * 1024 + 5) * 3..][..3], &[2.0, 105.0, 7.0]);
        assert_eq!(yt.to_f32_vec(), [9.0, 8.0, 7.0]);
        assert_eq!(entry.class_names(source)[0], "airplane");
    };
    let tmp = tempfile::tempdir().unwrap();
    let extracted = tmp.path().join("cifar10").join("cifar-10-batches-bin");
    std::fs::create_dir_all(&extracted).unwrap();
    for (name, bytes) in cifar10_files() {
        std::fs::write(extracted.join(name), bytes).unwrap();
    }
    check(&offline(tmp.path()));

    let packed = tempfile::tempdir().unwrap();
    let dir = packed.path().join("cifar10");
    std::fs::create_dir_all(&dir).unwrap();
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, bytes) in cifar10_files() {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, format!("cifar-10-batches-bin/{name}"), &bytes[..]).unwrap();
    }
    std::fs::write(dir.join("cifar-10-binary.tar.gz"), builder.into_inner().unwrap().finish().unwrap()).unwrap();
    check(&offline(packed.path()));
}

#[test]
fn cifar100_has_fine_and_coarse_labels_and_named_classes() {
    use keel::datasets::cifar::{LabelMode, cifar100_class_names, load_cifar100_from};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar100").join("cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("train.bin"), cifar_batch(6, |i| vec![i as u8 % 20, 50 + i as u8])).unwrap();
    std::fs::write(dir.join("test.bin"), cifar_batch(2, |i| vec![19, 99 - i as u8])).unwrap();
    let names: String = (0..100).map(|i| format!("class{i}\n")).collect();
    std::fs::write(dir.join("fine_label_names.txt"), names).unwrap();
    let source = offline(tmp.path());
    let ((_, fine), (_, fine_test)) = load_cifar100_from(LabelMode::Fine, &source).unwrap();
    assert_eq!(fine.to_f32_vec(), [50.0, 51.0, 52.0, 53.0, 54.0, 55.0]);
    assert_eq!(fine_test.to_f32_vec(), [99.0, 98.0]);
    let ((_, coarse), _) = load_cifar100_from(LabelMode::Coarse, &source).unwrap();
    assert_eq!(coarse.to_f32_vec(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(cifar100_class_names(LabelMode::Fine, &source).unwrap()[42], "class42");
}

#[test]
fn corrupt_cifar_files_are_named_with_the_problem() {
    use keel::datasets::cifar::load_cifar10_from;
    let cases: [(&str, Vec<u8>, &str); 2] = [
        (
            "test_batch.bin",
            cifar_batch(2, |_| vec![3])[..5000].to_vec(),
            "5000 bytes is not a whole number of 3073-byte records",
        ),
        ("data_batch_3.bin", cifar_batch(2, |_| vec![10]), "record 0 has label 10, outside the classes 0-9"),
    ];
    for (bad, bytes, message) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cifar10");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, good) in cifar10_files() {
            std::fs::write(dir.join(&name), if name == bad { bytes.clone() } else { good }).unwrap();
        }
        let err = load_cifar10_from(&offline(tmp.path())).unwrap_err().to_string();
        assert!(err.contains(bad) && err.contains(message), "{err}");
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("cifar10")).unwrap();
    std::fs::write(tmp.path().join("cifar10/cifar-10-binary.tar.gz"), gz(b"not a tar file at all")).unwrap();
    let err = load_cifar10_from(&offline(tmp.path())).unwrap_err().to_string();
    assert!(err.contains("cifar-10-binary.tar.gz"), "{err}");
}

#[test]
fn the_mnist_family_loads_with_its_class_names() {
    use keel::datasets::catalog;
    let tmp = tempfile::tempdir().unwrap();
    for name in ["fashion-mnist", "kmnist"] {
        write_tiny_mnist(&tmp.path().join(name));
        let entry = catalog::find(name).unwrap();
        let ((x, y), (xt, _)) = entry.load(&offline(tmp.path())).unwrap();
        assert_eq!((x.shape(), y.shape(), xt.shape()), (&[12, 28, 28, 1][..], &[12][..], &[5, 28, 28, 1][..]));
        assert_eq!(entry.class_names(&offline(tmp.path())).len(), 10);
    }
    assert_eq!(catalog::find("fashion_mnist").unwrap().class_names(&offline(tmp.path()))[9], "Ankle boot");
    let err = catalog::find("imagenet").err().unwrap().to_string();
    assert!(err.contains("unknown dataset 'imagenet'") && err.contains("cifar100"), "{err}");
}

#[test]
fn system_dataset_dirs_come_after_the_data_dir_and_before_the_cache() {
    let (data, system, cache) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_tiny_mnist(&system.path().join("fashion-mnist"));
    let source = DataSource {
        data_dir: Some(data.path().to_path_buf()),
        system_dirs: vec![system.path().to_path_buf()],
        cache_dir: Some(cache.path().to_path_buf()),
        ..DataSource::default()
    };
    let dirs = source.search_dirs("fashion-mnist");
    assert_eq!(
        dirs,
        [
            data.path().join("fashion-mnist"),
            data.path().to_path_buf(),
            system.path().join("fashion-mnist"),
            cache.path().join("fashion-mnist")
        ]
    );
    let ((x, _), _) = keel::datasets::fashion_mnist::load_data_from(&source).unwrap();
    assert_eq!(x.shape(), &[12, 28, 28]);
    assert_eq!(DataSource::from_env().system_dirs, [std::path::PathBuf::from("/usr/share/datasets")]);
}

/// A 3-class folder: class k's images are `size` pictures with a bright stripe at row k*4 (PNG, JPEG and BMP).
fn write_image_folder(root: &Path, per_class: usize, size: (u32, u32)) {
    for (k, class) in ["cat", "dog", "emu"].iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(size.1, size.0, |_, y| {
                if y as usize / 4 == k { image::Rgb([250, 200, 10 * i as u8]) } else { image::Rgb([5, 5, 5]) }
            });
            let ext = ["png", "jpg", "bmp"][i % 3];
            img.save(dir.join(format!("{i}.{ext}"))).unwrap();
        }
        std::fs::write(dir.join("notes.txt"), "not an image: skipped").unwrap();
    }
}

#[test]
fn image_folders_load_in_class_order_with_sizes_and_colour_modes() {
    use keel::datasets::image_folder::{ColorMode, FolderOptions, image_folder};
    let tmp = tempfile::tempdir().unwrap();
    write_image_folder(tmp.path(), 4, (12, 10));
    let plain = image_folder(tmp.path(), &FolderOptions::default()).unwrap();
    assert_eq!(plain.class_names, ["cat", "dog", "emu"]);
    assert_eq!(plain.images.shape(), &[12, 12, 10, 3]);
    assert_eq!(plain.labels.to_f32_vec(), [0., 0., 0., 0., 1., 1., 1., 1., 2., 2., 2., 2.]);
    assert!(plain.files[4].ends_with("dog/0.png"));
    // Pixel (row 4, column 0) of the first dog is its stripe (lossless PNG).
    assert_eq!(&plain.images.slice_rows(4, 5).unwrap().to_f32_vec()[4 * 10 * 3..][..3], &[250.0, 200.0, 0.0]);

    let grey = FolderOptions { image_size: Some((6, 5)), color_mode: ColorMode::Grayscale, shuffle_seed: Some(3) };
    let small = image_folder(tmp.path(), &grey).unwrap();
    assert_eq!(small.images.shape(), &[12, 6, 5, 1]);
    let mut labels = small.labels.to_f32_vec();
    assert_ne!(labels, plain.labels.to_f32_vec(), "shuffled");
    labels.sort_by(f32::total_cmp);
    assert_eq!(labels, plain.labels.to_f32_vec());
    let again = image_folder(tmp.path(), &grey).unwrap();
    assert_eq!(again.files, small.files, "the same seed gives the same order");
}

#[test]
fn bad_image_folders_are_clear_errors() {
    use keel::datasets::image_folder::{FolderOptions, image_folder};
    let err = |setup: &dyn Fn(&Path)| {
        let tmp = tempfile::tempdir().unwrap();
        setup(tmp.path());
        image_folder(tmp.path(), &FolderOptions::default()).unwrap_err().to_string()
    };
    let mixed = err(&|root| {
        write_image_folder(root, 2, (8, 8));
        image::RgbImage::new(9, 7).save(root.join("emu/big.png")).unwrap();
    });
    assert!(mixed.contains("big.png") && mixed.contains("--image-size"), "{mixed}");
    let empty = err(&|root| {
        write_image_folder(root, 2, (8, 8));
        std::fs::create_dir_all(root.join("fox")).unwrap();
    });
    assert!(empty.contains("class folder 'fox' has no images"), "{empty}");
    let broken = err(&|root| {
        write_image_folder(root, 2, (8, 8));
        std::fs::write(root.join("dog/broken.jpg"), b"\xff\xd8 not really a jpeg").unwrap();
    });
    assert!(broken.contains("broken.jpg") && broken.contains("not a readable PNG, JPEG or BMP image"), "{broken}");
    let flat = err(&|root| std::fs::write(root.join("a.png"), b"x").unwrap());
    assert!(flat.contains("has no class folders"), "{flat}");
}

#[test]
fn a_streamed_folder_trains_exactly_like_the_same_folder_in_memory() {
    use keel::datasets::image_folder::{FolderOptions, image_folder, image_folder_stream};
    use keel::prelude::*;
    let tmp = tempfile::tempdir().unwrap();
    write_image_folder(tmp.path(), 9, (12, 10));
    let options = FolderOptions { image_size: Some((8, 8)), shuffle_seed: Some(1), ..FolderOptions::default() };
    let scale = 1.0 / 255.0;
    let train = |x: &dyn keel::tensor::Samples, labels: &Tensor| {
        let mut model = Sequential::new()
            .seed(3)
            .add(RandomFlip::new(FlipMode::Horizontal).input_shape([8, 8, 3]))
            .add(Conv2D::new(4, (3, 3)).activation(Activation::Relu))
            .add(Flatten::new())
            .add(Dense::new(3).activation(Activation::Softmax));
        model.compile(Adam::default(), Loss::SparseCategoricalCrossentropy, &[Metric::Accuracy]).unwrap();
        let options = FitOptions {
            epochs: 2,
            batch_size: 5,
            validation_split: 0.2,
            verbose: keel::model::Verbosity::Silent,
            ..FitOptions::default()
        };
        let history = model.fit(x, labels, &options).unwrap();
        (model.params().unwrap().to_vec(), history.last().unwrap().logs.clone(), model.predict(x).unwrap().to_f32_vec())
    };
    let memory = image_folder(tmp.path(), &options).unwrap();
    let (stream, labels, classes) = image_folder_stream(tmp.path(), &options, scale).unwrap();
    assert_eq!(classes, memory.class_names);
    assert_eq!(labels.to_f32_vec(), memory.labels.to_f32_vec());
    assert_eq!(stream.files(), memory.files.as_slice());
    assert_eq!(train(&stream, &labels), train(&(memory.images * scale), &memory.labels));

    // A broken file is only found when its batch is read: fit stops with an error naming it.
    std::fs::write(tmp.path().join("dog/zz.png"), b"not a png").unwrap();
    let (stream, labels, _) = image_folder_stream(tmp.path(), &options, scale).unwrap();
    let mut model =
        Sequential::new().add(Flatten::new().input_shape([8, 8, 3])).add(Dense::new(3).activation(Activation::Softmax));
    model.compile(SGD::default(), Loss::SparseCategoricalCrossentropy, &[]).unwrap();
    let quiet = FitOptions { verbose: keel::model::Verbosity::Silent, ..FitOptions::default() };
    let err = model.fit(&stream, &labels, &quiet).unwrap_err().to_string();
    assert!(err.contains("zz.png") && err.contains("not a readable"), "{err}");
}

#[test]
fn gzip_bombs_are_refused_by_their_header_before_inflating() {
    let labels = gz(&idx::encode(&[10], &[1; 10]));
    // 10 images declared, 200 MB of zeros behind them: read no further than declared.
    let mut bomb = idx::encode(&[10, 28, 28], &[0; 10 * 784]);
    bomb.resize(200 << 20, 0);
    let bomb = gz(&bomb);
    assert!(bomb.len() < 1 << 20, "the bomb is small: {} bytes", bomb.len());
    let err = corrupt_case(bomb, labels.clone());
    assert!(err.contains("unexpected bytes after the 7840 bytes"), "{err}");
    // A header whose count contradicts the labels' is refused before the data is read.
    let err = corrupt_case(gz(&idx::encode(&[60_000, 28, 28], &[])), labels.clone());
    assert!(err.contains("holds 10 labels") && err.contains("60000 images"), "{err}");
    // An absurd declared size is refused before anything is allocated.
    let mut huge = idx::encode(&[10, 28, 28], &[]);
    huge[8..12].copy_from_slice(&4_000_000u32.to_be_bytes());
    huge[12..16].copy_from_slice(&4_000_000u32.to_be_bytes());
    let err = corrupt_case(gz(&huge), labels);
    assert!(err.contains("more than keel reads"), "{err}");
}

#[test]
fn a_named_dataset_refuses_a_header_with_another_image_size() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    // 10 images declared as 1000x1000 (10 MB), with no data behind the header.
    std::fs::write(dir.join("train-images-idx3-ubyte"), idx::encode(&[10, 1000, 1000], &[])).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx::encode(&[10], &[1; 10])).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx::encode(&[1, 28, 28], &[0; 784])).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx::encode(&[1], &[1])).unwrap();
    let source = DataSource { data_dir: Some(tmp.path().into()), ..DataSource::default() };
    let err = mnist::load_data_from(&source).err().unwrap().to_string();
    assert!(err.contains("declares 1000x1000 images, but this dataset's are 28x28"), "{err}");
}
