//! Reading safetensors files without libtorch: the reference fixtures
//! (`<assets>/fixtures/<notebook>.safetensors`: `<check>/atol`, `<check>/rtol` and
//! `<check>/<case>/expected[.i]`) and a submission's `outputs.safetensors`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use crate::compare::{Tolerance, Values};
use crate::{Error, Result};

/// The command that regenerates the fixtures, named in errors.
pub const FIXTURES_FIX: &str =
    "make fixtures (runs tools/gen_fixtures.py in the tool venv with the full torch==2.13.0; see environment.md)";

fn le<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    b.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

/// IEEE half precision bits → f64.
fn half_to_f64(h: u16) -> f64 {
    let (sign, exp, frac) = ((h >> 15) & 1, ((h >> 10) & 0x1f) as i32, (h & 0x3ff) as f64);
    let mag = match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    };
    if sign == 1 {
        -mag
    } else {
        mag
    }
}

/// Every tensor of a safetensors buffer as [`Values`] (dtype names as libtorch's); `what` names
/// the buffer in errors.
pub fn parse_safetensors(bytes: &[u8], what: &str) -> Result<BTreeMap<String, Values>> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Input(format!("{what} is not a safetensors file ({e:?})")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let b = view.data();
        let (dtype, data): (&str, Vec<f64>) = match view.dtype() {
            Dtype::F32 => ("Float", le::<4>(b).map(|a| f32::from_le_bytes(a) as f64).collect()),
            Dtype::F64 => ("Double", le::<8>(b).map(f64::from_le_bytes).collect()),
            Dtype::F16 => ("Half", le::<2>(b).map(|a| half_to_f64(u16::from_le_bytes(a))).collect()),
            Dtype::BF16 => {
                ("BFloat16", le::<2>(b).map(|a| f32::from_bits((u16::from_le_bytes(a) as u32) << 16) as f64).collect())
            }
            Dtype::I64 => ("Int64", le::<8>(b).map(|a| i64::from_le_bytes(a) as f64).collect()),
            Dtype::I32 => ("Int", le::<4>(b).map(|a| i32::from_le_bytes(a) as f64).collect()),
            Dtype::I16 => ("Int16", le::<2>(b).map(|a| i16::from_le_bytes(a) as f64).collect()),
            Dtype::I8 => ("Int8", b.iter().map(|&v| v as i8 as f64).collect()),
            Dtype::U8 => ("Uint8", b.iter().map(|&v| v as f64).collect()),
            Dtype::BOOL => ("Bool", b.iter().map(|&v| f64::from(u8::from(v != 0))).collect()),
            other => {
                return Err(Error::Input(format!("{what}: tensor {name:?} has dtype {other:?}, which is not graded")))
            }
        };
        let shape = view.shape().iter().map(|&d| d as i64).collect();
        out.insert(name, Values { shape, dtype: dtype.to_string(), data });
    }
    Ok(out)
}

/// A notebook's reference fixtures, as the grader reads them.
#[derive(Debug, Clone)]
pub struct Fixtures {
    path: PathBuf,
    tensors: BTreeMap<String, Values>,
}

impl Fixtures {
    /// Where a notebook's fixtures live under an assets folder.
    pub fn path_of(assets: &Path, notebook: &str) -> PathBuf {
        assets.join("fixtures").join(format!("{notebook}.safetensors"))
    }

    /// The fixtures of `notebook` under `assets`.
    pub fn load(assets: &Path, notebook: &str) -> Result<Self> {
        Self::from_file(&Self::path_of(assets, notebook))
    }

    /// The fixtures in `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).map_err(|_| Error::missing("reference fixtures", path.to_path_buf(), FIXTURES_FIX))?;
        let tensors = parse_safetensors(&bytes, &path.display().to_string())
            .map_err(|e| Error::corrupt("fixtures", path.to_path_buf(), e.to_string()))?;
        Ok(Fixtures { path: path.to_path_buf(), tensors })
    }

    /// The names of the checks (those with a tolerance), sorted.
    pub fn checks(&self) -> Vec<String> {
        self.tensors.keys().filter_map(|k| k.strip_suffix("/atol")).map(str::to_string).collect()
    }

    /// The tolerance of `check` (`<check>/atol` and `<check>/rtol`).
    pub fn tolerance(&self, check: &str) -> Result<Tolerance> {
        let scalar = |part: &str| {
            self.tensors.get(&format!("{check}/{part}")).and_then(|v| v.data.first().copied()).ok_or_else(|| {
                Error::Input(format!("{} has no {part} for {check}. {FIXTURES_FIX}", self.path.display()))
            })
        };
        Ok(Tolerance::new(scalar("atol")?, scalar("rtol")?))
    }

    /// The expected outputs of `check`'s `case` (`public` or `autograder`), in order.
    pub fn expected(&self, check: &str, case: &str) -> Vec<&Values> {
        let key = format!("{check}/{case}/expected");
        if let Some(v) = self.tensors.get(&key) {
            return vec![v];
        }
        (0..).map_while(|i| self.tensors.get(&format!("{key}.{i}"))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_values_convert() {
        assert_eq!(half_to_f64(0x3c00), 1.0);
        assert_eq!(half_to_f64(0xc000), -2.0);
        assert_eq!(half_to_f64(0x0001), 2f64.powi(-24));
        assert!(half_to_f64(0x7e00).is_nan());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_safetensors(b"", "x").is_err());
        assert!(parse_safetensors(&u64::MAX.to_le_bytes(), "x").is_err());
        let mut b = 10u64.to_le_bytes().to_vec();
        b.extend(b"{\"a\": 1}  ");
        assert!(parse_safetensors(&b, "x").is_err());
    }
}
