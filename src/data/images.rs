//! Image datasets: Fashion-MNIST (IDX files, from Debian's `dataset-fashion-mnist`), CIFAR-10's
//! binary format, seeded shuffled batches, augmentation and normalisation, and `P × K` batches
//! (classes × images of each) for triplet training ([`PkSampler`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// A labelled image set in memory: `images: (N, C, H, W)` uint8, `labels: (N,)` int64.
#[derive(Debug)]
pub struct ImageSet {
    /// `(N, C, H, W)` uint8 pixels, as stored.
    pub images: Tensor,
    /// `(N,)` int64 class indices.
    pub labels: Tensor,
    /// Class names, index = label.
    pub classes: Vec<String>,
}

/// Train and test splits.
#[derive(Debug)]
pub struct Splits {
    /// The training images.
    pub train: ImageSet,
    /// The test images (the homework evaluates on them).
    pub test: ImageSet,
    /// Per-channel mean and standard deviation of the training pixels (in [0, 1]).
    pub mean: Vec<f64>,
    /// Per-channel standard deviation of the training pixels in [0, 1].
    pub std: Vec<f64>,
}

/// Fashion-MNIST's class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
/// CIFAR-10's class names, by label.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

fn read_maybe_gz(path: &Path, what: &str) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|_| {
        Error::missing(
            what.to_string(),
            path.to_path_buf(),
            "make setup (installs Fashion-MNIST from the Debian package dataset-fashion-mnist)",
        )
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| {
            Error::corrupt(what.to_string(), path.to_path_buf(), format!("not a valid gzip file ({e})"))
        })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX file (the MNIST format): magic `0x0000_08_<ndim>` (uint8 data), big-endian dims.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<Tensor> {
    let corrupt = |detail: String| Error::corrupt("IDX file", path.to_path_buf(), detail);
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(corrupt(format!(
            "expected the IDX magic 00 00 08 <ndim>, got {:02x?}",
            &bytes[..bytes.len().min(4)]
        )));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(corrupt(format!("the header needs {header} bytes, the file has {}", bytes.len())));
    }
    let dims: Vec<i64> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap_or([0; 4])) as i64)
        .collect();
    let expected = dims.iter().product::<i64>() as usize;
    if bytes.len() - header != expected {
        return Err(corrupt(format!(
            "dims {dims:?} need {expected} data bytes, the file has {}",
            bytes.len() - header
        )));
    }
    Ok(Tensor::from_slice(&bytes[header..]).reshape(&dims))
}

/// The Fashion-MNIST folder setup installs: `assets/data/fashion-mnist`.
pub fn fashion_mnist_dir() -> PathBuf {
    hw9_env::paths::assets().join("data/fashion-mnist")
}

/// Loads Fashion-MNIST (60k train, 10k test, 28×28×1) from `dir` (gzipped or plain IDX files).
pub fn load_fashion_mnist(dir: &Path) -> Result<Splits> {
    let load = |stem: &str, what: &str| -> Result<Tensor> {
        let gz = dir.join(format!("{stem}.gz"));
        let path = if gz.exists() { gz } else { dir.join(stem) };
        parse_idx(&read_maybe_gz(&path, what)?, &path)
    };
    let classes: Vec<String> = FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect();
    let set = |img: &str, lbl: &str| -> Result<ImageSet> {
        let images = load(img, "Fashion-MNIST images")?;
        let labels = load(lbl, "Fashion-MNIST labels")?.to_kind(Kind::Int64);
        if images.size().len() != 3 || images.size()[0] != labels.size()[0] {
            return Err(Error::Input(format!(
                "Fashion-MNIST {img}: expected images (N, 28, 28) with N labels, got {:?} and {:?}",
                images.size(),
                labels.size()
            )));
        }
        Ok(ImageSet { images: images.unsqueeze(1), labels, classes: classes.clone() })
    };
    let train = set("train-images-idx3-ubyte", "train-labels-idx1-ubyte")?;
    let test = set("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
    let (mean, std) = channel_stats(&train.images);
    Ok(Splits { train, test, mean, std })
}

/// Parses CIFAR-10 binary batches: records of 1 label byte then 3×32×32 pixel bytes (R, G, B planes).
pub fn parse_cifar10(bytes: &[u8], path: &Path) -> Result<ImageSet> {
    const RECORD: usize = 1 + 3 * 32 * 32;
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(Error::corrupt(
            "CIFAR-10 batch",
            path.to_path_buf(),
            format!("expected a multiple of {RECORD}-byte records, got {} bytes", bytes.len()),
        ));
    }
    let n = (bytes.len() / RECORD) as i64;
    let all = Tensor::from_slice(bytes).reshape([n, RECORD as i64]);
    let labels = all.select(1, 0).to_kind(Kind::Int64);
    if labels.max().int64_value(&[]) > 9 {
        return Err(Error::corrupt("CIFAR-10 batch", path.to_path_buf(), "a label above 9"));
    }
    let images = all.narrow(1, 1, RECORD as i64 - 1).reshape([n, 3, 32, 32]);
    Ok(ImageSet { images, labels, classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect() })
}

