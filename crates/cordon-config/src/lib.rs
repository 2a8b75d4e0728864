//! cordon-config
