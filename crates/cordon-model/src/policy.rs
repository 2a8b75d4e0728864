//! Policy: which action a detection calls for. (Being written.)