/// Loads CIFAR-10 from its binary distribution folder (`data_batch_1.bin` … `data_batch_5.bin`,
/// `test_batch.bin`). Any subset of the training batches present is used.
pub fn load_cifar10(dir: &Path) -> Result<Splits> {
    let read = |name: &str| -> Result<ImageSet> {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|_| {
            Error::missing(
                "CIFAR-10 batch",
                path.clone(),
                "point HW9_CIFAR10 at the folder of the CIFAR-10 binary version (cifar-10-batches-bin)",
            )
        })?;
        parse_cifar10(&bytes, &path)
    };
    let batches: Vec<ImageSet> = (1..=5)
        .map(|i| format!("data_batch_{i}.bin"))
        .filter(|n| dir.join(n).exists())
        .map(|n| read(&n))
        .collect::<Result<_>>()?;
    if batches.is_empty() {
        read("data_batch_1.bin")?; // reports the missing file
    }
    let train = ImageSet {
        images: Tensor::cat(&batches.iter().map(|b| b.images.shallow_clone()).collect::<Vec<_>>(), 0),
        labels: Tensor::cat(&batches.iter().map(|b| b.labels.shallow_clone()).collect::<Vec<_>>(), 0),
        classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
    };
    let test = read("test_batch.bin")?;
    let (mean, std) = channel_stats(&train.images);
    Ok(Splits { train, test, mean, std })
}

fn channel_stats(images: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let x = images.to_kind(Kind::Float) / 255.0; // (N, C, H, W)
    let c = x.size()[1];
    let per = x.transpose(0, 1).reshape([c, -1]);
    let mean = Vec::<f64>::try_from(per.mean_dim(1, false, Kind::Double)).unwrap_or_default();
    let std = Vec::<f64>::try_from(per.to_kind(Kind::Double).std_dim(1, false, false)).unwrap_or_default();
    (mean, std)
}

impl Splits {
    /// Uint8 images → float, scaled to [0, 1] and normalised per channel.
    pub fn normalize(&self, images: &Tensor) -> Tensor {
        let c = images.size()[1];
        let dev = images.device();
        let mean = Tensor::from_slice(&self.mean).to_kind(Kind::Float).to_device(dev).reshape([1, c, 1, 1]);
        let std = Tensor::from_slice(&self.std).to_kind(Kind::Float).to_device(dev).reshape([1, c, 1, 1]);
        (images.to_kind(Kind::Float) / 255.0 - mean) / std
    }

    /// Keeps the first `train` training and `test` test images (the quick profile's subsets).
    pub fn truncate(mut self, train: i64, test: i64) -> Self {
        let cut = |s: ImageSet, n: i64| {
            let n = n.min(s.images.size()[0]);
            ImageSet { images: s.images.narrow(0, 0, n), labels: s.labels.narrow(0, 0, n), classes: s.classes }
        };
        self.train = cut(self.train, train);
        self.test = cut(self.test, test);
        self
    }
}

/// Random horizontal flips and random crops after zero padding, per image, from libtorch's
/// seeded generator.
///
/// # Shapes
/// `images: (B, C, H, W)` float → `(B, C, H, W)`.
pub fn augment(images: &Tensor, flip: bool, pad: i64) -> Tensor {
    let (b, c, h, w) = images.size4().unwrap_or((0, 0, 0, 0));
    let dev = images.device();
    let mut x = images.shallow_clone();
    if flip {
        let coin = Tensor::rand([b, 1, 1, 1], (Kind::Float, dev)).lt(0.5);
        x = x.flip([3]).where_self(&coin, &x);
    }
    if pad > 0 {
        let padded = x.constant_pad_nd([pad, pad, pad, pad]); // (B, C, H+2p, W+2p)
        let dy = Tensor::randint(2 * pad + 1, [b, 1], (Kind::Int64, dev));
        let dx = Tensor::randint(2 * pad + 1, [b, 1], (Kind::Int64, dev));
        let rows = (dy + Tensor::arange(h, (Kind::Int64, dev)).unsqueeze(0))
            .reshape([b, 1, h, 1])
            .expand([b, c, h, w + 2 * pad], false);
        let x_rows = padded.gather(2, &rows, false); // (B, C, H, W+2p)
        let cols =
            (dx + Tensor::arange(w, (Kind::Int64, dev)).unsqueeze(0)).reshape([b, 1, 1, w]).expand([b, c, h, w], false);
        x = x_rows.gather(3, &cols, false); // (B, C, H, W)
    }
    x
}

/// Batches over a set: shuffled with libtorch's seeded generator when `shuffle`, the last partial
/// batch kept. Yields `(images, labels)` as stored (uint8 images), on `device`.
pub fn batches(
    set: &ImageSet,
    batch_size: i64,
    shuffle: bool,
    device: Device,
) -> impl Iterator<Item = (Tensor, Tensor)> + '_ {
    let n = set.images.size()[0];
    let order = if shuffle {
        Tensor::randperm(n, (Kind::Int64, Device::Cpu))
    } else {
        Tensor::arange(n, (Kind::Int64, Device::Cpu))
    };
    (0..n).step_by(batch_size.max(1) as usize).map(move |start| {
        let idx = order.narrow(0, start, batch_size.min(n - start));
        (set.images.index_select(0, &idx).to_device(device), set.labels.index_select(0, &idx).to_device(device))
    })
}

