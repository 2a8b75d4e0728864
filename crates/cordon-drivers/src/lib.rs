//! cordon-drivers
