//! Mixed precision: bf16 matrix products with fp32 master weights, through libtorch's own
//! autocast (what PyTorch's `torch.autocast("cpu" | "cuda", dtype=torch.bfloat16)` runs).
//!
//! Inside [`autocast`], libtorch casts the inputs of matrix products, attention and
//! convolutions to bf16 and runs the ops on its fp32 list (the losses among them) in fp32; other
//! ops keep their inputs' precision (on the CPU a softmax too: tch's `cross_entropy_for_logits`
//! asks for an fp32 `log_softmax`). The weights stay fp32, and so do their gradients and AdamW's
//! moments. No loss scaling is needed: bf16 has fp32's exponent range.
//!
//! tch 0.26 reaches only the CUDA side of autocast (`tch::autocast`, fp16). The device-typed
//! switches are plain C++ functions of `libtorch_cpu` with integer arguments, declared here by
//! their (Itanium ABI) symbol names for the exact libtorch hw9 pins (2.13.0). Writing a C++ shim
//! instead would add a C++ compile of ATen headers to every build, the kernel's included.
//!
//! When it pays: the CPU must have bf16 dot products (AVX-512 BF16 or AMX on x86, `bf16` on
//! ARM); elsewhere [`Precision::Bf16`] falls back to fp32 and says so once. On this project's
//! 2-core AVX-512/AMX machine it speeds the ViT's and the summarizer's `full` sizes up (0.80x,
//! 0.48x a step) and slows the `cpu` sizes and the MAE down (the casts and the work around the
//! products cost more than the products gain): BENCHMARKS.md, "bf16 on the CPU".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::error::{Error, Result};

/// The variable that picks the training precision of the crate's trainers: `fp32` (default),
/// `bf16` or `auto` (bf16 where the hardware has it, at the sizes where it pays: see
/// [`Precision::requested`] and [`Precision::resolve`]).
pub const PRECISION_VAR: &str = "HW9_PRECISION";

/// The precision of a training step's forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32.
    #[default]
    Fp32,
    /// Matrix products and attention in bf16 (autocast), weights and optimizer in fp32.
    Bf16,
}

impl Precision {
    /// The precision `HW9_PRECISION` names (unset or empty: fp32; `auto`: `auto`), or an error
    /// naming what was expected.
    pub fn from_env(auto: Precision) -> Result<Precision> {
        Self::parse(&std::env::var(PRECISION_VAR).unwrap_or_default(), auto)
    }

    /// What `HW9_PRECISION` asks of a trainer, read once when it starts and passed to
    /// [`super::Fit::precision`]: `auto` means `auto_full` in the `full` profile (`HW9_PROFILE`),
    /// where the products are large enough to gain, and fp32 in `cpu` and `quick`, where bf16
    /// measured slower.
    pub fn requested(auto_full: Precision) -> Result<Precision> {
        let auto = match crate::profile::Profile::from_env()? {
            crate::profile::Profile::Full => auto_full,
            _ => Precision::Fp32,
        };
        Self::from_env(auto)
    }

    /// `fp32`, `bf16`, `auto` (gives `auto`) or empty (fp32).
    pub fn parse(value: &str, auto: Precision) -> Result<Precision> {
        match value.trim() {
            "" | "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            "auto" => Ok(auto),
            other => Err(Error::Config(format!("{PRECISION_VAR} must be one of fp32, bf16, auto; got {other:?}"))),
        }
    }

    /// What runs on `device`: bf16 only where the device computes it natively (a CUDA device,
    /// or a CPU with bf16 dot products); otherwise fp32, said once per process.
    pub fn resolve(self, device: Device) -> Precision {
        self.resolve_on(device, cpu_has_bf16())
    }

    fn resolve_on(self, device: Device, cpu_bf16: bool) -> Precision {
        match (self, device) {
            (Precision::Fp32, _) => Precision::Fp32,
            (Precision::Bf16, Device::Cuda(_)) => Precision::Bf16,
            (Precision::Bf16, _) if cpu_bf16 => Precision::Bf16,
            (Precision::Bf16, _) => {
                static SAID: AtomicBool = AtomicBool::new(false);
                if !SAID.swap(true, Ordering::Relaxed) {
                    println!("bf16 asked for, but this CPU has no bf16 dot products (AVX-512 BF16, AMX or ARM bf16): training in fp32");
                }
                Precision::Fp32
            }
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// Whether this CPU computes bf16 dot products in hardware (Linux: `/proc/cpuinfo`'s flags
/// `avx512_bf16` or `amx_bf16` on x86-64, `bf16` on ARM). Read once.
pub fn cpu_has_bf16() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
            info.lines()
                .filter(|l| l.starts_with("flags") || l.starts_with("Features"))
                .any(|l| l.split_whitespace().any(|f| matches!(f, "avx512_bf16" | "amx_bf16" | "bf16")))
        })
    })
}

// at::autocast's device-typed switches in libtorch_cpu (c10::DeviceType and c10::ScalarType are
// `enum class : int8_t`). Symbols of libtorch 2.13.0; a libtorch without them fails to link.
unsafe extern "C" {
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn at_set_autocast_enabled(device: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn at_is_autocast_enabled(device: i8) -> bool;
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device: i8) -> i8;
}

