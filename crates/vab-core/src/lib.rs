//! # vab-core
//!
//! Models, the training engine and the defenses (V&B first) on burn. Empty until the engine
//! issue lands; it exists now so the workspace has its final shape.
