//! Options and helpers shared by several commands.