const CPU: i8 = 0; // c10::DeviceType::CPU
const CUDA: i8 = 1; // c10::DeviceType::CUDA
const BFLOAT16: i8 = 15; // c10::ScalarType::BFloat16

/// Runs `f` with libtorch's autocast to bf16 on `device` when `precision` is bf16 (after
/// [`Precision::resolve`]); else runs `f` as it is. Nested calls and the previous state are
/// restored on the way out, as PyTorch's context manager does. Run only the forward pass and
/// the loss inside; call `backward` outside.
pub fn autocast<T>(precision: Precision, device: Device, f: impl FnOnce() -> T) -> T {
    if precision.resolve(device) != Precision::Bf16 {
        return f();
    }
    let dev = if device.is_cuda() { CUDA } else { CPU };
    // SAFETY: the functions take and return plain integers and only touch libtorch's
    // thread-local autocast state.
    let (was_enabled, was_dtype) = unsafe { (at_is_autocast_enabled(dev), at_get_autocast_dtype(dev)) };
    unsafe {
        at_set_autocast_dtype(dev, BFLOAT16);
        at_set_autocast_enabled(dev, true);
        torch_sys::at_autocast_increment_nesting();
    }
    // Restores the state even when `f` panics (a student's shape error in the kernel).
    struct Restore(i8, bool, i8);
    impl Drop for Restore {
        fn drop(&mut self) {
            unsafe {
                if torch_sys::at_autocast_decrement_nesting() == 0 {
                    torch_sys::at_autocast_clear_cache();
                }
                at_set_autocast_enabled(self.0, self.1);
                at_set_autocast_dtype(self.0, self.2);
            }
        }
    }
    let _restore = Restore(dev, was_enabled, was_dtype);
    f()
}

/// Whether autocast is on for `device` in this thread (for tests and checks).
pub fn autocast_enabled(device: Device) -> bool {
    let dev = if device.is_cuda() { CUDA } else { CPU };
    unsafe { at_is_autocast_enabled(dev) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn inside_autocast_products_are_bf16_and_losses_fp32_outside_everything_is_fp32() {
        let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let b = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
        let target = Tensor::zeros([4, 3], (Kind::Float, Device::Cpu));
        // Forced on (not resolved) so that the test runs on any CPU.
        unsafe {
            at_set_autocast_dtype(CPU, BFLOAT16);
            at_set_autocast_enabled(CPU, true);
        }
        let prod = a.matmul(&b);
        let loss = prod.mse_loss(&target, tch::Reduction::Mean);
        unsafe { at_set_autocast_enabled(CPU, false) };
        assert_eq!(prod.kind(), Kind::BFloat16);
        assert_eq!(loss.kind(), Kind::Float, "losses run in fp32 under autocast");
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
        // The gradient reaches the fp32 leaf as fp32.
        loss.backward();
        assert_eq!(a.grad().kind(), Kind::Float);
    }

    #[test]
    fn autocast_restores_the_previous_state_and_fp32_does_nothing() {
        assert!(!autocast_enabled(Device::Cpu));
        let kind = autocast(Precision::Fp32, Device::Cpu, || {
            Tensor::ones([2, 2], (Kind::Float, Device::Cpu)).matmul(&Tensor::ones([2, 2], (Kind::Float, Device::Cpu)))
        });
        assert_eq!(kind.kind(), Kind::Float);
        let inside = autocast(Precision::Bf16, Device::Cpu, || autocast_enabled(Device::Cpu));
        assert_eq!(inside, cpu_has_bf16(), "bf16 runs exactly where the CPU has it");
        assert!(!autocast_enabled(Device::Cpu));
        let caught =
            std::panic::catch_unwind(|| autocast(Precision::Bf16, Device::Cpu, || panic!("a student's error")));
        assert!(caught.is_err());
        assert!(!autocast_enabled(Device::Cpu), "a panic inside leaves autocast off");
    }

    #[test]
    fn bf16_falls_back_to_fp32_on_a_cpu_without_it_and_stays_on_cuda() {
        assert_eq!(Precision::Bf16.resolve_on(Device::Cpu, false), Precision::Fp32);
        assert_eq!(Precision::Bf16.resolve_on(Device::Cpu, true), Precision::Bf16);
        assert_eq!(Precision::Bf16.resolve_on(Device::Cuda(0), false), Precision::Bf16);
        assert_eq!(Precision::Fp32.resolve_on(Device::Cuda(0), true), Precision::Fp32);
    }

    #[test]
    fn the_variable_names_what_it_expects() {
        assert_eq!(Precision::parse("bf16", Precision::Fp32).ok(), Some(Precision::Bf16));
        assert_eq!(Precision::parse(" ", Precision::Bf16).ok(), Some(Precision::Fp32));
        assert_eq!(Precision::parse("auto", Precision::Bf16).ok(), Some(Precision::Bf16));
        let err = Precision::parse("fp16", Precision::Fp32).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("invalid config: HW9_PRECISION must be one of fp32, bf16, auto; got \"fp16\""));
        assert_eq!(serde_json::to_string(&Precision::Bf16).ok().as_deref(), Some("\"bf16\""));
    }
}
