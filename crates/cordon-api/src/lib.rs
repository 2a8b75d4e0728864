//! cordon-api
