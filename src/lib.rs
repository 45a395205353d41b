//! # hw9 — learn ViT, MAE and Transformers hands-on, in Rust notebooks
//!
//! The support crate of the hw9 notebooks (run on the evcxr Jupyter kernel) and a library
//! for ML engineers. Everything runs on CPU, and on CUDA when [`tch::Cuda::is_available`].
//!
//! ```no_run
//! use hw9::prelude::*;
//! hw9::seed(0);
//! let device = hw9::device();
//! let x = Tensor::randn([2, 3], (Kind::Float, device));
//! ```
//!
//! ## Shape alphabet
//! Every public forward documents its shapes with one alphabet:
//!
//! | letter | meaning |
//! |---|---|
//! | `B` | batch |
//! | `T` / `S` | target / source sequence length |
//! | `D` | model dimension |
//! | `H` | attention heads |
//! | `Dh` | head dimension (`D / H`) |
//! | `N` | patches per image |
//! | `P` | patch size (pixels per side) |
//! | `C` | channels |
//! | `V` | vocabulary size |
//!
//! Mask values are always stated where a mask appears (for example `mask: (B, N), 1 = masked`).
//!
//! ## Where things are
//! | module | what it holds |
//! |---|---|
//! | [`models`] | ViT, MAE, the summarizer and its layers, decoding, BERT, GPT-2 — and the one attention function they share |
//! | [`data`] | Fashion-MNIST / CIFAR-10, the Debian corpus, tokenizers, padded batches |
//! | [`train`] | the one training core ([`train::Fit`]): optimizer and schedule, checkpoints, TensorBoard, progress |
//! | [`plan`] | every notebook's sizes per profile (`HW9_PROFILE`) |
//! | [`tasks`] | each notebook end to end (what the `hw9` commands run), ROUGE |
//! | [`grading`] | checks under TODO cells, fixtures, submissions, student-notebook release |
//! | [`visuals`] | inline figures (line charts, heatmaps, image grids) and the attention views |
//! | [`io`] | atomic writes, configs, safetensors weights by name |
//! | `bench` | the step-time benchmarks (with the `reference` feature) |
//!
//! ARCHITECTURE.md in the repository draws how a notebook cell reaches libtorch and back.

#![warn(missing_docs)]

#[cfg(feature = "reference")]
pub mod bench;
pub mod data;
pub mod error;
pub mod grading;
pub mod io;
pub mod models;
mod parallel;
pub mod plan;
pub mod profile;
mod rng;
pub mod tasks;
pub mod train;
pub mod visuals;

pub use error::{Error, Result};
pub use hw9_env::{doctor, paths};
pub use profile::{profile, Profile};
pub use tch;

use tch::Device;

/// What a notebook or a program needs in scope: `use hw9::prelude::*;`.
pub mod prelude {
    pub use crate::grading::check::{check_at_least, Fixtures, Recorder};
    pub use crate::grading::submission::write_submission;
    pub use crate::visuals::{Figure, Heatmap, LineChart};
    pub use crate::{device, profile, seed, Error, Profile, Result};
    pub use tch;
    pub use tch::nn::{self, Module, ModuleT, OptimizerConfig};
    pub use tch::{Device, Kind, Reduction, Tensor};
}

/// The device to compute on: CUDA when a GPU is usable, else the CPU.
///
/// `HW9_DEVICE=cpu` forces the CPU (`HW9_DEVICE=cuda` forces CUDA, `cuda:1` a given GPU).
pub fn device() -> Device {
    load_cuda_backend();
    match std::env::var("HW9_DEVICE").ok().as_deref().map(str::trim) {
        Some("cpu") => Device::Cpu,
        Some("cuda") => Device::Cuda(0),
        Some(s) if s.starts_with("cuda:") => s[5..].parse().map(Device::Cuda).unwrap_or(Device::Cpu),
        _ => Device::cuda_if_available(),
    }
}

/// Loads libtorch's CUDA backend (`libtorch_cuda.so`) once, if it can be loaded.
///
/// The linker drops `libtorch_cuda.so` from our binaries (nothing references it directly), and
/// must: on the slim CPU install its CUDA math libraries are absent and it cannot load. Where
/// torch's full CUDA dependencies are installed (see environment.md), loading it here registers
/// the CUDA backend, and `tch::Cuda::is_available()` then sees the GPU. Returns whether it loaded.
pub fn load_cuda_backend() -> bool {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOADED.get_or_init(|| {
        let lib = paths::libtorch().join("lib/libtorch_cuda.so");
        let Ok(c_path) = std::ffi::CString::new(lib.to_string_lossy().as_bytes()) else {
            return false;
        };
        // SAFETY: dlopen with a valid NUL-terminated path; the handle is kept for the process'
        // lifetime (never dlclose'd), as libtorch's backends expect.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        !handle.is_null()
    })
}

/// Seeds libtorch's generators (CPU and, when present, every CUDA device).
///
/// With the same seed, `Tensor::randn` on the CPU gives the same numbers as PyTorch's
/// `torch.manual_seed(seed); torch.randn(...)`, so Rust and Python can build identical inputs.
pub fn seed(seed: u64) {
    tch::manual_seed(seed as i64);
    if tch::Cuda::is_available() {
        tch::Cuda::manual_seed_all(seed);
    }
}

/// Makes a panic's report reach the notebook whole; the notebooks call it in their setup cell.
///
/// evcxr relays the kernel's stderr line by line on a thread that the end of a cell does not wait
/// for. Rust's default report is written in pieces (`thread 'main' panicked at src/lib.rs:6:5:`,
/// then the message, e.g. `TODO: …`), so under load the message could arrive after the cell had
/// finished — lost, or shown under the next cell. This hook writes the report in one piece and
/// gives the relay a moment before the panic unwinds and the cell ends. Installing it again is
/// harmless. It leaves out the stack backtrace that evcxr's `RUST_BACKTRACE=1` would add: in a
/// notebook its frames are evcxr's and `<unknown>`. A libtorch error is reported as its
/// operation and the first line of libtorch's message (`libtorch error in `matmul`: mat1 and
/// mat2 shapes cannot be multiplied (1x2 and 3x3)`), without the C++ frames. Outside a notebook there is no need to call it.
pub fn report_panics_whole() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            use std::io::Write;
            let thread = std::thread::current();
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Box<dyn Any>".to_string());
            let at = info.location().map(|l| (l.file(), l.line()));
            // A libtorch error: its operation and first line, not tch's location and C++ frames.
            let (location, message) = match crate::error::libtorch_summary(&message, at) {
                // "panicked at" stays: it is what evcxr users (and tools/nbrun.py) look for.
                Some(summary) => (" at a libtorch call".to_string(), summary),
                None => (info.location().map(|l| format!(" at {l}")).unwrap_or_default(), message),
            };
            let report = format!("thread '{}' panicked{location}:\n{message}\n", thread.name().unwrap_or("<unnamed>"));
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(report.as_bytes());
            let _ = err.flush();
            drop(err);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }));
    });
}
