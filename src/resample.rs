//! Resampling schemes (SPEC §6): ancestor indices from normalised weights and uniforms.
//!
//! These functions are the CPU reference that `kernels/resample.cu` is checked against: the
//! same weights and the same Philox uniforms give the same ancestors on both backends.

/// How ancestors are drawn from the weights (SPEC §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ResampleScheme {
    #[default]
    Multinomial,
    Systematic,
    Stratified,
    Residual,
}
