//! Training the velocity MLP with the flow-matching loss of the OT path (SPEC §2), Adam, on all
//! CPU cores.
