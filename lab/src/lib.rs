//! The test fleet (see README). Work in progress.
