//! Data loaders on real files: Fashion-MNIST as setup installs it, CIFAR-10's binary format on a
//! file written here, corrupt files, seeded batches and augmentation.

use hw9::data::images::{augment, batches, load_cifar10, load_fashion_mnist, parse_idx};
use tch::{Device, Kind, Tensor};

#[test]
fn fashion_mnist_loads_60k_and_10k_images_with_balanced_labels() {
    let dir = hw9::data::images::fashion_mnist_dir();
    let data = load_fashion_mnist(&dir).unwrap_or_else(|e| panic!("{e} (run `make setup` first)"));
    assert_eq!(data.train.images.size(), [60000, 1, 28, 28]);
    assert_eq!(data.test.images.size(), [10000, 1, 28, 28]);
    assert_eq!(data.train.images.kind(), Kind::Uint8);
    // Each of the 10 classes has 6000 training images.
    assert!(data.train.labels.bincount::<Tensor>(None, 10).equal(&Tensor::full(
        [10],
        6000,
        (Kind::Int64, Device::Cpu)
    )));
    // The published statistics of Fashion-MNIST: mean 0.2860, std 0.3530.
    assert!(
        (data.mean[0] - 0.2860).abs() < 1e-3 && (data.std[0] - 0.3530).abs() < 1e-3,
        "{:?} {:?}",
        data.mean,
        data.std
    );
    let x = data.normalize(&data.train.images.narrow(0, 0, 1000));
    assert!(x.mean(Kind::Float).double_value(&[]).abs() < 0.05);
}

#[test]
fn corrupt_and_missing_files_are_named() {
    let err = parse_idx(b"\x00\x00\x08\x03\x00\x00", std::path::Path::new("x.idx")).unwrap_err().to_string();
    assert!(err.contains("corrupt IDX file x.idx") && err.contains("header needs 16 bytes"), "{err}");
    let err = parse_idx(b"GIF89a....", std::path::Path::new("y")).unwrap_err().to_string();
    assert!(err.contains("expected the IDX magic"), "{err}");
    let err = load_fashion_mnist(std::path::Path::new("/nonexistent")).unwrap_err().to_string();
    assert!(err.contains("missing Fashion-MNIST images") && err.contains("make setup"), "{err}");
}

#[test]
fn cifar10_binary_batches_load_in_channel_planes() {
    let dir_tmp = tempfile::tempdir().unwrap();
    let dir = dir_tmp.path().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    // Two records per file: label, then R, G and B planes of 32x32 bytes each.
    let record = |label: u8, fill: [u8; 3]| {
        let mut r = vec![label];
        for c in fill {
            r.extend(std::iter::repeat_n(c, 1024));
        }
        r
    };
    std::fs::write(dir.join("data_batch_1.bin"), [record(3, [10, 20, 30]), record(9, [1, 2, 3])].concat()).unwrap();
    std::fs::write(dir.join("test_batch.bin"), record(0, [7, 8, 9])).unwrap();
    let data = load_cifar10(&dir).unwrap();
    assert_eq!(data.train.images.size(), [2, 3, 32, 32]);
    assert_eq!(Vec::<i64>::try_from(&data.train.labels).unwrap(), [3, 9]);
    assert_eq!(data.train.images.int64_value(&[0, 1, 5, 5]), 20);
    assert_eq!(data.test.images.int64_value(&[0, 2, 31, 31]), 9);
    assert_eq!(data.train.classes[3], "cat");
    std::fs::write(dir.join("test_batch.bin"), [0u8; 100]).unwrap();
    assert!(load_cifar10(&dir).unwrap_err().to_string().contains("multiple of 3073-byte records"));
}

/// libtorch's generator is global and the tests of a file run on parallel threads: the tests that
/// seed it take this lock, so that no other test draws between a seed and its use.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn batches_are_seeded_and_cover_the_set() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let set = hw9::data::images::ImageSet {
        images: Tensor::arange(10, (Kind::Uint8, Device::Cpu)).reshape([10, 1, 1, 1]),
        labels: Tensor::arange(10, (Kind::Int64, Device::Cpu)),
        classes: vec![],
    };
    let order = |seed| {
        tch::manual_seed(seed);
        batches(&set, 4, true, Device::Cpu).flat_map(|(_, y)| Vec::<i64>::try_from(&y).unwrap()).collect::<Vec<_>>()
    };
    let (a, b) = (order(1), order(1));
    assert_eq!(a, b);
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    assert_ne!(a, order(2));
}

#[test]
fn augmentation_flips_and_shifts_within_the_padding() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(0);
    let n = 400;
    // Every image different and asymmetric, so each shift and the flip change it.
    let x = Tensor::arange(n * 36, (Kind::Float, Device::Cpu)).reshape([n, 1, 6, 6]) + 1.0;
    let y = augment(&x, false, 2);
    assert_eq!(y.size(), [n, 1, 6, 6]);
    // Each output is the input shifted by at most 2 pixels, zero-filled at the border; over 400
    // images every one of the 25 offsets occurs (the chance of missing one is below 1e-5), so an
    // augmentation that does nothing (offset (2, 2) always) or shifts one way only fails here.
    let mut offsets = std::collections::BTreeMap::new();
    for b in 0..n {
        let padded = x.get(b).constant_pad_nd([2, 2, 2, 2]);
        let at = (0..5)
            .flat_map(|dy| (0..5).map(move |dx| (dy, dx)))
            .find(|&(dy, dx)| padded.narrow(1, dy, 6).narrow(2, dx, 6).equal(&y.get(b)));
        let at = at.unwrap_or_else(|| panic!("image {b} is not a shifted crop"));
        *offsets.entry(at).or_insert(0) += 1;
    }
    assert_eq!(offsets.len(), 25, "offsets seen: {offsets:?}");
    assert!(offsets[&(2, 2)] < n / 10, "most images unshifted: {offsets:?}");
    // Each image is itself or its mirror, and about half are mirrored.
    let flipped = augment(&x, true, 0);
    let mut mirrored = 0;
    for b in 0..n {
        let (f, xb) = (flipped.get(b), x.get(b));
        if f.equal(&xb.flip([2])) {
            mirrored += 1;
        } else {
            assert!(f.equal(&xb), "image {b} is neither itself nor its mirror");
        }
    }
    assert!((n * 3 / 10..=n * 7 / 10).contains(&mirrored), "{mirrored} of {n} mirrored");
}

#[test]
fn the_committed_corpus_is_clean_and_split_by_package() {
    let pairs = hw9::data::corpus::read_pairs(&hw9::data::corpus::corpus_path()).unwrap();
    assert!(pairs.len() > 50_000, "{} pairs", pairs.len());
    assert!(pairs
        .iter()
        .all(|p| !p.document.contains("packaged by debcargo") && p.document.split_whitespace().count() >= 20));
    assert!(pairs.iter().all(|p| p.split == hw9::data::corpus::split_of(&p.package)));
    let docs: std::collections::HashSet<&str> = pairs.iter().map(|p| p.document.as_str()).collect();
    assert_eq!(docs.len(), pairs.len(), "documents repeat");
    let zero_ad = pairs.iter().find(|p| p.package == "0ad").unwrap();
    assert_eq!(zero_ad.summary, "Real-time strategy game of ancient warfare");
}
