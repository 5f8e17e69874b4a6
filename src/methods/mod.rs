//! The methods of SPEC §5–8, written once against [`crate::backend::Backend`].
