//! The 2-D checkerboard data set and the quality measures of SPEC §10.
