//! Image datasets: Fashion-MNIST (IDX files, from Debian's `dataset-fashion-mnist`), CIFAR-10's
//! binary format, seeded shuffled batches, augmentation and normalisation.

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
    let raw = std::fs::read(path).map_err(|_| Error::Missing {
        what: what.to_string(),
        path: path.to_path_buf(),
        fix: "make setup (installs Fashion-MNIST from the Debian package dataset-fashion-mnist)".into(),
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| Error::Corrupt {
            what: what.to_string(),
            path: path.to_path_buf(),
            detail: format!("not a valid gzip file ({e})"),
        })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX file (the MNIST format): magic `0x0000_08_<ndim>` (uint8 data), big-endian dims.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<Tensor> {
    let corrupt = |detail: String| Error::Corrupt { what: "IDX file".into(), path: path.to_path_buf(), detail };
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
    crate::paths::assets().join("data/fashion-mnist")
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
        return Err(Error::Corrupt {
            what: "CIFAR-10 batch".into(),
            path: path.to_path_buf(),
            detail: format!("expected a multiple of {RECORD}-byte records, got {} bytes", bytes.len()),
        });
    }
    let n = (bytes.len() / RECORD) as i64;
    let all = Tensor::from_slice(bytes).reshape([n, RECORD as i64]);
    let labels = all.select(1, 0).to_kind(Kind::Int64);
    if labels.max().int64_value(&[]) > 9 {
        return Err(Error::Corrupt {
            what: "CIFAR-10 batch".into(),
            path: path.to_path_buf(),
            detail: "a label above 9".into(),
        });
    }
    let images = all.narrow(1, 1, RECORD as i64 - 1).reshape([n, 3, 32, 32]);
    Ok(ImageSet { images, labels, classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect() })
}

/// Loads CIFAR-10 from its binary distribution folder (`data_batch_1.bin` … `data_batch_5.bin`,
/// `test_batch.bin`). Any subset of the training batches present is used.
pub fn load_cifar10(dir: &Path) -> Result<Splits> {
    let read = |name: &str| -> Result<ImageSet> {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|_| Error::Missing {
            what: "CIFAR-10 batch".into(),
            path: path.clone(),
            fix: "point HW9_CIFAR10 at the folder of the CIFAR-10 binary version (cifar-10-batches-bin)".into(),
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