/// Number of batches [`batches`] yields.
pub fn n_batches(set: &ImageSet, batch_size: i64) -> i64 {
    let n = set.images.size()[0];
    (n + batch_size - 1) / batch_size
}

/// The training images, grouped by class, to draw `P × K` batches from.
#[derive(Debug)]
pub struct PkSampler {
    by_class: Vec<Tensor>,
}

impl PkSampler {
    /// Groups the first `fraction` of a fixed shuffle (seed 0, so every run of the data-size
    /// experiment sees a nested subset) of `set` by label.
    pub fn new(set: &ImageSet, fraction: f64) -> Result<Self> {
        let n = set.labels.size()[0];
        let keep = ((n as f64 * fraction).round() as i64).clamp(1, n.max(1));
        let order = fixed_shuffle(n);
        let kept = order.narrow(0, 0, keep);
        let labels = set.labels.index_select(0, &kept);
        let n_classes = set.classes.len().max(1) as i64;
        let by_class: Vec<Tensor> =
            (0..n_classes).map(|c| kept.masked_select(&labels.eq(c))).filter(|ids| ids.numel() >= 2).collect();
        if by_class.len() < 2 {
            return Err(Error::Input(format!(
                "triplet batches need at least 2 classes with 2 images each; {keep} training images have {}",
                by_class.len()
            )));
        }
        Ok(PkSampler { by_class })
    }

    /// Classes with at least two images.
    pub fn n_classes(&self) -> i64 {
        self.by_class.len() as i64
    }

    /// Images the sampler draws from.
    pub fn n_images(&self) -> i64 {
        self.by_class.iter().map(|t| t.numel() as i64).sum()
    }

    /// One batch's image indices: `p` classes drawn without replacement, `k` images of each drawn
    /// without replacement (with replacement when a class has fewer than `k`), class by class.
    pub fn draw(&self, p: i64, k: i64) -> Tensor {
        let classes = Tensor::randperm(self.n_classes(), (Kind::Int64, Device::Cpu));
        let picks: Vec<Tensor> = Vec::<i64>::try_from(classes.narrow(0, 0, p.min(self.n_classes())))
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let ids = &self.by_class[c as usize];
                let m = ids.numel() as i64;
                let at = if m >= k {
                    Tensor::randperm(m, (Kind::Int64, Device::Cpu)).narrow(0, 0, k)
                } else {
                    Tensor::randint(m, [k], (Kind::Int64, Device::Cpu))
                };
                ids.index_select(0, &at)
            })
            .collect();
        Tensor::cat(&picks, 0)
    }
}

/// A permutation of `0..n` that does not depend on libtorch's global seed (so the data-size
/// experiment's subsets stay nested whatever ran before).
fn fixed_shuffle(n: i64) -> Tensor {
    // A fixed pseudo-random key per image.
    let mut keyed: Vec<(u64, i64)> =
        (0..n).map(|i| (crate::rng::splitmix64((i as u64).wrapping_add(crate::rng::GOLDEN)), i)).collect();
    keyed.sort_unstable();
    Tensor::from_slice(&keyed.into_iter().map(|(_, i)| i).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: i64, classes: i64) -> ImageSet {
        ImageSet {
            images: Tensor::randint(255, [n, 1, 12, 12], (Kind::Uint8, Device::Cpu)),
            labels: Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(classes),
            classes: (0..classes).map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn pk_batches_hold_p_classes_of_k_images() {
        tch::manual_seed(0);
        let s = set(200, 10);
        let sampler = PkSampler::new(&s, 1.0).unwrap();
        let ids = sampler.draw(4, 6);
        let labels = Vec::<i64>::try_from(s.labels.index_select(0, &ids)).unwrap();
        assert_eq!(labels.len(), 24);
        for chunk in labels.chunks(6) {
            assert!(chunk.iter().all(|&l| l == chunk[0]), "{labels:?}");
        }
        let distinct: std::collections::BTreeSet<_> = labels.iter().collect();
        assert_eq!(distinct.len(), 4);
    }

    #[test]
    fn data_fractions_are_nested_and_sized() {
        let s = set(1000, 10);
        let small = PkSampler::new(&s, 0.1).unwrap();
        let big = PkSampler::new(&s, 0.3).unwrap();
        assert_eq!((small.n_images(), big.n_images()), (100, 300));
        let members = |p: &PkSampler| {
            p.by_class.iter().flat_map(|t| Vec::<i64>::try_from(t).unwrap()).collect::<std::collections::BTreeSet<_>>()
        };
        assert!(members(&small).is_subset(&members(&big)));
    }

    #[test]
    fn one_class_is_an_error_that_says_what_is_needed() {
        let s = set(20, 1);
        let err = PkSampler::new(&s, 1.0).unwrap_err().to_string();
        assert!(err.contains("at least 2 classes with 2 images each"), "{err}");
    }
}
